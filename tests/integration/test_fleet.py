"""Fleets end to end: deploy.yml, promote.yml and rollback.yml when an environment is an inventory group of Docker
hosts (docs/fleet.md). The hosts are the session fixture `fleet` (tests/integration/fleet_hosts.py): real Docker
Engines in containers, reached through the community.docker.docker connection; bg_swap runs on each host against
that host's engine and its own nginx router; each host pulls the artifact by digest through its registry relay.

Each test uses its own app name and ports, and removes what it started on the hosts (containers, routers, the
artifacts' images, marker processes); a host stopped by a test is started again before the test ends.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook
from fleet_hosts import docker as controller_docker

PLAYBOOKS = REPO_ROOT / "playbooks"
CHAIN = ["dev", "staging", "prod"]
MARKER_PORT = 19999  # a listener on a host's docker0 gateway makes the test app's /healthz fail on that host

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

APP = r'''
"""Fleet test app: / answers the version; /healthz answers 503 for APP_HEALTH_DELAY s after the start, and 500
while something listens on the host's bridge gateway at APP_MARKER_PORT (a host made to fail)."""
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "unknown").encode()
DELAY = float(os.environ.get("APP_HEALTH_DELAY", "0"))
MARKER = int(os.environ.get("APP_MARKER_PORT", "0"))
STARTED = time.monotonic()


def gateway():
    with open("/proc/net/route") as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
    return None


def marked():
    address = gateway()
    if not (MARKER and address):
        return False
    try:
        socket.create_connection((address, MARKER), timeout=0.5).close()
        return True
    except OSError:
        return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/healthz"):
            if time.monotonic() - STARTED < DELAY:
                status, body = 503, b"starting\n"
            elif marked():
                status, body = 500, b"marked bad\n"
            else:
                status, body = 200, b"ok\n"
        else:
            status, body = 200, VERSION + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
