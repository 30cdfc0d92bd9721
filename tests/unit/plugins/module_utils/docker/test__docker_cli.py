"""Unit tests for the docker CLI runner (_docker_cli.py): command lines, error mapping, masking, inspect helpers."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import summarise
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.docker._socket import engine_socket


class FakeRunner:
    """run_command stand-in: answers from a list of (rc, out, err) and records the calls."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def __call__(self, cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        return self.answers.pop(0)


def test_run_builds_the_command_and_passes_env_and_data():
    runner = FakeRunner((0, "out", ""))
    docker = DockerCli(runner, docker_bin="/usr/bin/docker")
    assert docker.run(["push", "r/x:1"], data="in", env={"DOCKER_CONFIG": "/tmp/x"}) == (0, "out", "")
    cmd, kwargs = runner.calls[0]
    assert cmd == ["/usr/bin/docker", "push", "r/x:1"]
    assert kwargs == {"data": "in", "binary_data": True, "environ_update": {"DOCKER_CONFIG": "/tmp/x"}}


@pytest.mark.parametrize(
    "stderr, hint",
    [
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
         "start the Docker Engine"),
        ("permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
         "docker group"),
        ("unauthorized: authentication required", "check the registry credentials"),
        ("Get \"http://127.0.0.1:5999/v2/\": dial tcp 127.0.0.1:5999: connect: connection refused",
         "start the registry or check its address"),
        ("http: server gave HTTP response to HTTPS client", "insecure-registries"),
    ],
)  # fmt: skip
def test_errors_are_summarised_with_a_fix(stderr, hint):
    docker = DockerCli(FakeRunner((1, "", "Error response from daemon: " + stderr + "\n")))
    with pytest.raises(DockerError) as err:
        docker.run(["push", "x"])
    message = err.value.message
    assert message.startswith("docker push x failed (rc=1): ")
    assert "Error response from daemon" not in message
    assert message.endswith(hint) or hint in message
    assert err.value.rc == 1


def test_secrets_are_masked_in_errors():
    docker = DockerCli(FakeRunner((1, "", "login failed for hunter2-secret\n")), secrets=["hunter2-secret", None])
    with pytest.raises(DockerError) as err:
        docker.run(["login"])
    assert "hunter2-secret" not in err.value.message
    assert "hunter2-secret" not in err.value.stderr
    assert "********" in err.value.message


def test_check_false_returns_the_failure():
    docker = DockerCli(FakeRunner((3, "", "boom")))
    assert docker.run(["x"], check=False) == (3, "", "boom")


def test_missing_binary_is_named():
    def runner(cmd, **kwargs):
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(DockerError, match="install the docker CLI"):
        DockerCli(runner).run(["version"])


def test_summarise_keeps_last_distinct_lines_and_truncates():
    assert summarise("a\n\nError: b\nb\nc\nd\n") == "b; c; d"
    assert len(summarise("x" * 1000)) == 400
    assert summarise("") == "no error output"


def test_inspect_parses_json_and_missing_is_none():
    runner = FakeRunner(
        (0, json.dumps([{"Id": "sha256:abc", "Config": {}}]), ""),
        (1, "", "Error: No such image: nope\n"),
        (1, "", "Error response from daemon: No such container: ghost\n"),
        (0, json.dumps([{"Id": "c1"}]), ""),
    )
    docker = DockerCli(runner)
    assert docker.image_id("web:1") == "sha256:abc"
    assert runner.calls[0][0] == ["docker", "image", "inspect", "web:1"]
    assert docker.image_id("nope") is None
    assert docker.container_exists("ghost") is False
    assert docker.inspect("c1") == {"Id": "c1"}
    assert runner.calls[3][0] == ["docker", "inspect", "c1"]


def test_inspect_other_failures_raise():
    docker = DockerCli(FakeRunner((1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock")))
    with pytest.raises(DockerError, match="start the Docker Engine"):
        docker.image_id("web:1")


def test_commit_passes_changes_and_returns_the_id():
    runner = FakeRunner((0, "sha256:new\n", ""))
    docker = DockerCli(runner)
    assert docker.commit("builder", changes=['CMD ["sh"]', "EXPOSE 80/tcp"], message="m") == "sha256:new"
    assert runner.calls[0][0] == [
        "docker", "commit", "--change", "CMD [\"sh\"]", "--change", "EXPOSE 80/tcp", "--message", "m", "builder",
    ]  # fmt: skip


def test_push_returns_the_printed_digest():
    out = "The push refers to repository [127.0.0.1:5000/web]\n1: digest: sha256:" + "e" * 64 + " size: 528\n"
    docker = DockerCli(FakeRunner((0, out, "")))
    assert docker.push("127.0.0.1:5000/web:1") == "sha256:" + "e" * 64


def test_remove_tolerates_missing_objects():
    docker = DockerCli(FakeRunner((1, "", "Error: No such container: x"), (1, "", "Error: No such image: y")))
    docker.remove_container("x")
    docker.remove_image("y")


def test_engine_socket_only_where_the_cli_would_use_that_socket(tmp_path):
    sock = tmp_path / "docker.sock"
    sock.write_text("")  # existence is what engine_socket checks
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    base = {"DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(home / ".docker")}
    assert engine_socket("docker", base).path == str(sock)
    assert engine_socket("/usr/bin/docker", base).path == str(sock)
    assert engine_socket("podman", base) is None  # another CLI: its own rules
    assert engine_socket("docker", dict(base, DOCKER_HOST="tcp://10.0.0.5:2376")) is None
    assert engine_socket("docker", dict(base, DOCKER_HOST="ssh://build@host")) is None
    assert engine_socket("docker", dict(base, DOCKER_CONTEXT="remote")) is None
    assert engine_socket("docker", dict(base, DOCKER_HOST=f"unix://{tmp_path}/absent.sock")) is None
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    assert engine_socket("docker", base) is None  # `docker context use remote`
    (home / ".docker" / "config.json").write_text(json.dumps({"currentContext": "default", "auths": {}}))
    assert engine_socket("docker", base).path == str(sock)
