"""Benchmark: how long a promotion takes beyond the health gate, for a small and a large image.

Not a test. A promotion re-uses the digest: no build, no layer push (the environment tag is added by manifest) and
the image is already in the local engine, so everything but the health gate should not depend on the image size.

For each image (the small one: a bake of the default roles; the large one: the same plus ~200 MB committed on top
and pushed once, with its own fingerprint label and record) the bench first puts the other image live in dev and
staging (so staging's router runs and a colour is live, as before any real promotion), deploys the image to dev and
then times `playbooks/promote.yml -e from=dev -e to=staging`: the idle colour starts, passes the health gate and the
router switches to it at once. It reads bg_swap's own phase timings and the environment tag's time from the promotion
step's result (json callback). After each promotion it times a play without tasks on the same inventory: the part of
the figure that is ansible-playbook's own start-up and exit, which no collection can remove.

    python bench/promote.py [--runs 2] [--artifacts-dir DIR]

It bakes `promotest` (the tests' artifact) into a temp dir (a cache hit after the first run), starts one nginx
per environment on free 127.0.0.1 ports and removes every container and nginx it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAIN = ["dev", "staging", "prod"]
# Same inputs as tests/integration/test_promotion.py's first artifact: a cache hit when the tests ran before.
IMAGE_CONFIG = {"labels": {"io.immutable-infra.test.variant": "a"}}


def env_with(extra=None) -> dict:
    env = dict(os.environ)
    creds = ROOT / ".local" / "registry" / "credentials.env"
    for line in creds.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _sep, value = line.partition("=")
            env.setdefault(key.strip(), value.strip())
    env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(ROOT / ".local" / "collections"),
            "ANSIBLE_NOCOLOR": "1",
        }
    )
    env.update(extra or {})
    return env


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)
    if res.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd[:3]))} failed:\n{res.stdout[-3000:]}\n{res.stderr[-2000:]}")
    return res


def free_ports(count):
    socks = [socket.socket() for _i in range(count)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def bake(out: Path) -> dict:
    run(
        [
            "ansible-playbook",
            "playbooks/bake.yml",
            "-e",
            json.dumps({"bake_name": "promotest", "bake_artifacts_dir": str(out), "bake_image_config": IMAGE_CONFIG}),
        ],
        env=env_with(),
    )
    return json.loads((out / "promotest" / "latest.json").read_text())


def make_large(small: dict, mb: int) -> dict:
    """The small artifact + `mb` MB of random data, committed with its own fingerprint label and pushed once."""
    fp_hex = f"{int(time.time()):x}".rjust(64, "0")
    fingerprint = f"sha256:{fp_hex}"
    repo = small["repository"] + "-large"
    name = f"promobench-large-{os.getpid()}"
    env = env_with()
    cfg = tempfile.mkdtemp(prefix="promobench-docker-")
    try:
        run(
            [
                "docker",
                "--config",
                cfg,
                "login",
                repo.split("/")[0],
                "-u",
                env["IMMUTABLE_REGISTRY_USER"],
                "--password-stdin",
            ],
            input=env["IMMUTABLE_REGISTRY_PASSWORD"],
        )
        run(
            [
                "docker",
                "run",
                "--name",
                name,
                small["id"],
                "sh",
                "-c",
                f"dd if=/dev/urandom of=/opt/ballast bs=1M count={mb} status=none",
            ]
        )
        tag = f"{repo}:fp-{fp_hex}"
        run(
            [
                "docker",
                "commit",
                "--change",
                'CMD ["nginx", "-g", "daemon off;"]',
                "--change",
                f"LABEL io.immutable-infra.fingerprint={fingerprint}",
                name,
                tag,
            ]
        )
        run(["docker", "--config", cfg, "push", "--quiet", tag])
        digest = run(["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", tag]).stdout
        ref = [r for r in json.loads(digest) if r.startswith(repo + "@")][0]
        size = int(run(["docker", "image", "inspect", "--format", "{{.Size}}", tag]).stdout)
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
        shutil.rmtree(cfg, ignore_errors=True)
    return dict(
        small,
        id=ref,
        repository=repo,
        digest=ref.split("@")[1],
        fingerprint=fingerprint,
        tags=[f"fp-{fp_hex}"],
        size=size,
    )


class Chain:
    def __init__(self, root: Path, app: str, records: list[dict]):
        self.root, self.app = root, app
        rec_dir = root / "artifacts" / app / "records"
        rec_dir.mkdir(parents=True)
        for index, record in enumerate(records):
            (rec_dir / f"{index:02d}.json").write_text(json.dumps(record))
        (root / "artifacts" / app / "latest.json").write_text(json.dumps(records[-1]))
        ports = free_ports(9)
        self.envs = {
            env: {
                "router_port": ports[3 * i],
                "blue_port": ports[3 * i + 1],
                "green_port": ports[3 * i + 2],
                "router_dir": str(root / "routers" / env),
            }
            for i, env in enumerate(CHAIN)
        }
        inv = root / "inventory" / "group_vars" / "all"
        inv.mkdir(parents=True)
        shutil.copy(ROOT / "inventories" / "local" / "hosts.yml", root / "inventory" / "hosts.yml")
        (inv / "promotion.yml").write_text(
            json.dumps(
                {
                    "promotion_chain": CHAIN,
                    "promotion_app": app,
                    "promotion_backend": "docker",
                    "promotion_artifacts_dir": str(root / "artifacts"),
                    "promotion_ledger": {"backend": "file", "path": str(root / "ledger.json")},
                    "promotion_environments": self.envs,
                    "promotion_health_interval": 0.2,
                }
            )
        )

    def play(self, playbook, **extra) -> tuple[float, dict]:
        started = time.monotonic()
        res = run(
            ["ansible-playbook", f"playbooks/{playbook}", "-i", str(self.root / "inventory"), "-e", json.dumps(extra)],
            env=env_with({"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"}),
        )
        wall = time.monotonic() - started
        out = json.loads(res.stdout[res.stdout.index("{") :])
        tasks = {}
        for play in out["plays"]:
            for task in play["tasks"]:
                result = task["hosts"].get("localhost", {})
                span = task["task"].get("duration", {})
                tasks[task["task"]["name"]] = (result, span)
        return wall, tasks

    def empty_play(self) -> float:
        """Wall time of a play without tasks, same inventory and settings: Ansible's own start-up and exit."""
        with tempfile.NamedTemporaryFile("w", suffix=".yml", dir=self.root) as playbook:
            playbook.write("- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks: []\n")
            playbook.flush()
            started = time.monotonic()
            run(["ansible-playbook", playbook.name, "-i", str(self.root / "inventory")], env=env_with())
            return time.monotonic() - started

    def teardown(self):
        for env in CHAIN:
            for colour in ("blue", "green"):
                subprocess.run(
                    ["docker", "rm", "--force", f"{self.app}-{env}-{colour}"], capture_output=True, check=False
                )
            pid_file = Path(self.envs[env]["router_dir"]) / "nginx.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
                except (ValueError, ProcessLookupError):
                    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--large-mb", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="promobench-"))
    chains = []
    try:
        small = bake(work / "bakes")
        small["size"] = int(run(["docker", "image", "inspect", "--format", "{{.Size}}", small["id"]]).stdout)
        large = make_large(small, args.large_mb)
        rows = []
        empty_plays = []
        for label, record, previous in (("small", small, large), ("large", large, small)):
            for index in range(args.runs):
                chain = Chain(work / f"{label}{index}", f"pb{os.getpid()}{label}{index}", [previous, record])
                chains.append(chain)
                # staging already runs the previous artifact behind its router, as it does before any promotion
                chain.play("deploy.yml", env="dev", artifact=previous["id"])
                chain.play("promote.yml", **{"from": "dev", "to": "staging"})
                chain.play("deploy.yml", env="dev", artifact=record["id"])
                wall, tasks = chain.play("promote.yml", **{"from": "dev", "to": "staging"})
                empty_plays.append(chain.empty_play())
                # the promotion step (immutable.infra.promotion): bg_swap's phases and its own steps' timings
                step = next(result for result, _span in tasks.values() if result.get("swap"))
                timings = step["swap"].get("timings", {})
                # the registry (env tag plan + tag) and the ledger (gate check + record), in the same task
                own = step.get("timings", {})
                tag = sum(own.get(k, 0.0) for k in ("ledger_check", "env_tag_plan", "env_tag", "ledger_record"))
                beyond = wall - timings.get("gate", 0.0)
                rows.append((label, record["size"], wall, timings, tag, beyond))
                chain.teardown()
        print(
            f"{'image':6} {'size MB':>8} {'promote wall s':>15} {'gate s':>7} {'beyond gate s':>14} "
            f"{'docker run s':>12} {'switch s':>8} {'verify s':>8} {'tag+ledger s':>12}"
        )
        for label, size, wall, timings, tag, beyond in rows:
            print(
                f"{label:6} {size / 1e6:8.0f} {wall:15.2f} {timings.get('gate', 0):7.2f} {beyond:14.2f} "
                f"{timings.get('deploy', 0):12.2f} {timings.get('switch', 0):8.2f} {timings.get('verify', 0):8.2f} "
                f"{tag:12.2f}"
            )
        for label in ("small", "large"):
            picked = [r for r in rows if r[0] == label]
            beyond = statistics.median(r[5] for r in picked)
            parts = statistics.median(
                r[3].get("deploy", 0) + r[3].get("switch", 0) + r[3].get("verify", 0) + r[4] for r in picked
            )
            print(
                f"median beyond the health gate, {label}: {beyond:.2f} s; "
                f"docker run + switch + verify + env tag + ledger: {parts:.2f} s"
            )
        print(
            f"an empty play, same inventory (ansible-playbook's own start-up and exit), median of "
            f"{len(empty_plays)}: {statistics.median(empty_plays):.2f} s"
        )
    finally:
        for chain in chains:
            chain.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
