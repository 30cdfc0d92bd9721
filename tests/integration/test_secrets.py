"""Secrets never leak: bake (which pushes) and gc at -vvv, with a log file; grep everything for the password.

Searched: stdout and stderr of each run, the ANSIBLE_LOG_PATH log, the artifact records and latest.json, the ledger
file written by immutable.infra.ledger, and the temporary docker configs push_image writes (all removed after).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
GC = REPO_ROOT / "playbooks" / "gc.yml"
ROLE = """---
- name: Write a marker
  ansible.builtin.copy:
    content: "secrets test\\n"
    dest: /etc/secrets-marker
    mode: "0644"
"""
LEDGER_PLAY = """---
- name: Record the deploy
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Record
      immutable.infra.ledger:
        path: "{{ ledger_path }}"
        app: "{{ app }}"
        env: dev
        chain: [dev, prod]
        artifact_id: "{{ artifact }}"
        action: deploy
"""


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_no_password_in_output_logs_records_or_ledger_at_vvv(registry, tmp_path):
    password = registry["password"]
    assert len(password) >= 8
    roles = tmp_path / "roles"
    (roles / "sec_marker" / "tasks").mkdir(parents=True)
    (roles / "sec_marker" / "tasks" / "main.yml").write_text(ROLE)
    artifacts = tmp_path / "artifacts"
    log = tmp_path / "ansible.log"
    app = f"secrets-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(roles),
        "ANSIBLE_LOG_PATH": str(log),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": password,
        "IMMUTABLE_ARTIFACTS_DIR": str(artifacts),
    }
    temp_configs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "immutable-infra-docker-*")))
    outputs = []
    bake = run_playbook(BAKE, {"bake_name": app, "bake_roles": ["sec_marker"], "bake_version": "1.0.0"}, "-vvv",
                        env=env)  # fmt: skip
    outputs.append(bake.stdout + bake.stderr)
    assert bake.returncode == 0, bake.stdout[-3000:]
    # a second bake is a cache hit that adds a tag by manifest through the registry API
    retag = run_playbook(BAKE, {"bake_name": app, "bake_roles": ["sec_marker"], "bake_extra_tags": ["extra"]},
                         "-vvv", env=env)  # fmt: skip
    outputs.append(retag.stdout + retag.stderr)
    assert retag.returncode == 0, retag.stdout[-3000:]
    latest = (artifacts / app / "latest.json").read_text()
    artifact = json.loads(latest)["id"]

    playbook = tmp_path / "ledger.yml"
    playbook.write_text(LEDGER_PLAY)
    ledger_path = tmp_path / "ledger.json"
    record = run_playbook(playbook, {"ledger_path": str(ledger_path), "app": app, "artifact": artifact}, "-vvv",
                          env=env)  # fmt: skip
    outputs.append(record.stdout + record.stderr)
    assert record.returncode == 0, record.stdout[-3000:]
    gc = run_playbook(GC, {"gc_app": app, "gc_ledger_path": str(ledger_path), "bake_artifacts_dir": str(artifacts)},
                      "-vvv", env=env)  # fmt: skip
    outputs.append(gc.stdout + gc.stderr)
    assert gc.returncode == 0, gc.stdout[-3000:]

    # the runs really were verbose and really talked to the registry with the password
    # (the builder connection logs each command it sends at -vvv; the controller-side modules run in process)
    assert "> EXEC " in outputs[0]
    # and pushed with the password: the registry refuses anything without it
    assert f"baked: {artifact}" in outputs[0]
    searched = {f"run {i}": text for i, text in enumerate(outputs)}
    searched["log"] = log.read_text()
    for path in all_files(artifacts) + [ledger_path]:
        searched[str(path)] = path.read_text()
    assert len(searched) >= 8
    leaks = [where for where, text in searched.items() if password in text]
    assert leaks == [], f"the registry password appears in {leaks}"
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "immutable-infra-docker-*"))) - temp_configs_before
    assert left == set(), f"push_image left its temporary docker config (it holds the password): {left}"


@pytest.fixture(autouse=True)
def _remove_local_images():
    yield
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=False
    ).stdout.split()
    for image in [name for name in listed if "/secrets-" in name]:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)
