"""Load through the front load balancer while prod is promoted and rolled back (docs/fleet.md).

The chain of test_fleet.py (its FleetChain and its tiny web images, whose `/` answers the release: v1 or v2) on the
session fixture `fleet`: dev = h0, staging = h1, prod = h2, h3, h4 (batches of 1), and the front load balancer of
prod on h5 (immutable.infra.front_lb, as test_fleet_verify.py sets it up), reached only through the fixture's
loopback front door. `wrk -t2 -c8` runs on that URL during `playbooks/promote.yml` (staging -> prod, v1 -> v2) and
again during `playbooks/rollback.yml` of prod, stopped 2 s after each playbook ends (at most 240 s): no non-2xx
response, no socket error, more than 100 requests, and afterwards every answer is the new release, then the old one.
"""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from test_fleet import FleetChain
from test_fleet import flat
from test_fleet import fleet_chain  # noqa: F401  # pylint: disable=unused-import
from test_fleet import images  # noqa: F401  # pylint: disable=unused-import
from test_fleet import show
from test_fleet_verify import LB_DIR
from test_fleet_verify import LB_PORT
from test_fleet_verify import TEST_PLAYBOOKS
from test_fleet_verify import served_by
from test_fleet_verify import under_load

# fleet_chain and images are pytest fixtures of test_fleet.py: the test below takes them by name

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx, pytest.mark.slow]

MIN_REQUESTS = 100


def add_front_lb(chain: FleetChain, lb_host) -> None:
    """The front_lb group (one host) and the LB's port in the chain's inventory."""
    data = yaml.safe_load(chain.inventory.read_text())
    entry = {
        "ansible_connection": "community.docker.docker",
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_host": lb_host.container,
    }
    data["all"]["children"]["front_lb"] = {"hosts": {lb_host.name: entry}}
    data["all"]["vars"]["front_lb_port"] = LB_PORT
    chain.inventory.write_text(yaml.safe_dump(data, sort_keys=False))


def releases(url: str, count: int) -> set[str]:
    """The releases (`/` of the test app: v1, v2) that `count` requests through the load balancer got."""
    seen = set()
    for _attempt in range(count):
        with urllib.request.urlopen(url, timeout=10) as answer:  # the fixture's loopback URL
            assert answer.status == 200
            seen.add(answer.read().decode().strip())
    return seen


def test_no_error_through_the_front_lb_during_a_promotion_and_a_rollback(fleet_chain, fleet, images):  # noqa: F811
    if len(fleet.hosts) < 6:
        pytest.skip(f"this test needs 6 fleet hosts (IMMUTABLE_FLEET_HOSTS={len(fleet.hosts)})")
    hosts = fleet.hosts
    prod_hosts, lb = [hosts[2], hosts[3], hosts[4]], hosts[5]
    c = fleet_chain({"dev": [hosts[0]], "staging": [hosts[1]], "prod": prod_hosts}, promotion_batch=1)
    add_front_lb(c, lb)
    v1, v2 = images["refs"]["v1"], images["refs"]["v2"]
    try:
        # v1 live along the chain; v2 in dev and staging, ready for prod
        res = c.run("deploy.yml", env="dev")
        assert res.returncode == 0, show(res)
        for src, dst in (("dev", "staging"), ("staging", "prod")):
            res = c.run("promote.yml", **{"from": src, "to": dst})
            assert res.returncode == 0, show(res)
        res = c.run("deploy.yml", env="dev", artifact=v2)
        assert res.returncode == 0, show(res)
        res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
        assert res.returncode == 0, show(res)

        res = c.run(str(TEST_PLAYBOOKS / "fleet_front_lb.yml"), env="prod")
        assert res.returncode == 0, show(res)
        url = lb.url(LB_PORT, "/")
        seen = served_by(url, 30)
        routers = {f"{host.ip}:{c.envs['prod']['router_port']}" for host in prod_hosts}
        assert set(seen) == routers, (seen, routers)  # the three prod hosts answer through the LB
        assert releases(url, 20) == {"v1"}

        # the promotion of prod, one host at a time, under load
        res, took, out, count = under_load(url, lambda: c.run("promote.yml", **{"from": "staging", "to": "prod"}))
        assert f"{c.app}/prod live: {v2} (promoted from staging)" in flat(res.stdout), show(res)
        assert f"1 host(s) at a time: {v2}" in flat(res.stdout), show(res)  # batches of 1
        assert count > MIN_REQUESTS, out
        assert "Non-2xx" not in out, out
        assert "Socket errors" not in out, out
        assert c.entry("prod")["live"] == v2
        assert releases(url, 20) == {"v2"}  # every host answers the new artifact
        print(f"\n[fleet-load] promotion of 3 hosts in {took:.0f} s under load: {count} requests, 0 non-2xx")

        # the rollback of prod, under load
        res, took, out, count = under_load(url, lambda: c.run("rollback.yml", env="prod", reason="load test"))
        assert f"{c.app}/prod live: {v1} (rolled back)" in flat(res.stdout), show(res)
        assert count > MIN_REQUESTS, out
        assert "Non-2xx" not in out, out
        assert "Socket errors" not in out, out
        assert c.entry("prod")["live"] == v1
        assert releases(url, 20) == {"v1"}  # every host answers the old artifact again
        print(f"[fleet-load] rollback of 3 hosts in {took:.0f} s under load: {count} requests, 0 non-2xx")
    finally:
        lb.sh(
            f"[ -s {LB_DIR}/nginx.pid ] && nginx -p {LB_DIR}/ -c {LB_DIR}/nginx.conf -s stop; rm -rf {LB_DIR}",
            check=False,
        )
