"""The promotion step's fleet rules (plugin_utils/_promotion.py): the hosts of an environment, the batch, the
max_fail_percentage knob, the router on a host and the rollout lock owned by the ansible-playbook process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import RolloutLock
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_batch
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_lock_path
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_max_fail_percentage
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_router
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings

ENV = {"router_port": 8080, "blue_port": 18081, "green_port": 18082, "router_dir": "/srv/r/prod"}


def settings(**extra):
    raw = {"chain": ["dev", "prod"], "artifacts_dir": "/a", "environments": {"prod": dict(ENV)}}
    raw.update(extra)
    return resolve_settings(raw, "/work")


def test_an_environment_without_hosts_runs_on_the_controller():
    assert fleet_hosts(settings(), "prod", {"all": ["localhost"]}) == []
    assert fleet_hosts(settings(), "prod", {"env_prod": []}) == []
    assert fleet_hosts(settings(backend="none"), "prod", {"env_prod": ["h1"]}) == []


def test_the_hosts_of_env_group_or_hosts_group_in_inventory_order():
    assert fleet_hosts(settings(), "prod", {"env_prod": ["h3", "h1"]}) == ["h3", "h1"]
    custom = settings(environments={"prod": dict(ENV, hosts_group="web_prod")})
    assert fleet_hosts(custom, "prod", {"env_prod": ["x"], "web_prod": ["h9"]}) == ["h9"]


@pytest.mark.parametrize("given, expected", [(None, "1"), (2, "2"), ("25%", "25%"), ("100%", "100%")])
def test_batch_a_number_or_a_percentage(given, expected):
    extra = {} if given is None else {"batch": given}
    assert fleet_batch(settings(**extra), "prod") == expected


@pytest.mark.parametrize("bad", [0, -1, "0%", "101%", "two", True, "1.5"])
def test_a_bad_batch_is_refused_naming_the_setting(bad):
    with pytest.raises(PromotionError, match="promotion_batch"):
        fleet_batch(settings(batch=bad), "prod")


def test_an_environment_batch_overrides_the_default():
    custom = settings(batch=1, environments={"prod": dict(ENV, batch="50%")})
    assert fleet_batch(custom, "prod") == "50%"


def test_max_fail_percentage_defaults_to_0_and_is_checked():
    assert fleet_max_fail_percentage(settings()) == 0
    assert fleet_max_fail_percentage(settings(max_fail_percentage="30")) == 30
    with pytest.raises(PromotionError, match="promotion_max_fail_percentage"):
        fleet_max_fail_percentage(settings(max_fail_percentage=150))


def test_the_router_listens_on_every_address_of_a_host():
    assert fleet_router(settings(), "prod") == {"listen": "0.0.0.0:8080", "self_contained_dir": "/srv/r/prod"}


def test_the_rollout_lock_is_beside_the_ledger_and_owned_by_the_playbook_process(tmp_path):
    s = settings(ledger={"backend": "file", "path": str(tmp_path / "ledger" / "ledger.json")})
    path = fleet_lock_path(s, "prod")
    assert path == str(tmp_path / "ledger" / ".web-prod.promotion.lock")
    playbook_pid = os.getpid()
    first = RolloutLock(path, "web/prod", playbook_pid)
    first.acquire()  # creates the ledger's directory
    assert json.loads((tmp_path / "ledger" / ".web-prod.promotion.lock").read_text())["pid"] == playbook_pid
    # another step of the same run (another worker, same parent) holds it already; another run is locked out
    RolloutLock(path, "web/prod", playbook_pid).acquire()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with pytest.raises(LockedError, match="locked: a promotion of web/prod is in progress"):
            RolloutLock(path, "web/prod", other.pid).acquire()
        assert not RolloutLock(path, "web/prod", other.pid).release()  # not its lock
    finally:
        other.kill()
        other.wait()
    assert first.release() and not os.path.exists(path)


def test_a_dead_runs_lock_is_taken_over(tmp_path):
    path = str(tmp_path / ".web-prod.promotion.lock")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    RolloutLock(path, "web/prod", dead.pid).acquire()
    mine = RolloutLock(path, "web/prod", os.getpid())
    mine.acquire()
    assert json.loads(open(path).read())["pid"] == os.getpid()
    assert mine.release()


def test_the_ssm_ledgers_rollout_lock_is_an_ssm_parameter_with_a_token(monkeypatch):
    moto = pytest.importorskip("moto")
    from ansible_collections.immutable.infra.plugins.action.promotion import _SsmRolloutLock

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    s = settings(ledger={"backend": "ssm", "prefix": "/immutable/ledger", "region": "eu-west-1"})
    with moto.mock_aws():
        first = _SsmRolloutLock(s, "prod", "web/prod")
        first.acquire()
        assert first.name == "/immutable/ledger/web/prod.promotion.lock"
        with pytest.raises(LockedError, match="locked"):
            _SsmRolloutLock(s, "prod", "web/prod").acquire()
        # the record step of the same run: a new object given the plan's token releases it
        _SsmRolloutLock(s, "prod", "web/prod", token="not-ours").release()  # another run's token: kept
        with pytest.raises(LockedError, match="locked"):
            _SsmRolloutLock(s, "prod", "web/prod").acquire()
        assert _SsmRolloutLock(s, "prod", "web/prod", token=first.token_out()).release()
        again = _SsmRolloutLock(s, "prod", "web/prod")
        again.acquire()
        again.release()
