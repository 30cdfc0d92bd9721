"""Docker backend error paths that real Docker cannot reach on demand (fake docker CLI and HTTP)."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import DockerBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import port_in_use

DIGEST = "127.0.0.1:5000/web@sha256:" + "a" * 64


class FakeDocker:
    def __init__(self, containers=None, pull_rc=0):
        self.containers = containers or {}
        self.pull_rc = pull_rc
        self.calls = []

    def __call__(self, cmd):
        self.calls.append(cmd[1:])
        verb = cmd[1:3]
        if verb == ["container", "inspect"]:
            info = self.containers.get(cmd[3])
            return (0, json.dumps([info]), "") if info else (1, "", "No such container")
        if verb == ["image", "inspect"]:
            return 1, "", "No such image"
        if cmd[1] == "pull":
            return self.pull_rc, "", "manifest unknown" if self.pull_rc else ""
        if cmd[1] == "logs":
            return 0, "Traceback\nOSError: boom\n", ""
        return 0, "", ""


def backend(docker, http=None, port_in_use=False):
    return DockerBackend(
        docker,
        None,
        "web",
        "prod",
        {"blue": 8101, "green": 8102},
        http=http or (lambda url, timeout: (200, {"x-colour": "green"}, None)),
        port_check=lambda port: port_in_use,
    )


def test_same_port_for_both_colours_is_refused():
    with pytest.raises(BlueGreenError, match="own port"):
        DockerBackend(FakeDocker(), None, "web", "prod", {"blue": 8101, "green": 8101})


def test_unpullable_image_names_the_fix():
    with pytest.raises(BlueGreenError, match="could not be pulled: manifest unknown; push it first"):
        backend(FakeDocker(pull_rc=1)).prepare("green", DIGEST)


def test_run_uses_loopback_port_labels_and_digest():
    docker = FakeDocker()
    backend(docker).prepare("green", DIGEST)
    run = [c for c in docker.calls if c[0] == "run"][0]
    assert run[-1] == DIGEST and "127.0.0.1:8102:8080" in run and f"immutable.infra.artifact={DIGEST}" in run
    assert "web-prod-green" in run


def test_port_in_use_is_reported_before_docker_run():
    docker = FakeDocker()
    with pytest.raises(BlueGreenError, match="127.0.0.1:8102 for green"):
        backend(docker, port_in_use=True).prepare("green", DIGEST)
    assert not [c for c in docker.calls if c[0] == "run"]


def test_exited_container_fails_the_gate_at_once_with_logs():
    docker = FakeDocker({"web-prod-green": {"State": {"Running": False, "Status": "exited"}}})
    result = backend(docker).check_health("green")
    assert result.fatal and "exited" in result.detail and "OSError: boom" in result.detail


def test_verify_needs_the_new_colour_header():
    ok = backend(FakeDocker()).verify("green")
    wrong = backend(FakeDocker(), http=lambda u, t: (200, {"x-colour": "blue"}, None)).verify("green")
    assert ok.ok and not wrong.ok and "X-Colour blue" in wrong.detail


def test_idle_colour_already_running_the_artifact_is_reused():
    info = {"State": {"Running": True}, "Config": {"Labels": {"immutable.infra.artifact": DIGEST}}}
    docker = FakeDocker({"web-prod-green": info})
    backend(docker).prepare("green", DIGEST)
    assert not [c for c in docker.calls if c[0] in ("run", "rm")]


def test_recreate_replaces_the_idle_colour_even_when_it_runs_the_artifact():
    info = {"State": {"Running": True}, "Config": {"Labels": {"immutable.infra.artifact": DIGEST}}}
    docker = FakeDocker({"web-prod-green": info})
    fresh = DockerBackend(
        docker, None, "web", "prod", {"blue": 8101, "green": 8102}, port_check=lambda port: False, recreate=True
    )
    fresh.prepare("green", DIGEST)
    verbs = [c[0] for c in docker.calls if c[0] in ("run", "rm")]
    assert verbs == ["rm", "run"], docker.calls


def test_port_in_use_sees_a_listener_but_not_the_time_wait_a_removed_container_leaves():
    listener = socket.socket()
    # as docker-proxy's listener (Go sets SO_REUSEADDR); its TIME_WAIT sockets carry the flag
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    assert port_in_use(port)
    # a served connection closed by the server side first leaves 127.0.0.1:port in TIME_WAIT, as a removed
    # container's connections do; docker-proxy binds such a port again, so it is free
    client = socket.create_connection(("127.0.0.1", port))
    served, _addr = listener.accept()
    served.close()
    client.close()
    listener.close()
    states = subprocess.run(["ss", "-tan", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert "TIME-WAIT" in states
    assert not port_in_use(port)
