"""Analysis between weighted steps, docker backend: real Docker, the real registry, a real nginx router whose own
analysis log gives the figures, and real HTTP load on loopback through the router."""

from __future__ import annotations

import re
import threading
import time

import pytest
from test_bg_swap_docker import docker_config  # noqa: F401  # pylint: disable=unused-import
from test_bg_swap_docker import get
from test_bg_swap_docker import pushed_web_images
from test_bg_swap_docker import router  # noqa: F401  # pylint: disable=unused-import

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

ANALYSIS = {"window": 2, "min_requests": 8, "max_error_rate": 0.05, "max_latency_ms": 5000}


@pytest.fixture(scope="module")
def images(registry, base_image, docker_config):  # noqa: F811
    """v1 and v2 (good), and "flaky": 500 to every 5th request (20 %), but 200 on /healthz, so it passes the gate."""
    variants = {"v1": {"FAIL_EVERY": 0}, "v2": {"FAIL_EVERY": 0}, "flaky": {"FAIL_EVERY": 5}}
    with pushed_web_images(registry, base_image, docker_config, "analysis", variants) as digests:
        yield digests


class Load:
    """A small steady load through the router (a few client threads on loopback): the statuses the clients saw."""

    def __init__(self, url: str, clients: int = 3, pause: float = 0.005):
        self.url, self.pause = url, pause
        self.statuses = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _unused in range(clients)]

    def run(self):
        while not self.stop.is_set():
            status, _headers, _body = get(self.url)
            self.statuses.append(status)
            time.sleep(self.pause)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)

    def non_2xx(self) -> int:
        return len([s for s in self.statuses if s is None or not 200 <= s < 300])


def colours_served(router, count: int = 10) -> set:  # noqa: F811
    return {router.served()[1] for _unused in range(count)}


def test_a_flaky_release_aborts_at_the_first_weighted_step_and_a_good_one_passes_every_step(router, images):  # noqa: F811
    first = router.swap(artifact=images["v1"])
    assert not first.get("failed") and first["analysis"] == [], first  # a first deployment is not analysed

    with Load(router.url):
        bad = router.swap(artifact=images["flaky"], traffic_steps=[20, 100], analysis=ANALYSIS)
    assert bad.get("failed") and bad["failed_check"] == "analysis" and bad["rolled_back"] is True, bad
    assert bad["live_colour"] == "blue"
    [step] = bad["analysis"]  # aborted at the first weighted step: 100 % was never reached
    assert step["step"] == 20 and step["verdict"] == "failed", step
    assert step["requests"] >= ANALYSIS["min_requests"] and step["errors"] >= 1 and step["error_rate"] > 0.05
    assert re.search(
        r"analysis at 20% of traffic on green: failed: error rate [\d.]+% \(\d+ of \d+ requests", bad["msg"]
    )
    assert bad["msg"].endswith("rolled back: traffic is on blue again")
    # all traffic back on the old colour, through the router, and the upstream has only blue
    assert colours_served(router) == {"blue"}
    assert "# green" not in router.upstream() and router.state()["live"] == "blue"

    with Load(router.url) as load:
        good = router.swap(artifact=images["v2"], traffic_steps=[20, 100], analysis=ANALYSIS)
    assert not good.get("failed"), good
    assert [(s["step"], s["verdict"], s["errors"]) for s in good["analysis"]] == [(20, "passed", 0), (100, "passed", 0)]
    assert all(s["requests"] >= ANALYSIS["min_requests"] and s["latency_ms"]["p"] == 95 for s in good["analysis"])
    assert load.statuses and load.non_2xx() == 0
    assert colours_served(router) == {"green"} and good["timings"]["analysis"] > 0


def test_bad_settings_change_nothing_and_an_idle_window_does_not_pass_and_says_why(router, images):  # noqa: F811
    assert not router.swap(artifact=images["v1"]).get("failed")
    bad = router.swap(artifact=images["v2"], traffic_steps=[50, 100], analysis={"window": 1, "max_error_rate": 2})
    assert bad.get("failed") and "analysis.max_error_rate: 2.0 must be 0..1; nothing was changed" in bad["msg"], bad
    assert router.container("green") is None and colours_served(router, 3) == {"blue"}

    idle = router.swap(artifact=images["v2"], traffic_steps=[50, 100], analysis={"window": 1, "min_requests": 5})
    assert idle.get("failed") and idle["failed_check"] == "analysis", idle
    assert idle["analysis"][0]["verdict"] == "inconclusive" and idle["analysis"][0]["requests"] == 0
    assert "only 0 requests to green in 1.0 s, at least 5 needed: idle window" in idle["msg"]
    assert colours_served(router, 3) == {"blue"}
