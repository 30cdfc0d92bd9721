"""Unit tests of the bg_swap ecs backend with botocore's Stubber: what moto_server cannot show.

moto never throttles and puts a task set in STEADY_STATE at once; these tests stub a Throttling answer (retried by
amazon.aws's AWSRetry through the same client wrapper bg_swap uses) and a task set that stays STABILIZING (the
waiter's timeout names the task set). The whole sequence runs against moto in tests/integration/test_bg_swap_ecs.py.
"""

from __future__ import annotations

import boto3
import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from botocore.stub import Stubber

from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._backend import EXTRA_RETRY_CODES
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._backend import EcsBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._backend import with_image
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._drift import ecs_findings

REGION = "eu-west-1"
CLUSTER_ARN = "arn:aws:ecs:eu-west-1:123456789012:cluster/web"
SERVICE_ARN = "arn:aws:ecs:eu-west-1:123456789012:service/web/web-prod"
TASK_SET_ARN = "arn:aws:ecs:eu-west-1:123456789012:task-set/web/web-prod/ecs-svc/1"
DIGEST = "127.0.0.1:5000/web@sha256:" + "a" * 64


def stubbed_backend():
    clients, stubs = {}, {}
    for name in ("ecs", "elbv2", "ssm"):
        raw = boto3.client(name, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
        stubs[name] = Stubber(raw)
        stubs[name].activate()
        # as bg_swap wraps them (ecs_backend), without the delays
        retry = AWSRetry.jittered_backoff(retries=3, delay=0, catch_extra_error_codes=list(EXTRA_RETRY_CODES))
        clients[name] = RetryingBotoClientWrapper(raw, retry)
    backend = EcsBackend(
        clients, "web", "prod", cluster="web", listener_arn="arn:listener", region=REGION, poll_interval=0.01
    )
    return backend, stubs


def service(task_sets=()) -> dict:
    return {
        "serviceArn": SERVICE_ARN,
        "serviceName": "web-prod",
        "clusterArn": CLUSTER_ARN,
        "status": "ACTIVE",
        "deploymentController": {"type": "EXTERNAL"},
        "taskSets": list(task_sets),
    }


def task_set(stability: str) -> dict:
    return {
        "id": "ecs-svc/1",
        "taskSetArn": TASK_SET_ARN,
        "externalId": "green",
        "status": "ACTIVE",
        "taskDefinition": "arn:aws:ecs:eu-west-1:123456789012:task-definition/web-prod:2",
        "stabilityStatus": stability,
    }


def test_a_throttled_call_is_retried_and_counted_once():
    backend, stubs = stubbed_backend()
    expected = {"cluster": "web", "services": ["web-prod"]}
    stubs["ecs"].add_client_error("describe_services", "ThrottlingException", "Rate exceeded", 400, expected)
    stubs["ecs"].add_response("describe_services", {"services": [service()], "failures": []}, expected)
    assert backend.colour_status("blue").exists is False
    stubs["ecs"].assert_no_pending_responses()
    assert backend.counts["ecs.describe_services"] == 1  # one call for bg_swap's count; the retry is AWSRetry's


def test_a_throttled_call_that_never_succeeds_names_the_call():
    backend, stubs = stubbed_backend()
    expected = {"cluster": "web", "services": ["web-prod"]}
    for _attempt in range(4):  # the first call and AWSRetry's 3 retries
        stubs["ecs"].add_client_error("describe_services", "ThrottlingException", "Rate exceeded", 400, expected)
    with pytest.raises(BlueGreenError) as failed:
        backend.colour_status("blue")
    assert "describe ECS service web-prod in cluster web failed: ThrottlingException: Rate exceeded" in failed.value.msg


def test_a_task_set_that_never_reaches_steady_state_times_out_naming_it():
    backend, stubs = stubbed_backend()
    backend.wait_timeout = 0.3  # 3 polls, 0.1 s apart (the shortest delay the backend uses)
    expected = {"cluster": "web", "service": "web-prod", "taskSets": [TASK_SET_ARN]}
    for _poll in range(3):
        stubs["ecs"].add_response("describe_task_sets", {"taskSets": [task_set("STABILIZING")]}, expected)
    with pytest.raises(BlueGreenError) as failed:
        backend._wait_steady("green", TASK_SET_ARN)  # pylint: disable=protected-access
    msg = failed.value.msg
    assert f"timed out after 0.3s waiting for task set {TASK_SET_ARN} (green)" in msg
    assert "ECS service web-prod in cluster web to reach STEADY_STATE (last: STABILIZING)" in msg
    assert failed.value.extra["failed_check"] == "deploy"
    stubs["ecs"].assert_no_pending_responses()


def test_a_task_set_that_disappears_fails_the_wait_at_once():
    backend, stubs = stubbed_backend()
    expected = {"cluster": "web", "service": "web-prod", "taskSets": [TASK_SET_ARN]}
    stubs["ecs"].add_response(
        "describe_task_sets", {"taskSets": [], "failures": [{"arn": TASK_SET_ARN, "reason": "MISSING"}]}, expected
    )
    with pytest.raises(BlueGreenError) as failed:
        backend._wait_steady("green", TASK_SET_ARN)  # pylint: disable=protected-access
    assert f"waiting for task set {TASK_SET_ARN} (green)" in failed.value.msg


def test_a_service_without_the_external_controller_is_refused():
    backend, stubs = stubbed_backend()
    rolling = dict(service(), deploymentController={"type": "ECS"})
    stubs["ecs"].add_response("describe_services", {"services": [rolling], "failures": []})
    with pytest.raises(BlueGreenError) as failed:
        backend.colour_status("blue")
    assert "uses the ECS deployment controller" in failed.value.msg and "EXTERNAL" in failed.value.msg


def test_new_revision_changes_only_the_container_image():
    described = {
        "taskDefinitionArn": "arn:td/web-prod:1",
        "family": "web-prod",
        "revision": 1,
        "status": "ACTIVE",
        "networkMode": "awsvpc",
        "cpu": "256",
        "memory": "512",
        "requiresAttributes": [{"name": "x"}],
        "containerDefinitions": [
            {"name": "web", "image": "web:old", "portMappings": [{"containerPort": 8080}]},
            {"name": "sidecar", "image": "envoy@sha256:" + "b" * 64},
        ],
    }
    args = with_image(described, "web", DIGEST)
    assert set(args) == {"family", "networkMode", "cpu", "memory", "containerDefinitions"}
    assert [c["image"] for c in args["containerDefinitions"]] == [DIGEST, "envoy@sha256:" + "b" * 64]
    assert described["containerDefinitions"][0]["image"] == "web:old"  # the described revision is not mutated


def test_drift_findings():
    live = {"id": "ecs-svc/1", "external_id": "green", "status": "PRIMARY", "task_definition": "td:2", "image": DIGEST}
    found = {"task_definition": "td:2", "image": DIGEST, "task_sets": [live]}
    assert ecs_findings(found, "web", "web-prod", DIGEST)["mismatches"] == []
    other = "127.0.0.1:5000/web@sha256:" + "c" * 64
    assert "the ledger says " + other in ecs_findings(found, "web", "web-prod", other)["mismatches"][0]
    stray = {"id": "ecs-svc/9", "external_id": None, "status": "ACTIVE", "task_definition": "td:3", "image": other}
    mismatches = ecs_findings(dict(found, task_sets=[live, stray]), "web", "web-prod", DIGEST)["mismatches"]
    assert mismatches == [f"task set ecs-svc/9 of web-prod runs {other} and was not made by bg_swap (externalId None)"]
    assert "does not exist" in ecs_findings(None, "web", "web-prod", DIGEST)["mismatches"][0]


@pytest.mark.parametrize(
    ("counts", "healthy", "why"),
    [
        ({"computedDesiredCount": 0, "runningCount": 0}, False, "no task is desired: web-prod's desiredCount"),
        ({"computedDesiredCount": 2, "runningCount": 2}, True, "2/2 tasks running"),
        ({}, True, "0/0 tasks running"),  # no counts reported (moto_server): judged on the rest
    ],
)
def test_a_colour_that_wants_no_task_fails_the_gate(counts, healthy, why):
    """ECS reports how many tasks a task set wants; a colour that wants none would pass every count and serve
    nothing, so the gate refuses it. moto reports no counts at all: that case is judged on the rest."""
    backend, stubs = stubbed_backend()
    steady = dict(task_set("STEADY_STATE"), **counts)
    stubs["ecs"].add_response(
        "describe_services",
        {"services": [service([steady])], "failures": []},
        {"cluster": "web", "services": ["web-prod"]},
    )
    image = {"name": "web", "image": DIGEST, "portMappings": [{"containerPort": 8080}]}
    stubs["ecs"].add_response(
        "describe_task_definition",
        {
            "taskDefinition": {
                "taskDefinitionArn": steady["taskDefinition"],
                "family": "web-prod",
                "revision": 2,
                "containerDefinitions": [image],
            }
        },
        {"taskDefinition": steady["taskDefinition"]},
    )
    tg_arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-prod-green/1"
    backend.tg_arns = {"blue": tg_arn.replace("green", "blue"), "green": tg_arn}
    targets = [{"Target": {"Id": f"10.0.0.{i}", "Port": 8080}, "TargetHealth": {"State": "healthy"}} for i in (1, 2)]
    stubs["elbv2"].add_response(
        "describe_target_health", {"TargetHealthDescriptions": targets[: counts.get("runningCount", 0)]},
        {"TargetGroupArn": tg_arn},
    )  # fmt: skip
    result = backend.check_health("green")
    assert result.ok is healthy and why in result.detail, result.detail
