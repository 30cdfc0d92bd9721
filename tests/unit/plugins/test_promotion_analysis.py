"""The promotion's analysis setting (promotion_analysis, per environment .analysis) as bg_swap gets it."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import aws_swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ecs_swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import settings_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swarm_swap_args

CHAIN = ["dev", "prod"]
DIGEST_ID = "127.0.0.1:5000/web@sha256:" + "a" * 64
SHARED = {"window": 30, "min_requests": 20, "max_error_rate": 0.02, "cloudwatch_alarms": ["web-5xx"]}


def settings(environments=None, **raw):
    envs = environments or {
        env: {"router_port": 18080 + i, "blue_port": 18180 + i, "green_port": 18280 + i, "router_dir": f"/r/{env}"}
        for i, env in enumerate(CHAIN)
    }
    base = {"chain": CHAIN, "app": "web", "artifacts_dir": "/srv/artifacts", "environments": envs}
    base.update(raw)
    return resolve_settings(base, pwd="/work")


def test_no_analysis_setting_passes_no_analysis_option():
    resolved = settings()
    assert "analysis" not in swap_args(resolved, "prod", DIGEST_ID)
    assert settings_problem(resolved, ["prod"], "usage") is None


def test_the_shared_setting_gives_each_backend_its_own_keys_and_an_environment_overrides_it():
    resolved = settings(analysis=SHARED)
    assert swap_args(resolved, "prod", DIGEST_ID)["analysis"] == {
        "window": 30,
        "min_requests": 20,
        "max_error_rate": 0.02,
    }
    resolved["environments"]["dev"]["analysis"] = {"window": 5, "min_requests": 0}
    assert swap_args(resolved, "dev", DIGEST_ID)["analysis"] == {"window": 5, "min_requests": 0}
    envs = {"prod": {"listener_arn": "arn:aws:elasticloadbalancing:x"}}
    aws = settings(environments=envs, chain=["prod"], backend="aws", analysis=SHARED)
    args = aws_swap_args(aws, "prod", "ami-12345678", "us-east-1", "deployed", {})
    assert args["analysis"] == {"window": 30, "cloudwatch_alarms": ["web-5xx"]}
    assert settings_problem(aws, ["prod"], "usage") is None


def test_a_bad_analysis_setting_is_refused_before_anything_runs_naming_where_it_is():
    resolved = settings(analysis={"window": 30, "max_error_rat": 0.1})
    problem = settings_problem(resolved, ["prod"], "usage")
    assert problem.startswith("invalid settings: promotion_analysis: analysis: unknown key(s) ['max_error_rat']")
    resolved = settings()
    resolved["environments"]["prod"]["analysis"] = {"min_requests": 5}
    assert settings_problem(resolved, ["prod"], "usage") == (
        "invalid settings: promotion_environments.prod.analysis: analysis.window is required: the seconds to observe"
        " the new colour after each step (docs/progressive.md)"
    )
    assert settings_problem(resolved, ["dev"], "usage") is None


def test_ecs_and_swarm_environments_get_their_backends_keys_and_pass_the_settings_check():
    envs = {"prod": {"listener_arn": "arn:aws:elasticloadbalancing:x", "cluster": "web", "service": "web-prod"}}
    ecs = settings(environments=envs, chain=["prod"], backend="ecs", analysis=SHARED)
    assert settings_problem(ecs, ["prod"], "usage") is None  # checked as bg_swap backend=ecs checks it
    args = ecs_swap_args(ecs, "prod", DIGEST_ID, "us-east-1", "deployed", {})
    assert args["analysis"] == {"window": 30, "cloudwatch_alarms": ["web-5xx"]}
    assert validate(args["analysis"], "ecs").cloudwatch_alarms == ["web-5xx"]
    envs = {"prod": {"router_image": "127.0.0.1:5000/router@sha256:" + "b" * 64}}
    shared = dict(SHARED, access_log="/var/log/nginx/web-prod.analysis.log")  # the docker router's: not swarm's
    swarm = settings(environments=envs, chain=["prod"], backend="swarm", analysis=shared)
    assert settings_problem(swarm, ["prod"], "usage") is None
    args = swarm_swap_args(swarm, "prod", DIGEST_ID)
    assert args["analysis"] == {"window": 30, "min_requests": 20, "max_error_rate": 0.02}
    assert validate(args["analysis"], "swarm").min_requests == 20
