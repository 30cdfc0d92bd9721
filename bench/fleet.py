"""Benchmark: wall time of a fleet promotion (playbooks/promote.yml, staging -> prod) to 1, 2, 4 and 6 hosts.

Not a test, not run in CI. The hosts are the fleet tests' Docker-in-container hosts (tests/integration/fleet_hosts.py:
the bench starts its own fleet and removes it at the end). The artifacts are tiny web images (the app of
tests/integration/test_fleet.py), one per timed promotion, built and pushed once to the local registry, so each
timed promotion pulls a new digest on every host (its base layers already there), starts the idle colour, passes
the health gate and switches the host's router, as a real promotion does.

For each environment size N, prod = hosts h0..h<N-1> and staging = h0 (its own ports and router): a first artifact
is put live along staging -> prod (not timed: the routers start, the base layers are pulled), then, for each run and
each batch size (1 host, 50 % of the hosts), a new artifact is deployed to staging and the promotion to prod timed.
bg_swap's health gate time on each host is read from the json callback. Each timed promotion also gives the CPU
seconds (user + sys) of the ansible-playbook process tree: the controller's own work, which the machine's load does
not change (the wall times do, a lot, on a shared machine).

    python bench/fleet.py [--runs 3] [--sizes 1,2,4,6]

Targets (the fleet issue): with batches of 50 %, 6 hosts take <= 2x one host; the per-host cost beyond the health
gate <= 2 s (with batches of 1: (wall(6) - wall(1)) / 5 minus the median health gate of one host).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

from conftest import ansible_env  # noqa: E402
from conftest import read_env_file  # noqa: E402
from fleet_hosts import Fleet  # noqa: E402
from fleet_hosts import ensure_image  # noqa: E402
from fleet_hosts import sweep  # noqa: E402
from test_fleet import APP  # noqa: E402
from test_fleet import DOCKERFILE  # noqa: E402
from test_fleet import free_ports  # noqa: E402

BATCHES = ("1", "50%")
CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def host_cpu(host) -> float:
    """CPU seconds used so far inside one fleet host: its container (dockerd, nginx, the connection's `docker exec`
    and the modules it runs) and the containers its dockerd started (their own cgroup parent); cgroup v1's cpuacct,
    0.0 where it is not mounted."""
    full_id = docker_id(host.container)
    total = 0
    for path in (CPUACCT / "docker" / full_id / "cpuacct.usage", CPUACCT / host.cgroup_parent / "cpuacct.usage"):
        if path.is_file():
            total += int(path.read_text())
    return total / 1e9


CONTAINER_IDS: dict[str, str] = {}


def docker_id(name: str) -> str:
    if name not in CONTAINER_IDS:
        CONTAINER_IDS[name] = run(["docker", "inspect", "--format", "{{.Id}}", name]).stdout.strip()
    return CONTAINER_IDS[name]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    return res


def registry_settings() -> dict:
    creds = read_env_file(ROOT / ".local" / "registry" / "credentials.env")
    port = os.environ.get("IMMUTABLE_REGISTRY_PORT", "5000")
    return {
        "address": f"127.0.0.1:{port}",
        "username": creds["IMMUTABLE_REGISTRY_USER"],
        "password": creds["IMMUTABLE_REGISTRY_PASSWORD"],
    }


def build_images(registry: dict, count: int, work: Path) -> tuple[list[str], list[str]]:
    """`count` tiny web images (releases r0, r1, ...) pushed once: their digest references and local tags."""
    base = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    repo = f"{registry['address']}/fleetbench-{os.getpid()}/web"
    build_dir = work / "app"
    build_dir.mkdir()
    (build_dir / "app.py").write_text(APP)
    (build_dir / "Dockerfile").write_text(DOCKERFILE)
    config = work / "docker-config"
    config.mkdir()
    run(
        ["docker", "--config", str(config), "login", registry["address"], "-u", registry["username"],
         "--password-stdin"], input=registry["password"],
    )  # fmt: skip
    refs, tags = [], []
    for index in range(count):
        tag = f"{repo}:r{index}"
        run(["docker", "build", "--quiet", "--build-arg", f"BASE={base}", "--build-arg", f"VERSION=r{index}",
             "-t", tag, str(build_dir)])  # fmt: skip
        tags.append(tag)
        run(["docker", "--config", str(config), "push", "--quiet", tag])
        ref = run(["docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag]).stdout.strip()
        if not re.match(r".+@sha256:[0-9a-f]{64}$", ref):
            raise RuntimeError(f"no digest reference for {tag}: {ref}")
        refs.append(ref)
    return refs, tags


class Env:
    """staging (h0) -> prod (h0..h<size-1>) of one app on the fleet: inventory, artifact records, playbook runs."""

    def __init__(self, fleet: Fleet, work: Path, size: int, refs: list[str], registry: dict):
        self.fleet = fleet
        self.hosts = fleet.hosts[:size]
        self.app = f"fb{os.getpid()}n{size}"
        self.root = work / self.app
        records = self.root / "artifacts" / self.app / "records"
        records.mkdir(parents=True)
        for index, ref in enumerate(refs):
            (records / f"{index:02d}.json").write_text(json.dumps({"id": ref, "kind": "container", "version": index}))
        (self.root / "artifacts" / self.app / "latest.json").write_text(json.dumps({"id": refs[0]}))
        ports = free_ports(6)
        self.envs = {
            env: {
                "router_port": ports[3 * i],
                "blue_port": ports[3 * i + 1],
                "green_port": ports[3 * i + 2],
                "router_dir": f"/srv/fleetbench/{self.app}/{env}",
            }
            for i, env in enumerate(("staging", "prod"))
        }
        inventory = fleet.inventory(
            groups={"env_staging": [self.hosts[0]], "env_prod": self.hosts},
            vars={
                "promotion_chain": ["staging", "prod"],
                "promotion_app": self.app,
                "promotion_backend": "docker",
                "promotion_artifacts_dir": str(self.root / "artifacts"),
                "promotion_ledger": {"backend": "file", "path": str(self.root / "ledger.json")},
                "promotion_environments": self.envs,
                "promotion_health_interval": 0.3,
                "promotion_health_timeout": 60,
            },
            path=self.root / "inventory.yml",
        )
        # the controller: a local connection (the fleet's `all` vars name the docker connection)
        data = yaml.safe_load(inventory.read_text())
        data["all"]["hosts"]["localhost"] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
        }
        inventory.write_text(yaml.safe_dump(data, sort_keys=False))
        self.inventory = inventory
        self.cpu = 0.0
        self.host_cpu = 0.0
        self.env = {
            "IMMUTABLE_REGISTRY_USER": registry["username"],
            "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
            "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
        }

    def play(self, playbook: str, **extra) -> tuple[float, list[float]]:
        """Wall time of the playbook, and the health gate time of bg_swap on each host (json callback); the CPU
        seconds of the ansible-playbook process tree in self.cpu."""
        cmd = ["ansible-playbook", f"playbooks/{playbook}", "-i", str(self.inventory), "-e", json.dumps(extra)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        hosts_before = sum(host_cpu(host) for host in self.hosts)
        started = time.monotonic()
        res = run(cmd, env=ansible_env(self.env), timeout=900)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.host_cpu = sum(host_cpu(host) for host in self.hosts) - hosts_before
        out = json.loads(res.stdout[res.stdout.index("{") :])
        gates = []
        for play in out["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    timings = result.get("timings") or (result.get("swap") or {}).get("timings") or {}
                    if host != "localhost" and isinstance(timings, dict) and "gate" in timings:
                        gates.append(float(timings["gate"]))
        return wall, gates

    def teardown(self) -> None:
        script = (
            f'ids=$(docker ps -aq --filter name=^{self.app}-); [ -z "$ids" ] || docker rm -f $ids >/dev/null;'
            f" for d in /srv/fleetbench/{self.app}/*; do [ -s $d/nginx.pid ] && kill -QUIT $(cat $d/nginx.pid);"
            f" done; sleep 0.3; rm -rf /srv/fleetbench/{self.app}"
        )
        for host in self.hosts:
            host.sh(script, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", default="1,2,4,6", help="environment sizes (hosts), comma separated")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    registry = registry_settings()
    work = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    tags: list[str] = []
    envs: list[Env] = []
    sweep()
    ensure_image()
    (work / "fleet").mkdir()
    fleet = Fleet(registry, hosts=max(sizes), workdir=work / "fleet")
    try:
        refs, tags = build_images(registry, 1 + len(BATCHES) * args.runs, work)
        fleet.start()
        print(f"# {fleet.summary()}", flush=True)
        walls: dict[tuple[int, str], list[float]] = {}
        gates: dict[tuple[int, str], list[float]] = {}
        cpus: dict[tuple[int, str], list[float]] = {}
        host_cpus: dict[tuple[int, str], list[float]] = {}
        for size in sizes:
            env = Env(fleet, work, size, refs, registry)
            envs.append(env)
            env.play("deploy.yml", env="staging", artifact=refs[0])
            env.play("promote.yml", **{"from": "staging", "to": "prod"})  # routers up, base layers pulled
            release = 1
            for _run in range(args.runs):
                for batch in BATCHES:
                    env.play("deploy.yml", env="staging", artifact=refs[release])
                    wall, gate = env.play("promote.yml", promotion_batch=batch, **{"from": "staging", "to": "prod"})
                    release += 1
                    walls.setdefault((size, batch), []).append(wall)
                    gates.setdefault((size, batch), []).extend(gate)
                    cpus.setdefault((size, batch), []).append(env.cpu)
                    host_cpus.setdefault((size, batch), []).append(env.host_cpu / size)
                    print(f"# {size} host(s), batch {batch}: {wall:.2f} s, controller CPU {env.cpu:.2f} s,"
                          f" CPU per host {env.host_cpu / size:.2f} s, gates {[round(g, 2) for g in gate]}",
                          flush=True)  # fmt: skip
            env.teardown()
        median = {key: statistics.median(values) for key, values in walls.items()}
        print(
            f"\n{'hosts':>5} {'batch':>6} {'runs':>4} {'promote.yml wall s':>19} {'x 1 host':>9} {'gate/host s':>12}"
            f" {'controller CPU s':>17} {'CPU per host s':>15}"
        )
        for size in sizes:
            for batch in BATCHES:
                key = (size, batch)
                gate = statistics.median(gates[key]) if gates.get(key) else float("nan")
                ratio = median[key] / median[(sizes[0], batch)]
                cpu = statistics.median(cpus[key])
                per_host_cpu = statistics.median(host_cpus[key])
                print(
                    f"{size:5d} {batch:>6} {len(walls[key]):4d} {median[key]:19.2f} {ratio:9.2f} {gate:12.2f}"
                    f" {cpu:17.2f} {per_host_cpu:15.2f}"
                )
        first, last = sizes[0], sizes[-1]
        if last > first:
            ratio = median[(last, "50%")] / median[(first, "50%")]
            gate = statistics.median(gates[(last, "1")]) if gates.get((last, "1")) else 0.0
            per_host = (median[(last, "1")] - median[(first, "1")]) / (last - first)
            print(f"\nbatches of 50 %: {last} hosts / {first} host = {ratio:.2f}x (target <= 2x)")
            print(
                f"batches of 1: {per_host:.2f} s per extra host, of which health gate {gate:.2f} s: "
                f"beyond the gate {per_host - gate:.2f} s per host (target <= 2 s)"
            )
            cpu_host = (statistics.median(cpus[(last, "1")]) - statistics.median(cpus[(first, "1")])) / (last - first)
            print(f"controller CPU per extra host (batches of 1, load-independent): {cpu_host:.2f} s")
    finally:
        for env in envs:
            env.teardown()
        fleet.stop()
        for tag in tags:
            subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
