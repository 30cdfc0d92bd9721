"""scripts/setup.sh: idempotent, and each problem stops with one line that names the fix, leaving nothing behind."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
from conftest import REPO_ROOT

# setup.sh checks and starts the Docker Engine and the registry
pytestmark = [pytest.mark.docker, pytest.mark.registry]

SETUP = REPO_ROOT / "scripts" / "setup.sh"


def run_setup(env_update: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(env_update)
    return subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]


def test_a_second_run_reuses_everything():
    result = run_setup({})
    assert result.returncode == 0, result.stderr
    assert "virtualenv up to date" in result.stderr
    assert "registry already running" in result.stderr
    assert "base image present" in result.stderr
    assert "signing key present" in result.stderr
    assert "installing" not in result.stderr and "building" not in result.stderr


def test_a_python_that_is_too_old_is_named(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text('#!/bin/sh\ncase "$*" in *--version*) echo "Python 3.9.2";; *) exit 1;; esac\n')
    fake.chmod(0o755)
    result = run_setup({"IMMUTABLE_PYTHON": str(fake), "IMMUTABLE_VENV": str(tmp_path / "venv")})
    assert result.returncode != 0
    assert error_lines(result) == [
        "ERROR: Python 3.9.2 is too old: ansible-core 2.19 needs Python 3.11 or newer; set IMMUTABLE_PYTHON to a newer"
        " interpreter"
    ]
    assert not (tmp_path / "venv").exists()


def test_a_taken_registry_port_is_named_and_nothing_is_started(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_setup(
            {
                "IMMUTABLE_STATE_DIR": str(tmp_path / "state"),
                "IMMUTABLE_REGISTRY_PORT": str(port),
                "IMMUTABLE_SETUP_SKIP": "venv docker base_image",
            }
        )
    assert result.returncode != 0
    assert error_lines(result) == [
        f"ERROR: port 127.0.0.1:{port} is taken by another process: stop it or set IMMUTABLE_REGISTRY_PORT to a"
        " free port"
    ]
    assert not (tmp_path / "state" / "registry" / "registry.pid").exists()


def test_a_stale_registry_pid_file_naming_another_process_starts_the_registry(tmp_path):
    """After a reboot the pid in registry.pid may belong to any process: setup must not take it for the registry."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    (state / "registry").mkdir(parents=True)
    other = subprocess.Popen(["sleep", "300"])
    started = None
    try:
        (state / "registry" / "registry.pid").write_text(f"{other.pid}\n")
        env = {"IMMUTABLE_STATE_DIR": str(state), "IMMUTABLE_REGISTRY_PORT": str(port),
               "IMMUTABLE_SETUP_SKIP": "venv docker base_image signing_key"}  # fmt: skip
        result = run_setup(env)
        assert result.returncode == 0, result.stderr
        assert f"registry started on 127.0.0.1:{port}" in result.stderr, result.stderr
        started = int((state / "registry" / "registry.pid").read_text())
        assert started != other.pid
        again = run_setup(env)
        assert f"registry already running on 127.0.0.1:{port} (pid {started})" in again.stderr, again.stderr
    finally:
        other.kill()
        other.wait()
        if started:
            subprocess.run(["kill", str(started)], check=False)


def test_a_failing_base_image_build_is_named_and_leaves_nothing(tmp_path):
    image = "immutable-infra/never-built:test"
    result = run_setup(
        {
            "IMMUTABLE_STATE_DIR": str(tmp_path / "state"),
            "IMMUTABLE_BASE_IMAGE": image,
            "IMMUTABLE_DEBIAN_MIRROR": "http://127.0.0.1:9/debian",
            "IMMUTABLE_SETUP_SKIP": "venv registry",
        }
    )
    assert result.returncode != 0
    [line] = error_lines(result)
    assert line.startswith("ERROR: debootstrap failed")
    assert "IMMUTABLE_DEBIAN_MIRROR (http://127.0.0.1:9/debian)" in line
    leftovers = [p.name for p in (tmp_path / "state").iterdir() if p.name.startswith("rootfs.")]
    assert leftovers == []
    inspect = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    assert inspect.returncode != 0


def test_the_local_examples_signing_key_pair_is_made_once_private_and_ignored_by_git(tmp_path):
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_public_key
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import read_private_key

    state = tmp_path / "state"
    env = {"IMMUTABLE_STATE_DIR": str(state), "IMMUTABLE_SETUP_SKIP": "venv docker registry base_image"}
    first = run_setup(env)
    assert first.returncode == 0, first.stderr
    key, public = state / "signing" / "signing.pem", state / "signing" / "signing.pub.pem"
    assert f"generated the local example's signing key {key}" in first.stderr
    assert (key.stat().st_mode & 0o777, key.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    private = read_private_key({"private_key_path": str(key)})  # what the bake loads: EC P-256, no password
    assert key_id(private) == key_id(load_public_key(public.read_bytes()))
    assert "PRIVATE KEY" not in first.stdout + first.stderr
    before = key.read_bytes()
    second = run_setup(env)
    assert second.returncode == 0 and f"signing key present ({key})" in second.stderr
    assert key.read_bytes() == before
    # under the default state directory the key is git-ignored: never committed
    ignored = ["git", "-C", str(REPO_ROOT), "check-ignore", "-q", ".local/signing/signing.pem"]
    assert subprocess.run(ignored, check=False).returncode == 0
