"""Promotion hooks and the analysis abort on a fleet environment (docs/progressive.md "Hooks on fleets",
docs/fleet.md): dev is an inventory group of two hosts of the session fleet (tests/integration/fleet_hosts.py);
the webhooks are the loopback HTTP server of test_hooks.py, the task-file hooks run on the controller.

One chain for the whole story, so the hosts are set up once: a failing pre-hook touches no host, a failing
post-hook puts both hosts back and runs the on_rollback hook once, passing hooks receive the documented JSON with
the hosts, rollback.yml runs the on_rollback hook once, and an analysis that aborts on the first host is recorded
in the ledger as an abort naming that host, also when promotion_max_fail_percentage lets the other host carry on.
"""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from test_fleet import flat
from test_fleet import fleet_chain  # noqa: F401  # pylint: disable=unused-import
from test_fleet import images  # noqa: F401  # pylint: disable=unused-import
from test_fleet import show
from test_hooks import SCHEMA
from test_hooks import task_file
from test_hooks import webhooks  # noqa: F401  # pylint: disable=unused-import

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]


def set_env(c, env: str, **settings) -> None:
    """Set (or with None remove) keys of promotion_environments.<env> in the chain's inventory."""
    inventory = yaml.safe_load(c.inventory.read_text())
    envs = inventory["all"]["vars"]["promotion_environments"]
    for key, value in settings.items():
        if value is None:
            envs[env].pop(key, None)
        else:
            envs[env][key] = value
    c.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))


def hosts_state(c, env: str) -> dict:
    """Per host: the app's containers (name -> image, running) and what the router serves."""
    return {host.name: (c.containers(host, env), c.served(host, env)) for host in c.groups[env]}


def recorded_abort(c, res, ledger_before: dict, artifact: str, host: str) -> dict:
    """The run said it recorded the abort of `artifact` by `host`'s analysis, and the ledger's one new entry is that
    abort, with live and previous as before. Returns the entry."""
    assert "the abort is recorded in the ledger" in flat(res.stdout), show(res)
    assert f"with the analysis on {host}" in flat(res.stdout), show(res)
    entry = c.entry("dev")
    assert (entry["live"], entry["previous"]) == (ledger_before["live"], ledger_before["previous"])
    assert len(entry["history"]) == len(ledger_before["history"]) + 1
    abort = entry["history"][-1]
    assert (abort["action"], abort["id"]) == ("abort", artifact), abort
    assert abort["reason"].startswith(f"aborted by its analysis on {host}:"), abort
    return abort


