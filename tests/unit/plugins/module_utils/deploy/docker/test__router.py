"""The router step (deploy/docker/_router.py) against the real nginx binary: config, nginx -t, start, reload."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import Router
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import RouterError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import nginx_runs
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import router_is_up
from ansible_collections.immutable.infra.plugins.modules import router as module

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs the nginx binary (nginx-light)")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Commands:
    def __init__(self):
        self.calls = []

    def __call__(self, args):
        self.calls.append(list(args))
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def router_dir(tmp_path):
    path = tmp_path / "routers" / "dev"
    yield path
    pid_file = path / "nginx.pid"
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
        except (OSError, ValueError):
            pass


def router(router_dir, commands, port, **kwargs):
    return Router(
        commands, "web", "dev", f"127.0.0.1:{port}", {"blue": 18081, "green": 18082}, str(router_dir), **kwargs
    )


def test_first_run_writes_validates_and_starts_then_nothing_is_done(router_dir):
    commands, port = Commands(), free_port()
    first = router(router_dir, commands, port).ensure()
    assert first["changed"] and first["started"] and not first["reloaded"]
    conf_d = router_dir / "conf.d"
    assert sorted(os.path.basename(p) for p in first["files_changed"]) == [
        "nginx.conf",
        "web-dev.conf",
        "web-dev.upstream.conf",
    ]
    assert [c[-1] for c in commands.calls] == ["-t", str(router_dir) + "/"]  # nginx -t, then the start
    assert router_is_up(str(router_dir), "web", "dev")
    assert "upstream web_dev" in (conf_d / "web-dev.upstream.conf").read_text()
    assert f"listen 127.0.0.1:{port};" in (conf_d / "web-dev.conf").read_text()

    commands.calls.clear()
    again = router(router_dir, commands, port).ensure()
    assert again["changed"] is False and again["files_changed"] == [] and commands.calls == []


def test_a_changed_setting_rewrites_and_reloads_but_never_touches_an_existing_upstream_file(router_dir):
    commands, port = Commands(), free_port()
    router(router_dir, commands, port).ensure()
    upstream = router_dir / "conf.d" / "web-dev.upstream.conf"
    upstream.write_text(upstream.read_text().replace("server 127.0.0.1:9 down;", "server 127.0.0.1:18081 weight=100;"))
    commands.calls.clear()
    changed = router(router_dir, commands, port, client_keepalive_timeout="65s").ensure()
    assert changed["reloaded"] and changed["files_changed"] == [str(router_dir / "conf.d" / "web-dev.conf")]
    assert commands.calls[-1][-2:] == ["-s", "reload"]
    assert "127.0.0.1:18081 weight=100" in upstream.read_text()


def test_a_config_nginx_refuses_is_put_back_and_nginx_is_not_touched(router_dir):
    commands, port = Commands(), free_port()
    router(router_dir, commands, port).ensure()
    server = router_dir / "conf.d" / "web-dev.conf"
    before = server.read_text()
    commands.calls.clear()
    with pytest.raises(RouterError, match=r"(?s)nginx -t failed: .*previous files were put back"):
        router(router_dir, commands, port, server_name="bad name;").ensure()
    assert server.read_text() == before
    assert not [c for c in commands.calls if "reload" in c]
    assert nginx_runs(str(router_dir))


def test_check_mode_reports_and_changes_nothing(router_dir):
    result = router(router_dir, Commands(), free_port()).ensure(check_mode=True)
    assert result["changed"] and not router_dir.exists()


def test_a_stopped_nginx_is_started_again_without_rewriting(router_dir):
    commands, port = Commands(), free_port()
    router(router_dir, commands, port).ensure()
    os.kill(int((router_dir / "nginx.pid").read_text()), signal.SIGQUIT)
    deadline = time.monotonic() + 60  # a graceful quit waits for its workers, which takes seconds on a loaded machine
    while nginx_runs(str(router_dir)):
        assert time.monotonic() < deadline, "nginx did not quit within 60 s of SIGQUIT"
        time.sleep(0.05)
    result = router(router_dir, commands, port).ensure()
    assert result["started"] and result["files_changed"] == []
    assert router_is_up(str(router_dir), "web", "dev")


def test_a_master_that_exited_but_was_not_reaped_does_not_count_as_running(tmp_path):
    child = subprocess.Popen(["true"])  # not waited for: it stays a zombie until poll()
    try:
        (tmp_path / "nginx.pid").write_text(str(child.pid))
        deadline = time.monotonic() + 30
        while not (Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert not nginx_runs(str(tmp_path))
    finally:
        child.wait()
    (tmp_path / "nginx.pid").write_text(str(os.getpid()))
    assert nginx_runs(str(tmp_path))


def test_the_router_modules_documentation_matches_its_argument_spec():
    doc = yaml.safe_load(module.DOCUMENTATION)["options"]
    assert set(doc) == set(module.ARGUMENT_SPEC)
    for name, option in module.ARGUMENT_SPEC.items():
        assert doc[name].get("type", "str") == option.get("type", "str"), name
        assert doc[name].get("default") == option.get("default"), name
        assert doc[name].get("required", False) == option.get("required", False), name
    yaml.safe_load(module.EXAMPLES)
    assert set(yaml.safe_load(module.RETURN)) == {
        "files_changed",
        "conf_dir",
        "upstream_file",
        "started",
        "reloaded",
        "command",
    }
