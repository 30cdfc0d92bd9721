"""No secret in any layer of a pushed image (docs/bake.md, "Hygiene"): image_layer_hygiene against the real registry.

An early role plants a private key, a token file and a history; a later role removes them. The bake (which starts
the later role from the early role's cache layer) passes its hygiene check on the merged view, and the pushed image
holds them in no layer. The same steps as two `docker build` RUN steps leave them in the first step's layer, hidden
by whiteouts: the check finds them there, naming the layer, while the merged file system shows nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAA\\n-----END OPENSSH PRIVATE KEY-----\\n"
AWS_KEY_ID = "AKIA" + "Q3EXAMPLEKEY7YYY"  # token-shaped, built so that this file holds no token shape
PLANT_SH = (
    f"mkdir -p /opt/app /etc/app && printf -- '{KEY}' > /opt/app/deploy_key"
    f" && echo 'AWS_ACCESS_KEY_ID={AWS_KEY_ID}' > /etc/app/env && echo 'curl -H secret' > /root/.bash_history"
)
REMOVE_SH = "rm -f /opt/app/deploy_key /etc/app/env /root/.bash_history"
FINDINGS = {
    "/opt/app/deploy_key": "OPENSSH private key",
    "/etc/app/env": "AWS access key ID in the file",
    "/root/.bash_history": "shell or tool history",
}

pytestmark = [pytest.mark.docker, pytest.mark.registry]


def layer_check(registry, image, base_image=None):
    args = {
        "image": image,
        "registry_username": registry["username"],
        "registry_password": registry["password"],
    }
    if base_image:
        args["base_image"] = base_image
    return subprocess.run(
        ["ansible", "localhost", "-m", "immutable.infra.image_layer_hygiene", "-a", json.dumps(args)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False,
        env=ansible_env({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}),
    )  # fmt: skip


def result_of(run) -> dict:
    """The module's result from the json callback's output of `ansible localhost -m`."""
    return json.loads(run.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def test_a_secret_removed_by_a_later_role_is_in_no_layer_of_the_pushed_image(registry, base_image, tmp_path):
    roles = tmp_path / "roles"
    for role, command in (("lh_plant", PLANT_SH), ("lh_remove", REMOVE_SH)):
        (roles / role / "tasks").mkdir(parents=True)
        task = [{"name": f"{role} files", "ansible.builtin.shell": command, "changed_when": True}]
        (roles / role / "tasks" / "main.yml").write_text("---\n" + json.dumps(task) + "\n")
    app = f"layers-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(roles),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
        "IMMUTABLE_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    extra = {
        "bake_name": app,
        "bake_roles": ["lh_plant", "lh_remove"],
        "bake_registry": registry["address"],
        "bake_sbom": False,
    }
    try:
        res = run_playbook(BAKE, extra, env=env)
        assert res.returncode == 0, res.stdout[-3000:]
        # the later role changed: the next bake starts from the early role's cache layer (kept locally, never
        # pushed), which holds the key; what it pushes must not
        task = [
            {"name": "lh_remove files", "ansible.builtin.shell": REMOVE_SH + " && touch /srv/v2", "changed_when": True}
        ]
        (roles / "lh_remove" / "tasks" / "main.yml").write_text("---\n" + json.dumps(task) + "\n")
        res = run_playbook(BAKE, extra, env=env)
        assert res.returncode == 0, res.stdout[-3000:]
        record = json.loads((tmp_path / "artifacts" / app / "latest.json").read_text())
        assert record["reused_roles"] == ["lh_plant"], record["reused_roles"]

        run = layer_check(registry, record["id"], base_image=base_image)
        assert run.returncode == 0, run.stdout[-3000:]
        result = result_of(run)
        assert result["findings"] == []
        scanned = [layer for layer in result["layers"] if layer["scanned"]]
        assert len(scanned) == 1 and scanned[0]["files"] > 0  # one layer above the base, and it was read
        assert all(not layer["scanned"] for layer in result["layers"][: len(result["layers"]) - 1])
    finally:
        subprocess.run(
            f"docker images -q --filter label=io.immutable-infra.app={app} | xargs -r docker rmi -f",
            shell=True, capture_output=True, check=False,
        )  # fmt: skip


def test_a_secret_hidden_by_a_later_docker_build_step_is_found_in_its_layer(registry, base_image, tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN {PLANT_SH}\nRUN {REMOVE_SH}\n")
    tag = f"{registry['address']}/layers-{os.urandom(4).hex()}/web:v1"
    config = tempfile.mkdtemp(prefix="docker-config-")
    docker_env = {**os.environ, "DOCKER_CONFIG": config}
    try:
        for argv, stdin in (
            (["docker", "build", "--quiet", "-t", tag, str(context)], None),
            (
                ["docker", "login", registry["address"], "-u", registry["username"], "--password-stdin"],
                registry["password"],
            ),
            (["docker", "push", tag], None),
        ):
            done = subprocess.run(
                argv, input=stdin, env=docker_env, capture_output=True, text=True, timeout=600, check=False
            )
            assert done.returncode == 0, done.stderr
        image = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        merged = subprocess.run(
            ["docker", "run", "--rm", "--entrypoint", "ls", tag, "-A", "/opt/app", "/etc/app", "/root"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "deploy_key" not in merged and "env" not in merged.split() and ".bash_history" not in merged

        run = layer_check(registry, image, base_image=base_image)
        assert run.returncode != 0, run.stdout[-3000:]
        result = result_of(run)
        assert {f["path"]: f["reason"] for f in result["findings"]} == FINDINGS
        planted = [layer["index"] for layer in result["layers"] if layer["scanned"]][0]
        assert {f["layer"] for f in result["findings"]} == {planted}  # the first RUN's layer, not the merged view
        assert f"layer {planted}: /opt/app/deploy_key (OPENSSH private key)" in result["msg"]
        assert AWS_KEY_ID not in run.stdout + run.stderr and "b3BlbnNzaC1rZXktdjEAAAA" not in run.stdout
        assert registry["password"] not in run.stdout + run.stderr

        # without base_image every layer is read: the base's layer too, and it is clean
        run = layer_check(registry, image)
        result = result_of(run)
        assert all(layer["scanned"] for layer in result["layers"])
        assert {f["layer"] for f in result["findings"]} == {planted}

        # a tag instead of a digest is refused before anything is read
        run = layer_check(registry, tag)
        assert run.returncode != 0 and "is not a digest reference" in run.stdout, run.stdout
    finally:
        shutil.rmtree(config, ignore_errors=True)
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, check=False)