@pytest.mark.slow
def test_hooks_and_the_analysis_abort_on_a_two_host_fleet(fleet_chain, fleet, images, webhooks, tmp_path):  # noqa: F811
    h1, h2 = fleet.hosts[1], fleet.hosts[2]
    c = fleet_chain({"dev": [h1, h2]})
    v1, v2 = images["refs"]["v1"], images["refs"]["v2"]
    url, received = webhooks
    hosts = ["h1", "h2"]
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    before, ledger = hosts_state(c, "dev"), c.ledger_path.read_bytes()
    pre_payload = {"schema": SCHEMA, "hook": "pre", "action": "deploy", "app": c.app, "env": "dev",
                   "from_env": None, "artifact": v2, "previous_artifact": v1, "forced": False, "reason": None,
                   "hosts": hosts}  # fmt: skip

    # 1. a failing pre-hook (after a webhook that passed): no host touched, the ledger's bytes as before, lock freed
    pre_file = task_file(tmp_path, "pre", fail="change freeze")
    set_env(c, "dev", hooks={"pre": [{"webhook": f"{url}/ok/pre"}, {"tasks": pre_file}]})
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode != 0, show(res)
    assert f'pre-promotion hook 2 (tasks {pre_file}) failed: task "The smoke test": change freeze' in flat(res.stdout)
    assert "no host of env_dev (h1, h2) was touched and the lock was released" in flat(res.stdout), show(res)
    assert "Put the artifact live on this host" not in res.stdout
    assert hosts_state(c, "dev") == before and c.ledger_path.read_bytes() == ledger
    assert not c.lock_path("dev").exists()
    assert [(item["path"], item["json"]) for item in received] == [("/ok/pre", pre_payload)]
    assert json.loads((tmp_path / "pre.json").read_text()) == pre_payload  # the task file ran on the controller

    # 2. a failing post-hook: both hosts had switched; every host goes back, the on_rollback hook runs once, nothing
    # is recorded (a fleet records only after its post hooks passed)
    received.clear()
    post_file = task_file(tmp_path, "post", fail="error rate 12% after the switch")
    hooks = {"pre": [{"webhook": f"{url}/ok/pre"}], "post": [{"tasks": post_file}],
             "on_rollback": [{"webhook": f"{url}/ok/rollback"}]}  # fmt: skip
    set_env(c, "dev", hooks=hooks)
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode != 0, show(res)
    failure = f'post-promotion hook 1 (tasks {post_file}) failed: task "The smoke test": error rate 12%'
    failure += " after the switch"
    assert failure in flat(res.stdout), show(res)
    assert f"every host of dev was put back on {v1}: h1, h2; the ledger was not updated" in flat(res.stdout)
    assert json.loads((tmp_path / "post.json").read_text()) == dict(pre_payload, hook="post")
    assert c.ledger_path.read_bytes() == ledger and not c.lock_path("dev").exists()
    for host in (h1, h2):
        assert c.served(host, "dev") == "v1" and c.live_image(host, "dev") == images["ids"]["v1"], host
    rollback_payload = dict(pre_payload, hook="on_rollback", action="rollback", artifact=v1, previous_artifact=v2,
                            reason=f"post-promotion hook failed: {failure}")  # fmt: skip
    assert [(item["path"], item["json"]) for item in received] == [
        ("/ok/pre", pre_payload),
        ("/ok/rollback", rollback_payload),
    ]

    # 3. passing pre and post webhooks: the documented JSON with the hosts, then the record with both hooks
    received.clear()
    set_env(c, "dev", hooks=dict(hooks, post=[{"webhook": f"{url}/ok/post"}]))
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode == 0, show(res)
    assert [(item["path"], item["json"]) for item in received] == [
        ("/ok/pre", pre_payload),
        ("/ok/post", dict(pre_payload, hook="post")),
    ]
    entry = c.entry("dev")
    assert entry["live"] == v2 and entry["history"][-1]["hosts"] == hosts
    assert [(h["hook"], h["ok"]) for h in entry["history"][-1]["evidence"]["hooks"]] == [("pre", True), ("post", True)]

    # 4. rollback.yml on the fleet: the on_rollback hook once, after the record, naming the hosts
    received.clear()
    res = c.run("rollback.yml", env="dev", reason="manual: latency")
    assert res.returncode == 0, show(res)
    assert c.entry("dev")["live"] == v1
    assert [(item["path"], item["json"]) for item in received] == [
        ("/ok/rollback", dict(rollback_payload, reason="manual: latency")),
    ]

    # 5. the analysis aborts on h1 (an idle window: fewer requests than min_requests): h1 is back on v1, h2 never
    # touched, the on_rollback hook runs once, the ledger records the abort with h1's figures; live stays v1
    received.clear()
    analysis = {"window": 1, "min_requests": 5}
    set_env(c, "dev", hooks={"on_rollback": [{"webhook": f"{url}/ok/rollback"}]}, analysis=analysis)
    ledger_before, h2_before = c.entry("dev"), c.containers(h2, "dev")
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode != 0, show(res)
    out = flat(res.stdout)
    assert "host h1 failed (analysis at 100% of traffic on" in out and "Never touched: h2" in out, show(res)
    abort = recorded_abort(c, res, ledger_before, v2, "h1")
    assert abort["verified"] is False
    assert abort["reason"].startswith("aborted by its analysis on h1: analysis at 100% of traffic on")
    verdict = abort["evidence"]["analysis"][-1]
    assert (verdict["host"], verdict["verdict"], verdict["step"]) == ("h1", "inconclusive", 100)
    assert verdict["requests"] < 5
    assert c.served(h1, "dev") == "v1" and c.containers(h2, "dev") == h2_before
    assert not c.lock_path("dev").exists()
    assert [item["json"]["hook"] for item in received] == ["on_rollback"]
    assert received[0]["json"]["reason"].startswith("fleet rollout failed: ")
    assert received[0]["json"]["hosts"] == hosts

    # 6. promotion_max_fail_percentage 50, both hosts in one batch: h1 gets no request in its window (its analysis
    # aborts, bg_swap puts it back), h2 answers requests all along (passes, keeps v2). The record step refuses the
    # partial rollout and records h1's abort; live stays v1
    set_env(c, "dev", hooks=None, analysis={"window": 3, "min_requests": 5})
    ledger_before = c.entry("dev")
    stop = threading.Event()

    def requests_to_h2():
        while not stop.is_set():
            try:
                c.served(h2, "dev")
            except Exception:  # noqa: BLE001 - a request during the switch may fail; the next one goes on
                pass

    load = threading.Thread(target=requests_to_h2, daemon=True)
    load.start()
    try:
        res = c.run("deploy.yml", env="dev", artifact=v2, promotion_max_fail_percentage=50, promotion_batch=2)
    finally:
        stop.set()
        load.join(timeout=30)
    assert res.returncode != 0, show(res)
    out = flat(res.stdout)
    assert "h1 of 2 hosts did not switch" in out and "switched: h2" in out, show(res)
    abort = recorded_abort(c, res, ledger_before, v2, "h1")
    assert {verdict["host"] for verdict in abort["evidence"]["analysis"]} == {"h1"}
    assert [c.served(host, "dev") for host in (h1, h2)] == ["v1", "v2"]
    assert not c.lock_path("dev").exists()
