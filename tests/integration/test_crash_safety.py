"""Fault injection: kill `ansible-playbook playbooks/bake.yml` and prove that nothing is left behind.

Real Docker, the real registry (and a registry process of our own, to kill it mid-push). The bakes use tiny roles
from a temporary roles path (a marker file; a `sleep` task as the provisioning kill point; a block of random data
so a push lasts long enough to be interrupted), so no bake pays for an apt install.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
CLEANUP = REPO_ROOT / "playbooks" / "cleanup.yml"

ROLES = {
    "cs_marker": """
- name: Write a marker
  ansible.builtin.copy:
    content: "{{ cs_marker | default('m') }}\\n"
    dest: /etc/cs-marker
    mode: "0644"
""",
    "cs_pause": """
- name: Kill point
  ansible.builtin.command: sleep 90
  changed_when: false
""",
    "cs_big": """
- name: Write data that makes the push last
  ansible.builtin.command: dd if=/dev/urandom of=/opt/cs-big bs=1M count={{ cs_big_mb | default(120) }}
  args:
    creates: /opt/cs-big
""",
}


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


def builders(app: str) -> list[str]:
    kind = "label=io.immutable-infra.kind=builder"
    app_label = f"label=io.immutable-infra.app={app}"
    out = docker("ps", "-a", "--filter", kind, "--filter", app_label, "--format", "{{.Names}}")
    return [line for line in out.splitlines() if line]


def auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def api(url: str, user: str, password: str, method: str = "GET", accept: str | None = None):
    request = urllib.request.Request(url, method=method)
    request.add_header("Authorization", auth(user, password))
    if accept:
        request.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - 127.0.0.1 test registry
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


MANIFEST = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"


def tag_state(reg: dict, repo: str) -> dict[str, str]:
    """{tag: digest} of repo, after checking every tag's manifest and every blob it names exists (no partial tag)."""
    status, _h, body = api(f"{reg['url']}/v2/{repo}/tags/list", reg["username"], reg["password"])
    if status == 404:
        return {}
    assert status == 200, status
    state = {}
    for tag in json.loads(body).get("tags") or []:
        status, headers, body = api(f"{reg['url']}/v2/{repo}/manifests/{tag}", reg["username"], reg["password"],
                                    accept=MANIFEST)  # fmt: skip
        assert status == 200, f"tag {tag} has no manifest ({status})"
        manifest = json.loads(body)
        for blob in [manifest["config"]] + manifest["layers"]:
            status, _h, _b = api(f"{reg['url']}/v2/{repo}/blobs/{blob['digest']}", reg["username"], reg["password"],
                                 method="HEAD")  # fmt: skip
            assert status == 200, f"tag {tag} names blob {blob['digest']} that the registry lacks: a partial tag"
        state[tag] = headers.get("Docker-Content-Digest")
    return state


@pytest.fixture(scope="module")
def roles_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("roles")
    for name, tasks in ROLES.items():
        (root / name / "tasks").mkdir(parents=True)
        (root / name / "tasks" / "main.yml").write_text("---" + tasks)
    return root


@pytest.fixture(scope="module")
def app() -> str:
    name = f"crash-{os.urandom(4).hex()}"
    yield name
    for container in builders(name):
        docker("rm", "-f", container, check=False)
    images = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter", f"reference=*/{name}",
                    check=False).split()  # fmt: skip
    images += docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                     f"reference=immutable-infra-cache/{name}", check=False).split()  # fmt: skip
    images += docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                     f"reference=127.0.0.1:*/{name}", check=False).split()  # fmt: skip
    for image in set(images):
        docker("image", "rm", "-f", image, check=False)


