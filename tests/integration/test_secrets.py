"""Secrets never leak: bake (which pushes) and gc at -vvv, with a log file; grep everything for the password.

Searched: stdout and stderr of each run, the ANSIBLE_LOG_PATH log, the artifact records and latest.json, the ledger
file written by immutable.infra.ledger, and the temporary docker configs push_image writes (all removed after).
AWS: an AMI bake (bake_ami: cached, builder, captured, absent), the ledger (file and SSM) and gc_ami.yml at -vvv on
a moto_server, with distinctive fake keys (moto_fixtures.FAKE_KEYS) given as module arguments and as environment
variables; grep the same places, the bake's results and every SSM parameter (and its versions) for both.
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
from moto_fixtures import FAKE_ACCESS_KEY_ID
from moto_fixtures import FAKE_ENV
from moto_fixtures import FAKE_KEYS
from moto_fixtures import FAKE_SECRET_ACCESS_KEY
from moto_fixtures import base_ami_and_subnet
from moto_fixtures import ec2_client
from moto_fixtures import start_moto
from moto_fixtures import stop_moto

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
GC = REPO_ROOT / "playbooks" / "gc.yml"
GC_AMI = REPO_ROOT / "playbooks" / "gc_ami.yml"
AMI_BAKE = REPO_ROOT / "tests" / "integration" / "playbooks" / "ami_bake.yml"
MOTO_PORT = 5064
REGION = "us-east-1"
# No credentials from the host, no metadata-service probing: only what the test gives.
NO_HOST_AWS = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
}
AWS_PLAY = """---
- name: Bake an AMI (bake_ami cached, builder, captured, absent; the keys as module arguments)
  ansible.builtin.import_playbook: {ami_bake}

- name: Record the AMI in both ledgers (the SSM one with the keys from the environment)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: File ledger
      immutable.infra.ledger:
        path: "{{{{ ledger_path }}}}"
        app: "{{{{ gc_app }}}}"
        env: dev
        chain: [dev, prod]
        artifact_id: "{{{{ ami_captured.amis }}}}"
        action: deploy
    - name: SSM ledger
      immutable.infra.ledger:
        backend: ssm
        prefix: "{{{{ gc_ledger.prefix }}}}"
        region: "{{{{ gc_ledger.region }}}}"
        endpoint_url: "{{{{ gc_ledger.endpoint_url }}}}"
        app: "{{{{ gc_app }}}}"
        env: dev
        chain: [dev, prod]
        artifact_id: "{{{{ ami_captured.amis }}}}"
        action: deploy

- name: Collect old AMIs, a dry run (the keys through module_defaults)
  ansible.builtin.import_playbook: {gc_ami}
"""
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
    # a second bake of the same version is a cache hit that adds a tag by manifest through the registry API
    same_version = {"bake_name": app, "bake_roles": ["sec_marker"], "bake_version": "1.0.0"}
    retag = run_playbook(BAKE, dict(same_version, bake_extra_tags=["extra"]), "-vvv", env=env)
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
    assert f"baked: {artifact}" in outputs[0], outputs[0][-8000:]
    searched = {f"run {i}": text for i, text in enumerate(outputs)}
    searched["log"] = log.read_text()
    for path in all_files(artifacts) + [ledger_path]:
        searched[str(path)] = path.read_text()
    assert len(searched) >= 8
    leaks = [where for where, text in searched.items() if password in text]
    assert leaks == [], f"the registry password appears in {leaks}"
    left = set(glob.glob(os.path.join(tempfile.gettempdir(), "immutable-infra-docker-*"))) - temp_configs_before
    assert left == set(), f"push_image left its temporary docker config (it holds the password): {left}"


def test_no_aws_key_in_output_logs_results_or_ledgers_at_vvv(tmp_path):
    """The fake access key ID and secret key reach the AWS modules as arguments (bake_ami), from the environment
    (ledger, SSM) and through module_defaults (gc_ami.yml's gc_aws: bake_ami, ledger_info), and appear nowhere
    afterwards. One ansible-playbook run (three plays) keeps it quick."""
    import boto3

    assert len(FAKE_ACCESS_KEY_ID) == 20 and len(FAKE_SECRET_ACCESS_KEY) == 40
    process, endpoint = start_moto(MOTO_PORT)
    try:
        ec2 = ec2_client(endpoint, REGION)
        base, _vpc, subnet = base_ami_and_subnet(ec2, 77)
        aws = {"endpoint_url": endpoint, "region": REGION, **FAKE_KEYS}
        log = tmp_path / "ansible.log"
        env = {**NO_HOST_AWS, "ANSIBLE_LOG_PATH": str(log)}
        result = tmp_path / "bake.json"
        app = f"secrets-ami-{os.urandom(4).hex()}"
        play = tmp_path / "aws.yml"
        play.write_text(AWS_PLAY.format(ami_bake=AMI_BAKE, gc_ami=GC_AMI))
        ledger_path, prefix = tmp_path / "ledger.json", f"/secrets-test/{app}"
        extra = {
            "ami_connection": aws,
            "ami_fingerprint": f"sha256:{os.urandom(8).hex()}",
            "ami_copy_regions": ["eu-west-1"],
            "ami_builder_args": {
                "base_ami": base,
                "subnet_id": subnet,
                "ssh_cidr": "192.0.2.10/32",
                "private_key_path": str(tmp_path / "bake-key"),
                "wait_for_ssh": False,
                "poll_interval": 1,
            },
            "ami_capture_args": {"name": app, "family": app, "poll_interval": 1},
            "ami_result_path": str(result),
            "ledger_path": str(ledger_path),
            "gc_app": app,
            "gc_ami_regions": [REGION, "eu-west-1"],
            "gc_aws": aws,
            "gc_ledger": {"backend": "ssm", "prefix": prefix, "region": REGION, "endpoint_url": endpoint},
        }
        run = run_playbook(play, extra, "-vvv", env={**env, **FAKE_ENV})  # one run: the bake, the ledgers, gc
        output = run.stdout + run.stderr
        assert run.returncode == 0, run.stdout[-3000:]
        amis = json.loads(result.read_text())["captured"]["amis"]
        assert set(amis) == {REGION, "eu-west-1"}
        said = " ".join(run.stdout.split())
        assert f"{REGION}: DRY RUN (set gc_delete=true to delete): would deregister 0 AMI(s)" in said

        ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=REGION, **FAKE_KEYS)
        params = ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"]
        versions = [v for p in params for v in ssm.get_parameter_history(Name=p["Name"])["Parameters"]]
    finally:
        stop_moto(process)
    # the run really was verbose, and both ledgers hold the AMIs
    assert "ESTABLISH LOCAL CONNECTION" in output
    assert json.loads(ledger_path.read_text())["apps"][app]["dev"]["live"] == amis
    assert [json.loads(p["Value"])["live"] for p in params] == [amis]
    searched = {"output": output, "log": log.read_text()}
    searched["bake results"] = result.read_text()
    searched["ledger file"] = ledger_path.read_text()
    searched.update({f"SSM {v['Name']} version {v['Version']}": v["Value"] for v in versions})
    leaks = [
        (what, where)
        for what, value in (("access key ID", FAKE_ACCESS_KEY_ID), ("secret key", FAKE_SECRET_ACCESS_KEY))
        for where, text in searched.items()
        if value in text
    ]
    assert leaks == [], f"AWS credentials appear in {leaks}"


@pytest.fixture(autouse=True)
def _remove_local_images():
    yield
    listed = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=False
    ).stdout.split()
    for image in [name for name in listed if "/secrets-" in name]:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)
