"""The fleet test hosts are real, separate Docker Engines (tests/integration/fleet_hosts.py, docs/testing-fleet.md).

Every test here uses the session fixture `fleet` (N hosts on one internal network); later fleet tests share it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import fleet_hosts
import pytest
from conftest import run_playbook
from fleet_hosts import Fleet
from fleet_hosts import FleetHost

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@pytest.fixture(autouse=True)
def _three_hosts_at_least(fleet: Fleet) -> None:
    if len(fleet.hosts) < 3:
        pytest.skip(f"these tests need 3 fleet hosts or more (IMMUTABLE_FLEET_HOSTS={len(fleet.hosts)})")


@pytest.fixture(scope="module")
def probe(registry: dict[str, str], base_image: str) -> tuple[str, str]:
    """A tiny image built on the controller from the base image and pushed to 127.0.0.1:<port>/fleet-probe with the
    registry credentials: (repository@sha256:... reference, the token its command prints)."""
    repo = f"{registry['address']}/fleet-probe"
    token = uuid.uuid4().hex[:12]
    container = f"fleet-probe-build-{token}"
    run = subprocess.run(
        ["docker", "run", "--name", container, base_image, "sh", "-c", f"echo {token} >/fleet-probe"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        commit = subprocess.run(
            ["docker", "commit", "--change", 'CMD ["cat", "/fleet-probe"]', container, f"{repo}:{token}"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert commit.returncode == 0, commit.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    try:
        with tempfile.TemporaryDirectory() as config:  # the login stays out of the controller's docker config
            env = {**os.environ, "DOCKER_CONFIG": config}
            login = subprocess.run(
                ["docker", "login", registry["address"], "-u", registry["username"], "--password-stdin"],
                input=registry["password"], env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert login.returncode == 0, login.stderr
            push = subprocess.run(
                ["docker", "push", f"{repo}:{token}"], env=env, capture_output=True, text=True, timeout=600, check=False
            )
            assert push.returncode == 0, push.stderr
    finally:
        subprocess.run(["docker", "image", "rm", f"{repo}:{token}"], capture_output=True, check=False)
    match = re.search(r"digest: (sha256:[0-9a-f]{64})", push.stdout)
    assert match, push.stdout
    return f"{repo}@{match.group(1)}", token


@pytest.mark.slow  # the first push and two pulls of the base image's layer: 20-31 s measured
def test_two_hosts_pull_the_pushed_digest_through_their_relay(fleet: Fleet, registry, probe):
    reference, token = probe
    assert reference.startswith(f"{registry['address']}/fleet-probe@sha256:")

    def pull_and_run(host: FleetHost) -> str:
        # the relay answers, the registry behind it wants the controller's credentials
        refused = host.docker("pull", reference, check=False, timeout=120)
        assert refused.returncode != 0, refused.stdout
        assert "no basic auth credentials" in refused.stderr, refused.stderr
        host.login()
        host.docker("pull", reference, timeout=300)
        digests = json.loads(host.docker("image", "inspect", "--format", "{{json .RepoDigests}}", reference).stdout)
        assert reference in digests
        return host.docker("run", "--rm", reference).stdout.strip()

    first, last = fleet.hosts[0], fleet.hosts[-1]
    try:
        assert fleet.parallel(pull_and_run, [first, last]) == [token, token]
    finally:
        for host in (first, last):
            host.docker("logout", registry["address"], check=False)


# An image of the host's own, made on the spot without a registry: /usr/bin/sleep and the libraries it loads.
IMPORT_SLEEPER = (
    "rm -rf /tmp/sleeper && mkdir -p /tmp/sleeper && for f in /usr/bin/sleep $(ldd /usr/bin/sleep | grep -o '/[^ ]*'); "
    "do cp --parents -L $f /tmp/sleeper; done && tar -C /tmp/sleeper -c . | docker import - {image} >/dev/null"
)


def test_a_container_on_one_host_is_not_on_another(fleet: Fleet):
    one, two = fleet.hosts[1], fleet.hosts[2]
    token = uuid.uuid4().hex[:6]
    name, image = f"fleet-only-on-{one.name}-{token}", f"local/sleeper-{token}"
    one.sh(IMPORT_SLEEPER.format(image=image))
    try:
        one.docker("run", "-d", "--name", name, "--network", "none", image, "/usr/bin/sleep", "300")
        assert name in one.docker("ps", "--format", "{{.Names}}").stdout.split()
        assert name not in two.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        assert one.docker("ps", "-q").stdout != two.docker("ps", "-q").stdout
        # nor is its image: every host has its own image store
        assert two.docker("image", "inspect", image, check=False).returncode != 0
        # and its processes live under the host's own cgroup parent
        pid = one.docker("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        assert f"/{one.cgroup_parent}/" in one.exec("cat", f"/proc/{pid}/cgroup").stdout
    finally:
        one.docker("rm", "-f", name, check=False)
        one.docker("image", "rm", image, check=False)


ENGINE_IDS_PLAYBOOK = """
- name: Every fleet host answers with its own Docker Engine
  hosts: all
  gather_facts: false
  tasks:
    - name: Engine ID
      ansible.builtin.command:
        argv: [docker, info, --format, "{{ '{{.ID}}' }}"]
      register: engine
      changed_when: false
    - name: Report
      ansible.builtin.debug:
        msg: "ENGINE {{ inventory_hostname }} {{ group_names | join(',') }} {{ engine.stdout }}"
