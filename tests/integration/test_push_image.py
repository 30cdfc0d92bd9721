"""immutable.infra.push_image and registry_image_info through ansible-playbook, against the REAL local registry
(htpasswd auth on 127.0.0.1:5000) and the real Docker Engine.

Every check of the registry state is made with plain HTTP requests of this file (not with the collection's client),
and pulled-back images are inspected with the docker CLI. Images are tiny (a `docker import` of two files) so pushes
take a second. Each test uses its own tags; the repository, containers, images and the second registry process are
removed by fixture finalizers.
"""

from __future__ import annotations

import base64
import calendar
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.registry]

PLAYBOOK = Path(__file__).resolve().parent / "playbooks" / "push_image_run.yml"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


def docker(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False
    )
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} failed: {proc.stderr}")
    return proc


class Registry:
    """Independent view of a registry over HTTP with basic auth."""

    def __init__(self, address: str, username: str, password: str):
        self.address = address
        self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def call(self, method: str, path: str, accept: str | None = None):
        request = urllib.request.Request(f"http://{self.address}{path}", method=method)
        request.add_header("Authorization", self.auth)
        if accept:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def digest(self, repo: str, tag: str) -> str | None:
        status, headers, _unused = self.call("HEAD", f"/v2/{repo}/manifests/{tag}", MANIFEST_TYPES)
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def tags(self, repo: str) -> list[str]:
        status, _unused, body = self.call("GET", f"/v2/{repo}/tags/list")
        return (json.loads(body).get("tags") or []) if status == 200 else []

    def delete_repo(self, repo: str) -> None:
        for digest in {self.digest(repo, tag) for tag in self.tags(repo)} - {None}:
            self.call("DELETE", f"/v2/{repo}/manifests/{digest}")


@pytest.fixture(scope="module")
def reg(registry):
    client = Registry(registry["address"], registry["username"], registry["password"])
    status, _unused, _unused = client.call("GET", "/v2/")
    if status != 200:
        pytest.fail(f"local registry at {registry['address']} answered {status}: run scripts/setup.sh")
    return client


@pytest.fixture(scope="module")
def names(registry, reg):
    """Unique repository for this module; removed from the registry (and local images) at the end."""
    suffix = uuid.uuid4().hex[:8]
    repo = f"it-push-{suffix}"
    state = {"repo": repo, "repository": f"{registry['address']}/{repo}", "suffix": suffix, "images": set()}
    yield state
    reg.delete_repo(repo)
    refs = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", state["repository"], check=False).stdout
    for ref in refs.split():
        docker("image", "rm", "-f", ref, check=False)
    for image_id in state["images"]:
        docker("image", "rm", "-f", image_id, check=False)


@pytest.fixture(scope="module")
def tiny_image(tmp_path_factory, names):
    """A two-file image made with docker import (nothing is pulled)."""
    root = tmp_path_factory.mktemp("tiny")
    (root / "hello.txt").write_text("hello from the builder\n")
    (root / "etc").mkdir()
    (root / "etc" / "app.conf").write_text("mode=test\n")
    tar_path = root.parent / f"tiny-{names['suffix']}.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(root / "hello.txt", arcname="hello.txt")
        tar.add(root / "etc", arcname="etc")
    ref = f"immutable-infra-test/tiny:{names['suffix']}"
    docker("import", str(tar_path), ref)
    yield ref
    docker("image", "rm", "-f", ref, check=False)


