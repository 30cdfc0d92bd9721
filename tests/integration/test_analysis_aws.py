"""Analysis between weighted steps, aws backend, against a real moto_server: CloudWatch alarms named by the user (put
in ALARM with set_alarm_state during a weighted step) and the new colour's target health; the listener's weights are
read back from moto."""

from __future__ import annotations

import json
import time

import pytest
from test_analysis_prometheus import prometheus  # noqa: F401  # pylint: disable=unused-import
from test_bg_swap_aws import AwsEnv
from test_bg_swap_aws import amis  # noqa: F401  # pylint: disable=unused-import
from test_bg_swap_aws import client
from test_bg_swap_aws import moto  # noqa: F401  # pylint: disable=unused-import

pytestmark = [pytest.mark.moto]


@pytest.fixture
def aws(moto, unique, amis, tmp_path):  # noqa: F811
    env = AwsEnv(moto, unique, amis, tmp_path)
    env.cloudwatch = client(moto, "cloudwatch")
    env.alarm = f"{env.app}-{env.env}-5xx"
    env.cloudwatch.put_metric_alarm(
        AlarmName=env.alarm,
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    env.cloudwatch.set_alarm_state(AlarmName=env.alarm, StateValue="OK", StateReason="quiet")
    return env


def test_an_alarm_during_a_weighted_step_puts_the_listener_back_and_ok_alarms_pass(aws):
    ami2 = aws.amis[1]
    unknown = aws.swap(artifact=ami2, traffic_steps=[20, 100], analysis={"window": 1, "cloudwatch_alarms": ["nope"]})
    assert unknown.get("failed") and "no such CloudWatch alarm(s) ['nope']" in unknown["msg"], unknown
    assert aws.weights() == {"blue": 1} and aws.group("green")["DesiredCapacity"] == 0  # nothing moved

    analysis = {"window": 3, "cloudwatch_alarms": [aws.alarm]}
    proc = aws.swap_async(artifact=ami2, traffic_steps=[20, 100], analysis=analysis)
    raised = False
    deadline = time.monotonic() + 60
    while not raised and time.monotonic() < deadline and proc.poll() is None:
        if aws.weights() == {"green": 20, "blue": 80}:
            aws.cloudwatch.set_alarm_state(AlarmName=aws.alarm, StateValue="ALARM", StateReason="5xx from green")
            raised = True
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert raised, "never saw the listener at green 20 / blue 80"
    result = json.loads(proc.result_file.read_text())
    assert result.get("failed") and result["failed_check"] == "analysis" and result["rolled_back"] is True, result
    [step] = result["analysis"]
    assert step["step"] == 20 and step["verdict"] == "failed" and step["alarms"] == [aws.alarm], step
    assert step["requests"] is None and step["unhealthy_targets"] == []
    assert f"CloudWatch alarm(s) in ALARM during the window: {aws.alarm}" in result["msg"]
    assert aws.weights() == {"blue": 100}  # read back from moto: all traffic on the old target group

    aws.cloudwatch.set_alarm_state(AlarmName=aws.alarm, StateValue="OK", StateReason="fixed")
    good = aws.swap(artifact=ami2, traffic_steps=[20, 100], analysis={"window": 1, "cloudwatch_alarms": [aws.alarm]})
    assert not good.get("failed"), good
    assert [(s["step"], s["verdict"]) for s in good["analysis"]] == [(20, "passed"), (100, "passed")]
    assert aws.weights() == {"green": 100}
    assert good["api_calls_by_operation"]["cloudwatch.describe_alarms"] >= 4


def test_prometheus_figures_judge_an_aws_step_besides_the_alarms(aws, prometheus):  # noqa: F811
    """backend=aws with analysis.prometheus: the thresholds apply to the figures of the team's Prometheus (here
    constant PromQL on the real server: 100 requests, 40 % errors), the listener goes back to blue."""
    queries = {
        "requests": 'vector(100) + 0 * scalar(absent(nothing{env="{env}",colour="{colour}"}))',
        "error_rate": "vector(0.4)",
    }
    analysis = {
        "window": 1,
        "min_requests": 10,
        "max_error_rate": 0.05,
        "cloudwatch_alarms": [aws.alarm],
        "prometheus": dict(queries, url=prometheus.url),
    }
    result = aws.swap(artifact=aws.amis[1], traffic_steps=[20, 100], analysis=analysis)
    assert result.get("failed") and result["failed_check"] == "analysis" and result["rolled_back"] is True, result
    [step] = result["analysis"]
    assert (step["step"], step["verdict"], step["requests"], step["error_rate"]) == (20, "failed", 100, 0.4), step
    assert step["alarms"] == [] and step["unhealthy_targets"] == [], step
    assert f"figures from Prometheus {prometheus.url}" in step["detail"]
    assert aws.weights() == {"blue": 100}
