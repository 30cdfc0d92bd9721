"""verify.yml and repair.yml on a fleet environment, and the front load balancer (docs/fleet.md).

prod = env_prod = fleet hosts h0, h1, h2 (each: its own Docker Engine, a self-contained nginx router on
0.0.0.0:18001, the app's two colours on 127.0.0.1:8101/8102); h3 runs the front load balancer on 0.0.0.0:18000
(its loopback URL through the fixture's front door). The artifact is put live with tests/integration/playbooks/
fleet_live.yml (router role + bg_swap on each host, a ledger record on the controller). Load (wrk) goes only to the
loopback URL the fixture gives.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from conftest import run_playbook
from fleet_hosts import Fleet
from fleet_hosts import FleetHost

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

APP_DIR = REPO_ROOT / "tests" / "integration" / "files" / "bg_app"
TEST_PLAYBOOKS = REPO_ROOT / "tests" / "integration" / "playbooks"
APP = "fv"
ENV = "prod"
ROUTER_PORT = 18001
LB_PORT = 18000
ROUTER_DIR = "/srv/routers/prod"
LB_DIR = "/srv/front_lb/prod"


def show(res: subprocess.CompletedProcess) -> str:
    return f"rc={res.returncode}\n--- stdout\n{res.stdout[-8000:]}\n--- stderr\n{res.stderr[-4000:]}"


@pytest.fixture(scope="module")
def app_ref(registry, base_image) -> str:
    """The test app (tests/integration/files/bg_app) built on the controller and pushed: its digest reference."""
    tag = f"{registry['address']}/fleet-verify-{uuid.uuid4().hex[:8]}/web:v1"
    config = tempfile.mkdtemp(prefix="fleet-verify-docker-config-")
    try:
        env = {**os.environ, "DOCKER_CONFIG": config}
        build = subprocess.run(
            ["docker", "build", "--quiet", "--build-arg", f"BASE={base_image}", "--build-arg", "VERSION=v1",
             "-t", tag, str(APP_DIR)],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert build.returncode == 0, build.stderr
        login = subprocess.run(
            ["docker", "login", registry["address"], "-u", registry["username"], "--password-stdin"],
            input=registry["password"], env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert login.returncode == 0, login.stderr
        push = subprocess.run(
            ["docker", "push", tag], env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert push.returncode == 0, push.stderr
        ref = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert re.match(r".+@sha256:[0-9a-f]{64}$", ref), ref
        yield ref
    finally:
        shutil.rmtree(config, ignore_errors=True)
        subprocess.run(["docker", "image", "rm", tag], capture_output=True, check=False)


class Prod:
    """prod on h0..h2 (and the front LB host h3): inventory, ledger, helpers."""

    def __init__(self, fleet: Fleet, root: Path, ref: str):
        self.fleet = fleet
        self.hosts = [fleet.hosts[0], fleet.hosts[1], fleet.hosts[2]]
        self.lb = fleet.hosts[3]
        self.ref = ref
        self.root = root
        self.ledger_path = root / "ledger" / "ledger.json"
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        inventory = fleet.inventory(
            groups={"env_prod": self.hosts, "front_lb": [self.lb]},
            vars={
                "promotion_chain": [ENV],
                "promotion_app": APP,
                "promotion_backend": "docker",
                "promotion_artifacts_dir": str(root / "artifacts"),
                "promotion_ledger": {"backend": "file", "path": str(self.ledger_path)},
                "promotion_health_interval": 0.2,
                "promotion_environments": {
                    ENV: {"router_port": ROUTER_PORT, "blue_port": 8101, "green_port": 8102, "router_dir": ROUTER_DIR}
                },
                "front_lb_port": LB_PORT,
            },
            path=root / "inventory.yml",
        )
        # the controller itself: a local connection (the fleet's `all` vars name the docker connection)
        data = yaml.safe_load(inventory.read_text())
        data["all"]["hosts"]["localhost"] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
        }
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        self.inventory = inventory

    def run(self, playbook: str | Path, **extra) -> subprocess.CompletedProcess:
        return run_playbook(playbook, {"env": ENV, **extra}, "-i", str(self.inventory))

    def ledger(self) -> dict:
        return json.loads(self.ledger_path.read_text())["apps"][APP][ENV]

    def container(self, host: FleetHost, colour: str) -> dict:
        return json.loads(host.docker("container", "inspect", f"{APP}-{ENV}-{colour}").stdout)[0]

    def live(self, host: FleetHost) -> dict:
        state = json.loads(host.exec("cat", f"{ROUTER_DIR}/conf.d/{APP}-{ENV}.bg_state.json").stdout)
        return self.container(host, state["live"])

    def teardown(self) -> None:
        for host in self.hosts + [self.lb]:
            for conf_dir in (ROUTER_DIR, LB_DIR):
                host.sh(
                    f"[ -s {conf_dir}/nginx.pid ] && nginx -p {conf_dir}/ -c {conf_dir}/nginx.conf -s stop; "
                    f"rm -rf {conf_dir}",
                    check=False,
                )
            host.remove_containers()
            host.exec("docker", "logout", self.fleet.registry["address"], check=False)


@pytest.fixture(scope="module")
def prod(fleet: Fleet, app_ref: str, tmp_path_factory):
    if len(fleet.hosts) < 4:
        pytest.skip(f"these tests need 4 fleet hosts (IMMUTABLE_FLEET_HOSTS={len(fleet.hosts)})")
    env = Prod(fleet, tmp_path_factory.mktemp("fleet-verify"), app_ref)
    try:
        fleet.login(env.hosts)
        res = env.run(TEST_PLAYBOOKS / "fleet_live.yml", artifact=app_ref)
        assert res.returncode == 0, show(res)
        yield env
    finally:
        env.teardown()


def verify(prod: Prod) -> subprocess.CompletedProcess:
    return prod.run(REPO_ROOT / "playbooks" / "verify.yml")


def flat(res: subprocess.CompletedProcess) -> str:
    """The output with its line wrapping (the yaml callback's) undone."""
    return " ".join(res.stdout.split())


def test_verify_checks_every_host_and_names_the_drifted_one(prod: Prod):
    res = verify(prod)
    assert res.returncode == 0, show(res)
    for host in prod.hosts:
        line = rf"{ENV} on {host.name}: ledger {re.escape(prod.ref)} \| \w+ sha256:[0-9a-f]+ \| ok"
        assert re.search(line, flat(res)), show(res)

    h1 = prod.hosts[1]
    live = prod.live(h1)
    h1.docker("exec", live["Name"].lstrip("/"), "sh", "-c", "echo tampered >/usr/local/bin/tampered")
    h1.docker("run", "--detach", "--name", "by-hand", "--entrypoint", "sleep", prod.ref, "600")

    res = verify(prod)
    assert res.returncode != 0, show(res)
    text = flat(res)
    assert re.search(rf"{ENV} on h1: ledger \S+ \| \w+ sha256:[0-9a-f]+ \| DRIFT", text), show(res)
    assert "DRIFT prod on h1: live container" in text and "/usr/local/bin/tampered" in text, show(res)
    assert "DRIFT prod on h1: container by-hand" in text, show(res)
    for host in (prod.hosts[0], prod.hosts[2]):
        assert re.search(rf"{ENV} on {host.name}: ledger \S+ \| \w+ sha256:[0-9a-f]+ \| ok", text), show(res)
        assert f"DRIFT prod on {host.name}" not in text, show(res)


def test_repair_replaces_the_drifted_container_from_the_same_digest(prod: Prod):
    h1 = prod.hosts[1]
    if verify(prod).returncode == 0:  # run alone: make the drift of the test above
        live = prod.live(h1)
        h1.docker("exec", live["Name"].lstrip("/"), "sh", "-c", "echo tampered >/usr/local/bin/tampered")
        h1.docker("run", "--detach", "--name", "by-hand", "--entrypoint", "sleep", prod.ref, "600")
    before = {host.name: prod.live(host)["Id"] for host in prod.hosts}
    drifted = prod.live(h1)

    res = prod.run(REPO_ROOT / "playbooks" / "repair.yml")
    assert res.returncode == 0, show(res)
    assert "no drift: every checked environment" in flat(res), show(res)  # repair.yml ends with verify.yml

    fresh = prod.live(h1)
    assert fresh["Id"] != drifted["Id"] and fresh["Name"] != drifted["Name"]
    assert fresh["Config"]["Image"] == prod.ref
    names = h1.docker("ps", "--all", "--format", "{{.Names}}").stdout.split()
    assert "by-hand" not in names and drifted["Name"].lstrip("/") not in names, names
    assert h1.docker("diff", fresh["Name"].lstrip("/")).stdout.count("tampered") == 0
    for host in (prod.hosts[0], prod.hosts[2]):
        assert prod.live(host)["Id"] == before[host.name], f"{host.name} had no drift and must be untouched"
    entry = prod.ledger()
    assert entry["live"] == prod.ref and entry["history"][-1]["action"] == "repair"
    assert entry["history"][-1]["reason"] == "drift repaired on h1"

    res = verify(prod)
    assert res.returncode == 0, show(res)
    res = prod.run(REPO_ROOT / "playbooks" / "repair.yml")  # nothing drifted: nothing replaced, nothing recorded
    assert res.returncode == 0 and "prod: no drift, nothing repaired" in flat(res), show(res)
    assert len(prod.ledger()["history"]) == len(entry["history"])


def served_by(url: str, count: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _attempt in range(count):
        with urllib.request.urlopen(url, timeout=10) as answer:  # the fixture's loopback URL
            assert answer.status == 200
            key = answer.headers.get("X-Served-By", "")
            seen[key] = seen.get(key, 0) + 1
    return seen


# bounded load: at most WRK_MAX_SECONDS, stopped with SIGINT (wrk then prints its summary) 2 s after the action
WRK_MAX_SECONDS = 240


def under_load(url: str, action) -> tuple[subprocess.CompletedProcess, float, str, int]:
    """Run action() while wrk loads url; wrk stops 2 s after it (SIGINT: wrk prints its summary), at most
    WRK_MAX_SECONDS. The playbook's result, its time, wrk's output and its request count."""
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c8", f"-d{WRK_MAX_SECONDS}s", "--timeout", "5s", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(2)
        started = time.monotonic()
        res = action()
        took = time.monotonic() - started
        time.sleep(2)
        still_running = wrk.poll() is None
        if still_running:
            wrk.send_signal(signal.SIGINT)
        out, err = wrk.communicate(timeout=60)
    finally:
        if wrk.poll() is None:
            wrk.kill()
            wrk.communicate()
    assert res.returncode == 0, show(res)
    assert still_running, f"the playbook took {took:.0f} s, longer than the load ({out})"
    assert wrk.returncode == 0, err
    found = re.search(r"(\d+) requests in", out)
    assert found, out
    return res, took, out, int(found.group(1))


@pytest.mark.slow  # the LB, then load during a repair of the three hosts in turn: 70-140 s measured
def test_front_lb_spreads_over_the_hosts_and_serves_through_repairs(prod: Prod):
    res = prod.run(TEST_PLAYBOOKS / "fleet_front_lb.yml")
    assert res.returncode == 0, show(res)
    again = prod.run(TEST_PLAYBOOKS / "fleet_front_lb.yml")
    assert again.returncode == 0 and "changed=0" in again.stdout, show(again)

    url = prod.lb.url(LB_PORT, "/")
    seen = served_by(url, 30)
    addresses = {f"{host.ip}:{ROUTER_PORT}": host.name for host in prod.hosts}
    assert set(seen) == set(addresses), (seen, addresses)  # every host answers, each identified by X-Served-By

    # drift on every host, so the repair switches colours on each host in turn under load
    for host in prod.hosts:
        live = prod.live(host)
        host.docker("exec", live["Name"].lstrip("/"), "sh", "-c", "echo tampered >/usr/local/bin/tampered")
    _result, took, out, requests = under_load(url, lambda: prod.run(REPO_ROOT / "playbooks" / "repair.yml"))
    assert prod.ledger()["history"][-1]["reason"] == "drift repaired on h0, h1, h2"
    assert requests > 100, out
    assert "Non-2xx" not in out, out
    assert "Socket errors" not in out, out
    print(f"\n[fleet-verify] repair of 3 hosts in {took:.0f} s under load: {out.strip().splitlines()[-2]}")


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _index in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def test_repair_on_the_controller_without_a_group(app_ref: str, tmp_path: Path):
    """An environment without an inventory group runs on the controller: repair.yml works there too."""
    app = f"fvc{uuid.uuid4().hex[:6]}"
    router_port, blue, green = free_ports(3)
    router_dir = tmp_path / "routers" / "dev"
    ledger_path = tmp_path / "ledger" / "ledger.json"
    (tmp_path / "artifacts").mkdir()
    inventory = tmp_path / "inventory.yml"
    settings = {
        "promotion_chain": ["dev"],
        "promotion_app": app,
        "promotion_backend": "docker",
        "promotion_artifacts_dir": str(tmp_path / "artifacts"),
        "promotion_ledger": {"backend": "file", "path": str(ledger_path)},
        "promotion_health_interval": 0.2,
        "promotion_environments": {
            "dev": {"router_port": router_port, "blue_port": blue, "green_port": green, "router_dir": str(router_dir)}
        },
    }
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump({"all": {"vars": settings, "hosts": {"localhost": local}}}))

    def run(playbook: Path, **extra) -> subprocess.CompletedProcess:
        return run_playbook(playbook, {"env": "dev", **extra}, "-i", str(inventory))

    def live() -> dict:
        state = json.loads((router_dir / "conf.d" / f"{app}-dev.bg_state.json").read_text())
        name = f"{app}-dev-{state['live']}"
        return json.loads(
            subprocess.run(["docker", "container", "inspect", name], capture_output=True, check=True).stdout
        )[0]

    try:
        res = run(TEST_PLAYBOOKS / "fleet_live.yml", artifact=app_ref, fleet_live_hosts="localhost")
        assert res.returncode == 0, show(res)
        drifted = live()
        subprocess.run(["docker", "exec", drifted["Name"].lstrip("/"), "touch", "/usr/bin/x"], check=True)
        subprocess.run(
            ["docker", "run", "--detach", "--name", f"{app}-dev-byhand", "--entrypoint", "sleep", app_ref, "600"],
            capture_output=True, check=True,
        )  # fmt: skip
        res = run(REPO_ROOT / "playbooks" / "verify.yml")
        assert res.returncode != 0 and f"extra container {app}-dev-byhand" in flat(res), show(res)

        res = run(REPO_ROOT / "playbooks" / "repair.yml")
        assert res.returncode == 0, show(res)
        fresh = live()
        assert fresh["Id"] != drifted["Id"] and fresh["Config"]["Image"] == app_ref
        names = subprocess.run(
            ["docker", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True, check=True
        ).stdout
        assert f"{app}-dev-byhand" not in names.split() and drifted["Name"].lstrip("/") not in names.split()
        history = json.loads(ledger_path.read_text())["apps"][app]["dev"]["history"]
        assert [item["action"] for item in history] == ["deploy", "repair"]
        assert history[-1]["reason"] == "drift repaired on localhost"
        assert run(REPO_ROOT / "playbooks" / "verify.yml").returncode == 0

        # the live ID revoked, then drifted again: repair refuses to start fresh containers of it, changes nothing
        # (kind=artifact: this test pushed the image itself, so no bake record names it)
        res = run(
            REPO_ROOT / "playbooks" / "revoke.yml",
            artifact=app_ref,
            kind="artifact",
            reason="CVE-2026-0001 in the page",
        )
        assert res.returncode == 0, show(res)
        subprocess.run(["docker", "exec", fresh["Name"].lstrip("/"), "touch", "/usr/bin/x"], check=True)
        ledger_before = ledger_path.read_bytes()
        res = run(REPO_ROOT / "playbooks" / "repair.yml")
        assert res.returncode != 0, show(res)
        assert f"dev: runs a REVOKED artifact: {app_ref} is revoked" in flat(res), show(res)
        assert "CVE-2026-0001 in the page" in flat(res) and "-e allow_revoked_repair=true" in flat(res), show(res)
        assert live()["Id"] == fresh["Id"] and ledger_path.read_bytes() == ledger_before
        # told to: the repair runs, and the verification that ends it still flags the revoked artifact
        res = run(REPO_ROOT / "playbooks" / "repair.yml", allow_revoked_repair=True)
        assert live()["Id"] != fresh["Id"], show(res)
        assert res.returncode != 0 and "dev: runs a REVOKED artifact" in flat(res), show(res)
        history = json.loads(ledger_path.read_text())["apps"][app]["dev"]["history"]
        assert [item["action"] for item in history] == ["deploy", "repair", "repair"]
    finally:
        for suffix in ("blue", "green", "byhand"):
            subprocess.run(["docker", "rm", "--force", f"{app}-dev-{suffix}"], capture_output=True, check=False)
        pid_file = router_dir / "nginx.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
            except (ValueError, ProcessLookupError):
                pass
