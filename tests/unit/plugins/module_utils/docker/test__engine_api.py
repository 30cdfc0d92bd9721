"""The Engine API implementation of the Docker engine interface against a stand-in engine on a unix socket, the
CLI implementation's new commands with a fake runner, and the one rule that picks between them."""

from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs
from urllib.parse import urlparse

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.docker._api import EngineApi
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import run_locally
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerEngine
from ansible_collections.immutable.infra.plugins.module_utils.docker._socket import EngineSocket


class FakeRunner:
    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        return self.answers.pop(0)


class _Handler(BaseHTTPRequestHandler):
    def _answer(self, with_body):
        self.server.paths.append((self.command, self.path))
        status, body = self.server.answers.get(self.path, (404, {"message": "No such object"}))
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data) if with_body else 0))
        self.end_headers()
        if with_body:
            self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server's name)
        self._answer(True)

    def do_HEAD(self):  # noqa: N802
        self._answer(False)

    def log_message(self, *_args):
        pass


class _UnixEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _addr = super().get_request()
        return request, ("local", 0)


@pytest.fixture
def engine(tmp_path):
    path = str(tmp_path / "docker.sock")
    server = _UnixEngine(path, _Handler)
    server.answers, server.paths = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, path
    server.shutdown()
    server.server_close()


def test_both_implementations_are_the_one_interface(engine):
    _server, path = engine
    cli = DockerCli(FakeRunner())
    assert isinstance(cli, DockerEngine) and isinstance(EngineApi(EngineSocket(path), cli), DockerEngine)
    assert EngineApi(EngineSocket(path), cli).local_daemon is True and cli.local_daemon is False


def test_the_rule_takes_the_socket_where_the_cli_would_use_it(engine, tmp_path):
    _server, path = engine
    config = tmp_path / "config"
    config.mkdir()
    environ = {"DOCKER_HOST": f"unix://{path}", "DOCKER_CONFIG": str(config)}
    assert docker_engine(FakeRunner(), environ=environ).__class__ is EngineApi
    assert docker_engine(FakeRunner(), "/opt/bin/podman", environ=environ).__class__ is DockerCli
    assert docker_engine(FakeRunner(), environ=dict(environ, DOCKER_HOST="tcp://10.0.0.5:2376")).__class__ is DockerCli


