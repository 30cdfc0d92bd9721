"""Planners of the builder / layer cache (pure functions) and the manager against a fake docker runner."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import BuilderManager
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import cache_ref
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import find_owner_pid
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import overlay_upper_changes
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import owner_label
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import owner_state
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import parse_builder_files
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import parse_diff
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import path_in_layers
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import plan_prune
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import plan_start_layer
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import plan_sweep
from ansible_collections.immutable.infra.plugins.module_utils.bake._builder import with_parents
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCliError

FP = ["sha256:" + (c * 64) for c in "abcd"]
LAYERS = [{"role": f"r{i}", "fingerprint": fp} for i, fp in enumerate(FP)]


def hexes(*idx):
    return {FP[i].split(":")[1] for i in idx}


@pytest.mark.parametrize(
    ("available", "expected"),
    [(set(), 0), (hexes(0), 1), (hexes(0, 1, 2), 3), (hexes(0, 1, 2, 3), 4), (hexes(1, 2), 0), (hexes(0, 2), 1)],
)
def test_only_a_contiguous_prefix_of_layers_is_reused(available, expected):
    assert plan_start_layer(LAYERS, available) == expected


def test_a_layer_fingerprint_must_be_a_digest():
    with pytest.raises(BuilderError, match="not a sha256 digest"):
        plan_start_layer([{"role": "x", "fingerprint": "latest"}], set())


def test_prune_keeps_the_current_path_and_the_newest_others():
    images = [
        {"tag": h, "ref": f"c:{h}", "created": f"2026-01-0{i + 1}"} for i, h in enumerate(sorted(hexes(0, 1, 2, 3)))
    ]
    doomed = plan_prune(images, keep_fingerprints=[FP[0]], keep_newest=1)
    kept = {img["tag"] for img in images} - {img["tag"] for img in doomed}
    assert FP[0].split(":")[1] in kept
    assert len(kept) == 2  # the current path + the newest other
    newest_other = max((img for img in images if img["tag"] != FP[0].split(":")[1]), key=lambda i: i["created"])
    assert newest_other["tag"] in kept


def test_sweep_takes_only_old_labelled_builders_of_the_app():
    now = 10_000
    containers = [
        {
            "name": "old-web",
            "labels": {
                "io.immutable-infra.kind": "builder",
                "io.immutable-infra.app": "web",
                "io.immutable-infra.created": "100",
            },
        },
        {
            "name": "new-web",
            "labels": {
                "io.immutable-infra.kind": "builder",
                "io.immutable-infra.app": "web",
                "io.immutable-infra.created": "9990",
            },
        },
        {
            "name": "old-api",
            "labels": {
                "io.immutable-infra.kind": "builder",
                "io.immutable-infra.app": "api",
                "io.immutable-infra.created": "100",
            },
        },
        {"name": "someone", "labels": {"io.immutable-infra.created": "1"}},
    ]
    assert [c["name"] for c in plan_sweep(containers, now, 3600, app="web")] == ["old-web"]
    assert [c["name"] for c in plan_sweep(containers, now, 3600)] == ["old-web", "old-api"]
    assert plan_sweep(containers, now, 3600, app="web", exclude=("old-web",)) == []


class FakeDocker:
    """Records docker CLI calls; answers inspect/image ls from a tiny in-memory engine."""

    def __init__(self, images=(), containers=()):
        self.images = set(images)
        self.containers = set(containers)
        self.calls = []

    def __call__(self, cmd, **kwargs):
        args = cmd[1:]
        self.calls.append(args)
        if args[:2] == ["image", "inspect"]:
            return (
                (
                    0,
                    json.dumps([{"Id": "sha256:" + "1" * 64, "Config": {"Entrypoint": None, "Cmd": ["/bin/bash"]}}]),
                    "",
                )
                if args[2] in self.images
                else (1, "", "Error: No such image")
            )
        if args[:2] == ["container", "inspect"]:
            if args[2] in self.containers:
                return 0, json.dumps([{"State": {"Running": True}}]), ""
            return 1, "", "Error: No such container"
        if args[:2] == ["image", "ls"]:
            rows = [
                json.dumps({"Tag": ref.split(":")[1], "CreatedAt": "2026"})
                for ref in self.images
                if ref.startswith("immutable-infra-cache/")
            ]
            return 0, "\n".join(rows), ""
        if args[:1] == ["ps"]:
            return 0, "", ""
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


# -- owners: a killed run's builders are swept at once, a live run's never ----------------------------------------


def fake_proc(tmp_path, procs):
    """procs: {pid: (ppid, start, argv)} -> a /proc-like tree."""
    for pid, (ppid, start, argv) in procs.items():
        d = tmp_path / str(pid)
        d.mkdir()
        # comm with a space and a ')' to prove the parser splits after the last ')'
        fields = ["S", str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 5
        (d / "stat").write_text(f"{pid} (odd) name) " + " ".join(fields) + "\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return str(tmp_path)


PLAYBOOK = ["/venv/bin/python3", "/venv/bin/ansible-playbook", "playbooks/bake.yml"]


def test_the_owner_is_the_outermost_ansible_playbook_ancestor(tmp_path):
    proc = fake_proc(
        tmp_path,
        {
            500: (400, 11, ["/usr/bin/python3", "/tmp/AnsiballZ_bake_builder.py"]),  # the module
            400: (300, 10, ["/bin/sh", "-c", "python3"]),
            300: (200, 9, PLAYBOOK),  # the forked worker shows the same command line
            200: (100, 8, PLAYBOOK),  # ansible-playbook itself
            100: (1, 7, ["bash"]),
        },
    )
    assert find_owner_pid(500, proc=proc) == 200
    assert owner_label(200, host="ctl", proc=proc) == "ctl:200:8"
    assert find_owner_pid(100, proc=proc) is None
    assert owner_label(999, host="ctl", proc=proc) is None


def builder(name, app="web", created="9990", owner=None):
    labels = {
        "io.immutable-infra.kind": "builder",
        "io.immutable-infra.app": app,
        "io.immutable-infra.created": created,
    }
    if owner:
        labels["io.immutable-infra.owner"] = owner
    return {"name": name, "labels": labels}


def test_sweep_takes_builders_of_dead_owners_at_once_and_keeps_live_ones_whatever_their_age():
    live = {(200, "8")}

    def alive(pid, start):
        return (pid, start) in live

    containers = [
        builder("dead-new", owner="ctl:300:5"),  # killed a second ago: taken now
        builder("reused-pid", owner="ctl:200:7"),  # PID 200 runs again, but started later: the owner is gone
        builder("alive-old", created="1", owner="ctl:200:8"),  # a long bake still running: never taken
        builder("other-host-new", owner="elsewhere:300:5"),  # cannot check: age rule, too young
        builder("other-host-old", created="1", owner="elsewhere:300:5"),
        builder("unlabelled-old", created="1"),
        builder("garbled", owner="nonsense"),
    ]
    found = plan_sweep(containers, 10_000, 3600, host="ctl", alive=alive)
    assert {c["name"]: c["reason"] for c in found} == {
        "dead-new": "owner process gone",
        "reused-pid": "owner process gone",
        "other-host-old": "older than 3600s",
        "unlabelled-old": "older than 3600s",
    }


def test_owner_state_of_malformed_labels_is_unknown():
    assert owner_state(None, "ctl", lambda p, s: True) == "unknown"
    assert owner_state("ctl:abc:1", "ctl", lambda p, s: True) == "unknown"
    assert owner_state("ctl:12:", "ctl", lambda p, s: True) == "unknown"
    assert owner_state("host:with:colons:12:5", "host:with:colons", lambda p, s: False) == "dead"


def test_start_labels_the_builder_with_its_owner():
    fake = FakeDocker(images={"base:1"})
    BuilderManager(DockerCli(fake), owner="ctl:200:8").start("web", "b1", "base:1", [])
    run = next(call for call in fake.calls if call[0] == "run")
    assert "io.immutable-infra.owner=ctl:200:8" in run


def test_sweep_in_check_mode_lists_but_removes_nothing(tmp_path):
    rows = "\n".join(
        json.dumps({"Names": c["name"], "Labels": ",".join(f"{k}={v}" for k, v in c["labels"].items())})
        for c in [builder("dead", owner="ctl:300:5"), builder("young")]
    )

    class Engine(FakeDocker):
        def __call__(self, cmd, **kwargs):
            if cmd[1:2] == ["ps"]:
                self.calls.append(cmd[1:])
                return 0, rows, ""
            return super().__call__(cmd, **kwargs)

    fake = Engine()
    manager = BuilderManager(DockerCli(fake), check_mode=True, clock=lambda: 10_000, host="ctl", proc=str(tmp_path))
    result = manager.sweep(min_age=3600)
    assert result == {"changed": True, "removed": ["dead"], "reasons": {"dead": "owner process gone"}}
    assert not any(call[:1] == ["rm"] for call in fake.calls)
    manager.check_mode = False
    manager.sweep(min_age=3600)
    assert ["rm", "-f", "dead"] in fake.calls and ["rm", "-f", "young"] not in fake.calls


class FakeDockerWithEntrypoint(FakeDocker):
    def __call__(self, cmd, **kwargs):
        rc, out, err = super().__call__(cmd, **kwargs)
        if cmd[1:3] == ["image", "inspect"] and rc == 0:
            image = json.loads(out)
            image[0]["Config"]["Entrypoint"] = ["/docker-entrypoint.sh"]
            out = json.dumps(image)
        return rc, out, err


def test_a_base_with_an_entrypoint_keeps_it_for_the_capture_and_the_builder_sleeps():
    fake = FakeDockerWithEntrypoint(images={"base:1"})
    result = BuilderManager(DockerCli(fake)).start("web", "b1", "base:1", [])
    run = next(call for call in fake.calls if call[0] == "run")
    assert run[run.index("--entrypoint") + 1] == "sleep" and run[-1] == "infinity"
    assert result["base_config"]["entrypoint"] == ["/docker-entrypoint.sh"]


def test_docker_diff_output_becomes_paths_and_parents_come_first():
    out = "C /etc\nA /etc/app\nA /etc/app/conf\nD /var/lib/apt/lists/x\n\n"
    assert parse_diff(out) == ["/etc", "/etc/app", "/etc/app/conf", "/var/lib/apt/lists/x"]
    assert with_parents(["/opt/app/conf/app.conf", "/etc"]) == [
        "/etc",
        "/opt",
        "/opt/app",
        "/opt/app/conf",
        "/opt/app/conf/app.conf",
    ]


def test_sweep_never_takes_a_deployed_container_that_kept_its_builders_labels():
    labels = {
        "io.immutable-infra.kind": "builder",
        "io.immutable-infra.app": "web",
        "io.immutable-infra.created": "100",
        "io.immutable-infra.owner": "vm:4242:77",
    }
    deployed = {"name": "web-prod-blue", "labels": dict(labels, **{"immutable.infra.colour": "blue"})}
    orphan = {"name": "bake-web-1", "labels": labels}
    taken = plan_sweep([deployed, orphan], 10_000, 3600, app="web", host="vm", alive=lambda pid, start: False)
    assert [item["name"] for item in taken] == ["bake-web-1"]


class FakeDockerForRemove(FakeDocker):
    """container inspect of several names answers like docker: the names found, rc 1 when one is missing."""

    def __init__(self, containers, inspect_error=None):
        super().__init__(containers=containers)
        self.inspect_error = inspect_error

    def __call__(self, cmd, **kwargs):
        args = cmd[1:]
        if args[:2] == ["container", "inspect"] and "--format" in args:
            self.calls.append(args)
            if self.inspect_error:
                return 1, "", self.inspect_error
            names = args[4:]
            found = [f"/{name}" for name in names if name in self.containers]
            missing = [f"Error: No such container: {name}" for name in names if name not in self.containers]
            return (1 if missing else 0), "\n".join(found), "\n".join(missing)
        return super().__call__(cmd, **kwargs)


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
    fake = FakeDockerForRemove(existing)
    result = BuilderManager(DockerCli(fake)).remove("bake-web-b1")
    assert result == {"changed": bool(removed), "container": "bake-web-b1", "removed": removed}
    rm_calls = [call for call in fake.calls if call[0] == "rm"]
    assert rm_calls == ([["rm", "--force", *removed]] if removed else [])


def test_remove_in_check_mode_names_what_it_would_remove_and_removes_nothing():
    fake = FakeDockerForRemove({"bake-web-b1"})
    result = BuilderManager(DockerCli(fake), check_mode=True).remove("bake-web-b1")
    assert result["removed"] == ["bake-web-b1"] and result["changed"]
    assert not any(call[0] == "rm" for call in fake.calls)


def test_remove_reports_a_docker_failure_instead_of_taking_it_for_absence():
    fake = FakeDockerForRemove({"bake-web-b1"}, inspect_error="Cannot connect to the Docker daemon")
    with pytest.raises(DockerCliError, match="Cannot connect to the Docker daemon"):
        BuilderManager(DockerCli(fake)).remove("bake-web-b1")


def test_builder_files_give_the_change_list_and_the_declared_configs_in_name_order():
    output = '["/etc/a", "/opt/x"]\0/etc/immutable-infra/image-config.d/50-web.json\n{"cmd": ["nginx"]}\n' + (
        '\0/etc/immutable-infra/image-config.d/10-base.json\n{"ports": ["8080/tcp"], "cmd": ["sh"]}'
    )
    recorded, configs = parse_builder_files(output)
    assert recorded == ["/etc/a", "/opt/x"]
    assert configs == [{"ports": ["8080/tcp"], "cmd": ["sh"]}, {"cmd": ["nginx"]}]  # 10-base before 50-web
    assert parse_builder_files("") == (None, [])


@pytest.mark.parametrize(
    "content, message",
    [("{nope", "50-web.json in the builder is not valid JSON"), ('["cmd"]', "50-web.json in the builder must hold")],
)
def test_a_broken_declared_config_names_its_file(content, message):
    with pytest.raises(BuilderError, match=message):
        parse_builder_files("\0/etc/immutable-infra/image-config.d/50-web.json\n" + content)


def test_the_builder_files_script_reads_removes_and_separates_like_the_parser(tmp_path):
    """READ_BUILDER_FILES run by a real sh on a directory tree standing in for the builder's root."""
    import subprocess

    from ansible_collections.immutable.infra.plugins.module_utils.bake import _builder

    root = tmp_path / "root"
    (root / "etc/immutable-infra/image-config.d").mkdir(parents=True)
    (root / ".immutable-infra-changes").write_text('["/srv"]')
    (root / "etc/immutable-infra/image-config.d/20-b.json").write_text('{"user": "svc"}')
    (root / "etc/immutable-infra/image-config.d/10-a.json").write_text('{"workdir": "/srv"}\n')
    script = _builder.READ_BUILDER_FILES.replace(" /", f" {root}/").replace("=/", f"={root}/")
    out = subprocess.run(["sh", "-c", script, "sh", "rm"], capture_output=True, check=True).stdout.decode()
    assert parse_builder_files(out) == (["/srv"], [{"workdir": "/srv"}, {"user": "svc"}])
    assert not (root / ".immutable-infra-changes").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    script = _builder.READ_BUILDER_FILES.replace(" /", f" {empty}/").replace("=/", f"={empty}/")
    out = subprocess.run(["sh", "-c", script, "sh"], capture_output=True, check=True).stdout.decode()
    assert parse_builder_files(out) == (None, [])


