"""Unit tests for the bg_swap module file: docs match argument_spec, argument validation before anything runs.

The behaviour against Docker/nginx and against moto_server is in tests/integration/test_bg_swap_{docker,aws}.py.
These runs fail before any docker command or AWS call: no backend is reachable here (the AWS endpoint is a closed
local port, so a call that slipped through would fail with a connection error, not the asserted message).
"""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.modules import bg_swap

AMI = "ami-0123456789abcdef0"
DIGEST = "127.0.0.1:5000/web@sha256:" + "a" * 64
LISTENER = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/0123456789abcdef/0123456789abcdef"
# a key ID of AWS's shape: the modules hide it (no_log), and a one-letter value would be masked in every message
AWS = {"backend": "aws", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:9",
       "access_key": "AKIAUNITTESTEXAMPLE7", "secret_key": "unit-test-Secret-Key"}  # fmt: skip


def doc_options():
    return yaml.safe_load(bg_swap.DOCUMENTATION)["options"]


def test_docs_match_argument_spec():
    spec, doc = bg_swap.argument_spec(), doc_options()
    assert set(spec) == set(doc)
    for name, option in spec.items():
        documented = doc[name]
        assert documented.get("type", "str") == option.get("type", "str"), name
        assert documented.get("required", False) == option.get("required", False), name
        assert documented.get("default") == option.get("default"), name
        assert documented.get("elements") == option.get("elements"), name
        assert documented.get("choices") == option.get("choices"), name
    assert spec["container_env"]["no_log"] is True


def test_examples_and_return_are_valid_yaml():
    examples = yaml.safe_load(bg_swap.EXAMPLES)
    assert any(task["immutable.infra.bg_swap"].get("backend") == "aws" for task in examples)
    returned = yaml.safe_load(bg_swap.RETURN)
    assert {"api_calls", "listener_arn", "launch_template_versions", "live_colour"} <= set(returned)


def run_main(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        bg_swap.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"artifact": "web:1.0", "blue_port": 8101, "green_port": 8102}, "pass the digest reference"),
        ({"artifact": "127.0.0.1:5000/web:latest", "blue_port": 8101, "green_port": 8102}, "never a mutable tag"),
        ({"artifact": DIGEST, "green_port": 8102}, "backend=docker needs blue_port"),
        ({"artifact": DIGEST, "blue_port": 8101, "green_port": 8101}, "give each colour its own port"),
        ({"artifact": DIGEST, "traffic_steps": [10, 50]}, "must end at 100"),
        ({"artifact": DIGEST, "traffic_steps": [50, 10, 100]}, "strictly increasing"),
        ({"artifact": DIGEST, "traffic_steps": [0, 100]}, "outside 1..100"),
        ({"artifact": DIGEST, "traffic_steps": ["ten", 100]}, "is not a whole number"),
        ({"artifact": DIGEST, "traffic_steps": [10.5, 100]}, "is not a whole number"),
        ({"artifact": DIGEST, "health_checks_required": 0}, "health_checks_required must be at least 1"),
        ({}, "state is deployed but all of the following are missing: artifact"),
    ],
)
def test_docker_arguments_are_validated(args, message, capsys):
    result = run_main(dict({"app": "web", "env": "prod"}, **args), capsys)
    assert result["failed"] is True and message in result["msg"], result["msg"]


@pytest.mark.parametrize(
    "args, message",
    [
        ({"artifact": "web:1.0", "listener_arn": LISTENER}, "is not an AMI ID"),
        ({"artifact": DIGEST, "listener_arn": LISTENER}, "is not an AMI ID"),
        ({"artifact": AMI}, "backend=aws needs the listener that switches traffic"),
        ({"artifact": AMI, "load_balancer_name": "web"}, "parameters are required together"),
        ({"artifact": AMI, "listener_arn": LISTENER, "load_balancer_name": "web", "listener_port": 80},
         "mutually exclusive"),
        ({"artifact": AMI, "listener_arn": LISTENER, "traffic_steps": [10, 60, 50, 100]}, "strictly increasing"),
        ({"artifact": AMI, "listener_arn": LISTENER, "traffic_steps": [10, 101]}, "outside 1..100"),
        ({"artifact": AMI, "listener_arn": LISTENER, "lock_ttl": 5}, "lock_ttl must be at least 60"),
        ({"artifact": AMI, "listener_arn": LISTENER, "desired_capacity": 0}, "desired_capacity must be at least 1"),
        ({"artifact": AMI, "listener_arn": LISTENER, "asg_names": {"red": "x"}}, "unknown key(s) ['red']"),
        ({"artifact": AMI, "listener_arn": LISTENER, "target_groups": {"blue": "tg", "green": "tg"}},
         "each colour needs its own"),
    ],
)  # fmt: skip
def test_aws_arguments_are_validated_before_any_call(args, message, capsys):
    result = run_main(dict(AWS, app="web", env="prod", **args), capsys)
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert result.get("api_calls", 0) == 0
    assert "unit-test-Secret-Key" not in json.dumps(result)


def test_aws_call_errors_are_reported_with_the_call_and_the_count(capsys):
    # The endpoint is a closed port: the first call (describe the listener) fails and says which call it was.
    result = run_main(dict(AWS, app="web", env="prod", artifact=AMI, listener_arn=LISTENER), capsys)
    assert result["failed"] is True
    assert f"describe listener {LISTENER} failed" in result["msg"], result["msg"]
    assert result["api_calls"] >= 1
