"""Promotion hooks: the settings check, the payload schema, and the webhook POST against a real HTTP server on
127.0.0.1 (a thread of the test). The module runs in process (patch_module_args)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.module_utils.common import _hooks as hooks
from ansible_collections.immutable.infra.plugins.modules import promotion_hook as module

A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
SECRET = "s3cret-hook-token-9f2"


def promotion(**over):
    base = {
        "action": "promote",
        "app": "web",
        "env": "prod",
        "from_env": "staging",
        "artifact": B,
        "previous_artifact": A,
        "forced": False,
        "reason": None,
    }
    base.update(over)
    return base


class Recorder(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.path.startswith("/slow"):
            time.sleep(1.5)
        status = 500 if self.path.startswith("/fail") else 302 if self.path.startswith("/moved") else 204
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        payload = b"database migration check failed\n" if status == 500 else b""
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Recorder.received = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", Recorder.received
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- the settings ------------------------------------------------------------------------------------------------


def test_check_hooks_lists_each_phase_without_secrets(tmp_path):
    (tmp_path / "smoke.yml").write_text("---\n- name: smoke\n  ansible.builtin.debug:\n")
    checked = hooks.check_hooks(
        {
            "pre": [{"tasks": "smoke.yml", "name": "smoke"}],
            "post": [{"webhook": "https://user:pw@hooks.example.com/x?token=abc", "headers": {"X-Token": SECRET}}],
        },
        "prod",
        str(tmp_path),
    )
    assert checked["on_rollback"] == []
    assert checked["pre"] == [
        {
            "phase": "pre",
            "index": 0,
            "kind": "tasks",
            "tasks": str(tmp_path / "smoke.yml"),
            "name": "smoke",
            "label": "pre-promotion hook 1 smoke (tasks smoke.yml)",
        }
    ]
    assert checked["post"][0]["label"] == "post-promotion hook 1 (webhook https://hooks.example.com/x?…)"
    text = json.dumps(checked)
    assert SECRET not in text and "pw" not in text and "abc" not in text


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("pre: x", "promotion_environments.prod.hooks must be a mapping"),
        ({"before": []}, "unknown key(s) before: use pre, post and on_rollback"),
        ({"pre": {"tasks": "x.yml"}}, "promotion_environments.prod.hooks.pre must be a list"),
        ({"pre": ["x.yml"]}, "hooks.pre[0]: give either tasks: <a task file> or webhook:"),
        ({"post": [{"tasks": "a.yml", "webhook": "http://h/"}]}, "hooks.post[0]: give either"),
        ({"pre": [{"tasks": "missing.yml"}]}, "hooks.pre[0].tasks: no such task file"),
        ({"pre": [{"tasks": "a.yml", "timeout": 3}]}, "unknown key(s) timeout: a task-file hook takes tasks and name"),
        ({"pre": [{"webhook": "ftp://h/x"}]}, "must be an http:// or https:// URL with a host"),
        ({"pre": [{"webhook": "http://h/", "timeout": 0}]}, "pre[0].timeout must be a number of seconds more than 0"),
        ({"pre": [{"webhook": "http://h/", "timeout": "soon"}]}, "timeout must be a number of seconds"),
        ({"pre": [{"webhook": "http://h/", "headers": ["a"]}]}, "headers must be a mapping"),
        ({"pre": [{"webhook": "http://h/", "header": {}}]}, "unknown key(s) header: a webhook hook takes webhook"),
        ({"on_rollback": [{"webhook": "http://h/", "headers": {"X-A": {"v": SECRET}}}]}, "headers.X-A must be a"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, given, message):
    (tmp_path / "a.yml").write_text("---\n")
    with pytest.raises(hooks.HookError) as info:
        hooks.check_hooks(given, "prod", str(tmp_path))
    assert message in str(info.value)
    assert SECRET not in str(info.value)


def test_no_hooks_is_three_empty_phases(tmp_path):
    assert hooks.check_hooks(None, "dev", str(tmp_path)) == {"pre": [], "post": [], "on_rollback": []}
    assert hooks.check_hooks({"pre": None}, "dev", str(tmp_path))["pre"] == []


def test_safe_url_drops_credentials_query_and_deeper_path():
    assert hooks.safe_url("https://u:p@example.com:8443/a/b?token=x#f") == "https://example.com:8443/a/…?…"
    assert hooks.safe_url("http://example.com/hook") == "http://example.com/hook"
    assert hooks.safe_url("http://example.com/") == "http://example.com/"
    assert hooks.safe_url("http://example.com") == "http://example.com"


def test_safe_url_keeps_only_the_first_path_segment_where_chat_webhooks_carry_their_token():
    assert hooks.safe_url("https://hooks.example.com/services/T0AAA/B0BBB/s3cr3tToken") == (
        "https://hooks.example.com/services/…"
    )


# --- the payload -------------------------------------------------------------------------------------------------


def test_payload_is_exactly_the_documented_schema():
    payload = hooks.make_payload("pre", promotion(reason="", from_env=""))
    assert payload == {
        "schema": "immutable.infra/promotion-hook/1",
        "hook": "pre",
        "action": "promote",
        "app": "web",
        "env": "prod",
        "from_env": None,
        "artifact": B,
        "previous_artifact": A,
        "forced": False,
        "reason": None,
        "hosts": None,
    }
    assert hooks.payload_problem(payload) is None
    # a fleet's hooks get the environment's hosts
    assert hooks.payload_problem(dict(payload, hosts=["h1", "h2"])) is None
    # an AMI region map is an artifact ID too
    assert hooks.payload_problem(dict(payload, artifact={"us-east-1": "ami-1"})) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unknown extra"),
        ({"schema": "v0"}, "schema must be immutable.infra/promotion-hook/1"),
        ({"hook": "during"}, "hook must be one of pre, post, on_rollback"),
        ({"action": "repair"}, "action must be one of deploy, promote, rollback"),
        ({"env": ""}, "env must be a non-empty string"),
        ({"forced": "no"}, "forced must be true or false"),
        ({"artifact": None}, "artifact must be given"),
        ({"previous_artifact": 3}, "previous_artifact must be an artifact ID"),
        ({"hosts": "h1"}, "hosts must be a list of host names"),
        ({"hosts": ["h1", ""]}, "hosts must be a list of host names"),
    ],
)
def test_payload_problems(change, message):
    payload = dict(hooks.make_payload("post", promotion()), **change)
    assert message in hooks.payload_problem(payload)
    missing = hooks.make_payload("post", promotion())
    del missing["reason"]
    assert "missing reason" in hooks.payload_problem(missing)


# --- the POST ----------------------------------------------------------------------------------------------------


def test_post_sends_the_json_and_the_headers(server):
    url, received = server
    payload = hooks.make_payload("post", promotion())
    answer = hooks.post_webhook(url + "/ok", payload, {"Authorization": f"Bearer {SECRET}"}, 5)
    assert answer == {"status": 204, "url": url + "/ok"}
    assert json.loads(received[0]["body"]) == payload
    assert received[0]["headers"]["Content-Type"] == "application/json"
    assert received[0]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_credentials_in_the_url_become_basic_auth_and_are_never_shown(server):
    url, received = server
    with pytest.raises(hooks.HookError) as info:
        hooks.post_webhook(
            url.replace("http://", "http://bot:pw-7781@") + "/fail?sig=zz", hooks.make_payload("pre", promotion())
        )
    text = str(info.value)
    assert f"webhook {url}/fail?… answered HTTP 500" in text
    assert "database migration check failed" in text
    assert "pw-7781" not in text and "zz" not in text
    assert received[0]["headers"]["Authorization"].startswith("Basic ")


def test_a_redirect_is_an_error_not_followed(server):
    url, received = server
    with pytest.raises(hooks.HookError) as info:
        hooks.post_webhook(url + "/moved", hooks.make_payload("pre", promotion()))
    assert "answered HTTP 302" in str(info.value)
    assert len(received) == 1


def test_unreachable_and_slow_webhooks(server):
    url, _received = server
    with pytest.raises(hooks.HookError) as info:
        hooks.post_webhook("http://127.0.0.1:9/hook", hooks.make_payload("pre", promotion()), timeout=2)
    assert "webhook http://127.0.0.1:9/hook cannot be reached" in str(info.value)
    with pytest.raises(hooks.HookError) as info:
        hooks.post_webhook(url + "/slow", hooks.make_payload("pre", promotion()), timeout=0.3)
    assert f"webhook {url}/slow did not answer within 0.3 s" in str(info.value)


# --- the module ----------------------------------------------------------------------------------------------------


def run_module(args, capsys, check_mode=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def test_module_fails_naming_the_hook_and_never_shows_header_values(server, capsys):
    url, _received = server
    label = f"pre-promotion hook 1 (webhook {url}/fail)"
    result, raw = run_module(
        {
            "webhook": url + "/fail",
            "headers": {"X-Hook-Token": SECRET},
            "payload": hooks.make_payload("pre", promotion()),
            "label": label,
        },
        capsys,
    )
    assert result["failed"]
    assert result["msg"].startswith(f"{label} failed: webhook {url}/fail answered HTTP 500")
    assert SECRET not in raw


def test_module_check_mode_posts_nothing_and_checks_hooks(server, capsys, tmp_path):
    url, received = server
    result, _raw = run_module(
        {"webhook": url + "/ok", "payload": hooks.make_payload("post", promotion())}, capsys, check_mode=True
    )
    assert not result.get("failed") and received == []
    result, _raw = run_module({"hooks": {"pre": [{"webhook": url}]}, "env": "dev", "base_dir": str(tmp_path)}, capsys)
    assert [item["kind"] for item in result["hooks"]["pre"]] == ["webhook"]
    result, _raw = run_module(
        {"hooks": {"pre": [{"tasks": "nope.yml"}]}, "env": "dev", "base_dir": str(tmp_path)}, capsys
    )
    assert result["failed"] and "promotion_environments.dev.hooks.pre[0].tasks: no such task file" in result["msg"]
