"""The promotion step's rules (plugin_utils/_promotion.py): settings, records, module arguments, the summary.

How a rollback goes (switch back or deploy) is bg_swap's decision: tests/unit/plugins/module_utils/deploy/
test__bluegreen.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import router_is_up
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ami_for_region
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import aws_swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import env_region
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import env_tag_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import latest_artifact_id
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ledger_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import read_records
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import router_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import settings_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import summary_lines
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_state

CHAIN = ["dev", "staging", "prod"]
ENVS = {
    env: {
        "router_port": 18080 + 10 * i,
        "blue_port": 18081 + 10 * i,
        "green_port": 18082 + 10 * i,
        "router_dir": f"/r/{env}",
    }
    for i, env in enumerate(CHAIN)
}
DIGEST_ID = "127.0.0.1:5000/web@sha256:" + "a" * 64


def settings(**raw):
    base = {"chain": CHAIN, "app": "web", "artifacts_dir": "/srv/artifacts", "environments": ENVS}
    base.update(raw)
    return resolve_settings(base, pwd="/work")


def test_missing_settings_take_the_documented_defaults():
    resolved = resolve_settings(
        {"chain": CHAIN, "artifacts_dir": "/a", "backend": None, "env_tags": "false", "health_timeout": "30"}, "/w"
    )
    assert resolved["app"] == "web"
    assert resolved["backend"] == "docker"
    assert resolved["ledger"] == {"backend": "file", "path": "/w/ledger/ledger.json"}
    assert resolved["env_tags"] is False
    assert resolved["health_timeout"] == 30.0
    assert resolved["health_interval"] == 0.5
    assert resolved["traffic_steps"] == [100]
    assert resolved["manage_router"] is True and resolved["manage_router_always"] is False


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"env_tags": "sometimes"}, 'promotion_env_tags "sometimes" is not a boolean'),
        ({"health_interval": "fast"}, 'promotion_health_interval "fast" is not a number'),
        ({"environments": ["dev"]}, "promotion_environments must be a mapping"),
        ({"ledger": "ledger.json"}, "promotion_ledger must be a mapping"),
    ],
)
def test_a_setting_of_the_wrong_type_is_named(raw, message):
    with pytest.raises(PromotionError, match=message):
        settings(**raw)


@pytest.mark.parametrize(
    ("raw", "envs", "message"),
    [
        ({}, ["dev", ""], "give both"),
        ({"app": "Web App"}, ["dev"], 'invalid settings: app "Web App" must be lower-case letters'),
        ({"chain": "dev,prod"}, ["dev"], "promotion_chain must be a list"),
        ({"chain": []}, ["dev"], "promotion_chain must be a list"),
        ({"backend": "k8s"}, ["dev"], 'promotion_backend "k8s" must be docker, aws, '),
        ({"artifacts_dir": ""}, ["dev"], "promotion_artifacts_dir must be set"),
        ({}, ["qa"], 'unknown environment "qa": the chain is dev -> staging -> prod; use one of those'),
        ({"environments": {}}, ["dev"], "environment dev has no settings in promotion_environments"),
        ({"environments": {"dev": {"router_port": 1}}}, ["dev"], "environment dev lacks blue_port, green_port"),
        ({"backend": "aws", "environments": {"dev": {"region": "eu-west-1"}}}, ["dev"], "has no aws settings"),
        ({"backend": "ecs", "environments": {"dev": {"listener_arn": "arn:l"}}}, ["dev"], "give it cluster and"),
    ],
)
def test_the_first_problem_is_reported_with_its_fix(raw, envs, message):
    problem = settings_problem(settings(**raw), envs, "give both environments: -e from=... -e to=...")
    assert problem is not None and message in problem


def test_good_settings_have_no_problem():
    assert settings_problem(settings(), ["dev", "staging"], "usage") is None
    aws = {"dev": {"load_balancer_name": "web-dev", "listener_port": 80}}
    assert settings_problem(settings(backend="aws", environments=aws), ["dev"], "usage") is None
    ecs = {"dev": {"cluster": "web", "load_balancer_name": "web-dev", "listener_port": 80}}
    assert settings_problem(settings(backend="ecs", environments=ecs), ["dev"], "usage") is None
    assert settings_problem(settings(backend="none", environments={}), ["prod"], "usage") is None


def test_records_are_read_oldest_first_and_a_broken_one_is_named(tmp_path):
    records = tmp_path / "web" / "records"
    records.mkdir(parents=True)
    (records / "02.json").write_text(json.dumps({"id": "b", "fingerprint": "sha256:2", "repository": "r"}))
    (records / "01.json").write_text(json.dumps({"id": {"eu-west-1": "ami-0123456789abcdef0"}, "kind": "ami"}))
    read = read_records(str(tmp_path), "web")
    assert [r["id"] for r in read] == [{"eu-west-1": "ami-0123456789abcdef0"}, "b"]
    assert (read[0]["kind"], read[1]["kind"]) == ("ami", "container")
    assert read[1]["path"] == str(records / "02.json")
    assert read_records(str(tmp_path), "other") == []
    (records / "03.json").write_text("{truncated")
    with pytest.raises(PromotionError, match=r"artifact record .*03\.json is unreadable"):
        read_records(str(tmp_path), "web")


def test_a_deploy_without_artifact_takes_latest_json_or_says_to_bake(tmp_path):
    with pytest.raises(PromotionError, match=r"no artifact record for web in .*latest.json: bake it first"):
        latest_artifact_id(str(tmp_path), "web")
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "latest.json").write_text(json.dumps({"id": DIGEST_ID}))
    assert latest_artifact_id(str(tmp_path), "web") == DIGEST_ID


def test_the_router_is_up_only_with_both_conf_files_and_a_live_master(tmp_path):
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    assert not router_is_up(str(tmp_path), "web", "dev")
    (conf_d / "web-dev.conf").write_text("")
    (conf_d / "web-dev.upstream.conf").write_text("")
    assert not router_is_up(str(tmp_path), "web", "dev")  # no pid file
    (tmp_path / "nginx.pid").write_text(f"{os.getpid()}\n")
    assert not router_is_up(str(tmp_path), "web", "dev")  # set up by a version without the analysis log
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "web-dev.analysis.log").write_text("")
    assert router_is_up(str(tmp_path), "web", "dev")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (tmp_path / "nginx.pid").write_text(gone.stdout)
    assert not router_is_up(str(tmp_path), "web", "dev")
    (tmp_path / "nginx.pid").write_text("")
    assert not router_is_up(str(tmp_path), "web", "dev")


def test_ledger_arguments_per_action():
    resolved = settings(ledger={"backend": "ssm", "prefix": "/p", "region": "eu-west-1", "path": None})
    promote = ledger_args(resolved, "promote", "prod", "staging", None, False, None)
    assert promote == {
        "backend": "ssm",
        "prefix": "/p",
        "region": "eu-west-1",
        "app": "web",
        "chain": CHAIN,
        "env": "prod",
        "action": "promote",
        "force": False,
        "from_env": "staging",
    }
    rollback = ledger_args(resolved, "rollback", "prod", "", DIGEST_ID, False, "5xx")
    assert "force" not in rollback and "from_env" not in rollback
    assert (rollback["artifact_id"], rollback["reason"]) == (DIGEST_ID, "5xx")


def test_swap_arguments_point_bg_swap_at_the_environments_router():
    args = swap_args(settings(container_port=9000), "staging", DIGEST_ID)
    assert args["router_url"] == "http://127.0.0.1:18090/"
    assert (args["blue_port"], args["green_port"], args["container_port"]) == (18091, 18092, 9000)
    assert (args["nginx_conf_dir"], args["nginx_conf"], args["nginx_prefix"]) == (
        "/r/staging/conf.d",
        "/r/staging/nginx.conf",
        "/r/staging/",
    )
    assert args["state"] == "deployed" and args["artifact"] == DIGEST_ID
    assert swap_state("rollback") == "rolled_back" and swap_state("promote") == "deployed"


def test_router_arguments_are_what_the_role_was_given():
    assert router_args(settings(), "staging") == {
        "app": "web",
        "env": "staging",
        "listen": "127.0.0.1:18090",
        "blue_port": 18091,
        "green_port": 18092,
        "self_contained_dir": "/r/staging",
    }


AMI_A, AMI_B = "ami-0123456789abcdef0", "ami-0fedcba9876543210"


def test_the_region_of_an_environment_and_its_fix_when_none():
    envs = {"dev": {"listener_arn": "arn:l", "region": "eu-west-1"}, "prod": {"listener_arn": "arn:l"}}
    resolved = settings(backend="aws", environments=envs, aws_region="us-east-1")
    assert env_region(resolved, "dev", {}) == "eu-west-1"
    assert env_region(resolved, "prod", {"AWS_REGION": "ap-south-1"}) == "us-east-1"
    no_default = settings(backend="aws", environments=envs)
    assert env_region(no_default, "prod", {"AWS_DEFAULT_REGION": "ap-south-1"}) == "ap-south-1"
    with pytest.raises(PromotionError, match="environment prod has no AWS region: set region in promotion_environ"):
        env_region(no_default, "prod", {})


def test_the_ami_of_the_region_is_taken_and_a_missing_one_is_refused_with_the_fix():
    assert ami_for_region({"us-east-1": AMI_A, "eu-west-1": AMI_B}, "eu-west-1", "dev") == AMI_B
    assert ami_for_region(json.dumps({"us-east-1": AMI_A}), "us-east-1", "dev") == AMI_A
    assert ami_for_region(AMI_A, "us-east-1", "dev") == AMI_A
    with pytest.raises(PromotionError) as err:
        ami_for_region({"eu-west-1": AMI_B}, "us-east-1", "dev")
    assert err.value.message.startswith(
        f'artifact {{"eu-west-1": "{AMI_B}"}} has no AMI for region us-east-1 of environment dev (it has: eu-west-1):'
        " promotion never rebakes or copies an AMI"
    )
    with pytest.raises(PromotionError, match=r"is not an AMI ID \(ami-...\) or a region map"):
        ami_for_region(DIGEST_ID, "us-east-1", "dev")


def test_aws_swap_arguments_carry_the_connection_the_environment_and_the_gate_defaults():
    envs = {"prod": {"load_balancer_name": "web-prod", "listener_port": 443, "desired_capacity": 4, "step_pause": 5}}
    resolved = settings(backend="aws", environments=envs, health_timeout=900)
    connection = {"endpoint_url": "http://127.0.0.1:5061", "region": "us-east-1", "secret_key": "s"}
    args = aws_swap_args(resolved, "prod", AMI_A, "eu-west-1", "rolled_back", connection)
    assert args == {
        "endpoint_url": "http://127.0.0.1:5061",
        "secret_key": "s",
        "region": "eu-west-1",
        "backend": "aws",
        "app": "web",
        "env": "prod",
        "state": "rolled_back",
        "artifact": AMI_A,
        "load_balancer_name": "web-prod",
        "listener_port": 443,
        "desired_capacity": 4,
        "step_pause": 5,
        "traffic_steps": [100],
        "health_interval": 0.5,
        "health_timeout": 900.0,
    }


def test_the_environment_tag_goes_on_the_records_fingerprint_tag_only_for_containers():
    record = {"kind": "container", "fingerprint": "sha256:" + "f" * 64, "repository": "127.0.0.1:5000/web"}
    args = env_tag_args(settings(), "prod", record)
    assert args["tags"] == ["fp-" + "f" * 64, "prod"]
    assert args["mutable_tags"] == CHAIN
    assert env_tag_args(settings(env_tags=False), "prod", record) is None
    assert env_tag_args(settings(), "prod", dict(record, kind="ami")) is None
    assert env_tag_args(settings(), "prod", {}) is None


def test_the_summary_shows_the_id_the_colour_and_the_gate():
    request = {"env": "prod", "action": "promote", "from_env": "staging", "reason": "CHG-1"}
    recorded = {"artifact_id": DIGEST_ID, "changed": True, "forced": False}
    lines = summary_lines(settings(), request, {"live_colour": "green", "changed": True}, recorded)
    assert lines == [f"web/prod live: {DIGEST_ID} (promoted from staging)", "colour: green (switched)", "gate: ok"]
    forced = dict(recorded, forced=True, overridden=["skips staging"])
    lines = summary_lines(settings(backend="none"), request, {}, forced)
    assert lines[1] == "backend none: recorded in the ledger only, nothing was switched"
    assert lines[2] == "FORCED: skips staging - reason: CHG-1"
    rollback = dict(request, action="rollback")
    switched_back = {"live_colour": "blue", "rollback_method": "switch_back"}
    lines = summary_lines(settings(), rollback, switched_back, recorded)
    assert lines == [
        f"web/prod live: {DIGEST_ID} (rolled back)",
        "colour: blue (instant switch back to the kept colour)",
    ]
    deployed = {"live_colour": "blue", "rollback_method": "deploy"}
    again = summary_lines(settings(), rollback, deployed, dict(recorded, changed=False))
    assert again[0].endswith("(rolled back before: nothing to do)")
    assert again[1] == "colour: blue (blue-green deploy of the previous ID)"