'''

DOCKERFILE = f"""ARG BASE=immutable-infra/base:bookworm
FROM ${{BASE}}
ARG VERSION=v0
ARG HEALTH_DELAY=0
ENV APP_VERSION=${{VERSION}} APP_HEALTH_DELAY=${{HEALTH_DELAY}} APP_MARKER_PORT={MARKER_PORT}
COPY app.py /app.py
EXPOSE 8080
CMD ["python3", "/app.py"]
"""


def show(res) -> str:
    return f"rc={res.returncode}\nSTDOUT:\n{res.stdout[-8000:]}\nSTDERR:\n{res.stderr[-3000:]}"


def flat(text: str) -> str:
    """The output with every run of white space as one space (the YAML callback wraps long lines)."""
    return " ".join(text.split())


def sh(*cmd, input_text=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input_text, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    return proc


# --- artifacts: tiny web images pushed once, their digest references ---------------------------------------------


@pytest.fixture(scope="module")
def images(registry, base_image, fleet):
    """Digest references of v1, v2 and `slow` (its /healthz answers 503 for its first 6 s), pushed to the local
    registry; the controller's image IDs too. Removed from the controller and every fleet host at the end."""
    repo = f"{registry['address']}/fleettest-{os.urandom(4).hex()}/web"
    build_dir = Path(tempfile.mkdtemp(prefix="fleet-app-"))
    (build_dir / "app.py").write_text(APP)
    (build_dir / "Dockerfile").write_text(DOCKERFILE)
    config = tempfile.mkdtemp(prefix="fleet-docker-config-")
    sh("docker", "--config", config, "login", registry["address"], "-u", registry["username"], "--password-stdin",
       input_text=registry["password"])  # fmt: skip
    refs, ids, built = {}, {}, []
    try:
        for name, delay in (("v1", 0), ("v2", 0), ("slow", 6)):
            tag = f"{repo}:{name}"
            sh("docker", "build", "--quiet", "--build-arg", f"BASE={base_image}", "--build-arg", f"VERSION={name}",
               "--build-arg", f"HEALTH_DELAY={delay}", "-t", tag, str(build_dir))  # fmt: skip
            built.append(tag)
            sh("docker", "--config", config, "push", tag)
            ref = sh("docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag).stdout.strip()
            assert re.match(r".+@sha256:[0-9a-f]{64}$", ref), ref
            refs[name] = ref
            ids[name] = sh("docker", "image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
        yield {"refs": refs, "ids": ids, "repo": repo}
    finally:
        for tag in built:
            sh("docker", "image", "rm", "--force", tag, check=False)
        for host in fleet.hosts:
            remove = f"docker image ls --quiet {repo} | sort -u | xargs -r docker image rm --force >/dev/null"
            host.sh(remove, check=False)
        subprocess.run(["rm", "-rf", config, str(build_dir)], check=False)


def free_ports(count: int) -> list[int]:
    """Ports free on the controller, used inside the hosts (each host has its own network namespace)."""
    socks, ports = [], []
    for _i in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


class FleetChain:
    """A three-environment chain of one app whose environments are groups of fleet hosts."""

    def __init__(self, fleet, root: Path, app: str, images: dict, groups: dict, registry_env: dict, **settings):
        self.fleet = fleet
        self.root = root
        self.app = app
        self.groups = groups  # env -> [FleetHost]
        self.env = registry_env
        self.ledger_path = root / "ledger" / "ledger.json"
        records = root / "artifacts" / app / "records"
        records.mkdir(parents=True)
        for index, name in enumerate(("v1", "v2", "slow")):
            (records / f"{index:02d}-{name}.json").write_text(
                json.dumps({"id": images["refs"][name], "kind": "container", "version": name})
            )
        (root / "artifacts" / app / "latest.json").write_text(json.dumps({"id": images["refs"]["v1"]}))
        ports = free_ports(9)
        self.envs = {
            env: {
                "router_port": ports[3 * i],
                "blue_port": ports[3 * i + 1],
                "green_port": ports[3 * i + 2],
                "router_dir": f"/srv/immutable-test/{app}/{env}",
            }
            for i, env in enumerate(CHAIN)
        }
        all_vars = {
            "promotion_chain": CHAIN,
            "promotion_app": app,
            "promotion_backend": "docker",
            "promotion_artifacts_dir": str(root / "artifacts"),
            "promotion_ledger": {"backend": "file", "path": str(self.ledger_path)},
            "promotion_environments": self.envs,
            "promotion_health_interval": 0.3,
            "promotion_health_timeout": 30,
            **settings,
        }
        host_entry = {"ansible_connection": "community.docker.docker", "ansible_python_interpreter": "/usr/bin/python3"}
        children = {
            f"env_{env}": {"hosts": {h.name: dict(host_entry, ansible_host=h.container) for h in hosts}}
            for env, hosts in groups.items()
        }
        inventory = {
            "all": {
                "hosts": {
                    "localhost": {
                        "ansible_connection": "local",
                        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                    }
                },
                "vars": all_vars,
                "children": children,
            }
        }
        self.inventory = root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))

    def run(self, playbook: str, **extra) -> subprocess.CompletedProcess:
        return run_playbook(PLAYBOOKS / playbook, extra, "-i", str(self.inventory), env=self.env)

    def popen(self, playbook: str, **extra) -> subprocess.Popen:
        cmd = ["ansible-playbook", str(PLAYBOOKS / playbook), "-i", str(self.inventory), "-e", json.dumps(extra)]
        return subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=ansible_env(self.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def entry(self, env: str) -> dict:
        if not self.ledger_path.exists():
            return {}
        return json.loads(self.ledger_path.read_text())["apps"].get(self.app, {}).get(env, {})

    def lock_path(self, env: str) -> Path:
        return self.ledger_path.parent / f".{self.app}-{env}.promotion.lock"

    def served(self, host, env: str) -> str:
        """What the host's router answers on its own address (nginx listens on 0.0.0.0:<router_port>)."""
        port = self.envs[env]["router_port"]
        script = (
            "import urllib.request as u; o = u.build_opener(u.ProxyHandler({}));"
            f" print(o.open('http://127.0.0.1:{port}/', timeout=5).read().decode().strip())"
        )
        return host.exec("python3", "-c", script).stdout.strip()

    def containers(self, host, env: str) -> dict:
        """name -> (image ID, running) of the app's containers of env on the host."""
        out = host.docker("ps", "--all", "--filter", f"name=^{self.app}-{env}-", "--format", "{{.Names}}").stdout
        found = {}
        for name in out.split():
            info = json.loads(host.docker("container", "inspect", name).stdout)[0]
            found[name] = (info["Image"], info["State"]["Running"])
        return found

    def live_image(self, host, env: str) -> str:
        """The image ID of the colour the host's router sends traffic to."""
        state_file = f"{self.envs[env]['router_dir']}/conf.d/{self.app}-{env}.bg_state.json"
        state = json.loads(host.exec("cat", state_file).stdout)
        info = json.loads(host.docker("container", "inspect", f"{self.app}-{env}-{state['live']}").stdout)[0]
        return info["Image"]

    def teardown(self):
        for env, hosts in self.groups.items():
            for host in hosts:
                router_dir = self.envs[env]["router_dir"]
                host.sh(
                    f'ids=$(docker ps -aq --filter name=^{self.app}-); [ -z "$ids" ] || docker rm -f $ids >/dev/null;'
                    f" [ -f {router_dir}/nginx.pid ] && kill -QUIT $(cat {router_dir}/nginx.pid) 2>/dev/null;"
                    f" sleep 0.3; rm -rf /srv/immutable-test/{self.app}",
                    check=False,
                )


@pytest.fixture
def fleet_chain(fleet, images, registry, tmp_path, unique):
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}
    made = []

    def make(groups: dict, **settings) -> FleetChain:
        hosts = {name: [fleet.host(member) for member in members] for name, members in groups.items()}
        chain = FleetChain(fleet, tmp_path / f"c{len(made)}", f"fl{unique}{len(made)}", images, hosts, env, **settings)
        made.append(chain)
        return chain

    try:
        yield make
    finally:
        for chain in made:
            chain.teardown()


def no_registry_login_left(host) -> None:
    """bg_swap pulled through a temporary DOCKER_CONFIG: the host's own docker config holds no credentials."""
    config = host.exec("sh", "-c", "cat /root/.docker/config.json 2>/dev/null || true").stdout
    assert "auth" not in config.replace('"auths": {}', ""), config


# --- (a) the quickstart story on a fleet -----------------------------------------------------------------------


@pytest.mark.slow
def test_deploy_promote_rollback_on_fleets_same_digest_everywhere(fleet_chain, fleet, images):
    hosts = fleet.hosts
    c = fleet_chain({"dev": [hosts[0]], "staging": [hosts[1], hosts[2]], "prod": [hosts[3], hosts[4], hosts[5]]})
    v1, v2 = images["refs"]["v1"], images["refs"]["v2"]

    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    assert f"{c.app}/dev live: {v1}" in flat(res.stdout) and "hosts (1): h0" in flat(res.stdout), show(res)
    for src, dst in (("dev", "staging"), ("staging", "prod")):
        res = c.run("promote.yml", **{"from": src, "to": dst})
        assert res.returncode == 0, show(res)
        assert f"{c.app}/{dst} live: {v1} (promoted from {src})" in flat(res.stdout), show(res)
    for env in CHAIN:
        entry = c.entry(env)
        assert entry["live"] == v1, env
        assert entry["history"][-1]["hosts"] == [h.name for h in c.groups[env]], env
        for host in c.groups[env]:
            # the very image the controller pushed (same image ID = same config digest): pulled, never built
            assert c.live_image(host, env) == images["ids"]["v1"], (env, host)
            assert c.served(host, env) == "v1", (env, host)
            no_registry_login_left(host)
    for host in hosts:
        listed = host.docker("image", "ls", "--no-trunc", "--format", "{{.ID}}", images["repo"]).stdout.split()
        # every image of the app on a host is one the controller pushed: nothing was built on a host
        assert set(listed) <= set(images["ids"].values()), (host, listed)

    # a second artifact goes dev -> staging -> prod, then prod rolls back on every host (instant switch back)
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode == 0, show(res)
    for src, dst in (("dev", "staging"), ("staging", "prod")):
        res = c.run("promote.yml", **{"from": src, "to": dst})
        assert res.returncode == 0, show(res)
    assert all(c.served(h, "prod") == "v2" for h in c.groups["prod"])
    res = c.run("rollback.yml", env="prod", reason="5xx after v2")
    assert res.returncode == 0, show(res)
    assert f"{c.app}/prod live: {v1} (rolled back)" in flat(res.stdout), show(res)
    assert flat(res.stdout).count("instant switch back") == 3, show(res)
    entry = c.entry("prod")
    assert (entry["live"], entry["previous"]) == (v1, v2)
    assert entry["history"][-1]["action"] == "rollback" and entry["history"][-1]["hosts"] == ["h3", "h4", "h5"]
    for host in c.groups["prod"]:
        assert c.served(host, "prod") == "v1"
        assert c.live_image(host, "prod") == images["ids"]["v1"]
    assert not c.lock_path("prod").exists()

    # the same promotion again changes nothing on any host
    res = c.run("rollback.yml", env="prod")
    assert res.returncode == 0, show(res)
    assert "rolled back before: nothing to do" in flat(res.stdout), show(res)


# --- (b) a host fails its health gate: the hosts switched go back, the others are never touched ------------------


def start_marker(host) -> None:
    listen = f"echo $$ > /run/fleet-marker.pid; exec socat TCP-LISTEN:{MARKER_PORT},fork,reuseaddr SYSTEM:true"
    controller_docker("exec", "-d", host.container, "sh", "-c", listen)
    for _i in range(50):
        if host.exec("sh", "-c", f"ss -ltn | grep -q ':{MARKER_PORT} '", check=False).returncode == 0:
            return
        time.sleep(0.1)
    pytest.fail(f"the marker listener did not start on {host.name}")


def stop_marker(host) -> None:
    host.sh(
        "[ -f /run/fleet-marker.pid ] && kill $(cat /run/fleet-marker.pid); rm -f /run/fleet-marker.pid", check=False
    )


@pytest.mark.slow
def test_second_host_fails_its_gate_first_goes_back_third_untouched(fleet_chain, fleet, images):
    h3, h4, h5 = fleet.hosts[3], fleet.hosts[4], fleet.hosts[5]
    c = fleet_chain({"dev": [h3, h4, h5]}, promotion_health_timeout=8)
    v1, v2 = images["refs"]["v1"], images["refs"]["v2"]
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    ledger_before = c.ledger_path.read_bytes()
    h5_before = c.containers(h5, "dev")

    start_marker(h4)
    try:
        res = c.run("deploy.yml", env="dev", artifact=v2)
    finally:
        stop_marker(h4)
    assert res.returncode != 0, show(res)
    assert "host h4 failed" in flat(res.stdout), show(res)
    assert "Rolled back to their previous colour: h3" in flat(res.stdout), show(res)
    assert "Never touched: h5" in flat(res.stdout), show(res)
    assert c.ledger_path.read_bytes() == ledger_before
    for host in (h3, h4, h5):
        assert c.served(host, "dev") == "v1", host
        assert c.live_image(host, "dev") == images["ids"]["v1"], host
    assert c.containers(h5, "dev") == h5_before  # never touched: the same containers, no v2 container
    assert not c.lock_path("dev").exists()
    assert v1 == c.entry("dev")["live"]

    # promotion_max_fail_percentage 50 with batches of 2 (Ansible counts failures per batch): h4 fails and bg_swap puts
    # it back, h3 keeps the new ID and h5 gets it, but a partial rollout is never recorded as live
    start_marker(h4)
    try:
        res = c.run("deploy.yml", env="dev", artifact=v2, promotion_max_fail_percentage=50, promotion_batch=2)
    finally:
        stop_marker(h4)
    assert res.returncode != 0, show(res)
    assert "h4 of 3 hosts did not switch" in flat(res.stdout), show(res)
    assert [c.served(host, "dev") for host in (h3, h4, h5)] == ["v2", "v1", "v2"]
    assert c.ledger_path.read_bytes() == ledger_before
    assert not c.lock_path("dev").exists()

    # once the host is healthy again, the same run converges
    res = c.run("deploy.yml", env="dev", artifact=v2)
    assert res.returncode == 0, show(res)
    assert c.entry("dev")["live"] == v2 and c.entry("dev")["history"][-1]["hosts"] == ["h3", "h4", "h5"]
    assert all(c.served(h, "dev") == "v2" for h in (h3, h4, h5))


# --- (c) a host dies mid-rollout --------------------------------------------------------------------------------


def wait_engine(host, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.exec("docker", "info", "--format", "{{.ID}}", check=False, timeout=10).returncode == 0:
            return
        time.sleep(0.5)
    pytest.fail(f"{host.name}'s engine did not answer within {timeout} s after its restart")


@pytest.mark.slow
def test_host_stopped_mid_rollout_is_named_and_the_next_run_converges(fleet_chain, fleet, images):
    h0, h1, h2 = fleet.hosts[0], fleet.hosts[1], fleet.hosts[2]
    c = fleet_chain({"dev": [h0, h1, h2]})
    v1, slow = images["refs"]["v1"], images["refs"]["slow"]
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    ledger_before = c.ledger_path.read_bytes()
    h2_before = c.containers(h2, "dev")
    ip_before = controller_docker(
        "inspect", "--format", "{{json .NetworkSettings.Networks}}", h1.container
    ).stdout.strip()

    proc = c.popen("deploy.yml", env="dev", artifact=slow)
    stopped = False
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            running = c.containers(h1, "dev")
            if any(image == images["ids"]["slow"] for image, _up in running.values()):
                controller_docker("stop", "--time", "1", h1.container)
                stopped = True
                break
            time.sleep(0.3)
        out, _err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if stopped:
            controller_docker("start", h1.container)
            wait_engine(h1)
    assert stopped, "h1 never started the slow artifact"
    networks = controller_docker("inspect", "--format", "{{json .NetworkSettings.Networks}}", h1.container).stdout
    assert json.loads(networks)[fleet.network]["IPAddress"] == json.loads(ip_before)[fleet.network]["IPAddress"]
    assert proc.returncode != 0, out
    assert "h1" in flat(out) and ("unreachable" in flat(out) or "host h1 failed" in flat(out)), out
    assert "Rolled back to their previous colour: h0" in flat(out), out
    assert "Never touched: h2" in flat(out), out
    assert c.ledger_path.read_bytes() == ledger_before
    assert c.served(h0, "dev") == "v1" and c.live_image(h0, "dev") == images["ids"]["v1"]
    assert c.containers(h2, "dev") == h2_before
    assert not c.lock_path("dev").exists()

    # h1 is back: the next run converges every host on the new ID and records it with the hosts
    res = c.run("deploy.yml", env="dev", artifact=slow)
    assert res.returncode == 0, show(res)
    assert c.entry("dev")["live"] == slow and c.entry("dev")["history"][-1]["hosts"] == ["h0", "h1", "h2"]
    for host in (h0, h1, h2):
        assert c.served(host, "dev") == "slow", host
    assert v1 == c.entry("dev")["previous"]


# --- (d) two promotions to one environment at once -------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_promotions_one_environment_locked_two_environments_independent(fleet_chain, fleet, images):
    h0, h1, h2 = fleet.hosts[0], fleet.hosts[1], fleet.hosts[2]
    c = fleet_chain({"dev": [h0], "staging": [h1, h2]})
    v1, slow = images["refs"]["v1"], images["refs"]["slow"]
    res = c.run("deploy.yml", env="dev", artifact=slow)
    assert res.returncode == 0, show(res)

    first = c.popen("promote.yml", **{"from": "dev", "to": "staging"})
    try:
        deadline = time.monotonic() + 120
        while not c.lock_path("staging").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.lock_path("staging").exists(), "the first promotion never took the lock"
        second = c.run("promote.yml", **{"from": "dev", "to": "staging"})
        # another environment at the same time is independent: dev takes v1 while staging is being promoted
        other = c.run("deploy.yml", env="dev", artifact=v1)
        out, _err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, out
    assert second.returncode != 0, show(second)
    assert "locked: a promotion of" in flat(second.stdout) and f"{c.app}/staging" in flat(second.stdout), show(second)
    # stopped before touching any host: its hosts' play never ran
    assert "Put the artifact live on this host" not in flat(second.stdout), show(second)
    assert other.returncode == 0, show(other)
    assert c.entry("dev")["live"] == v1
    entry = c.entry("staging")
    assert entry["live"] == slow and len(entry["history"]) == 1 and entry["history"][0]["hosts"] == ["h1", "h2"]
    assert all(c.served(h, "staging") == "slow" for h in (h1, h2))
    assert not c.lock_path("staging").exists()
