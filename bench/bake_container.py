"""Benchmark of the container bake, side by side with `docker build --no-cache`, on the same machine and run.

Workload: bench/roles/bench_app (apt install, user, directories, templates, files, config: 10 tasks) then
bench/roles/bench_release (2 tasks), then the seal. bench/docker/Dockerfile does the same steps.

  (a) cold bake          ansible-playbook playbooks/bake.yml, nothing cached (a fresh app name: no layers, no artifact)
  (b) docker build       docker build --no-cache of the equivalent Dockerfile
  (c) no-op re-bake      the same bake again: a cache hit, nothing started
  (d) incremental bake   only bench_release changed: starts from bench_app's cache layer and squashes it into one
                         layer above the base before the push. Measured twice: right after the cold bake, and again
                         (the edit-bake loop); before the squash, the first one also uploaded the cache layer's blob

Prints the median of each over --runs runs and the ratios the container-bake issue sets as targets:
no-op <= 2.5 s, cold <= 2.5 x docker build, incremental <= 0.4 x cold.
Needs scripts/setup.sh to have run (venv active, registry, base image).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("IMMUTABLE_STATE_DIR", ROOT / ".local"))


def credentials() -> dict[str, str]:
    values = {}
    for line in (STATE / "registry" / "credentials.env").read_text().splitlines():
        key, _sep, value = line.partition("=")
        values[key] = value
    return values


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return took


def bake_cmd(app: str, artifacts: Path) -> list[str]:
    extra = {"bake_name": app, "bake_roles": ["bench_app", "bench_release"], "bake_artifacts_dir": str(artifacts)}
    return ["ansible-playbook", "playbooks/bake.yml", "-e", json.dumps(extra)]


def set_marker(work: Path, marker: str) -> None:
    (work / "roles" / "bench_release" / "defaults" / "main.yml").write_text(f"---\nbench_release_marker: {marker}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-bake-"))
    shutil.copytree(ROOT / "bench" / "roles", work / "roles")
    env = dict(os.environ)
    env.update(credentials())
    env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(STATE / "collections"),
            "ANSIBLE_ROLES_PATH": str(work / "roles"),
        }
    )
    base = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    results: dict[str, list[float]] = {
        "cold": [],
        "docker_build": [],
        "noop": [],
        "incremental_first": [],
        "incremental": [],
    }
    apps = []
    try:
        for run in range(args.runs):
            app = f"bench{uuid.uuid4().hex[:8]}"
            apps.append(app)
            artifacts = work / "artifacts"
            # (b) first, so both cold builds see the same warm apt mirror and page cache on alternate runs
            results["docker_build"].append(
                timed(
                    ["docker", "build", "--no-cache", "--build-arg", f"BASE={base}", "-t", f"{app}-docker", "."],
                    env,
                    cwd=ROOT / "bench" / "docker",
                )
            )
            set_marker(work, "one")
            results["cold"].append(timed(bake_cmd(app, artifacts), env))
            results["noop"].append(timed(bake_cmd(app, artifacts), env))
            # change a file of the last role only (a var would change every layer: vars count in all of them)
            set_marker(work, f"two-{run}")
            results["incremental_first"].append(timed(bake_cmd(app, artifacts), env))
            # the usual edit-bake loop: the cached layers' blobs are in the registry since the first incremental
            set_marker(work, f"three-{run}")
            results["incremental"].append(timed(bake_cmd(app, artifacts), env))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), flush=True)
    finally:
        for app in apps:
            subprocess.run(["docker", "image", "rm", "-f", f"{app}-docker"], capture_output=True, check=False)
            ids = subprocess.run(
                ["docker", "image", "ls", "-q", f"immutable-infra-cache/{app}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "image", "rm", "-f", *ids], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    print("\nmedians over", args.runs, "runs (wall seconds)")
    for key, value in med.items():
        print(f"  {key:<13} {value:7.2f}")
    print("ratios")
    print(f"  cold / docker build      {med['cold'] / med['docker_build']:.2f}  (target <= 2.5)")
    print(f"  incremental / cold       {med['incremental'] / med['cold']:.2f}  (target <= 0.4)")
    print(f"  first incremental / cold {med['incremental_first'] / med['cold']:.2f}  (first bake from the layer)")
    print(f"  no-op                    {med['noop']:.2f}s (target <= 2.5 s)")
    # each run's bakes ran back to back, so their ratio is less exposed to the machine's drift between runs
    paired = [inc / cold for inc, cold in zip(results["incremental"], results["cold"], strict=True)]
    print(
        f"  incremental / cold, per run: {', '.join(f'{r:.2f}' for r in paired)}; "
        f"median {statistics.median(paired):.2f}"
    )


if __name__ == "__main__":
    main()
