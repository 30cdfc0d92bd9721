# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The squash: the container to capture, holding exactly the builder's filesystem in ONE layer above the base image.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A builder started from the base image is that already (its change list, if a layer was saved, is removed: created
and removed in the same layer, it is not in the image). A builder started from a cache layer would be captured with
the cache layers as they are, files removed later (by the seal, say) hidden but still in their blobs. So a new
container from the base image (the copy) gets every changed path the builder still has (one tar stream, owners,
modes and extended attributes kept) and loses every path the builder removed that the base has.

The copy runs only when a removal must happen in it (that takes a `docker exec`); copying in and committing need no
running container, so otherwise it is only created. It is created while the builder's changes and files are read,
started as soon as one of the builder's own removals is known to be in the base (asked of the change listing:
the copy itself, or the base's overlay2 layers), else once a removal from the cache layers' lists is; the removals
then overlap with the copy stream.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import with_parents
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import missing_paths
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import read_builder_files
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import remove_paths
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError


def removal_roots(gone):
    """The removed paths whose parent was not removed too: removing those (rm -rf) removes the others."""
    return sorted(path for path in gone if path.rsplit("/", 1)[0] not in gone)


class Squash:
    """One squash of builder `container` onto `base_image`, for manager (a BuilderManager: its engine, change
    listing, check mode and start())."""

    def __init__(self, manager, container, base_image):
        self.manager = manager
        self.docker = manager.docker
        self.container = container
        self.base_image = base_image
        self.copy = f"{container}-squash"

    def run(self):
        builder, base = self.inspect_builder_and_base()
        if builder.get("Image") == base.get("Id"):
            return self.builder_as_it_is()
        result = {"changed": True, "container": self.copy, "squashed": True, "declared_config": []}
        if self.manager.check_mode:
            return result
        try:
            paths, gone, result["declared_config"], started = self.list_while_making_copy(builder, base)
            present = [path.lstrip("/") for path in paths if path not in gone]
            roots = removal_roots(gone)
            # a started copy takes every removal (rm -rf of a path it does not have does nothing): no more questions
            in_base = roots if started else self.manager.listing.may_be_in_base(roots, base, self.copy)
        except BaseException:
            self.docker.remove_container(self.copy)
            raise
        self.fill_copy(present, in_base, started)
        result["paths"] = len(present)
        result["removed_paths"] = len(gone)
        return result

    # -- steps ---------------------------------------------------------------------------------------------------

    def inspect_builder_and_base(self):
        builder = self.docker.inspect(self.container, kind="container")
        if builder is None:
            raise BuilderError(f"builder {self.container} not found: it was removed before the capture")
        return builder, self.docker.inspect(self.base_image, kind="image") or {}

    def builder_as_it_is(self):
        """The builder started from the base image: captured as it is, without its change list."""
        configs = [] if self.manager.check_mode else read_builder_files(self.docker, self.container, True)[1]
        return {"changed": False, "container": self.container, "squashed": False, "declared_config": configs}

    def list_while_making_copy(self, builder, base):
        """Create the copy while the builder's changes and files are read; start it as soon as one of the builder's
        own removals is known to be in the base. Returns (every changed path with its parents, those of them the
        builder no longer has, the declared image configs, whether the copy was started)."""
        labels = (builder.get("Config") or {}).get("Labels") or {}
        listing = self.manager.listing
        with ThreadPoolExecutor(max_workers=3) as pool:
            creating = pool.submit(
                self.manager.start,
                labels.get(LABEL_APP, "squash"),
                labels.get(LABEL_BAKE_ID, "squash"),
                self.base_image,
                [],
                name=self.copy,
                use_cache=False,
                create_only=True,
            )
            reading = pool.submit(read_builder_files, self.docker, self.container)
            starting = None
            try:
                own, own_removed = listing.container_changes(self.container, builder)
                roots = removal_roots(set(own_removed))
                in_base = listing.any_in_base(roots, base)  # None: only the copy can tell
                if in_base is None and roots:
                    creating.result()
                    in_base = listing.any_in_base(roots, base, self.copy)
                if in_base:
                    starting = pool.submit(self.start_copy, creating)
                changed, configs = self.manager.changed_paths(
                    self.container, from_cache_layer=True, own=own, files=reading.result()
                )
                paths = with_parents(changed)
                gone = missing_paths(self.docker, self.container, paths)
                creating.result()  # a failed creation raises here
                if starting is not None:
                    starting.result()
            except BaseException:
                for pending in (creating, reading, starting):
                    if pending is not None:
                        with contextlib.suppress(Exception):
                            pending.result()
                raise
        return paths, gone, configs, starting is not None

    def start_copy(self, creating):
        creating.result()
        self.docker.start(self.copy)

    def fill_copy(self, present, in_base, started):
        """Stream the present paths into the copy while the removed ones still in the base are removed from it: a
        removed path is in no copied path (its parents, present in the builder, are copied as directories only), so
        neither touches what the other writes."""
        try:
            with ThreadPoolExecutor(max_workers=1) as pool:
                removing = pool.submit(self.remove_in_copy, in_base, not started) if in_base else None
                try:
                    if present:
                        self.docker.copy_paths(self.container, present, self.copy)
                except BaseException:
                    if removing is not None:
                        with contextlib.suppress(Exception):
                            removing.result()  # the copy's own error is the one to report
                    raise
                if removing is not None:
                    removing.result()
        except DockerError as exc:
            self.docker.remove_container(self.copy)
            raise BuilderError(
                f"could not squash builder {self.container} onto {self.base_image}: {exc} (the builder needs GNU tar;"
                " set bake_cache=false to bake without cache layers)"
            ) from None

    def remove_in_copy(self, paths, start):
        if start:
            self.docker.start(self.copy)
        remove_paths(self.docker, self.copy, paths)
