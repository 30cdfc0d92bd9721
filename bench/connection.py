"""Benchmark of the builder connection against community.docker's connections, on the same machine and run.

Workload: one play of 25 small tasks (copy, file and lineinfile, 8-9 of each) against a builder container started
fresh from the base image for every play, as a bake's builder is. Each connection runs the same play in every run,
in turn, so they share the machine's drift:

  immutable.infra.builder          one relay and agent per builder (plugins/connection/builder.py)
  community.docker.docker_api      the Engine API's exec over the socket, per command
  community.docker.docker          the docker CLI, per command (--with-cli)
  floor (local --check)            the same play on the controller in check mode (connection local), against a
                                   temp directory tree that makes every task report a change: Ansible's own cost
                                   per task (worker, templating, module payload, Python start) without any container
  controller (local, for real)     the same play on the controller for real, into a fresh temp directory each run:
                                   check mode skips part of the work (a changed copy runs only stat: no transfer, no
                                   copy module), so builder / this row is the connection's own cost per task

Prints the median wall time of each connection over --runs runs, each run's spread, and the ratios
builder / docker_api and builder / floor (target <= 1.5, issue 17), also per run: the plays of one run ran back to
back. Needs scripts/setup.sh to have run (venv active, Docker Engine, base image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("IMMUTABLE_STATE_DIR", ROOT / ".local"))
BUILDER = "immutable.infra.builder"
DOCKER_API = "community.docker.docker_api"
DOCKER_CLI = "community.docker.docker"
FLOOR = "floor (local --check)"
LOCAL = "controller (local, for real)"
TARGET_FLOOR_RATIO = 1.5


def workload(root: str) -> list[dict]:
    """25 tasks: a directory tree, files with content, edits of those files."""
    tasks: list[dict] = []
    for i in range(9):
        tasks.append({"ansible.builtin.file": {"path": f"{root}/d{i}", "state": "directory", "mode": "0755"}})
    for i in range(8):
        tasks.append(
            {
                "ansible.builtin.copy": {
                    "dest": f"{root}/d{i}/app.conf",
                    "content": f"name=bench{i}\nport={8000 + i}\nlevel=info\n",
                    "mode": "0644",
                }
            }
        )
    for i in range(8):
        tasks.append(
            {
                "ansible.builtin.lineinfile": {
                    "path": f"{root}/d{i}/app.conf",
                    "regexp": "^level=",
                    "line": "level=debug",
                }
            }
        )
    assert len(tasks) == 25
    return tasks


def play_file(work: Path, root: str, name: str) -> Path:
    play = [{"hosts": "all", "gather_facts": False, "tasks": workload(root)}]
    path = work / name
    path.write_text(json.dumps(play, indent=1))  # JSON is YAML
    return path


def floor_tree(root: Path) -> None:
    """The tree as it is before the play's changes, so that in check mode each of the 25 tasks reports one."""
    for i in range(9):
        (root / f"d{i}").mkdir(mode=0o700, parents=True)
        (root / f"d{i}").chmod(0o700)
    for i in range(8):
        (root / f"d{i}" / "app.conf").write_text("name=old\nlevel=info\n")


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def timed_play(play: Path, container: str, connection: str, env: dict[str, str]) -> float:
    if connection in (FLOOR, LOCAL):
        cmd = ["ansible-playbook", str(play), "-i", "localhost,", "-c", "local"]
        cmd += ["--check"] if connection == FLOOR else []
    else:
        cmd = ["ansible-playbook", str(play), "-i", f"{container},", "-c", connection]
    # on the controller too, the modules run with Debian's python3, the build the builders run them with (the
    # venv's Python may be another build: pyenv's, without the distribution's optimisations, is slower)
    cmd += ["-e", "ansible_python_interpreter=/usr/bin/python3"]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0 or "changed=25" not in result.stdout:
        sys.exit(f"benchmark play failed over {connection}:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--with-cli", action="store_true", help=f"also measure {DOCKER_CLI}")
    args = parser.parse_args()

    base = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    connections = [BUILDER, DOCKER_API] + ([DOCKER_CLI] if args.with_cli else []) + [FLOOR, LOCAL]
    env = dict(os.environ)
    env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(STATE / "collections"),
        }
    )
    results: dict[str, list[float]] = {name: [] for name in connections}
    with tempfile.TemporaryDirectory(prefix="bench-connection-") as work:
        play = play_file(Path(work), "/opt/bench", "play.yml")
        # check mode writes nothing, so one tree serves every run of the floor
        floor_tree(Path(work) / "tree")
        floor_play = play_file(Path(work), str(Path(work) / "tree"), "floor.yml")
        for run in range(args.runs):
            # alternate the order, so neither connection always runs first after the other's clean-up
            order = connections if run % 2 == 0 else list(reversed(connections))
            for connection in order:
                if connection == FLOOR:
                    results[connection].append(timed_play(floor_play, "localhost", connection, env))
                    continue
                if connection == LOCAL:
                    real_play = play_file(Path(work), str(Path(work) / f"real{run}"), f"real{run}.yml")
                    results[connection].append(timed_play(real_play, "localhost", connection, env))
                    continue
                container = f"bench-conn-{uuid.uuid4().hex[:8]}"
                docker("run", "-d", "--name", container, base, "sleep", "infinity")
                try:
                    results[connection].append(timed_play(play, container, connection, env))
                finally:
                    subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), flush=True)

    med = {name: statistics.median(values) for name, values in results.items()}
    print(f"\n25 tasks, medians over {args.runs} runs (wall seconds of ansible-playbook, a fresh container each)")
    print(f"  {'connection':<30} {'median':>7} {'min':>7} {'max':>7} {'per task':>9}")
    for name, values in results.items():
        print(f"  {name:<30} {med[name]:7.2f} {min(values):7.2f} {max(values):7.2f} {med[name] / 25:8.3f}s")
    ratio = med[BUILDER] / med[DOCKER_API]
    paired = [ours / theirs for ours, theirs in zip(results[BUILDER], results[DOCKER_API], strict=True)]
    print(f"  builder / docker_api: {ratio:.2f} (per run: {', '.join(f'{r:.2f}' for r in paired)})")
    floor_paired = [ours / floor for ours, floor in zip(results[BUILDER], results[FLOOR], strict=True)]
    print(
        f"  builder / floor: {med[BUILDER] / med[FLOOR]:.2f} (per run: {', '.join(f'{r:.2f}' for r in floor_paired)};"
        f" median {statistics.median(floor_paired):.2f}; target <= {TARGET_FLOOR_RATIO})"
    )
    local_paired = [ours / local for ours, local in zip(results[BUILDER], results[LOCAL], strict=True)]
    print(
        f"  builder / controller for real: {med[BUILDER] / med[LOCAL]:.2f}"
        f" (per run: {', '.join(f'{r:.2f}' for r in local_paired)}; median {statistics.median(local_paired):.2f})"
    )


if __name__ == "__main__":
    main()
