# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""BuilderManager: builder containers and the per-role layer cache of the container bake, through the Docker engine
interface (docker/_interface.py).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Every container and image made here carries labels naming its kind, app, bake ID and creation time (artifact/
_contract.py), so a later run can find what a killed run left behind. The plans it applies are pure functions of
_cache.py and _owners.py; the squash is _squash.py; the change listing a strategy of _changes.py.
"""

from __future__ import annotations

import os
import socket
import time

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_KIND
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_LAYER
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_OWNER
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_ROLE
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import cache_ref
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import cache_repository
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import plan_prune
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import plan_start_layer
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import validate_app
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import EngineChanges
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import CHANGES_FILE
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import read_builder_files
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import write_change_list
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import plan_sweep
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import process_start
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._split import SplitCapture
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._squash import Squash
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError


class BuilderManager:
    """Applies the plans through an injected Docker engine (docker); every mutation is skipped in check mode.

    listing: the change listing strategy (_changes.change_listing()); the Engine API's when not given.
    """

    def __init__(self, docker, check_mode=False, clock=time.time, owner=None, host=None, proc="/proc", listing=None):
        self.docker = docker
        self.check_mode = check_mode
        self.clock = clock
        self.owner = owner  # owner label of the builders this run starts (see _owners.owner_label), or None
        self.host = host or socket.gethostname()
        self.proc = proc
        self.listing = listing or EngineChanges(docker)

    def _alive(self, pid, start):
        return process_start(pid, self.proc) == start

    # -- reading -------------------------------------------------------------------------------------------------

    def cache_images(self, app):
        """Local cache images of an app: [{"tag", "ref", "created"}]."""
        repository = cache_repository(app)
        return [
            {"tag": row["tag"], "ref": f"{repository}:{row['tag']}", "created": row["created"]}
            for row in self.docker.list_images(label=f"{LABEL_KIND}=cache", reference=repository)
        ]

    def builders(self):
        """Labelled builder containers: [{"name", "labels"}]."""
        return self.docker.list_containers(label=f"{LABEL_KIND}=builder")

    def changed_paths(self, container, from_cache_layer=False, own=None, files=None):
        """Every path the builder changed since the base image (its cache layers' list plus its own changes), and
        the image configs its roles declared.

        from_cache_layer: the builder started from a cache layer, whose list must then exist (without it the
        layer's own changes would be lost). own: the builder's own changes, files: its files (read_builder_files()),
        when already read.
        """
        paths = set(self.listing.container_changes(container)[0] if own is None else own)
        recorded, configs = read_builder_files(self.docker, container) if files is None else files
        if recorded:
            paths.update(recorded)
        elif from_cache_layer:
            raise BuilderError(
                f"builder {container} started from a cache layer without its list of changed paths ({CHANGES_FILE}),"
                " made by hand or by an older version: remove the app's immutable-infra-cache images (or bake once"
                " with bake_cache=false) and bake again"
            )
        paths.discard(CHANGES_FILE)
        return sorted(paths), configs

    # -- states --------------------------------------------------------------------------------------------------

    def start(
        self,
        app,
        bake_id,
        base_image,
        layers,
        name=None,
        use_cache=True,
        network=None,
        sweep_min_age=None,
        keep=None,
        create_only=False,
    ):
        """Start the builder from the deepest cached layer; with `keep`, also prune the app's cache images off
        this bake's path (as state=pruned does), in the same listing: one module call less per bake.
        create_only: create the container without starting it (the squash's copy; start() runs it)."""
        validate_app(app)
        name = name or f"bake-{app}-{bake_id}"
        result = {"changed": False, "container": name, "swept": [], "pruned": [], "owner": self.owner}
        if sweep_min_age is not None:
            result["swept"] = self.sweep(app=app, min_age=sweep_min_age, exclude=(name,))["removed"]
            result["changed"] = bool(result["swept"])

        base = self.docker.inspect(base_image, kind="image")
        if base is None:
            raise BuilderError(
                f"base image {base_image!r} not found in the local Docker Engine: build it (scripts/setup.sh builds"
                " immutable-infra/base:bookworm) or set bake_base_image to an image that exists"
            )
        # The builder runs `sleep infinity`; a commit would keep that command, so the capture restores the base's
        # own entrypoint and command unless the roles or the user declare others.
        base_config = base.get("Config") or {}
        result["base_config"] = {"entrypoint": base_config.get("Entrypoint") or [], "cmd": base_config.get("Cmd") or []}
        images = self.cache_images(app) if use_cache else []
        available = {img["tag"] for img in images}
        reused = plan_start_layer(layers, available)
        if use_cache and keep is not None:
            result["pruned"] = self._remove_cache_images(
                plan_prune(images, [layer["fingerprint"] for layer in layers], keep)
            )
            result["changed"] = result["changed"] or bool(result["pruned"])
        start_image = cache_ref(app, layers[reused - 1]["fingerprint"]) if reused else base_image
        result.update(
            {
                "start_image": start_image,
                "reused_layers": reused,
                "reused_roles": [layer["role"] for layer in layers[:reused]],
            }
        )

        existing = self.docker.inspect(name, kind="container")
        if existing:
            if existing.get("State", {}).get("Running"):
                return result
            raise BuilderError(
                f"a stopped container named {name} exists: remove it (docker rm {name}) or use another bake_id"
            )
        result["changed"] = True
        if self.check_mode:
            return result
        # Keep the builder alive with `sleep infinity` without touching the image's entrypoint where it has none:
        # a commit keeps the container's entrypoint, and docker commit cannot reset one to empty afterwards.
        base_entrypoint = result["base_config"]["entrypoint"]
        labels = {LABEL_KIND: "builder", LABEL_APP: app, LABEL_BAKE_ID: bake_id, LABEL_CREATED: str(int(self.clock()))}
        if self.owner:
            labels[LABEL_OWNER] = self.owner
        self.docker.run_container(
            start_image,
            ["infinity"] if base_entrypoint else ["sleep", "infinity"],
            name=name,
            labels=labels,
            entrypoint="sleep" if base_entrypoint else None,
            network=network,
            start=not create_only,
        )
        return result

    def save_layer(self, app, container, role, fingerprint, bake_id):
        """Commit the builder as the cache image of one layer (no-op when that layer image already exists).

        The layer carries CHANGES_FILE, the paths changed since the base image, for the squash of a later bake
        that starts from it.
        """
        validate_app(app)
        ref = cache_ref(app, fingerprint)
        if self.docker.image_id(ref) is not None:
            return {"changed": False, "image": ref}
        if not self.check_mode:
            write_change_list(self.docker, container, self.changed_paths(container)[0])
            changes = [
                f"LABEL {LABEL_KIND}=cache",
                f"LABEL {LABEL_APP}={app}",
                f"LABEL {LABEL_LAYER}={fingerprint}",
                f"LABEL {LABEL_ROLE}={role}",
                f"LABEL {LABEL_BAKE_ID}={bake_id}",
                f"LABEL {LABEL_CREATED}={int(self.clock())}",
            ]
            image_id = self.docker.commit(container, changes=changes, message=f"immutable.infra cache: {role}")
            self.docker.tag(image_id, ref)
        return {"changed": True, "image": ref}

    def squash(self, container, base_image, split_app=None, bake_id=None):
        """The container to capture, with the builder's whole filesystem in one layer above the base image
        (_squash.py); with split_app, a builder started from a cache layer in two, the first kept for later bakes
        of that app (_split.py)."""
        squash = Squash(self, container, base_image)
        if not split_app:
            return squash.run()
        validate_app(split_app)
        builder, base = squash.inspect_builder_and_base()
        if builder.get("Image") == base.get("Id"):
            return squash.builder_as_it_is()
        return SplitCapture(self, container, base_image, split_app).run(builder, bake_id or "split")

    def remove(self, container):
        """Remove the builder and its copies (<container>-squash, and -kept of a split capture), whichever exist,
        in one removal."""
        copies = (container, f"{container}-squash", f"{container}-kept")
        existing = [name for name in copies if self.docker.container_exists(name)]
        if existing and not self.check_mode:
            self.docker.remove_containers(existing)
        return {"changed": bool(existing), "container": container, "removed": existing}

    def sweep(self, app=None, min_age=3600, exclude=()):
        alive = self._alive if os.path.isdir(self.proc) else None
        orphans = plan_sweep(
            self.builders(), self.clock(), min_age, app=app, exclude=exclude, host=self.host, alive=alive
        )
        removed = []
        reasons = {}
        for orphan in orphans:
            if not self.check_mode:
                try:
                    self.docker.remove_container(orphan["name"])
                except DockerError as exc:
                    raise BuilderError(f"could not remove orphan builder {orphan['name']}: {exc}") from None
            removed.append(orphan["name"])
            reasons[orphan["name"]] = orphan["reason"]
        return {"changed": bool(removed), "removed": removed, "reasons": reasons}

    def prune(self, app, keep_fingerprints, keep_newest=6):
        validate_app(app)
        removed = self._remove_cache_images(plan_prune(self.cache_images(app), keep_fingerprints, keep_newest))
        return {"changed": bool(removed), "removed": removed}

    def _remove_cache_images(self, doomed):
        """Remove the planned cache images (not in check mode); return their references."""
        for image in doomed:
            if not self.check_mode:
                self.docker.remove_image(image["ref"])
        return [image["ref"] for image in doomed]
