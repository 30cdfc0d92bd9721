"""Analysis between weighted steps with its optional Prometheus source: real Debian `prometheus` (a process on
127.0.0.1 with a temp config and data dir, scraping each colour's /metrics every second), real Docker, the real
registry, a real nginx router, and real HTTP load on loopback through the router."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import run_playbook
from test_analysis_docker import Load
from test_analysis_docker import colours_served
from test_analysis_docker import images  # noqa: F401  # pylint: disable=unused-import
from test_bg_swap_docker import PLAYBOOKS
from test_bg_swap_docker import docker_config  # noqa: F401  # pylint: disable=unused-import
from test_bg_swap_docker import free_ports
from test_bg_swap_docker import get
from test_bg_swap_docker import router  # noqa: F401  # pylint: disable=unused-import

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

# what the test app exposes (tests/integration/files/bg_app/app.py); {app}, {env}, {colour}, {window}, {quantile}
# are replaced by bg_swap; app, env and colour are the labels the scrape config gives each colour's target
SELECT = 'app="{app}",env="{env}",colour="{colour}"'
QUERIES = {
    "requests": f'sum(increase(http_requests_total{{{SELECT},handler="/"}}[{{window}}]))',
    "error_rate": (
        f'sum(increase(http_requests_total{{{SELECT},handler="/",code=~"5.."}}[{{window}}]))'
        f' / sum(increase(http_requests_total{{{SELECT},handler="/"}}[{{window}}]))'
    ),
    "latency_ms": (
        f"1000 * histogram_quantile({{quantile}}, sum by (le) (rate(http_request_duration_seconds_bucket{{{SELECT}}}"
        f"[{{window}}])))"
    ),
}
# a window of 4 scrapes: Prometheus' increase() needs two samples in it
ANALYSIS = {"window": 4, "min_requests": 8, "max_error_rate": 0.05, "max_latency_ms": 5000}
SECRET = "Bearer prom-" + os.urandom(8).hex()


class Prometheus:
    """Debian's prometheus on a free loopback port; its targets (file_sd) are each test router's two colours."""

    def __init__(self, tmp):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "Debian's prometheus is not installed: apt-get install prometheus (scripts/test-all.sh installs it)"
            )
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = tmp / "targets.json"
        self.targets.write_text("[]")
        config = tmp / "prometheus.yml"
        sd = {"files": [str(self.targets)], "refresh_interval": "1s"}
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
                    "scrape_configs": [{"job_name": "bg_app", "file_sd_configs": [sd]}],
                }
            )
        )
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while get(f"{self.url}/-/ready")[0] != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"prometheus did not start: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def scrape(self, router):  # noqa: F811
        """Scrape the router's two colours (labels app, env, colour), and wait until Prometheus has both targets."""
        self.targets.write_text(
            json.dumps(
                [
                    {
                        "targets": [f"127.0.0.1:{port}"],
                        "labels": {"app": router.app, "env": router.env, "colour": colour},
                    }
                    for colour, port in (("blue", router.blue_port), ("green", router.green_port))
                ]
            )
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, _headers, body = get(f"{self.url}/api/v1/query?query=up%7Bapp%3D%22{router.app}%22%7D")
            if status == 200 and len(json.loads(body)["data"]["result"]) == 2:
                return
            time.sleep(0.2)
        pytest.fail("prometheus did not pick up the router's targets within 20 s")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    server = Prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        yield server
    finally:
        server.stop()


def with_prometheus(url: str, **extra) -> dict:
    return dict(ANALYSIS, prometheus=dict(QUERIES, url=url, headers={"Authorization": SECRET}, **extra))


def swap(router, **extra):  # noqa: F811
    """bg_swap through its playbook at -v: (the result, the playbook's output)."""
    router.runs += 1
    out = router.results / f"r{router.runs}.json"
    res = run_playbook(
        PLAYBOOKS / "bg_swap.yml",
        {"bg_args": router.args(**extra), "bg_result_file": str(out)},
        "-v",
        env=router.docker_env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads(out.read_text())
    assert SECRET not in res.stdout + res.stderr and SECRET not in json.dumps(result)  # header values are secret
    return result


def test_prometheus_figures_abort_a_flaky_release_at_the_first_step_and_pass_a_good_one(router, prometheus, images):  # noqa: F811
    prometheus.scrape(router)
    first = router.swap(artifact=images["v1"])
    assert not first.get("failed"), first
    analysis = with_prometheus(prometheus.url)

    with Load(router.url):
        bad = swap(router, artifact=images["flaky"], traffic_steps=[20, 100], analysis=analysis)
    assert bad.get("failed") and bad["failed_check"] == "analysis" and bad["rolled_back"] is True, bad
    [step] = bad["analysis"]  # aborted at the first weighted step: 100 % was never reached
    assert step["step"] == 20 and step["verdict"] == "failed", step
    assert step["requests"] >= ANALYSIS["min_requests"] and step["error_rate"] > 0.05 and step["errors"] >= 1
    assert f"figures from Prometheus {prometheus.url} over 4" in step["detail"], step
    assert "analysis at 20% of traffic on green: failed: error rate" in bad["msg"]
    assert bad["msg"].endswith("rolled back: traffic is on blue again")
    assert colours_served(router) == {"blue"} and router.state()["live"] == "blue"

    with Load(router.url) as load:
        good = swap(router, artifact=images["v2"], traffic_steps=[20, 100], analysis=analysis)
    assert not good.get("failed"), good
    assert [(s["step"], s["verdict"], s["errors"]) for s in good["analysis"]] == [(20, "passed", 0), (100, "passed", 0)]
    for item in good["analysis"]:
        assert item["requests"] >= ANALYSIS["min_requests"] and item["error_rate"] == 0.0, item
        assert item["latency_ms"]["p"] == 95 and 0 < item["latency_ms"]["value"] < 5000, item
    assert load.statuses and load.non_2xx() == 0
    assert colours_served(router) == {"green"}


def test_an_unreachable_prometheus_is_refused_early_or_makes_the_window_inconclusive(router, prometheus, images):  # noqa: F811
    prometheus.scrape(router)
    assert not router.swap(artifact=images["v1"]).get("failed")
    closed = f"http://127.0.0.1:{free_ports(1)[0]}"
    early = swap(router, artifact=images["v2"], traffic_steps=[50, 100], analysis=with_prometheus(closed))
    assert early.get("failed") and early["failed_check"] == "analysis", early
    assert f"analysis.prometheus: Prometheus {closed} could not be reached for the requests query" in early["msg"]
    assert early["msg"].endswith("nothing was changed") and router.container("green") is None

    # Prometheus answers before the switch, then stops answering during the window (SIGSTOP: no answer in time)
    analysis = with_prometheus(prometheus.url, timeout=1)
    analysis["window"] = 3
    with Load(router.url):
        proc = router.swap_async(traffic_steps=[50, 100], analysis=analysis, artifact=images["v2"])
        try:
            deadline = time.monotonic() + 60
            while "green" not in colours_served(router, 3) and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            prometheus.process.send_signal(signal.SIGSTOP)
            output = proc.communicate(timeout=90)[0]
        finally:
            prometheus.process.send_signal(signal.SIGCONT)
    assert proc.returncode == 0, output
    stuck = json.loads(proc.result_file.read_text())
    assert stuck.get("failed") and stuck["failed_check"] == "analysis" and stuck["rolled_back"] is True, stuck
    [step] = stuck["analysis"]
    assert (step["step"], step["verdict"], step["requests"]) == (50, "inconclusive", None), step
    assert f"no figures: Prometheus {prometheus.url} did not answer the requests query within 1 s" in step["detail"]
    assert SECRET not in json.dumps(stuck)
    assert "analysis at 50% of traffic on green: inconclusive: no figures" in stuck["msg"]
    assert colours_served(router, 3) == {"blue"} and SECRET not in output