def test_changes_come_from_the_api_with_the_letters_of_docker_diff(engine):
    server, path = engine
    server.answers["/containers/bld/changes"] = (
        200,
        [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/new", "Kind": 1}, {"Path": "/etc/motd", "Kind": 2}],
    )
    server.answers["/containers/clean/changes"] = (200, None)  # the engine says null for no change
    api = EngineApi(EngineSocket(path), DockerCli(FakeRunner()))
    assert api.changes("bld") == [("C", "/etc"), ("A", "/etc/new"), ("D", "/etc/motd")]
    assert api.changes("clean") == []


def test_anything_but_a_clear_answer_goes_to_the_cli(engine):
    server, path = engine
    server.answers["/containers/bld/changes"] = (500, {"message": "boom"})
    server.answers["/info"] = (200, b"garbled")
    runner = FakeRunner((0, "C /etc\nA /etc/x\n", ""), (0, '{"Driver": "overlay2"}', ""))
    api = EngineApi(EngineSocket(path), DockerCli(runner))
    assert api.changes("bld") == [("C", "/etc"), ("A", "/etc/x")]
    assert api.info() == {"Driver": "overlay2"}
    assert [call[0][1] for call in runner.calls] == ["diff", "info"]


def test_listings_filter_on_the_engine_and_keep_only_the_asked_repository(engine):
    server, path = engine
    api = EngineApi(EngineSocket(path), DockerCli(FakeRunner()))
    server.answers["/containers/json?all=1&filters=%7B%22label%22%3A+%5B%22k%3Dv%22%5D%7D"] = (
        200,
        [{"Names": ["/bake-web-1"], "Labels": {"k": "v"}}],
    )
    assert api.list_containers(label="k=v") == [{"name": "bake-web-1", "labels": {"k": "v"}}]
    query = "filters=%7B%22reference%22%3A+%5B%22immutable-infra-cache%2Fweb%22%5D%7D"
    server.answers[f"/images/json?{query}"] = (
        200,
        [{"Id": "sha256:1", "Created": 1700, "RepoTags": ["immutable-infra-cache/web:ab", "other/name:1"]}],
    )
    assert api.list_images(reference="immutable-infra-cache/web") == [
        {"id": "sha256:1", "repository": "immutable-infra-cache/web", "tag": "ab", "created": 1700}
    ]


def test_path_exists_asks_the_archive_endpoint(engine):
    server, path = engine
    server.answers["/containers/cp/archive?path=%2Fetc%2Fmotd"] = (200, b"")
    server.answers["/containers/cp/archive?path=%2Fbroken"] = (500, b"")
    api = EngineApi(EngineSocket(path), DockerCli(FakeRunner()))
    assert api.path_exists("cp", "/etc/motd") is True
    assert api.path_exists("cp", "/nowhere") is False
    assert api.path_exists("cp", "/broken") is None
    assert ("HEAD", "/containers/cp/archive?path=%2Fetc%2Fmotd") in server.paths
    assert parse_qs(urlparse(server.paths[-1][1]).query) == {"path": ["/broken"]}


def test_inspect_asks_the_engine_socket_and_skips_the_cli(engine):
    server, path = engine
    server.answers["/containers/web-dev-blue/json"] = (200, {"Id": "c1", "State": {"Running": True}})
    server.answers["/images/127.0.0.1:5000/web@sha256:" + "a" * 64 + "/json"] = (200, {"Id": "sha256:img"})
    runner = FakeRunner()  # any CLI call would fail: it has no answers
    docker = EngineApi(EngineSocket(path), DockerCli(runner))
    assert docker.inspect("web-dev-blue", kind="container") == {"Id": "c1", "State": {"Running": True}}
    assert docker.image_id("127.0.0.1:5000/web@sha256:" + "a" * 64) == "sha256:img"
    assert docker.container_exists("ghost") is False  # 404: missing, no CLI call
    assert runner.calls == []
    assert server.paths[-1] == ("GET", "/containers/ghost/json")


def test_inspect_falls_back_to_the_cli_unless_the_engine_answers_clearly(engine, tmp_path):
    server, path = engine
    server.answers["/images/broken/json"] = (500, {"message": "boom"})
    server.answers["/images/garbled/json"] = (200, b"not json")
    runner = FakeRunner(
        (0, json.dumps([{"Id": "sha256:from-cli"}]), ""),
        (0, json.dumps([{"Id": "sha256:cli-again"}]), ""),
        (0, json.dumps([{"Id": "sha256:no-socket"}]), ""),
    )
    assert EngineApi(EngineSocket(path), DockerCli(runner)).image_id("broken") == "sha256:from-cli"
    assert EngineApi(EngineSocket(path), DockerCli(runner)).image_id("garbled") == "sha256:cli-again"
    # nothing listens on that path: the CLI answers (and reports the daemon's errors as before)
    assert EngineApi(EngineSocket(str(tmp_path / "none.sock")), DockerCli(runner)).image_id("x") == "sha256:no-socket"
    assert [call[0][1:3] for call in runner.calls] == [["image", "inspect"]] * 3


def test_plain_inspect_without_a_kind_stays_on_the_cli(engine):
    _server, path = engine
    runner = FakeRunner((0, json.dumps([{"Id": "n1"}]), ""))
    assert EngineApi(EngineSocket(path), DockerCli(runner)).inspect("n1") == {"Id": "n1"}
    assert runner.calls[0][0] == ["docker", "inspect", "n1"]


def test_the_cli_lists_and_runs_with_the_commands_it_documents():
    rows = json.dumps({"Names": "b1", "Labels": "a=1,b=2"})
    image = json.dumps({"ID": "sha256:1", "Repository": "r", "Tag": "t", "CreatedAt": "2026-12-01 10:00:00 +0000 UTC"})
    runner = FakeRunner((0, rows, ""), (0, image + "\n" + json.dumps({"Tag": "<none>"}), ""), (0, "cid\n", ""))
    cli = DockerCli(runner)
    assert cli.list_containers(label="a=1") == [{"name": "b1", "labels": {"a": "1", "b": "2"}}]
    assert cli.list_images(reference="r") == [
        {"id": "sha256:1", "repository": "r", "tag": "t", "created": 1796119200.0}
    ]
    assert cli.run_container("img", ["infinity"], name="n", labels={"k": "v"}, entrypoint="sleep") == "cid"
    assert runner.calls[2][0] == [
        "docker", "run", "--detach", "--name", "n", "--entrypoint", "sleep", "--label", "k=v", "img", "infinity",
    ]  # fmt: skip
    assert cli.path_exists("c", "/x") is None  # the CLI cannot tell without running something


def test_run_locally_has_run_commands_shape():
    assert run_locally(["sh", "-c", "cat; echo err >&2; exit 3"], data="in") == (3, "in", "err\n")
