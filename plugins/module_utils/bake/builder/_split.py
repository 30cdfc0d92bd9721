# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The split capture: the container to capture, holding the builder's filesystem in TWO layers above the base image,
the first of which a later bake reuses.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

For a builder started from a cache layer (bake_artifact_layers=split, docs/bake.md). Both layers are copies of the
builder as it is now (sealed, its merged view checked by the hygiene check), never cache layers as they were saved:

- the kept layer: the paths the cache layers changed that the builder itself did not touch since (the later roles,
  the seal); with the cache layer's image ID and the touched ones among its paths, it is the same every time, so it
  is kept as a local image (``immutable-infra-cache/<app>:kept-<hex>``) and a later bake reuses it, and the
  registry already has its blob;
- the top layer, a container from the kept image: every path the builder touched (with its parents), and none it
  removed.

A base path the builder removed is removed in the kept layer already (it is part of the key), so the top copy
normally needs no removal, and then it is only created, never started: copying in and committing need no running
container.

A file the seal or a later role removed was touched, so it is not in the kept layer, and it is gone, so it is not in
the top one: every file of either layer is a file of the checked merged view, as with the one-layer squash.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_KIND
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import cache_repository
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import EngineChanges
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import with_parents
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import CHANGES_FILE
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import missing_paths
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import read_builder_files
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import remove_paths
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._squash import removal_roots
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError

KEPT_TAG_PREFIX = "kept-"


def split_paths(cached, touched):
    """(the kept layer's paths, the top layer's paths), each with its parents, parents first. cached: the paths the
    cache layers changed since the base; touched: the paths the builder changed since its cache layer."""
    touched = set(touched) - {CHANGES_FILE}
    kept = {path for path in cached if path not in touched and path != CHANGES_FILE}
    return with_parents(kept), with_parents(touched)


def kept_key(cache_image_id, cached, touched, removed_roots=()):
    """What the kept layer's content depends on: the cache layer, which of its paths the builder touched, and the
    topmost paths the builder removed (removed in the kept layer too where the base has them)."""
    overlap = sorted(set(cached) & set(touched) - {CHANGES_FILE})
    digest = hashlib.sha256(str(cache_image_id).encode())
    for path in overlap:
        digest.update(b"\0" + path.encode("utf-8", "surrogateescape"))
    digest.update(b"\0\0")
    for path in sorted(removed_roots):
        digest.update(b"\0" + path.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def kept_ref(app, key):
    return f"{cache_repository(app)}:{KEPT_TAG_PREFIX}{key}"


class SplitCapture:
    """One split capture of builder `container` (started from a cache layer) onto `base_image`, for manager (a
    BuilderManager) and app (the name the kept image is kept under)."""

    def __init__(self, manager, container, base_image, app):
        self.manager = manager
        self.docker = manager.docker
        self.engine = EngineChanges(manager.docker)  # existence in an image the overlay2 listing does not know
        self.container = container
        self.base_image = base_image
        self.app = app
        self.copy = f"{container}-squash"
        self.kept_copy = f"{container}-kept"

    def run(self, builder, bake_id):
        result = {"changed": True, "container": self.copy, "squashed": True, "split": True, "declared_config": []}
        if self.manager.check_mode:
            return result
        with ThreadPoolExecutor(max_workers=1) as pool:
            reading = pool.submit(read_builder_files, self.docker, self.container)
            touched, _removed = self.manager.listing.container_changes(self.container, builder)
            cached, result["declared_config"] = reading.result()
        if not cached:
            raise BuilderError(
                f"builder {self.container} started from a cache layer without its list of changed paths"
                f" ({CHANGES_FILE}): remove the app's immutable-infra-cache images and bake again"
            )
        kept_paths, top_paths = split_paths(cached, touched)
        top_gone = missing_paths(self.docker, self.container, top_paths) if top_paths else set()
        ref = kept_ref(self.app, kept_key(builder.get("Image"), cached, touched, removal_roots(top_gone)))
        result["kept_image"] = ref
        result["kept_reused"] = self.docker.image_id(ref) is not None
        if not result["kept_reused"]:
            self.make_kept_image(kept_paths, top_gone, ref, bake_id)
        self.manager.start(self.app, bake_id, ref, [], name=self.copy, use_cache=False, create_only=True)
        result["paths"], result["removed_paths"] = self.fill(self.copy, top_paths, top_gone)
        return result

    def make_kept_image(self, paths, top_gone, ref, bake_id):
        self.manager.start(
            self.app, bake_id, self.base_image, [], name=self.kept_copy, use_cache=False, create_only=True
        )
        try:
            gone = missing_paths(self.docker, self.container, paths) if paths else set()
            self.fill(self.kept_copy, paths, gone | top_gone)
            # only labels the top copy's own (a builder's) replace, so none of them reaches the artifact
            changes = [
                f"LABEL {LABEL_KIND}=cache",
                f"LABEL {LABEL_APP}={self.app}",
                f"LABEL {LABEL_BAKE_ID}={bake_id}",
                f"LABEL {LABEL_CREATED}={int(self.manager.clock())}",
            ]
            image_id = self.docker.commit(self.kept_copy, changes=changes, message="immutable.infra kept layer")
            self.docker.tag(image_id, ref)
        finally:
            self.docker.remove_container(self.kept_copy)

    def fill(self, target, paths, gone):
        """Copy into target (created, not started) those of the paths the builder has, and remove from it those it
        no longer has (gone) where target has them; (copied, removed) counts."""
        present = [path.lstrip("/") for path in paths if path not in gone]
        in_target = self.engine.may_be_in_base(removal_roots(gone), None, target) if gone else []
        try:
            if present:
                self.docker.copy_paths(self.container, present, target)
            if in_target:
                self.docker.start(target)
                remove_paths(self.docker, target, in_target)
        except DockerError as exc:
            raise BuilderError(
                f"could not copy builder {self.container} into {target}: {exc} (the builder needs GNU tar; set"
                " bake_artifact_layers=single to capture one layer)"
            ) from None
        return len(present), len(gone)