# -- overlay2 layer directories, as the engine stores them (whiteouts and opaque directories need root) -------------


def _whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))  # a character device 0/0: overlayfs' whiteout


def _opaque(path):
    os.makedirs(path, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _file(path, content="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)


@pytest.fixture
def layers(tmp_path):
    """Three layers, top first: bottom holds a small tree; mid removes /etc/motd and replaces /usr/share/doc/apt;
    top adds /opt/new."""
    if os.geteuid() != 0:
        pytest.fail("whiteouts and trusted.overlay xattrs need root, as the engine's own layer directories do")
    top, mid, bottom = (str(tmp_path / name) for name in ("top", "mid", "bottom"))
    for path in ("etc/motd", "etc/issue", "usr/share/doc/apt/copyright", "usr/lib/x", "bin/tool"):
        _file(os.path.join(bottom, path))
    os.symlink("usr/lib", os.path.join(bottom, "lib"))
    _whiteout(os.path.join(mid, "etc/motd"))
    _opaque(os.path.join(mid, "usr/share/doc/apt"))
    _file(os.path.join(mid, "usr/share/doc/apt/new"))
    _file(os.path.join(top, "opt/new"))
    return [top, mid, bottom]


def test_path_in_layers_looks_up_as_overlayfs_does(layers):
    assert path_in_layers(layers, "/etc/issue") is True  # only in the bottom layer
    assert path_in_layers(layers, "/etc/motd") is False  # whited out above
    assert path_in_layers(layers, "/etc/motd/below") is False
    assert path_in_layers(layers, "/usr/share/doc/apt/copyright") is False  # hidden by the opaque directory
    assert path_in_layers(layers, "/usr/share/doc/apt/new") is True
    assert path_in_layers(layers, "/usr/share/doc/apt") is True
    assert path_in_layers(layers, "/opt/new") is True and path_in_layers(layers, "/opt") is True
    assert path_in_layers(layers, "/usr/lib/x") is True
    assert path_in_layers(layers, "/bin/tool/x") is False  # a file where a directory would be
    assert path_in_layers(layers, "/nowhere") is False
    assert path_in_layers(layers, "/lib") is True  # the symlink itself
    assert path_in_layers(layers, "/lib/x") is None  # through a symlink: only the container can tell
    assert path_in_layers(layers[1:], "/opt/new") is False  # without the top layer
    assert path_in_layers(layers, "/etc/../etc/issue") is None  # the list comes from the builder: stay in the layers


def test_overlay_upper_changes_lists_entries_and_whiteouts_and_declines_opaque_directories(layers, tmp_path):
    top, mid, _bottom = layers
    assert sorted(overlay_upper_changes(top)) == ["/opt", "/opt/new"]
    assert overlay_upper_changes(mid) is None  # opaque: docker diff must list the hidden entries
    upper = str(tmp_path / "upper")
    _file(os.path.join(upper, "etc/app.conf"))
    _whiteout(os.path.join(upper, "etc/motd"))
    os.symlink("/srv/data", os.path.join(upper, "data"))
    assert sorted(overlay_upper_changes(upper)) == ["/data", "/etc", "/etc/app.conf", "/etc/motd"]
    _file(os.path.join(upper, "etc/.wh.other"))  # aufs-style whiteout file: not overlay2's format
    assert overlay_upper_changes(upper) is None
    assert overlay_upper_changes(str(tmp_path / "absent")) is None