"""


def test_ansible_reaches_every_host_with_the_docker_connection(fleet: Fleet, tmp_path):
    hosts = fleet.hosts
    groups = {"env_dev": hosts[:1], "env_staging": hosts[1:3], "env_prod": hosts[3:6]}
    inventory = fleet.inventory(groups=groups, vars={"fleet_probe": "yes"})
    playbook = tmp_path / "engines.yml"
    playbook.write_text(ENGINE_IDS_PLAYBOOK)
    proc = run_playbook(playbook, None, "-i", str(inventory), timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    seen = {}
    for name, group, engine_id in re.findall(r"ENGINE (h\d+) ([\w,]*) ([\w:-]+)", proc.stdout):
        seen[name] = (group, engine_id)
    assert set(seen) == {host.name for host in hosts}, proc.stdout[-4000:]
    assert {name: engine_id for name, (_g, engine_id) in seen.items()} == {h.name: h.engine_id for h in hosts}
    assert len({engine_id for _g, engine_id in seen.values()}) == len(hosts)
    for group, members in groups.items():
        for host in members:
            assert seen[host.name][0] == group


# What a host would reach outside: the host name of the Debian mirror its apt sources name (read, never hard-coded).
OUTSIDE_PROBE = r"""
import concurrent.futures, re, socket
text = open("/etc/apt/sources.list").read()
names = sorted(set(re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?https?://([^/:\s]+)", text, re.M)))
print("NAMES", " ".join(names))

def connect(name, addr):
    try:
        socket.create_connection((addr, 80), timeout=3).close()
        return f"CONNECTED {name} {addr}"
    except OSError as exc:
        return f"REFUSED {name} {addr} {exc}"

targets = []
for name in names:
    try:
        targets += [(name, addr) for addr in {a[4][0] for a in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}]
    except socket.gaierror as exc:
        print("UNRESOLVED", name, exc)
with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
    for line in pool.map(lambda target: connect(*target), targets):
        print(line)
"""


def test_hosts_cannot_reach_outside_the_machine(fleet: Fleet):
    def probe_outside(host: FleetHost) -> str:
        return host.exec("python3", "-c", OUTSIDE_PROBE, timeout=60).stdout

    for host, output in zip(fleet.hosts[:2], fleet.parallel(probe_outside, fleet.hosts[:2]), strict=True):
        names = output.splitlines()[0].split()[1:]
        assert names, f"{host.name}: no mirror host name in /etc/apt/sources.list: {output}"
        assert "CONNECTED" not in output, f"{host.name} reached outside: {output}"
        assert "UNRESOLVED" in output or "REFUSED" in output, output


NGINX_CONF = """
worker_processes 1;
pid /run/fleet-nginx-{port}.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log off;
    server {{
        listen {listen};
        location / {{ return 200 "{body}\\n"; }}
    }}
}}
"""


def _start_nginx(host: FleetHost, listen: str, port: int, body: str) -> str:
    conf = f"/etc/nginx/fleet-test-{port}.conf"
    host.exec("tee", conf, input=NGINX_CONF.format(port=port, listen=listen, body=body))
    host.exec("nginx", "-c", conf)
    return conf


def _get(url: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (a loopback URL)
                return response.read().decode().strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_nginx_in_a_host_answers_on_its_published_loopback_port(fleet: Fleet):
    if not fleet.front_ports:
        pytest.skip("IMMUTABLE_FLEET_FRONT_PORTS=0: no front door")
    port = fleet.front_ports[0]
    started = []
    try:
        # bound to the host's loopback (as the router role does by default) and to all addresses
        for host, listen in ((fleet.hosts[-2], f"127.0.0.1:{port}"), (fleet.hosts[-1], f"0.0.0.0:{port}")):
            started.append((host, _start_nginx(host, listen, port, f"hello from {host.name}")))
        for host, _conf in started:
            url = host.url(port, "/healthz")
            assert url.startswith("http://127.0.0.1:")
            assert _get(url) == f"hello from {host.name}"
        # a port of the range with nothing behind it: the front door accepts, then the connection closes
        with pytest.raises(OSError):
            urllib.request.urlopen(fleet.hosts[-2].url(fleet.front_ports[-1]), timeout=5)  # noqa: S310
    finally:
        for host, conf in started:
            host.exec("nginx", "-c", conf, "-s", "quit", check=False)
            host.exec("rm", "-f", conf, check=False)


def test_inventory_names_groups_and_vars(fleet: Fleet, tmp_path):
    path = fleet.inventory(
        groups={"env_dev": [0], "env_prod": ["h1", fleet.hosts[2].container]},
        vars={"promotion_backend": "docker"},
        host_vars={"h1": {"weight": 2}},
        path=tmp_path / "inventory.yml",
    )
    proc = subprocess.run(
        ["ansible-inventory", "-i", str(path), "--list"], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert listed["env_dev"]["hosts"] == ["h0"]
    assert listed["env_prod"]["hosts"] == ["h1", "h2"]
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["h1"]["ansible_host"] == fleet.hosts[1].container
    assert hostvars["h1"]["ansible_connection"] == "community.docker.docker"
    assert hostvars["h1"]["weight"] == 2
    assert hostvars[fleet.hosts[-1].name]["promotion_backend"] == "docker"
    assert shlex.quote(fleet.hosts[0].container) == fleet.hosts[0].container


def _leftovers(session: str) -> dict[str, list[str]]:
    prefix = f"iif-fleet-{session}"
    label = f"label=immutable-infra.fleet={session}"
    found = {
        kind: subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        for kind, cmd in {
            "containers": ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"],
            "volumes": ["docker", "volume", "ls", "--filter", label, "--format", "{{.Name}}"],
            "networks": ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"],
        }.items()
    }
    found["cgroups"] = sorted(p for p in fleet_hosts._cgroup_names_on_machine() if p.startswith(prefix))
    return found


def test_a_killed_session_is_swept(fleet: Fleet):
    """A fleet whose pytest was killed (SIGKILL: no teardown) is removed by the next sweep, cgroups included; the
    live session's fleet is not touched."""
    script = Path(fleet_hosts.__file__)
    proc = subprocess.Popen(
        [sys.executable, str(script), "up", "1"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    session = None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            match = re.match(r"fleet (\S+): ", line)
            session = match.group(1) if match else session
            if line.startswith("inventory:"):
                break
        assert session, "".join(lines)
        host = f"iif-fleet-{session}-h0"
        # an inner container, so that the host's cgroup parent exists: an image imported from /usr/bin/sleep + libs
        script = IMPORT_SLEEPER.format(image="local/sleeper") + " && docker run -d local/sleeper /usr/bin/sleep 600"
        subprocess.run(["docker", "exec", host, "sh", "-c", script], check=True, capture_output=True, timeout=120)
        proc.kill()
        proc.wait(timeout=30)
        left = _leftovers(session)
        assert len(left["containers"]) == 3 and len(left["volumes"]) == 1 and left["networks"], left
        assert left["cgroups"], left
        assert session in fleet_hosts.sweep()
        assert _leftovers(session) == {"containers": [], "volumes": [], "networks": [], "cgroups": []}
        # the session's own fleet is alive and well
        assert fleet.hosts[0].docker("info", "--format", "{{.ID}}").stdout.strip() == fleet.hosts[0].engine_id
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        if session:
            fleet_hosts.sweep()
