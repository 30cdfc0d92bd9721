"""Benchmark of signing and provenance in the bake (issue 20: sign + provenance add little to a cold bake and
<= 0.3 s to a cached re-bake, which must not re-sign an already signed digest).

Workload: bench/roles/bench_app and bench_release (as bench/bake_container.py), with a fresh ECDSA P-256 key made in
a temporary directory (never kept). Per run, on a fresh app name:

  (a) cold bake with the key         the whole bake; its signing tasks timed by ansible.posix.profile_tasks
  (b) cached re-bake with the key    the signature tag exists: nothing is re-signed (artifact_sign changed=false)
  (c) cached re-bake without a key   for comparison

Prints, per run and as medians: the wall time of each bake and the time of the signing tasks in it (the key check
before a builder starts, artifact_sign; a skipped task still costs its few milliseconds), and their share of the
cold bake.
Needs scripts/setup.sh to have run (venv active, registry, base image) and ansible.posix (the ansible package).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("IMMUTABLE_STATE_DIR", ROOT / ".local"))
SIGNING_TASKS = (
    "Load the signing key",  # before a builder starts (skipped on a cached re-bake)
    "Sign the digest and attest the provenance",
)
TIMING = re.compile(r"^(?P<name>.+?)\s-+\s(?P<seconds>\d+\.\d+)s\s*$")


def credentials() -> dict[str, str]:
    values = {}
    for line in (STATE / "registry" / "credentials.env").read_text().splitlines():
        key, _sep, value = line.partition("=")
        values[key] = value
    return values


def bake(app: str, artifacts: Path, env: dict[str, str], key: Path | None) -> tuple[float, float]:
    """(wall seconds, seconds of the signing tasks) of one bake."""
    extra = {"bake_name": app, "bake_roles": ["bench_app", "bench_release"], "bake_artifacts_dir": str(artifacts)}
    if key is not None:
        extra["bake_signing_key_path"] = str(key)
    cmd = ["ansible-playbook", "playbooks/bake.yml", "-e", json.dumps(extra)]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"bake failed: {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    signing = 0.0
    for line in result.stdout.splitlines():
        match = TIMING.match(line.strip())
        if match and any(name in match.group("name") for name in SIGNING_TASKS):
            signing += float(match.group("seconds"))
    return took, signing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sign-"))
    shutil.copytree(ROOT / "bench" / "roles", work / "roles")
    key_path = work / "signing.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    env = dict(os.environ)
    env.update(credentials())
    env.update(
        {
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_COLLECTIONS_PATH": str(STATE / "collections"),
            "ANSIBLE_ROLES_PATH": str(work / "roles"),
            "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "all",
        }
    )
    rows: dict[str, list[tuple[float, float]]] = {"cold_signed": [], "cached_signed": [], "cached_unsigned": []}
    apps = []
    try:
        for run in range(args.runs):
            app = f"benchsig{uuid.uuid4().hex[:8]}"
            apps.append(app)
            artifacts = work / "artifacts"
            rows["cold_signed"].append(bake(app, artifacts, env, key_path))
            rows["cached_signed"].append(bake(app, artifacts, env, key_path))
            rows["cached_unsigned"].append(bake(app, artifacts, env, None))
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {v[-1][0]:.2f}s (signing {v[-1][1]:.2f}s)" for k, v in rows.items()),
                flush=True,
            )
    finally:
        for app in apps:
            ids = subprocess.run(
                ["docker", "image", "ls", "-q", f"immutable-infra-cache/{app}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "image", "rm", "-f", *ids], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nmedians over {args.runs} run(s): wall seconds, and the signing tasks' seconds in it")
    for name, values in rows.items():
        wall = statistics.median(v[0] for v in values)
        signing = statistics.median(v[1] for v in values)
        print(f"  {name:<16} {wall:7.2f}  signing {signing:5.2f}")
    cold = statistics.median(v[0] for v in rows["cold_signed"])
    cold_signing = statistics.median(v[1] for v in rows["cold_signed"])
    cached_signing = statistics.median(v[1] for v in rows["cached_signed"])
    print(f"  signing share of the cold bake: {100 * cold_signing / cold:.1f} %")
    print(f"  signing in a cached re-bake:    {cached_signing:.2f} s (target <= 0.3 s; nothing re-signed)")


if __name__ == "__main__":
    main()