@pytest.fixture(scope="module")
def builders(tiny_image):
    """Factory of builder containers (created, never started: commit works on them); removed at the end."""
    created = []

    def make() -> str:
        name = f"it-push-builder-{uuid.uuid4().hex[:8]}"
        docker("create", "--name", name, tiny_image, "/builder-does-not-run")
        created.append(name)
        return name

    yield make
    for name in created:
        docker("rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, registry, names):
    """Run one module call through ansible-playbook; return (result dict, full output). Arguments travel in a 0600
    vars file, never on the command line."""
    from conftest import run_playbook

    workdir = tmp_path_factory.mktemp("runs")

    def _run(module: str, args: dict, check: bool = False, credentials: bool = True):
        key = uuid.uuid4().hex[:8]
        result_file = workdir / f"result-{key}.json"
        module_args = dict(args)
        if credentials:
            module_args.setdefault("registry_username", registry["username"])
            module_args.setdefault("registry_password", registry["password"])
        vars_file = workdir / f"vars-{key}.json"
        vars_file.touch(mode=0o600)
        vars_file.write_text(
            json.dumps({"module": module, "module_args": module_args, "result_file": str(result_file), "check": check})
        )
        proc = run_playbook(PLAYBOOK, None, "-e", f"@{vars_file}", timeout=300)
        vars_file.unlink()
        if not result_file.exists():
            pytest.fail(f"playbook did not record a result:\n{proc.stdout}\n{proc.stderr}")
        text = result_file.read_text()
        result = json.loads(text)
        if result.get("image_id"):
            names["images"].add(result["image_id"])
        return result, proc.stdout + proc.stderr + text

    return _run


CONFIG = {
    "cmd": ["/bin/app", "--serve"],
    "entrypoint": ["/bin/entry"],
    "ports": ["8080/tcp", "9090/udp"],
    "env": {"APP_ENV": "production", "GREETING": 'say "hi" there'},
    "user": "1000:1000",
    "workdir": "/srv/app",
    "healthcheck": {"test": ["CMD", "/bin/health"], "interval": "7s", "timeout": "3s", "retries": 4,
                    "start_period": "2s"},
    "labels": {"com.example.team": "web", "org.opencontainers.image.source": "https://git.example.com/web"},
}  # fmt: skip


@pytest.fixture(scope="module")
def pushed(run, builders, names, reg):
    """The first push from a builder container with the full config: tags 1.0.0 and latest."""
    fingerprint = "sha256:" + uuid.uuid4().hex * 2
    args = {
        "container": builders(),
        "repository": names["repository"],
        "tags": ["1.0.0", "latest"],
        "fingerprint": fingerprint,
        "oci_revision": "0123abcd",
        "oci_version": "1.0.0",
        "config": CONFIG,
    }
    result, output = run("push_image", args)
    assert result.get("failed") is not True, result.get("msg")
    return {"args": args, "result": result, "output": output, "fingerprint": fingerprint}


def test_push_from_container_sets_config_and_returns_the_registry_digest(pushed, reg, names, registry, tmp_path):
    result = pushed["result"]
    assert result["changed"] is True
    assert result["pushed"] == ["1.0.0"]
    assert result["retagged"] == ["latest"]
    digest = reg.digest(names["repo"], "1.0.0")
    assert digest and digest.startswith("sha256:")
    assert result["digest"] == digest == reg.digest(names["repo"], "latest")
    assert result["image"] == f"{names['repository']}@{digest}"
    assert registry["password"] not in pushed["output"]

    # pull the image back by digest (with credentials in a throwaway DOCKER_CONFIG) and inspect its config
    local_id = result["image_id"]
    docker("image", "rm", "-f", f"{names['repository']}:1.0.0", local_id, check=False)
    assert docker("image", "inspect", local_id, check=False).returncode != 0, "the local copy should be gone"
    auth = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    config_dir = tmp_path / "docker"
    config_dir.mkdir(mode=0o700)
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry["address"]: {"auth": auth}}}))
    docker("pull", result["image"], env={"DOCKER_CONFIG": str(config_dir)})
    shutil.rmtree(config_dir)
    inspected = json.loads(docker("image", "inspect", result["image"]).stdout)[0]
    assert inspected["Id"] == local_id
    config = inspected["Config"]
    assert config["Cmd"] == ["/bin/app", "--serve"]
    assert config["Entrypoint"] == ["/bin/entry"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "9090/udp"}
    assert "APP_ENV=production" in config["Env"]
    assert 'GREETING=say "hi" there' in config["Env"]
    assert config["User"] == "1000:1000"
    assert config["WorkingDir"] == "/srv/app"
    assert config["Healthcheck"] == {
        "Test": ["CMD", "/bin/health"],
        "Interval": 7_000_000_000,
        "Timeout": 3_000_000_000,
        "StartPeriod": 2_000_000_000,
        "Retries": 4,
    }
    labels = config["Labels"]
    assert labels["io.immutable-infra.fingerprint"] == pushed["fingerprint"]
    assert labels["org.opencontainers.image.revision"] == "0123abcd"
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert labels["org.opencontainers.image.source"] == "https://git.example.com/web"
    assert labels["com.example.team"] == "web"
    created = calendar.timegm(time.strptime(labels["org.opencontainers.image.created"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(time.time() - created) < 3600, "created is set at commit time, in UTC"


def test_repush_same_fingerprint_from_a_new_builder_changes_nothing(pushed, run, builders, names, reg):
    before = docker("image", "ls", "-q", "--filter", f"label=io.immutable-infra.fingerprint={pushed['fingerprint']}")
    args = dict(pushed["args"], container=builders())
    result, _unused = run("push_image", args)
    assert result["changed"] is False, result
    assert result["pushed"] == [] and result["retagged"] == []
    assert result["digest"] == pushed["result"]["digest"] == reg.digest(names["repo"], "1.0.0")
    assert result["plan"]["commit"] is False
    after = docker("image", "ls", "-q", "--filter", f"label=io.immutable-infra.fingerprint={pushed['fingerprint']}")
    assert after.stdout == before.stdout, "nothing may be committed when the registry already has the content"


def test_add_tag_by_manifest_keeps_the_digest_and_pushes_no_layer(pushed, run, builders, names, reg):
    args = dict(pushed["args"], container=builders(), tags=["1.0.0", "staging"], mutable_tags=["staging"])
    result, _unused = run("push_image", args)
    assert result["changed"] is True
    assert result["pushed"] == []
    assert result["retagged"] == ["staging"]
    assert result["plan"]["commit"] is False
    assert not any(action.startswith("push ") for action in result["actions"])
    assert result["digest"] == pushed["result"]["digest"] == reg.digest(names["repo"], "staging")


def test_registry_image_info_reports_tags_and_digest(pushed, run, names):
    digest = pushed["result"]["digest"]
    result, _unused = run(
        "registry_image_info",
        {"repository": names["repository"], "tags": ["1.0.0", "no-such-tag"], "digest": digest},
        check=True,
    )
    assert result["changed"] is False
    found, missing, by_digest = result["images"]
    assert found["exists"] is True
    assert found["digest"] == digest
    assert found["image"] == f"{names['repository']}@{digest}"
    assert found["fingerprint"] == pushed["fingerprint"]
    assert found["labels"]["org.opencontainers.image.revision"] == "0123abcd"
    assert found["created"]
    assert found["image_id"] == pushed["result"]["image_id"]
    assert missing == dict(missing, exists=False, digest=None, image=None, fingerprint=None)
    assert by_digest["exists"] is True and by_digest["digest"] == digest


def test_immutable_tag_conflict_fails_and_force_moves_it(run, builders, names, reg):
    first, _unused = run(
        "push_image",
        {"container": builders(), "repository": names["repository"], "tags": ["2.0.0"], "fingerprint": "fp-A"},
    )
    assert first["changed"] is True
    old = reg.digest(names["repo"], "2.0.0")
    assert old == first["digest"]

    other = {"container": builders(), "repository": names["repository"], "tags": ["2.0.0", "latest-2"],
             "fingerprint": "fp-B"}  # fmt: skip
    failed, _unused = run("push_image", other)
    assert failed["failed"] is True
    assert f"{names['repository']}:2.0.0 already points at {old}" in failed["msg"]
    assert "force: true" in failed["msg"] and "Bump the version tag" in failed["msg"]
    assert failed["plan"]["conflicts"] == [{"tag": "2.0.0", "digest": old}]
    assert reg.digest(names["repo"], "2.0.0") == old, "the tag must still point at the old digest"
    assert reg.digest(names["repo"], "latest-2") is None, "nothing may be pushed on a conflict"
    assert not docker("image", "ls", "-q", "--filter", "label=io.immutable-infra.fingerprint=fp-B").stdout.strip()

    forced, _unused = run("push_image", dict(other, force=True))
    assert forced["changed"] is True
    assert forced["pushed"] == ["2.0.0"]
    new = reg.digest(names["repo"], "2.0.0")
    assert new == forced["digest"] != old
    assert reg.digest(names["repo"], "latest-2") == new


def test_image_source_pushed_as_is(run, tiny_image, names, reg):
    image_id = docker("image", "inspect", "--format", "{{.Id}}", tiny_image).stdout.strip()
    args = {"image": tiny_image, "repository": names["repository"], "tags": ["raw-1"], "mutable_tags": []}
    result, _unused = run("push_image", args)
    assert result["changed"] is True and result["pushed"] == ["raw-1"]
    assert result["image_id"] == image_id
    assert result["plan"]["identity"] == {"kind": "image_id", "value": image_id}
    assert reg.digest(names["repo"], "raw-1") == result["digest"]
    again, _unused = run("push_image", args)
    assert again["changed"] is False and again["digest"] == result["digest"]


def test_check_mode_cold_push_commits_and_pushes_nothing(run, builders, names, reg):
    fingerprint = "fp-check-" + uuid.uuid4().hex[:8]
    args = {"container": builders(), "repository": names["repository"], "tags": ["3.0.0", "latest-3"],
            "fingerprint": fingerprint}  # fmt: skip
    result, _unused = run("push_image", args, check=True)
    assert result["changed"] is True
    assert result["plan"]["commit"] is True
    assert result["plan"]["push_tag"] == "3.0.0"
    assert result["plan"]["manifest_tags"] == ["latest-3"]
    assert result["digest"] is None
    assert not docker(
        "image", "ls", "-qa", "--filter", f"label=io.immutable-infra.fingerprint={fingerprint}"
    ).stdout.strip()
    assert reg.digest(names["repo"], "3.0.0") is None
    assert reg.digest(names["repo"], "latest-3") is None


def test_wrong_password_fails_clearly_without_leaking_it(run, builders, names, registry, reg):
    wrong = "wrong-" + uuid.uuid4().hex
    for module, args in (
        ("push_image", {"container": builders(), "repository": names["repository"], "tags": ["4.0.0"]}),
        ("registry_image_info", {"repository": names["repository"], "tags": ["1.0.0"]}),
    ):
        result, output = run(module, dict(args, registry_username=registry["username"], registry_password=wrong))
        assert result["failed"] is True
        assert result["msg"].startswith(
            f"authentication to {registry['address']} failed: wrong username or password for user "
            f"'{registry['username']}'"
        ), result["msg"]
        assert wrong not in output
        assert registry["password"] not in output
    assert reg.digest(names["repo"], "4.0.0") is None


def test_invalid_repository_names_the_bad_part(run, builders):
    result, _unused = run(
        "push_image", {"container": builders(), "repository": "127.0.0.1:5000/Bad_Name", "tags": ["1"]}
    )
    assert result["failed"] is True
    assert "path component 'Bad_Name'" in result["msg"]


def test_missing_container_is_named(run, names):
    args = {"container": "it-push-no-such-builder", "repository": names["repository"], "tags": ["1"]}
    result, _unused = run("push_image", args)
    assert result["failed"] is True
    assert "container 'it-push-no-such-builder' not found" in result["msg"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def second_registry(tmp_path):
    """A registry process of our own on another 127.0.0.1 port with its own htpasswd; killed at the end."""
    port = free_port()
    password = uuid.uuid4().hex
    subprocess.run(["htpasswd", "-Bbc", str(tmp_path / "htpasswd"), "second", password], check=True,
                   capture_output=True)  # fmt: skip
    (tmp_path / "data").mkdir()
    (tmp_path / "config.yml").write_text(
        f"""version: 0.1
log: {{level: warn}}
storage: {{filesystem: {{rootdirectory: {tmp_path / "data"}}}}}
http: {{addr: "127.0.0.1:{port}", secret: {uuid.uuid4().hex}}}
auth: {{htpasswd: {{realm: second, path: {tmp_path / "htpasswd"}}}}}
"""
    )
    log = open(tmp_path / "registry.log", "w")  # noqa: SIM115 - closed in the finalizer
    process = subprocess.Popen(["docker-registry", "serve", str(tmp_path / "config.yml")], stdout=log, stderr=log)
    state = {"address": f"127.0.0.1:{port}", "username": "second", "password": password, "process": process}
    try:
        for _unused in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"second registry did not start: {(tmp_path / 'registry.log').read_text()}")
        yield state
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
        log.close()


def test_stopped_registry_fails_clearly(run, builders, second_registry):
    address = second_registry["address"]
    creds = {"registry_username": second_registry["username"], "registry_password": second_registry["password"]}
    args = {"container": builders(), "repository": f"{address}/web", "tags": ["1.0.0"], "fingerprint": "fp-x", **creds}
    ok, _unused = run("push_image", args, check=True)  # the registry answers: check mode plans a cold push
    assert ok["changed"] is True and ok["plan"]["push_tag"] == "1.0.0", ok

    second_registry["process"].terminate()
    second_registry["process"].wait(timeout=10)
    result, output = run("push_image", args)
    assert result["failed"] is True
    assert result["msg"].startswith(f"registry unreachable at {address}"), result["msg"]
    assert result["msg"].endswith("start it or check the address")
    assert second_registry["password"] not in output
