"""Promotion hooks end to end (docs/progressive.md, "Hooks"): deploy.yml, promote.yml and rollback.yml with
`promotion_environments.<env>.hooks` against the real Docker Engine, the registry and one nginx per environment,
reusing test_promotion.py's two baked artifacts (a cache hit) and its Chain. The webhooks are a small HTTP server
on 127.0.0.1 in a thread of the test.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_playbook
from test_promotion import PLAYBOOKS
from test_promotion import artifacts  # noqa: F401  # pylint: disable=unused-import
from test_promotion import chain  # noqa: F401  # pylint: disable=unused-import
from test_promotion import last_line
from test_promotion import registry_env  # noqa: F401  # pylint: disable=unused-import
from test_promotion import sh
from test_promotion import show

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

SECRET = "hook-token-5b1f0c"
SCHEMA = "immutable.infra/promotion-hook/1"


class Hooks(BaseHTTPRequestHandler):
    """POST /ok/<name> answers 204, /fail/<name> 500; every request is kept (path, headers, JSON body)."""

    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
        status, text = (500, b"release blocked by the change calendar") if self.path.startswith("/fail") else (204, b"")
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


@pytest.fixture
def webhooks():
    Hooks.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", Hooks.received
    finally:
        httpd.shutdown()
        httpd.server_close()


def set_hooks(c, env: str, hooks) -> None:
    """Write promotion_environments.<env>.hooks into the chain's inventory."""
    path = c.inventory / "group_vars" / "all" / "promotion.yml"
    settings = json.loads(path.read_text())
    if hooks is None:
        settings["promotion_environments"][env].pop("hooks", None)
    else:
        settings["promotion_environments"][env]["hooks"] = hooks
    path.write_text(json.dumps(settings, indent=1))


def snapshot(c, env: str) -> dict:
    """What a refused promotion must not change: the ledger's bytes, the router's files, the app's containers."""
    router = Path(c.envs[env]["router_dir"])
    files = {
        str(path.relative_to(router)): path.read_bytes()
        for path in sorted(router.rglob("*"))
        if path.is_file()
        and path.suffix not in (".pid", ".log")
        and "logs" not in path.parts
        and "temp" not in path.parts
    }
    containers = sh(
        "docker",
        "ps",
        "--all",
        "--filter",
        f"name=^{c.app}-{env}-",
        "--format",
        "{{.ID}} {{.Names}} {{.Image}} {{.State}}",
    ).stdout
    return {"ledger": c.ledger_path.read_bytes(), "router": files, "containers": sorted(containers.splitlines())}


def task_file(root: Path, name: str, fail: str | None = None) -> str:
    """A user's hook task file: writes the promotion_hook variable it got to <name>.json, then fails if asked."""
    path = root / f"{name}.yml"
    tasks = [
        {
            "name": f"Keep what the {name} hook got",
            "ansible.builtin.copy": {"content": "{{ promotion_hook | to_json }}", "dest": str(root / f"{name}.json")},
        }
    ]
    if fail:
        tasks.append({"name": "The smoke test", "ansible.builtin.fail": {"msg": fail}})
    path.write_text(json.dumps(tasks))
    return str(path)


def payload(**fields) -> dict:
    base = {"schema": SCHEMA, "forced": False, "reason": None, "from_env": None, "hosts": None}
    base.update(fields)
    return base


