"""BuilderManager against the docker CLI implementation of the engine interface with a fake runner."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import cache_ref
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import CHANGES_FILE
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._manager import BuilderManager
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError

FP = ["sha256:" + (c * 64) for c in "abcd"]
LAYERS = [{"role": f"r{i}", "fingerprint": fp} for i, fp in enumerate(FP)]


class FakeDocker:
    """run_command stand-in: records docker CLI calls, answers from a tiny in-memory engine."""

    def __init__(self, images=(), containers=(), entrypoint=None, rows=()):
        self.images = set(images)
        self.containers = set(containers)
        self.entrypoint = entrypoint
        self.rows = list(rows)  # `docker ps` rows
        self.inspect_error = None
        self.calls = []
        self.data = []

    def __call__(self, cmd, **kwargs):
        args = cmd[1:]
        self.calls.append(args)
        self.data.append(kwargs.get("data"))
        if args[:2] == ["image", "inspect"]:
            if args[2] not in self.images:
                return 1, "", "Error: No such image"
            config = {"Entrypoint": self.entrypoint, "Cmd": ["/bin/bash"]}
            return 0, json.dumps([{"Id": "sha256:" + "1" * 64, "Config": config}]), ""
        if args[:2] == ["container", "inspect"]:
            if self.inspect_error:
                return 1, "", self.inspect_error
            if args[2] in self.containers:
                return 0, json.dumps([{"State": {"Running": True}}]), ""
            return 1, "", "Error: No such container"
        if args[:2] == ["image", "ls"]:
            rows = [
                json.dumps(
                    {
                        "Repository": ref.split(":")[0],
                        "Tag": ref.split(":")[1],
                        "CreatedAt": "2026-12-01 10:00:00 +0000 UTC",
                    }
                )
                for ref in self.images
                if ref.startswith("immutable-infra-cache/")
            ]
            return 0, "\n".join(rows), ""
        if args[:1] == ["ps"]:
            return 0, "\n".join(self.rows), ""
        if args[:1] == ["diff"]:
            return 0, "C /etc\nA /etc/app.conf\n", ""
        if args[:1] == ["exec"]:
            return 0, '["/opt", "/opt/x"]', ""
        if args[:1] == ["commit"]:
            return 0, "sha256:committed\n", ""
        return 0, "", ""


def test_start_uses_the_deepest_cached_layer_and_labels_the_builder():
    fake = FakeDocker(images={"base:1", cache_ref("web", FP[0]), cache_ref("web", FP[1])})
    result = BuilderManager(DockerCli(fake), clock=lambda: 1234).start("web", "b1", "base:1", LAYERS[:3])
    assert result["changed"] and result["reused_layers"] == 2
    assert result["reused_roles"] == ["r0", "r1"]
    assert result["base_config"] == {"entrypoint": [], "cmd": ["/bin/bash"]}  # not the builder's sleep
    run = next(call for call in fake.calls if call[0] == "run")
    assert cache_ref("web", FP[1]) in run
    # no --entrypoint override: a commit would carry it into the artifact (docker cannot reset it to empty)
    assert "--entrypoint" not in run and run[-2:] == ["sleep", "infinity"]
    assert "io.immutable-infra.bake-id=b1" in run and "io.immutable-infra.created=1234" in run


def test_start_in_check_mode_runs_nothing():
    fake = FakeDocker(images={"base:1"})
    result = BuilderManager(DockerCli(fake), check_mode=True).start("web", "b1", "base:1", LAYERS)
    assert result["changed"] and result["start_image"] == "base:1"
    assert not any(call[0] == "run" for call in fake.calls)


def test_start_with_a_missing_base_image_names_the_fix():
    with pytest.raises(BuilderError, match="base image 'nope:1' not found.*bake_base_image"):
        BuilderManager(DockerCli(FakeDocker())).start("web", "b1", "nope:1", LAYERS)


def test_a_running_builder_is_not_started_twice():
    fake = FakeDocker(images={"base:1"}, containers={"bake-web-b1"})
    assert BuilderManager(DockerCli(fake)).start("web", "b1", "base:1", [])["changed"] is False


def test_invalid_app_names_are_refused():
    with pytest.raises(BuilderError, match="app name 'Web App' is invalid"):
        BuilderManager(DockerCli(FakeDocker())).start("Web App", "b1", "base:1", [])


def test_start_labels_the_builder_with_its_owner():
    fake = FakeDocker(images={"base:1"})
    BuilderManager(DockerCli(fake), owner="ctl:200:8").start("web", "b1", "base:1", [])
    run = next(call for call in fake.calls if call[0] == "run")
    assert "io.immutable-infra.owner=ctl:200:8" in run


def test_a_base_with_an_entrypoint_keeps_it_for_the_capture_and_the_builder_sleeps():
    fake = FakeDocker(images={"base:1"}, entrypoint=["/docker-entrypoint.sh"])
    result = BuilderManager(DockerCli(fake)).start("web", "b1", "base:1", [])
    run = next(call for call in fake.calls if call[0] == "run")
    assert run[run.index("--entrypoint") + 1] == "sleep" and run[-1] == "infinity"
    assert result["base_config"]["entrypoint"] == ["/docker-entrypoint.sh"]


def test_create_only_creates_without_starting():
    fake = FakeDocker(images={"base:1"})
    BuilderManager(DockerCli(fake)).start("web", "b1", "base:1", [], name="copy", use_cache=False, create_only=True)
    assert any(call[0] == "create" for call in fake.calls) and not any(call[0] == "run" for call in fake.calls)


def test_start_with_prune_removes_the_cache_images_off_the_path_in_the_same_listing():
    images = {"base:1"} | {cache_ref("web", fp) for fp in FP}
    fake = FakeDocker(images=images)
    result = BuilderManager(DockerCli(fake)).start("web", "b1", "base:1", LAYERS[:2], keep=0)
    assert sorted(result["pruned"]) == sorted(cache_ref("web", fp) for fp in FP[2:])
    assert [call for call in fake.calls if call[:2] == ["image", "ls"]] == [
        ["image", "ls", "--no-trunc", "--format", "{{json .}}", "--filter", "label=io.immutable-infra.kind=cache",
         "--filter", "reference=immutable-infra-cache/web"],
    ]  # fmt: skip


def test_a_saved_layer_carries_the_change_list_and_the_cache_labels():
    fake = FakeDocker(images={"base:1"})
    result = BuilderManager(DockerCli(fake), clock=lambda: 77).save_layer("web", "bld", "r0", FP[0], "b1")
    assert result == {"changed": True, "image": cache_ref("web", FP[0])}
    write = fake.calls.index(["exec", "-i", "bld", "sh", "-c", f"cat > {CHANGES_FILE}"])
    # the builder's own changes (docker diff) and the list of the layer below, without the list file itself
    assert json.loads(fake.data[write]) == ["/etc", "/etc/app.conf", "/opt", "/opt/x"]
    commit = next(call for call in fake.calls if call[0] == "commit")
    assert "LABEL io.immutable-infra.kind=cache" in commit and "LABEL io.immutable-infra.created=77" in commit
    assert ["tag", "sha256:committed", cache_ref("web", FP[0])] in fake.calls
    again = FakeDocker(images={cache_ref("web", FP[0])})
    assert BuilderManager(DockerCli(again)).save_layer("web", "bld", "r0", FP[0], "b1")["changed"] is False


@pytest.mark.parametrize(
    "existing, removed",
    [
        ({"bake-web-b1", "bake-web-b1-squash"}, ["bake-web-b1", "bake-web-b1-squash"]),
        ({"bake-web-b1"}, ["bake-web-b1"]),
        ({"bake-web-b1-squash"}, ["bake-web-b1-squash"]),
        (set(), []),
    ],
)
def test_remove_takes_the_builder_and_its_squashed_copy_in_one_call(existing, removed):
    fake = FakeDocker(containers=existing)
    result = BuilderManager(DockerCli(fake)).remove("bake-web-b1")
    assert result == {"changed": bool(removed), "container": "bake-web-b1", "removed": removed}
    rm_calls = [call for call in fake.calls if call[0] == "rm"]
    assert rm_calls == ([["rm", "--force", *removed]] if removed else [])


def test_remove_in_check_mode_names_what_it_would_remove_and_removes_nothing():
    fake = FakeDocker(containers={"bake-web-b1"})
    result = BuilderManager(DockerCli(fake), check_mode=True).remove("bake-web-b1")
    assert result["removed"] == ["bake-web-b1"] and result["changed"]
    assert not any(call[0] == "rm" for call in fake.calls)


def test_remove_reports_a_docker_failure_instead_of_taking_it_for_absence():
    fake = FakeDocker(containers={"bake-web-b1"})
    fake.inspect_error = "Cannot connect to the Docker daemon"
    with pytest.raises(DockerError, match="Cannot connect to the Docker daemon"):
        BuilderManager(DockerCli(fake)).remove("bake-web-b1")


def builder_row(name, **labels):
    labels = {"io.immutable-infra.kind": "builder", "io.immutable-infra.app": "web", **labels}
    return json.dumps({"Names": name, "Labels": ",".join(f"{k}={v}" for k, v in labels.items())})


def test_sweep_in_check_mode_lists_but_removes_nothing(tmp_path):
    rows = [
        builder_row("dead", **{"io.immutable-infra.created": "9990", "io.immutable-infra.owner": "ctl:300:5"}),
        builder_row("young", **{"io.immutable-infra.created": "9990"}),
    ]
    fake = FakeDocker(rows=rows)
    manager = BuilderManager(DockerCli(fake), check_mode=True, clock=lambda: 10_000, host="ctl", proc=str(tmp_path))
    result = manager.sweep(min_age=3600)
    assert result == {"changed": True, "removed": ["dead"], "reasons": {"dead": "owner process gone"}}
    assert not any(call[:1] == ["rm"] for call in fake.calls)
    manager.check_mode = False
    manager.sweep(min_age=3600)
    assert ["rm", "-f", "dead"] in fake.calls and ["rm", "-f", "young"] not in fake.calls
