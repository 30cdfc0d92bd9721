"""Benchmark the bg_swap docker backend: switch time (green healthy -> 100% on green), rollback time, wrk failures.

Runs 5 swap+rollback cycles against a self-contained nginx router and prints medians. Needs what the integration
tests need (scripts/setup.sh: venv, Docker, registry, base image). Usage: .venv/bin/python bench/bg_swap_docker.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import conftest  # noqa: E402
import test_bg_swap_docker as t  # noqa: E402

RUNS = int(os.environ.get("BG_BENCH_RUNS", "5"))


def main() -> int:
    creds = conftest.read_env_file(conftest.STATE_DIR / "registry" / "credentials.env")
    registry = {
        "address": "127.0.0.1:5000",
        "username": creds["IMMUTABLE_REGISTRY_USER"],
        "password": creds["IMMUTABLE_REGISTRY_PASSWORD"],
    }
    base = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    docker_config_gen = t.docker_config.__wrapped__(registry)
    docker_config = next(docker_config_gen)
    images_gen = t.images.__wrapped__(registry, base, docker_config)
    images = next(images_gen)
    tmp = Path(tempfile.mkdtemp(prefix="bg-bench-"))
    router = t.Router(uuid.uuid4().hex[:8], tmp, docker_config)
    switch, rollback, failures = [], [], []
    try:
        router.setup()
        first = router.swap(artifact=images["v1"])
        assert not t.failed(first), first
        for run in range(RUNS):
            wrk = t.run_wrk(router.url, 8)
            time.sleep(1)
            res = router.swap(artifact=images["v2"])
            assert not t.failed(res), res
            switch.append(res["timings"]["switch"] + res["timings"]["verify"])
            start = time.monotonic()
            back = router.swap(state="rolled_back")
            assert not t.failed(back), back
            rollback.append(time.monotonic() - start)
            stats = t.parse_wrk(wrk.communicate(timeout=60)[0])
            failures.append(stats["non2xx"] + stats["socket_errors"])
            # Next cycle starts from blue=v1 again: redeploy v2 to green each time (the green container is replaced).
            print(
                f"run {run + 1}: switch {switch[-1]:.3f}s rollback {rollback[-1]:.2f}s failed {failures[-1]}",
                file=sys.stderr,
            )
    finally:
        router.teardown()
        for gen in (images_gen, docker_config_gen):
            next(gen, None)
    print(
        json.dumps(
            {
                "runs": RUNS,
                "median_switch_healthy_to_100pct_s": round(statistics.median(switch), 3),
                "median_rollback_s (ansible-playbook wall clock)": round(statistics.median(rollback), 2),
                "median_wrk_failed_requests": statistics.median(failures),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
