"""playbooks/gc.yml and registry_gc on a populated real registry (htpasswd auth, deletion enabled).

The repository is filled with small images committed from the base image, each with its own created label, tagged
fp-* (bake artifacts) and some with version tags, plus one hand-made tag without fp-* that gc must never touch.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook

from ansible_collections.immutable.infra.plugins.module_utils.artifact import _contract

GC = REPO_ROOT / "playbooks" / "gc.yml"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def docker(*args: str, env: dict | None = None) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, check=False, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def api(registry: dict, path: str, method: str = "GET", data: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(registry["url"] + path, method=method, data=data)
    token = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1 test registry
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def tags(registry: dict, repo: str) -> dict[str, str]:
    status, _h, body = api(registry, f"/v2/{repo}/tags/list")
    if status == 404:
        return {}
    result = {}
    for tag in json.loads(body).get("tags") or []:
        _s, headers, _b = api(registry, f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST})
        result[tag] = headers["Docker-Content-Digest"]
    return result


@pytest.fixture(scope="module")
def populated(registry, base_image, tmp_path_factory):
    """Six artifacts A1 (oldest) .. A6 (newest) plus a hand-made image; returns repo and {name: digest}."""
    repo = f"gc-{os.urandom(4).hex()}"
    ref = f"{registry['address']}/{repo}"
    config_dir = tmp_path_factory.mktemp("docker-config")
    auth = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    (config_dir / "config.json").write_text(json.dumps({"auths": {registry["address"]: {"auth": auth}}}))
    env = dict(os.environ, DOCKER_CONFIG=str(config_dir))
    container = docker("create", base_image, "true")
    digests, local = {}, []
    try:
        for index in range(1, 8):
            name = f"A{index}" if index < 7 else "handmade"
            changes = ["--change", f"LABEL io.test.name={name}"]
            if index < 7:
                changes += ["--change", f"LABEL org.opencontainers.image.created=2026-01-0{index}T00:00:00Z"]
            image = docker("commit", *changes, container)
            tag = f"fp-{index:064x}" if index < 7 else "handmade"
            docker("tag", image, f"{ref}:{tag}")
            local.append(f"{ref}:{tag}")
            docker("push", f"{ref}:{tag}", env=env)
            _s, headers, body = api(registry, f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST})
            digests[name] = headers["Docker-Content-Digest"]
            if index in (1, 3, 6):  # version tags by manifest, like push_image does
                status, _h, _b = api(registry, f"/v2/{repo}/manifests/1.{index}.0", method="PUT", data=body,
                                     headers={"Content-Type": MANIFEST})  # fmt: skip
                assert status == 201
    finally:
        docker("rm", "-f", container)
    yield repo, digests
    for image in local:
        subprocess.run(["docker", "image", "rm", "-f", image], capture_output=True, check=False)


def ledger(tmp_path: Path, registry: dict, repo: str, live: str, previous: str) -> Path:
    path = tmp_path / "ledger.json"
    ref = f"{registry['address']}/{repo}@"
    entry = {"live": ref + live, "previous": ref + previous, "history": []}
    ami = {"live": {"eu-west-1": "ami-0123456789abcdef0"}, "previous": None, "history": []}
    path.write_text(json.dumps({"schema": 1, "apps": {repo: {"prod": entry}, "other": {"prod": ami}}}))
    return path


MOTO_PORT = 5063


def test_gc_reads_the_ssm_ledger(populated, registry):
    """gc.yml with gc_ledger as promotion_ledger gives it ({backend: ssm, ...}): what the SSM ledger has live or
    previous stays. Dry run only (the next test deletes)."""
    import boto3
    from moto_fixtures import FAKE_ENV
    from moto_fixtures import FAKE_KEYS
    from moto_fixtures import start_moto
    from moto_fixtures import stop_moto

    from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

    repo, digests = populated
    process, endpoint = start_moto(MOTO_PORT)
    try:
        ssm = boto3.client("ssm", endpoint_url=endpoint, region_name="eu-west-1", **FAKE_KEYS)
        ledger = SsmLedger(ssm, "/gc-test/ledger")
        ref = f"{registry['address']}/{repo}@"
        ledger.record(repo, "prod", ref + digests["A3"], "deploy", "ci@t")  # old ones: only the ledger keeps them
        ledger.record(repo, "prod", ref + digests["A4"], "deploy", "ci@t")
        ledger.record("other", "prod", {"eu-west-1": "ami-0123456789abcdef0"}, "deploy", "ci@t")  # an AMI app
        gc_ledger = {"backend": "ssm", "prefix": "/gc-test/ledger", "region": "eu-west-1", "endpoint_url": endpoint}
        env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}
        dry = run_playbook(GC, {"gc_app": repo, "gc_keep": 2, "gc_ledger": gc_ledger}, env={**env, **FAKE_ENV})
    finally:
        stop_moto(process)
    assert dry.returncode == 0, dry.stdout[-3000:]
    said = " ".join(dry.stdout.split())
    assert "DRY RUN (set gc_delete=true to delete): would delete 2 artifact(s)" in said
    would, kept = said[said.index("would delete 2") : said.index("kept 5:")], said[said.index("kept 5:") :]
    assert digests["A1"] in would and digests["A2"] in would  # A3, A4 in the ledger, A5, A6 newest
    assert not any(digests[n] in would for n in ("A3", "A4", "A5", "A6"))
    for name in ("A3", "A4"):
        assert f"{digests[name]} (live or previous in the ledger)" in kept


def test_gc_keeps_newest_and_ledger_referenced_artifacts_dry_run_first(populated, registry, tmp_path):
    repo, digests = populated
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}
    # prod runs A2 and ran A1 before: both are old, both must stay
    path = ledger(tmp_path, registry, repo, live=digests["A2"], previous=digests["A1"])
    extra = {"gc_app": repo, "gc_keep": 2, "gc_ledger_path": str(path), "bake_artifacts_dir": str(tmp_path)}
    before = tags(registry, repo)
    assert len(before) == 10
    # the bake's local copies of the SBOM and provenance of A3 (goes) and A5 (stays)
    local = {name: _contract.local_evidence_paths(str(tmp_path), repo, digests[name]) for name in ("A3", "A5")}
    for path in local["A3"] + local["A5"]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("{}\n")

    dry = run_playbook(GC, extra, "-vvv", env=env)
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert "DRY RUN (set gc_delete=true to delete): would delete 2 artifact(s)" in dry.stdout
    assert digests["A3"] in dry.stdout and digests["A4"] in dry.stdout
    assert tags(registry, repo) == before
    assert registry["password"] not in dry.stdout + dry.stderr

    checked = run_playbook(GC, dict(extra, gc_delete=True), "--check", env=env)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert tags(registry, repo) == before

    assert all(Path(path).exists() for path in local["A3"] + local["A5"])  # neither the dry run nor check mode

    real = run_playbook(GC, dict(extra, gc_delete=True), env=env)
    assert real.returncode == 0, real.stdout[-3000:]
    assert "deleted 2 artifact(s)" in real.stdout
    assert "local SBOM and provenance copies removed: 2" in real.stdout
    assert [Path(path).exists() for path in local["A3"] + local["A5"]] == [False, False, True, True]
    after = tags(registry, repo)
    # A5, A6 newest; A1, A2 in the ledger; the hand-made image is not a bake artifact. A3 and A4 went, and with
    # A3 its version tag 1.3.0 (a manifest delete removes every tag of the digest).
    assert set(after.values()) == {digests[n] for n in ("A1", "A2", "A5", "A6", "handmade")}
    assert "1.3.0" not in after and after["1.1.0"] == digests["A1"] and after["1.6.0"] == digests["A6"]
    assert after["handmade"] == digests["handmade"]

    again = run_playbook(GC, dict(extra, gc_delete=True), env=env)
    assert again.returncode == 0 and "deleted 0 artifact(s)" in again.stdout
    assert tags(registry, repo) == after


def test_gc_refuses_to_run_without_a_ledger(populated, registry):
    repo, _digests = populated
    result = run_playbook(GC, {"gc_app": repo})
    assert result.returncode != 0
    assert "gc needs the ledger to protect what environments run: set gc_ledger_path" in result.stdout


def test_gc_names_bad_inputs(populated, registry, tmp_path):
    repo, _digests = populated
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": "wrong-password"}
    wrong = run_playbook(GC, {"gc_app": repo, "gc_without_ledger": True}, env=env)
    assert wrong.returncode != 0 and "wrong username or password" in wrong.stdout
    assert "wrong-password" not in wrong.stdout
    env["IMMUTABLE_REGISTRY_PASSWORD"] = registry["password"]
    keep = run_playbook(GC, {"gc_app": repo, "gc_without_ledger": True, "gc_keep": 0}, env=env)
    assert keep.returncode != 0 and "keep must be a whole number of at least 1" in keep.stdout
    bad = run_playbook(GC, {"gc_app": repo, "gc_repository": "no-host/" + repo, "gc_without_ledger": True}, env=env)
    assert bad.returncode != 0 and "does not start with a registry host" in bad.stdout