class Bake:
    """ansible-playbook bake.yml started in its own session, so a SIGINT can go to its process group like Ctrl-C."""

    def __init__(self, extra_vars: dict, env: dict, log: Path):
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(  # noqa: S603
            ["ansible-playbook", str(BAKE), "-e", json.dumps(extra_vars)],
            cwd=REPO_ROOT,
            # banners at task start (ansible.cfg hides skipped hosts, which delays a banner until the task's first
            # result), so a kill lands inside the task named, not after it
            env=ansible_env(dict(env, PYTHONUNBUFFERED="1", ANSIBLE_DISPLAY_SKIPPED_HOSTS="1")),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_for(self, text: str, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log.read_text():
                return
            if self.proc.poll() is not None:
                pytest.fail(f"bake ended (rc={self.proc.returncode}) before '{text}':\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        pytest.fail(f"'{text}' did not show within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig: int) -> int:
        if sig == signal.SIGINT:
            os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(self.proc.pid, sig)  # only ansible-playbook itself: its workers and modules are orphaned
        rc = self.proc.wait(timeout=120)
        # orphans of a SIGKILL (worker, module, docker CLI) go on for a while; give them a bounded time, then end
        # them as an operator would (the builder they leave is what the sweep must find either way)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.5)
        else:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.handle.close()
        return rc


@pytest.fixture(scope="module")
def bake_env(registry, roles_path, tmp_path_factory) -> dict:
    # bake.yml's registry comes from bake_registry (the extra vars below), its credentials from these
    return {
        "ANSIBLE_ROLES_PATH": str(roles_path),
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
        "IMMUTABLE_ARTIFACTS_DIR": str(tmp_path_factory.mktemp("artifacts")),
    }


@pytest.fixture(scope="module")
def first_bake(app, bake_env, registry) -> dict:
    """A completed bake: the previous artifact every fault must leave untouched."""
    extra = {
        "bake_name": app,
        "bake_registry": registry["address"],
        "bake_roles": ["cs_marker"],
        "bake_version": "1.0.0",
    }
    result = run_playbook(BAKE, extra, env=bake_env)
    assert result.returncode == 0, result.stdout[-3000:]
    state = tag_state(registry, app)
    # the version, the fingerprint tag, the artifact record and the SBOM kept beside the image (sha256-<hex>.record,
    # sha256-<hex>.sbom)
    record_tag = state["1.0.0"].replace(":", "-") + ".record"
    sbom_tag = state["1.0.0"].replace(":", "-") + ".sbom"
    assert set(state) == {"1.0.0", next(t for t in state if t.startswith("fp-")), record_tag, sbom_tag}
    return state


FAULTS = [
    ("provisioning", signal.SIGINT, ["cs_marker", "cs_pause"], "TASK [cs_pause : Kill point]"),
    ("provisioning", signal.SIGKILL, ["cs_marker", "cs_pause"], "TASK [cs_pause : Kill point]"),
    ("commit/push", signal.SIGINT, ["cs_marker", "cs_big"], "TASK [Push the artifact]"),
    ("commit/push", signal.SIGKILL, ["cs_marker", "cs_big"], "TASK [Push the artifact]"),
]


@pytest.mark.parametrize(("phase", "sig", "roles", "kill_at"), FAULTS, ids=[f"{p}-{s.name}" for p, s, _r, _k in FAULTS])
def test_a_killed_bake_leaves_zero_builders_and_no_partial_tag(
    app, bake_env, registry, first_bake, tmp_path, phase, sig, roles, kill_at
):
    seed = os.urandom(4).hex()
    bake_vars = {"cs_marker": seed, "cs_big_mb": 150}
    extra = {
        "bake_name": app,
        "bake_registry": registry["address"],
        "bake_roles": roles,
        "bake_vars": bake_vars,
        "bake_cache": False,
    }
    bake = Bake(extra, bake_env, tmp_path / "bake.log")
    bake.wait_for(kill_at)
    if phase == "provisioning":
        time.sleep(0.5)  # inside the sleep task; a commit/push is hit at once (a loopback push is quick)
    rc = bake.kill(sig)
    assert rc != 0
    left = builders(app)
    print(f"{phase} {sig.name}: rc={rc}, builders left by the killed run: {left}")  # the 'before' column

    # no tag of the repository is partial: every tag names a manifest whose blobs all exist
    after_kill = tag_state(registry, app)
    for tag, digest in first_bake.items():
        assert after_kill[tag] == digest, f"{tag} moved"

    # cleanup.yml in check mode lists the orphans and removes nothing; a real run removes them, whatever their age
    check = run_playbook(CLEANUP, {"cleanup_app": app}, "--check", env=bake_env)
    assert check.returncode == 0, check.stdout[-3000:]
    assert f"would remove {len(left)} orphan" in " ".join(check.stdout.split())
    assert builders(app) == left
    cleanup = run_playbook(CLEANUP, {"cleanup_app": app}, env=bake_env)
    assert cleanup.returncode == 0, cleanup.stdout[-3000:]
    flat = " ".join(cleanup.stdout.split())  # the report may be wrapped over lines
    assert all(f"{name} (owner process gone)" in flat for name in left), cleanup.stdout[-2000:]
    assert builders(app) == []


def test_the_next_bake_sweeps_a_killed_bakes_builder_at_once(app, bake_env, registry, first_bake, tmp_path):
    """No cleanup.yml in between: the next bake of the app removes the young orphan itself (its owner is gone)."""
    fresh = {
        "bake_name": app,
        "bake_registry": registry["address"],
        "bake_cache": False,
        "bake_vars": {"cs_marker": os.urandom(4).hex()},
    }
    bake = Bake(dict(fresh, bake_roles=["cs_marker", "cs_pause"]), bake_env, tmp_path / "killed.log")
    bake.wait_for("TASK [cs_pause : Kill point]")
    bake.kill(signal.SIGKILL)
    orphan = builders(app)
    assert len(orphan) == 1
    # not a cache hit (a cache hit starts no builder, so it sweeps nothing: cleanup.yml covers that case)
    result = run_playbook(BAKE, dict(fresh, bake_roles=["cs_marker"]), "-v", env=bake_env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert orphan[0] in " ".join(result.stdout.split())  # reported in the builder task's 'swept'
    assert builders(app) == []
    after = tag_state(registry, app)
    assert all(after[tag] == digest for tag, digest in first_bake.items())  # nothing moved


def test_a_live_bake_is_never_swept(app, bake_env, registry, tmp_path):
    extra = {
        "bake_name": app,
        "bake_registry": registry["address"],
        "bake_roles": ["cs_marker", "cs_pause"],
        "bake_cache": False,
    }
    bake = Bake(dict(extra, bake_vars={"cs_marker": os.urandom(4).hex()}), bake_env, tmp_path / "live.log")
    try:
        bake.wait_for("TASK [cs_pause : Kill point]")
        running = builders(app)
        cleanup = run_playbook(CLEANUP, {"cleanup_app": app, "cleanup_min_age": 0}, env=bake_env)
        assert cleanup.returncode == 0, cleanup.stdout[-2000:]
        assert "removed 0 orphan" in cleanup.stdout
        assert builders(app) == running
    finally:
        bake.kill(signal.SIGINT)
        run_playbook(CLEANUP, {"cleanup_app": app}, env=bake_env)
    assert builders(app) == []


# -- the registry dies mid-push --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def own_registry(tmp_path, registry):
    """A registry process of our own on another 127.0.0.1 port (htpasswd auth, its own storage)."""
    if shutil.which("docker-registry") is None or shutil.which("htpasswd") is None:
        pytest.fail("docker-registry and htpasswd are needed: run scripts/setup.sh")
    port = free_port()
    user, password = "gc-test", os.urandom(12).hex()
    htpasswd = tmp_path / "htpasswd"
    subprocess.run(["htpasswd", "-Bbc", str(htpasswd), user, password], check=True, capture_output=True)
    config = tmp_path / "config.yml"
    config.write_text(
        f"""version: 0.1
storage:
  filesystem: {{rootdirectory: {tmp_path / "storage"}}}
  delete: {{enabled: true}}
http: {{addr: "127.0.0.1:{port}"}}
auth:
  htpasswd: {{realm: test, path: {htpasswd}}}
log: {{level: error}}
"""
    )
    state = {"address": f"127.0.0.1:{port}", "url": f"http://127.0.0.1:{port}", "username": user,
             "password": password, "config": config, "proc": None, "storage": tmp_path / "storage"}  # fmt: skip

    def start():
        state["proc"] = subprocess.Popen(  # noqa: S603
            ["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if api(f"{state['url']}/v2/", user, password)[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        pytest.fail("own registry did not start")

    def stop():
        if state["proc"] and state["proc"].poll() is None:
            state["proc"].kill()
            state["proc"].wait(timeout=30)

    state["start"], state["stop"] = start, stop
    start()
    yield state
    stop()


def test_registry_killed_mid_push_fails_clearly_and_keeps_the_previous_tag(app, own_registry, bake_env, tmp_path):
    reg = own_registry
    env = dict(bake_env, IMMUTABLE_REGISTRY_USER=reg["username"], IMMUTABLE_REGISTRY_PASSWORD=reg["password"])
    base = {"bake_name": app, "bake_registry": reg["address"]}
    first = run_playbook(BAKE, dict(base, bake_roles=["cs_marker"], bake_version="1.0.0"), env=env)
    assert first.returncode == 0, first.stdout[-3000:]
    before = tag_state(reg, app)

    extra = dict(base, bake_roles=["cs_marker", "cs_big"], bake_version="1.1.0", bake_cache=False,
                 bake_vars={"cs_marker": os.urandom(4).hex(), "cs_big_mb": 200})  # fmt: skip
    bake = Bake(extra, env, tmp_path / "push.log")
    bake.wait_for("TASK [Push the artifact]")
    # the registry dies as the push step starts: on loopback a layer upload is too quick to hit reliably, and the
    # guarantee is the same (the push fails clearly, no tag moves, the builder goes)
    reg["stop"]()
    rc = bake.proc.wait(timeout=600)
    bake.handle.close()
    output = bake.log.read_text()
    assert rc != 0, output[-4000:]
    assert "fatal: [localhost]" in output and "Push the artifact" in output
    assert any(hint in output for hint in ("start the registry or check its address", "registry unreachable")), output[
        -3000:
    ]
    assert reg["password"] not in output
    assert builders(app) == []  # the capture play's always removed the builder

    reg["start"]()
    after = tag_state(reg, app)
    assert after == before  # 1.0.0 and its fp- tag still point at the previous digest; no 1.1.0
