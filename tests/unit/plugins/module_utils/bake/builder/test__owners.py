"""Owners of builders: which ansible-playbook run a builder belongs to, and which builders a sweep takes."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import find_owner_pid
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import owner_label
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import owner_state
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import plan_sweep


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
