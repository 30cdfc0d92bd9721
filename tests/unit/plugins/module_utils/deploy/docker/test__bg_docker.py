"""Docker backend error paths that real Docker cannot reach on demand (fake docker CLI and HTTP)."""

from __future__ import annotations

import base64
import json
import os
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


# -- the Engine API's pull (bg_swap with registry_username): what a real daemon does not answer on demand ---------


class FakeDaemon:
    """An HTTP server on a unix socket answering every request with one canned answer; records the requests."""

    def __init__(self, path, status, body):
        import http.server
        import socketserver
        import threading

        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802  (http.server's method name)
                requests.append((self.path, dict(self.headers)))
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

            def get_request(self):
                request, _addr = super().get_request()
                return request, ("local", 0)  # BaseHTTPRequestHandler wants a (host, port) client address

        self.server = Server(str(path), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_split_reference_gives_the_engine_api_name_and_tag_or_digest():
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import split_reference

    assert split_reference(DIGEST) == ("127.0.0.1:5000/web", "sha256:" + "a" * 64)
    assert split_reference("127.0.0.1:5000/web:1.4") == ("127.0.0.1:5000/web", "1.4")
    assert split_reference("127.0.0.1:5000/web") == ("127.0.0.1:5000/web", "latest")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, '{"status":"Pulling from web"}\n{"status":"Digest: sha256:aa"}\n', (0, "", "")),
        # a pull that fails once the stream began still answers 200: the error is the stream's last object
        (
            200,
            '{"status":"Pulling from web"}\n{"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"}\n',
            (1, "", "unexpected EOF"),
        ),
        (404, '{"message":"manifest unknown"}', (1, "", "Error response from daemon: manifest unknown")),
    ],
)
def test_pull_through_the_socket_reads_the_daemon_answer_and_sends_the_login_only_in_a_header(
    tmp_path, status, body, expected
):
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import pull_through_socket

    daemon = FakeDaemon(tmp_path / "docker.sock", status, body)
    try:
        answer = pull_through_socket(str(tmp_path / "docker.sock"), DIGEST, "127.0.0.1:5000", "ci", "s3cret")
    finally:
        daemon.close()
    assert answer == expected
    ((path, headers),) = daemon.requests
    assert path == f"/images/create?fromImage=127.0.0.1%3A5000%2Fweb&tag=sha256%3A{'a' * 64}"
    assert "s3cret" not in path
    login = json.loads(base64.urlsafe_b64decode(headers["X-Registry-Auth"]))
    assert login == {"username": "ci", "password": "s3cret", "serveraddress": "127.0.0.1:5000"}


def test_pull_through_a_socket_that_does_not_answer_falls_back_to_the_cli(tmp_path):
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import pull_through_socket

    assert pull_through_socket(str(tmp_path / "absent.sock"), DIGEST, "127.0.0.1:5000", "ci", "s3cret") is None


def test_without_the_engine_socket_the_login_goes_to_a_temporary_docker_config_removed_after_the_pull():
    """The CLI engine (another docker_binary, DOCKER_HOST or context): `docker pull` with a DOCKER_CONFIG that holds
    only this registry's login, gone once the pull ended."""
    seen = []

    def run_command(cmd, environ_update=None, **_kwargs):
        if cmd[1] == "pull":
            config = environ_update["DOCKER_CONFIG"]
            with open(os.path.join(config, "config.json"), encoding="utf-8") as handle:
                seen.append((config, json.load(handle)))
        return FakeDocker()(cmd)

    docker = DockerBackend(
        run_command, None, "web", "prod", {"blue": 8101, "green": 8102}, port_check=lambda port: False,
        registry_auth=("ci", "s3cret"),
    )  # fmt: skip
    docker.prepare("green", DIGEST)
    ((config, content),) = seen
    assert content == {"auths": {"127.0.0.1:5000": {"auth": base64.b64encode(b"ci:s3cret").decode()}}}
    assert not os.path.exists(config)
