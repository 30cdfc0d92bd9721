"""No secret in any layer of a pushed image (docs/bake.md, "Hygiene"): image_layer_hygiene against the real registry.

An early role plants a private key, a token file and a history; a later role removes them. The bake (which starts
the later role from the early role's cache layer) passes its hygiene check on the merged view, and the pushed image
holds them in no layer. The same steps as two `docker build` RUN steps leave them in the first step's layer, hidden
by whiteouts: the check finds them there, naming the layer, while the merged file system shows nothing.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook
from test_bake_container import basic_auth

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


def shell_role(roles, role: str, command: str) -> None:
    """(Re)write role `role` under roles as one shell task running command."""
    task = [{"name": f"{role} files", "ansible.builtin.shell": command, "changed_when": True}]
    (roles / role / "tasks").mkdir(parents=True, exist_ok=True)
    (roles / role / "tasks" / "main.yml").write_text("---\n" + json.dumps(task) + "\n")


def plant_then_remove_bake(registry, tmp_path, prefix: str) -> tuple[str, dict, dict]:
    """(app, env, extra vars) of a bake of lh_plant then lh_remove from tmp_path/roles into the registry."""
    app = f"{prefix}-{os.urandom(4).hex()}"
    env = {
        "ANSIBLE_ROLES_PATH": str(tmp_path / "roles"),
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
    return app, env, extra


def test_a_secret_removed_by_a_later_role_is_in_no_layer_of_the_pushed_image(registry, base_image, tmp_path):
    roles = tmp_path / "roles"
    for role, command in (("lh_plant", PLANT_SH), ("lh_remove", REMOVE_SH)):
        shell_role(roles, role, command)
    app, env, extra = plant_then_remove_bake(registry, tmp_path, "layers")
    try:
        res = run_playbook(BAKE, extra, env=env)
        assert res.returncode == 0, res.stdout[-3000:]
        # the later role changed: the next bake starts from the early role's cache layer (kept locally, never
        # pushed), which holds the key; what it pushes must not
        shell_role(roles, "lh_remove", REMOVE_SH + " && touch /srv/v2")
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


def layer_names(registry, image, digest) -> set[str]:
    """The paths in one layer blob of image (repository@digest) in the registry."""
    repository = image.split("/", 1)[1].split("@", 1)[0]
    request = urllib.request.Request(f"{registry['url']}/v2/{repository}/blobs/{digest}")
    request.add_header("Authorization", basic_auth(registry))
    with urllib.request.urlopen(request, timeout=60) as answer, tarfile.open(fileobj=io.BytesIO(answer.read())) as tar:
        return {"/" + name.removeprefix("./").lstrip("/") for name in tar.getnames()}


def test_split_layers_hold_no_removed_secret_and_a_repeated_bake_reuses_the_kept_layer(registry, base_image, tmp_path):
    """bake_artifact_layers=split: the cached role's layer is kept and reused, each layer a copy of the checked
    builder. The early role plants the secrets (and a file the later role rewrites, and one it leaves); the later role
    removes them (and a base file): in no layer of either pushed image, and the rewritten file only in the top
    layer."""
    roles = tmp_path / "roles"
    plant = PLANT_SH + " && echo kept > /opt/app/keep.txt && echo release=0 > /etc/app/shop.ini"
    shell_role(roles, "lh_plant", plant)
    app, env, extra = plant_then_remove_bake(registry, tmp_path, "split")
    extra["bake_artifact_layers"] = "split"
    above_base = {}
    try:
        for release in ("1", "2", "3"):
            command = f"{REMOVE_SH} && rm -f /etc/motd && echo release={release} > /etc/app/shop.ini"
            shell_role(roles, "lh_remove", command + f" && echo {release} > /srv/page")
            res = run_playbook(BAKE, extra, env=env)
            assert res.returncode == 0, res.stdout[-3000:]
            record = json.loads((tmp_path / "artifacts" / app / "latest.json").read_text())
            run = layer_check(registry, record["id"], base_image=base_image)
            assert run.returncode == 0, run.stdout[-3000:]
            result = result_of(run)
            assert result["findings"] == []
            above_base[release] = [layer for layer in result["layers"] if layer["scanned"]]
            merged = subprocess.run(
                ["docker", "run", "--rm", "--entrypoint", "sh", record["id"], "-c",
                 "cat /opt/app/keep.txt /etc/app/shop.ini /srv/page; ls -A /opt/app; ls -A /etc/app;"
                 " [ -e /root/.bash_history ] || echo no-history; [ -e /etc/motd ] || echo no-motd"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            expected = ["kept", f"release={release}", release, "keep.txt", "shop.ini", "no-history", "no-motd"]
            assert merged.split() == expected, merged  # a base file the later role removed is gone too

        # the first bake started from the base: one layer; the next two from lh_plant's cache layer: two layers,
        # the first of them the same blob (kept locally, already in the registry), the top one new
        assert len(above_base["1"]) == 1
        assert len(above_base["2"]) == len(above_base["3"]) == 2
        assert above_base["2"][0]["digest"] == above_base["3"][0]["digest"]
        assert above_base["2"][1]["digest"] != above_base["3"][1]["digest"]
        kept = layer_names(registry, record["id"], above_base["3"][0]["digest"])
        top = layer_names(registry, record["id"], above_base["3"][1]["digest"])
        assert "/opt/app/keep.txt" in kept and "/opt/app/keep.txt" not in top
        assert "/etc/app/shop.ini" in top and "/etc/app/shop.ini" not in kept  # rewritten later: the top only
        assert not {"/opt/app/deploy_key", "/etc/app/env", "/root/.bash_history"} & (kept | top)
        kept_images = subprocess.run(
            ["docker", "images", "-q", f"immutable-infra-cache/{app}:kept-*"],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert len(set(kept_images)) == 1

        extra["bake_artifact_layers"] = "both"
        res = run_playbook(BAKE, extra, env=env)
        assert res.returncode != 0 and "bake_artifact_layers is both: use single" in res.stdout, res.stdout[-3000:]
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
