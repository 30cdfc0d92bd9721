"""The squash's steps that need no engine, and its answers when the builder needs no squash."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._manager import BuilderManager
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._squash import removal_roots
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli

BASE_ID = "sha256:" + "1" * 64


class FakeRunner:
    """run_command stand-in: a builder started from the base image (image_of) holding one declared config."""

    def __init__(self, image_of):
        self.image_of = image_of
        self.calls = []

    def __call__(self, cmd, **_kwargs):
        args = cmd[1:]
        self.calls.append(args)
        if args[:2] == ["container", "inspect"]:
            if args[2] != "bld":
                return 1, "", "Error: No such container"
            return 0, json.dumps([{"Image": self.image_of, "Config": {"Labels": {}}}]), ""
        if args[:2] == ["image", "inspect"]:
            return 0, json.dumps([{"Id": BASE_ID}]), ""
        if args[:1] == ["exec"]:
            return 0, '\0/etc/immutable-infra/image-config.d/10-a.json\n{"user": "svc"}', ""
        return 0, "", ""


def test_only_the_topmost_removed_paths_are_removed_in_the_copy():
    gone = {"/var/cache/apt", "/var/cache/apt/pkg.bin", "/var/cache/apt/archives", "/etc/motd", "/tmp/x/y"}
    assert removal_roots(gone) == ["/etc/motd", "/tmp/x/y", "/var/cache/apt"]


def test_a_builder_started_from_the_base_is_captured_as_it_is_without_its_change_list():
    runner = FakeRunner(BASE_ID)
    result = BuilderManager(DockerCli(runner)).squash("bld", "base:1")
    assert result == {"changed": False, "container": "bld", "squashed": False, "declared_config": [{"user": "svc"}]}
    read = next(call for call in runner.calls if call[0] == "exec")
    assert read[-1] == "rm"  # the change list goes: created and removed in the same layer
    assert not any(call[0] in ("create", "run", "commit") for call in runner.calls)


def test_in_check_mode_a_builder_from_a_cache_layer_would_get_a_copy_and_nothing_runs():
    runner = FakeRunner("sha256:" + "2" * 64)
    result = BuilderManager(DockerCli(runner), check_mode=True).squash("bld", "base:1")
    assert result == {"changed": True, "container": "bld-squash", "squashed": True, "declared_config": []}
    assert [call[:2] for call in runner.calls] == [["container", "inspect"], ["image", "inspect"]]


def test_a_builder_removed_before_the_capture_is_named():
    with pytest.raises(BuilderError, match="builder gone not found: it was removed before the capture"):
        BuilderManager(DockerCli(FakeRunner(BASE_ID))).squash("gone", "base:1")
