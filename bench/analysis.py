"""Benchmark the analysis between weighted steps (bg_swap, docs/progressive.md).

1. Controller work per analysed step beyond the window (target <= 50 ms): the router's analysis log holds a long
   history (never re-read), then LINES request lines are written "during the window" (two colours, 20 % of them 5xx,
   realistic request times); measured: the docker backend's analysis_begin + analysis_end + the verdict, i.e. all the
   analysis does besides sleeping the window: CPU time (the controller's work; the exit status checks it against
   the target) and wall clock (which also counts waiting for a CPU on a busy machine), over REPEAT runs.
2. A real swap with analysis (window 1 s, steps [20, 100], under load through a real nginx router): the `analysis`
   timing minus the two windows = the per-step overhead end to end (sleep granularity and nginx log writes included).
3. A promotion with no analysis configured is as fast as before: the same swap (steps [20, 100], no analysis) with
   this checkout's collection and with the collection at BASE_COMMIT (git archive into a temp dir), side by side,
   alternating, RUNS each: the module's own switch+verify timing and the ansible-playbook wall clock (medians).

Needs what the integration tests need (scripts/setup.sh: venv, Docker, registry, base image, nginx).
Usage: .venv/bin/python bench/analysis.py   (ANALYSIS_BENCH_LINES, ANALYSIS_BENCH_RUNS, ANALYSIS_BENCH_BASE)
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import conftest  # noqa: E402
import test_analysis_docker as ta  # noqa: E402
import test_bg_swap_docker as t  # noqa: E402

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate  # noqa: E402
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import verdict  # noqa: E402
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import DockerBackend  # noqa: E402

LINES = int(os.environ.get("ANALYSIS_BENCH_LINES", "100000"))
HISTORY = 5 * LINES
REPEAT = 7
RUNS = int(os.environ.get("ANALYSIS_BENCH_RUNS", "4"))
# the last commit before the analysis (the collection "as before")
BASE_COMMIT = os.environ.get("ANALYSIS_BENCH_BASE", "f1329b9")


def log_lines(count: int, start: float, seconds: float) -> bytes:
    rng = random.Random(count)
    out = []
    for index in range(count):
        at = start + seconds * index / count
        colour = "green" if rng.random() < 0.2 else "blue"
        status = 500 if rng.random() < 0.2 else 200
        port = 8102 if colour == "green" else 8101
        out.append(f"{colour}\t{at:.3f}\t{status}\t{rng.expovariate(1 / 0.012):.3f}\t127.0.0.1:{port}\n")
    return "".join(out).encode()


def controller_overhead() -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="analysis-bench-"))
    log = tmp / "web-prod.analysis.log"
    log.write_bytes(log_lines(HISTORY, time.time() - 3600, 3000))
    settings = validate({"window": 60, "min_requests": 20, "max_error_rate": 0.05, "max_latency_ms": 500})
    backend = DockerBackend(None, None, "web", "prod", {"blue": 8101, "green": 8102}, analysis_log=str(log))
    durations, cpu, item = [], [], None
    for _run in range(REPEAT):
        started_wall = time.time()
        begin, begin_cpu = time.perf_counter(), time.process_time()
        mark = backend.analysis_begin("green", settings)
        spent, spent_cpu = time.perf_counter() - begin, time.process_time() - begin_cpu
        with open(log, "ab") as handle:  # nginx, during the window
            handle.write(log_lines(LINES, started_wall, 0.5))
        time.sleep(0.6)
        begin, begin_cpu = time.perf_counter(), time.process_time()
        figures = backend.analysis_end(mark)
        item = verdict(20, "green", figures, settings, 60.0)
        durations.append((spent + time.perf_counter() - begin) * 1000)
        cpu.append((spent_cpu + time.process_time() - begin_cpu) * 1000)
    size_mb = log.stat().st_size / 1e6
    log.unlink()
    tmp.rmdir()
    return {
        "lines_in_window": LINES,
        "log_size_mb_at_end": round(size_mb, 1),
        "wall_min_ms": round(min(durations), 1),
        "wall_median_ms": round(statistics.median(durations), 1),
        "wall_max_ms": round(max(durations), 1),
        "cpu_median_ms": round(statistics.median(cpu), 1),
        "load_average_1min": round(os.getloadavg()[0], 1),
        "requests_counted_last_run": item["requests"],
        "target_ms": 50,
    }


def old_collection() -> Path:
    """This collection at BASE_COMMIT, as a collections path (ansible_collections/immutable/infra)."""
    root = Path(tempfile.mkdtemp(prefix="analysis-bench-base-"))
    dest = root / "ansible_collections" / "immutable" / "infra"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", BASE_COMMIT], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return root


def swap_runs(images, docker_config) -> dict:
    base = old_collection()
    routers = {}
    out = {"base": {"switch_verify_s": [], "wall_s": []}, "head": {"switch_verify_s": [], "wall_s": []}}
    analysed = []
    try:
        for name, collections in (("head", conftest.COLLECTIONS_DIR), ("base", base)):
            tmp = Path(tempfile.mkdtemp(prefix=f"analysis-bench-{name}-"))
            router = t.Router(uuid.uuid4().hex[:8], tmp, docker_config)
            router.docker_env = dict(router.docker_env, ANSIBLE_COLLECTIONS_PATH=str(collections))
            routers[name] = router
            res = conftest.run_playbook(
                t.PLAYBOOKS / "bg_router.yml",
                {
                    "router_app": router.app,
                    "router_env": router.env,
                    "router_listen": f"127.0.0.1:{router.router_port}",
                    "router_blue_port": router.blue_port,
                    "router_green_port": router.green_port,
                    "router_self_contained_dir": str(router.dir),
                },
                env=router.docker_env,
            )
            assert res.returncode == 0, res.stdout + res.stderr
            assert not router.swap(artifact=images["v1"]).get("failed")
        for run in range(RUNS):
            artifact = images["v2"] if run % 2 == 0 else images["v1"]
            for name in ("base", "head") if run % 2 else ("head", "base"):
                router = routers[name]
                with ta.Load(router.url, clients=2):
                    begin = time.monotonic()
                    res = router.swap(artifact=artifact, traffic_steps=[20, 100])
                    wall = time.monotonic() - begin
                assert not res.get("failed"), res
                out[name]["switch_verify_s"].append(res["timings"]["switch"] + res["timings"]["verify"])
                out[name]["wall_s"].append(wall)
                print(f"run {run + 1} {name}: wall {wall:.2f}s timings {res['timings']}", file=sys.stderr)
        # the same swap with analysis (head only): per-step overhead beyond the windows, end to end
        router = routers["head"]
        for run in range(2):
            artifact = images["v2"] if (RUNS + run) % 2 == 0 else images["v1"]
            window = 1.0
            with ta.Load(router.url, clients=3):
                res = router.swap(
                    artifact=artifact, traffic_steps=[20, 100], analysis={"window": window, "min_requests": 5}
                )
            assert not res.get("failed"), res
            steps = len(res["analysis"])
            analysed.append((res["timings"]["analysis"] - steps * window) / steps * 1000)
            print(f"analysed run {run + 1}: {res['analysis']}", file=sys.stderr)
    finally:
        for router in routers.values():
            router.teardown()
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return {
        "runs_each": RUNS,
        "no_analysis_median_switch_verify_s": {
            name: round(statistics.median(v["switch_verify_s"]), 3) for name, v in out.items()
        },
        "no_analysis_median_playbook_wall_s": {
            name: round(statistics.median(v["wall_s"]), 2) for name, v in out.items()
        },
        "with_analysis_overhead_per_step_ms (timings.analysis - windows)": [round(v, 1) for v in analysed],
    }


def main() -> int:
    overhead = controller_overhead()
    print(json.dumps({"controller_work_per_analysed_step": overhead}, indent=2))
    creds = conftest.read_env_file(conftest.STATE_DIR / "registry" / "credentials.env")
    registry = {
        "address": "127.0.0.1:5000",
        "username": creds["IMMUTABLE_REGISTRY_USER"],
        "password": creds["IMMUTABLE_REGISTRY_PASSWORD"],
    }
    base_image = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
    docker_config_gen = ta.docker_config.__wrapped__(registry)
    docker_config = next(docker_config_gen)
    images_gen = ta.images.__wrapped__(registry, base_image, docker_config)
    images = next(images_gen)
    try:
        swaps = swap_runs(images, docker_config)
    finally:
        for gen in (images_gen, docker_config_gen):
            next(gen, None)
    print(json.dumps({"swaps": swaps}, indent=2))
    # the controller's work is its CPU time: the wall clock also counts waiting for a CPU on a busy machine
    return 0 if overhead["cpu_median_ms"] <= overhead["target_ms"] else 1


if __name__ == "__main__":
    sys.exit(main())