def test_pre_post_and_rollback_hooks(chain, artifacts, webhooks, tmp_path):  # noqa: F811
    one, two = artifacts
    url, received = webhooks
    c = chain()
    res = c.stage_two_in_dev(two)
    # without hooks, the hooks' plays match no host
    assert "skipping: no hosts matched" in res.stdout, show(res)
    assert received == []
    before = snapshot(c, "staging")
    promote = {"from": "dev", "to": "staging"}
    auth = {"Authorization": f"Bearer {SECRET}"}

    # 1. a failing task-file pre-hook (after a webhook that passed): nothing changed, the message names the hook
    pre_file = task_file(tmp_path, "pre", fail="smoke test: /login answers 503")
    set_hooks(c, "staging", {"pre": [{"webhook": f"{url}/ok/pre", "headers": auth}, {"tasks": pre_file}]})
    res = c.run("promote.yml", **promote)
    assert res.returncode != 0
    assert f"pre-promotion hook 2 (tasks {pre_file}) failed" in res.stdout, show(res)
    assert "smoke test: /login answers 503" in res.stdout
    assert "nothing was switched or recorded" in res.stdout
    assert SECRET not in res.stdout + res.stderr
    assert snapshot(c, "staging") == before
    expected = payload(
        hook="pre", action="promote", app=c.app, env="staging", from_env="dev", artifact=two["id"],
        previous_artifact=one["id"],
    )  # fmt: skip
    assert [(item["path"], item["json"]) for item in received] == [("/ok/pre", expected)]
    assert received[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert received[0]["headers"]["Content-Type"] == "application/json"
    assert json.loads((tmp_path / "pre.json").read_text()) == expected

    # 2. a webhook answering 500 as a pre-hook: stopped, named, nothing changed
    # the token is in the URL's path too, as chat webhooks carry it
    set_hooks(c, "staging", {"pre": [{"webhook": f"{url}/fail/{SECRET}", "headers": auth, "timeout": 5}]})
    # -vvv: every result in full (invocations, the gate's settings): the header value and the URL's path beyond
    # its first segment are still never shown
    res = run_playbook(PLAYBOOKS / "promote.yml", promote, "-i", str(c.inventory), "-vvv", env=c.extra_env)
    assert res.returncode != 0
    assert f"pre-promotion hook 1 (webhook {url}/fail/…) failed: webhook {url}/fail/… answered HTTP 500" in (
        res.stdout
    ), show(res)
    assert "release blocked by the change calendar" in res.stdout
    assert SECRET not in res.stdout + res.stderr
    assert snapshot(c, "staging") == before

    # 3. a failing post-hook: the promotion switched and was recorded, then rolled back to the old artifact
    received.clear()
    post_file = task_file(tmp_path, "post", fail="error rate 12% after the switch")
    set_hooks(
        c,
        "staging",
        {
            "pre": [{"webhook": f"{url}/ok/pre"}],
            "post": [{"tasks": post_file}],
            "on_rollback": [{"webhook": f"{url}/ok/rollback", "headers": auth}],
        },
    )
    res = c.run("promote.yml", **promote)
    assert res.returncode != 0
    failure = (
        f'post-promotion hook 1 (tasks {post_file}) failed: task "The smoke test": error rate 12% after the switch'
    )
    assert failure in " ".join(res.stdout.split()), show(res)
    reason = f"post-promotion hook failed: {failure}"
    assert f"staging was rolled back to {one['id']} (recorded in the ledger as a rollback)" in " ".join(
        res.stdout.split()
    )
    assert json.loads((tmp_path / "post.json").read_text()) == dict(expected, hook="post")
    entry = c.entry("staging")
    assert (entry["live"], entry["previous"]) == (one["id"], two["id"])
    promoted, rolled_back = entry["history"][-2:]
    assert (promoted["action"], promoted["id"]) == ("promote", two["id"])
    assert (rolled_back["action"], rolled_back["id"]) == ("rollback", one["id"])
    assert rolled_back["reason"] == reason
    assert one["digest"] in c.running_digests("staging")
    assert c.served("staging")[0] == 200
    # the hooks' results are in the ledger's evidence: the pre-hook in the promotion, the failed post-hook in the
    # rollback
    assert [(h["hook"], h["ok"]) for h in promoted["evidence"]["hooks"]] == [("pre", True)]
    assert [(h["hook"], h["ok"]) for h in rolled_back["evidence"]["hooks"]] == [("post", False)]
    rollback_payload = payload(
        hook="on_rollback", action="rollback", app=c.app, env="staging", artifact=one["id"],
        previous_artifact=two["id"], reason=rolled_back["reason"],
    )  # fmt: skip
    assert [(item["path"], item["json"]) for item in received] == [
        ("/ok/pre", dict(expected, hook="pre")),
        ("/ok/rollback", rollback_payload),
    ]

    # 4. post-hooks that pass, then rollback.yml runs the on_rollback hooks
    received.clear()
    set_hooks(
        c,
        "staging",
        {"post": [{"webhook": f"{url}/ok/post"}], "on_rollback": [{"webhook": f"{url}/ok/rollback", "headers": auth}]},
    )
    res = c.run("promote.yml", **promote)
    assert res.returncode == 0, show(res)
    assert two["id"] in last_line(res, c.app, "staging")
    assert c.entry("staging")["live"] == two["id"]
    res = c.run("rollback.yml", env="staging", reason="manual: latency")
    assert res.returncode == 0, show(res)
    assert c.entry("staging")["live"] == one["id"]
    assert SECRET not in res.stdout + res.stderr
    assert [(item["path"], item["json"]) for item in received] == [
        ("/ok/post", dict(expected, hook="post")),
        (
            "/ok/rollback",
            payload(
                hook="on_rollback", action="rollback", app=c.app, env="staging", artifact=one["id"],
                previous_artifact=two["id"], reason="manual: latency",
            ),
        ),
    ]  # fmt: skip


def test_bad_hook_settings_are_named_before_anything(chain, artifacts):  # noqa: F811
    """A hook setting that cannot work fails the run before anything changes (fleets: tests/integration/
    test_fleet_hooks.py)."""
    c = chain()
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    ledger = c.ledger_path.read_bytes()
    set_hooks(c, "dev", {"pre": [{"tasks": "does-not-exist.yml"}]})
    res = c.run("deploy.yml", env="dev")
    assert res.returncode != 0
    assert "promotion_environments.dev.hooks.pre[0].tasks: no such task file" in res.stdout, show(res)
    assert c.ledger_path.read_bytes() == ledger
