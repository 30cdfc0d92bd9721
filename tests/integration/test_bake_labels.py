"""The pushed artifact's OCI labels describe the bake, not its base image, read back with an independent client.

skopeo (Debian's, not our registry client) inspects the pushed digest in the real registry with auth. The base image
carries its own title and version labels (scripts/setup.sh); the artifact must say its own name, the version tag
when one is given (the fingerprint prefix otherwise), the revision and source of the bake and when it was made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import datetime

import pytest
from conftest import REPO_ROOT
from conftest import read_valid_record
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
ROLE = """---
- name: Write a marker
  ansible.builtin.copy:
    dest: /etc/label-marker
    content: "labels\\n"
    mode: "0644"
"""
# given, not `git rev-parse HEAD`: HEAD may move while the bake runs
REVISION = "4c1d6a0e9b7f2d3c5a8e1f0b6d9c2a7e4f3b1d5c"


def skopeo_inspect(registry: dict, reference: str, *options: str) -> dict:
    """skopeo's view of docker://<reference> in the test registry (--tls-verify=false: plain-HTTP 127.0.0.1)."""
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is missing: apt-get install skopeo (scripts/test-all.sh installs it)")
    creds = f"{registry['username']}:{registry['password']}"
    out = subprocess.run(
        ["skopeo", "inspect", *options, "--tls-verify=false", "--creds", creds, f"docker://{reference}"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return json.loads(out)


def created_at(label: str) -> float:
    return datetime.fromisoformat(label.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def baker(registry, tmp_path):
    roles = tmp_path / "roles"
    (roles / "lbl_marker" / "tasks").mkdir(parents=True)
    (roles / "lbl_marker" / "tasks" / "main.yml").write_text(ROLE)
    app = f"labels-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(roles),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
    }
    base = {
        "bake_name": app,
        "bake_roles": ["lbl_marker"],
        "bake_registry": registry["address"],
        "bake_artifacts_dir": str(tmp_path / "artifacts"),
        "bake_source": "https://git.test/shop/labels.git",
        "bake_revision": REVISION,
    }

    def bake(**extra):
        started = time.time()
        result = run_playbook(BAKE, {**base, **extra}, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        return read_valid_record(tmp_path / "artifacts", app), started, time.time()

    yield app, bake
    # the cache layers this bake saved (the second bake starts from them) go with the test
    cached = subprocess.run(
        ["docker", "image", "ls", "-q", f"immutable-infra-cache/{app}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if cached:
        subprocess.run(["docker", "image", "rm", "-f", *cached], capture_output=True, check=False)


def test_the_pushed_labels_name_the_bake_and_dockers_config_spelling_is_taken(registry, base_image, baker):
    app, bake = baker
    base_labels = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", base_image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout  # fmt: skip
    )
    assert base_labels.get("org.opencontainers.image.title")  # the base has a title of its own to leak

    # bake_image_config in Docker's own spelling (docker image inspect's Config) is taken as push_image's
    docker_config = {
        "Cmd": ["/bin/sh", "-c", "sleep 1"],
        "Env": ["GREETING=hello"],
        "ExposedPorts": {"8081/tcp": {}},
        "WorkingDir": "/srv",
        "Labels": {"com.example.team": "web"},
    }
    record, started, ended = bake(bake_image_config=docker_config)
    config = skopeo_inspect(registry, record["id"], "--config")["config"]
    assert config["Cmd"] == ["/bin/sh", "-c", "sleep 1"]
    assert "GREETING=hello" in config["Env"]
    assert "8081/tcp" in config["ExposedPorts"]
    assert config["WorkingDir"] == "/srv"
    assert config["Labels"]["com.example.team"] == "web"
    labels = skopeo_inspect(registry, record["id"])["Labels"]
    assert labels["org.opencontainers.image.title"] == app
    assert labels["org.opencontainers.image.version"] == record["fingerprint"].split(":", 1)[1][:12]
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert labels["org.opencontainers.image.source"] == "https://git.test/shop/labels.git"
    assert started - 1 <= created_at(labels["org.opencontainers.image.created"]) <= ended + 1
    assert labels["io.immutable-infra.fingerprint"] == record["fingerprint"]

    # the same inputs with a version: the version label is part of the image, so it is a new image (no tag added
    # to the unversioned one, whose label names the fingerprint); the version tag points at it
    versioned, started, ended = bake(bake_image_config=docker_config, bake_version="2.0.0")
    assert versioned["cached"] is False
    assert versioned["id"] != record["id"]
    inspected = skopeo_inspect(registry, f"{registry['address']}/{app}:2.0.0")
    assert f"{registry['address']}/{app}@{inspected['Digest']}" == versioned["id"]
    labels = inspected["Labels"]
    assert labels["org.opencontainers.image.version"] == "2.0.0"
    assert labels["org.opencontainers.image.title"] == app
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert started - 1 <= created_at(labels["org.opencontainers.image.created"]) <= ended + 1
    assert any("version" in change for change in versioned["changes"])
