"""Shared pytest fixtures: the collection on sys.path, the real registry, Docker and ansible-playbook runs.

scripts/setup.sh prepares what these fixtures use (venv, Docker Engine, registry, base image, the collection link);
scripts/test-all.sh runs it before pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("IMMUTABLE_STATE_DIR", REPO_ROOT / ".local"))
COLLECTIONS_DIR = STATE_DIR / "collections"

# `import ansible_collections.immutable.infra...` resolves to this checkout through the link setup.sh makes.
if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))


# Integration tests carry the markers of the real parts they need (docker, registry, nginx, moto), so that
# `-m "not moto"` selects what it says. A test gets the markers of the real parts its fixtures stand for (below);
# a test file marks what it reaches otherwise (nginx through a playbook, say) with pytestmark. `slow` marks the
# tests over 30 s (measured with --durations in CI): `pytest -m "not slow"` is the quick loop.
FIXTURE_MARKERS = {
    "base_image": ("docker",),
    "registry": ("registry", "docker"),
    "moto": ("moto",),
    "moto_server": ("moto",),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        marked = {mark.name for mark in item.iter_markers()}
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                for marker in markers:
                    if marker not in marked:
                        item.add_marker(marker)
                        marked.add(marker)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _sep, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def registry() -> dict[str, str]:
    """The local registry started by scripts/setup.sh: address, user and password."""
    creds_file = Path(os.environ.get("IMMUTABLE_REGISTRY_CREDENTIALS", STATE_DIR / "registry" / "credentials.env"))
    if not creds_file.exists():
        pytest.fail(f"registry credentials missing at {creds_file}: run scripts/setup.sh first")
    creds = read_env_file(creds_file)
    port = os.environ.get("IMMUTABLE_REGISTRY_PORT", "5000")
    return {
        "address": f"127.0.0.1:{port}",
        "url": f"http://127.0.0.1:{port}",
        "username": creds["IMMUTABLE_REGISTRY_USER"],
        "password": creds["IMMUTABLE_REGISTRY_PASSWORD"],
    }


@pytest.fixture(scope="session")
def base_image() -> str:
    name = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    if subprocess.run(["docker", "image", "inspect", name], capture_output=True, check=False).returncode != 0:
        pytest.fail(f"base image {name} missing: run scripts/setup.sh first")
    return name


@pytest.fixture
def unique() -> str:
    """A short unique suffix for names that must not collide between tests or runs."""
    return uuid.uuid4().hex[:8]


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
    )
    env.update(extra or {})
    return env


def run_playbook(
    playbook: str | Path,
    extra_vars: dict | None = None,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: int = 1200,
) -> subprocess.CompletedProcess:
    """Run ansible-playbook; extra vars go in as JSON so types survive."""
    cmd = ["ansible-playbook", str(playbook)]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    cmd += list(args)
    return subprocess.run(
        cmd, cwd=cwd or REPO_ROOT, env=ansible_env(env), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def playbook():
    return run_playbook


ARTIFACT_RECORD_SCHEMA = REPO_ROOT / "docs" / "artifact-record.schema.json"


def assert_valid_record(record: dict) -> None:
    """Fail naming every error when the record breaks docs/artifact-record.schema.json (jsonschema, a test tool)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(ARTIFACT_RECORD_SCHEMA.read_text()))
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<record>'}: {error.message}"
        for error in validator.iter_errors(record)
    ]
    assert not errors, "artifact record breaks docs/artifact-record.schema.json:\n" + "\n".join(errors)


def read_valid_record(artifacts: Path, name: str) -> dict:
    """latest.json of an artifact name, after checking that it and the record of its bake are valid and the same."""
    latest = json.loads((artifacts / name / "latest.json").read_text())
    assert_valid_record(latest)
    record = json.loads((artifacts / name / "records" / f"{latest['bake_id']}.json").read_text())
    assert_valid_record(record)
    assert record == latest, f"latest.json of {name} is not the record of its bake {latest['bake_id']}"
    return latest


# Fleet test hosts (docs/testing-fleet.md): the session fixture `fleet`, N real Docker hosts on an internal network.
if str(REPO_ROOT / "tests" / "integration") not in sys.path:
    sys.path.append(str(REPO_ROOT / "tests" / "integration"))
import fleet_hosts

fleet = fleet_hosts.fleet
