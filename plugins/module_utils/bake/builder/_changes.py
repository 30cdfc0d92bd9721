# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Change listing of a builder: which paths a container changed, and which of them may be in the base image.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Two strategies with the same methods, picked by change_listing():

- EngineChanges, the default: the Engine API (``GET /containers/{id}/changes``; ``docker diff`` when only the CLI
  answers) lists the changes; whether a removed path is in the base image is asked of a container created from the
  base (``HEAD /containers/{id}/archive``). Reads nothing of Docker's storage.
- Overlay2Changes, opt-in (bake_change_listing=overlay2): reads the container's overlay2 upper directory and the base
  image's layer directories (_overlay2.py), a few milliseconds instead of the engine's 0.3-0.7 s diff. Used only
  where that is known to be safe (local daemon, storage driver overlay2, not the containerd image store); wherever a
  directory cannot be read or holds what the walk does not interpret, the Engine API answers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import as_completed

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import container_upper_changes
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import image_layer_dirs
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import path_in_layers

CHANGE_LISTINGS = ("engine", "overlay2")
CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"


def with_parents(paths):
    """The paths and every parent directory of them (not /), parents first: what a squash must carry so each
    directory keeps the mode and owner it has in the builder."""
    full = set()
    for path in paths:
        while path not in ("", "/") and path not in full:
            full.add(path)
            path = path.rsplit("/", 1)[0]
    return sorted(full)


class EngineChanges:
    """Change listing through the Docker engine interface only."""

    name = "engine"

    def __init__(self, docker):
        self.docker = docker

    def container_changes(self, container, info=None):
        """(every path the container changed in its own layer, those of them it removed). info: the container
        inspected, when the caller has it."""
        found = self.docker.changes(container)
        return [path for _kind, path in found], [path for kind, path in found if kind == "D"]

    def may_be_in_base(self, paths, base, copy=None):
        """Those of the paths that may exist in the base image (inspected: base). copy: a container created from the
        base, or None when there is none yet: then None, only the copy can tell."""
        if copy is None:
            return None
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda path: (path, self.docker.path_exists(copy, path)), paths))
        return [path for path, found in answers if found is not False]

    def any_in_base(self, paths, base, copy=None):
        """Whether any of the paths may exist in the base image: True at the first that may, False, or None without
        a copy (as may_be_in_base)."""
        if copy is None:
            return None
        with ThreadPoolExecutor(max_workers=8) as pool:
            asked = [pool.submit(self.docker.path_exists, copy, path) for path in paths]
            for answer in as_completed(asked):
                if answer.result() is not False:
                    for other in asked:
                        other.cancel()
                    return True
        return False


class Overlay2Changes(EngineChanges):
    """Change listing from the local daemon's overlay2 directories, the Engine API wherever they cannot tell."""

    name = "overlay2"

    def container_changes(self, container, info=None):
        info = info if info is not None else (self.docker.inspect(container, kind="container") or {})
        walked = container_upper_changes(info)
        return walked if walked is not None else super().container_changes(container)

    def may_be_in_base(self, paths, base, copy=None):
        layers = image_layer_dirs(base)
        if layers is None:
            return super().may_be_in_base(paths, base, copy)
        return [path for path in paths if path_in_layers(layers, path) is not False]

    def any_in_base(self, paths, base, copy=None):
        if image_layer_dirs(base) is None:
            return super().any_in_base(paths, base, copy)
        return bool(self.may_be_in_base(paths, base, copy))


def overlay2_refusal(docker):
    """Why the overlay2 accelerator cannot be used with this engine, or None when it can."""
    if not docker.local_daemon:
        return "Docker is not reached through the local daemon's unix socket"
    info = docker.info()
    driver = info.get("Driver")
    if driver != "overlay2":
        return f"the storage driver is {driver or 'unknown'}, not overlay2"
    status = {str(pair[0]): str(pair[1]) for pair in info.get("DriverStatus") or [] if len(pair) == 2}
    if status.get("driver-type") == CONTAINERD_SNAPSHOTTER:
        return "the daemon uses the containerd image store"
    return None


def change_listing(docker, requested="engine", warn=None):
    """The change listing strategy: EngineChanges unless overlay2 is requested and overlay2_refusal() finds no
    reason against it; a refused request is reported through warn(message)."""
    if requested not in CHANGE_LISTINGS:
        raise BuilderError(f"change listing {requested!r} is unknown: use one of {', '.join(CHANGE_LISTINGS)}")
    if requested == "overlay2":
        reason = overlay2_refusal(docker)
        if reason is None:
            return Overlay2Changes(docker)
        if warn is not None:
            warn(f"bake_change_listing=overlay2 is not used: {reason}; the Engine API lists the changes instead")
    return EngineChanges(docker)
