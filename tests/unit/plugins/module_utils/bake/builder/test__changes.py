"""Change listing strategies: the Engine API by default, the overlay2 accelerator only where it is safe."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import EngineChanges
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import Overlay2Changes
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import change_listing
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import with_parents
from ansible_collections.immutable.infra.plugins.module_utils.docker._api import EngineApi
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli

OVERLAY2_INFO = {"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"], ["userxattr", "false"]]}
CONTAINERD_INFO = {
    "Driver": "overlayfs",
    "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
}


class FakeSocket:
    """An EngineSocket stand-in answering {path: (status, body)}; anything else is 404."""

    def __init__(self, answers):
        self.answers = answers
        self.asked = []

    def get_json(self, path):
        self.asked.append(("GET", path))
        return self.answers.get(path, (404, None))

    def head(self, path):
        self.asked.append(("HEAD", path))
        return self.answers.get(path, (404, None))


def no_cli(cmd, **_kwargs):
    raise AssertionError(f"the CLI was not to be asked: {cmd}")


def engine(answers):
    return EngineApi(FakeSocket(answers), DockerCli(no_cli))


def test_the_default_is_the_engine_api_and_an_unknown_listing_is_refused():
    assert change_listing(engine({})).__class__ is EngineChanges
    with pytest.raises(BuilderError, match="change listing 'walk' is unknown"):
        change_listing(engine({}), "walk")


def test_overlay2_is_used_on_the_local_daemon_with_the_overlay2_driver():
    warnings = []
    listing = change_listing(engine({"/info": (200, OVERLAY2_INFO)}), "overlay2", warn=warnings.append)
    assert listing.__class__ is Overlay2Changes and warnings == []


@pytest.mark.parametrize(
    "info, reason",
    [
        (CONTAINERD_INFO, "the storage driver is overlayfs"),
        (dict(OVERLAY2_INFO, DriverStatus=[["driver-type", "io.containerd.snapshotter.v1"]]), "containerd image store"),
        ({"Driver": "btrfs", "DriverStatus": []}, "the storage driver is btrfs"),
    ],
)
def test_overlay2_is_refused_with_a_warning_where_it_is_not_safe(info, reason):
    warnings = []
    listing = change_listing(engine({"/info": (200, info)}), "overlay2", warn=warnings.append)
    assert listing.__class__ is EngineChanges
    assert len(warnings) == 1 and reason in warnings[0] and "Engine API lists the changes instead" in warnings[0]


def test_overlay2_is_refused_without_the_local_daemons_socket():
    warnings = []
    assert change_listing(DockerCli(no_cli), "overlay2", warn=warnings.append).__class__ is EngineChanges
    assert "not reached through the local daemon's unix socket" in warnings[0]


def test_the_engine_lists_changes_and_removals_through_the_api():
    docker = engine(
        {"/containers/bld/changes": (200, [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/a", "Kind": 1},
                                           {"Path": "/etc/motd", "Kind": 2}])}
    )  # fmt: skip
    assert EngineChanges(docker).container_changes("bld") == (["/etc", "/etc/a", "/etc/motd"], ["/etc/motd"])


def test_the_engine_asks_a_copy_of_the_base_which_removed_paths_it_has():
    docker = engine({"/containers/cp/archive?path=%2Fetc%2Fmotd": (200, None)})
    listing = EngineChanges(docker)
    assert listing.may_be_in_base(["/etc/motd", "/opt/app"], {}) is None  # no copy yet: only the copy can tell
    assert listing.may_be_in_base(["/etc/motd", "/opt/app"], {}, "cp") == ["/etc/motd"]


def test_overlay2_falls_back_to_the_engine_where_the_directories_cannot_tell():
    docker = engine({"/containers/bld/changes": (200, [{"Path": "/x", "Kind": 1}])})
    info = {"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/nowhere/upper"}}}
    assert Overlay2Changes(docker).container_changes("bld", info) == (["/x"], [])
    # a base image not on overlay2: the copy answers, as with the engine
    assert Overlay2Changes(docker).may_be_in_base(["/x"], {"GraphDriver": {"Name": "vfs"}}) is None


def test_with_parents_lists_parents_first():
    assert with_parents(["/opt/app/conf/app.conf", "/etc"]) == [
        "/etc",
        "/opt",
        "/opt/app",
        "/opt/app/conf",
        "/opt/app/conf/app.conf",
    ]


def test_any_in_base_answers_at_the_first_path_the_copy_has():
    docker = engine({"/containers/cp/archive?path=%2Fetc%2Fmotd": (200, None)})
    listing = EngineChanges(docker)
    assert listing.any_in_base(["/opt/a", "/etc/motd"], {}) is None
    assert listing.any_in_base(["/opt/a", "/etc/motd"], {}, "cp") is True
    assert listing.any_in_base(["/opt/a", "/opt/b"], {}, "cp") is False
    assert listing.any_in_base([], {}, "cp") is False
