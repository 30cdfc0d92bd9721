"""Unit tests of the bg_swap aws backend: listener action parsing/building, the SSM lock's take-over race, the gate
detail and error mapping. Fake clients only stand in where moto cannot reach the path (two runs racing for an
expired lock, upper-case health states, a target registered but not InService); the whole sequence runs against
moto_server in tests/integration/test_bg_swap_aws.py.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from ansible_collections.immutable.infra.plugins.module_utils.aws._ssm_lock import SsmLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import AwsBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import AwsError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import CountingClient
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import capacity_update
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import forward_actions
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import forward_weights
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import percentages

BLUE, GREEN = "arn:tg/blue", "arn:tg/green"


def client_error(code, message="boom", operation="Op"):
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


# -- listener actions ------------------------------------------------------------------------------------------------
def test_forward_weights_reads_both_forms():
    assert forward_weights([{"Type": "forward", "TargetGroupArn": BLUE}]) == {BLUE: 1}
    weighted = {"TargetGroups": [{"TargetGroupArn": BLUE, "Weight": 90}, {"TargetGroupArn": GREEN, "Weight": 10}]}
    assert forward_weights([{"Type": "forward", "TargetGroupArn": BLUE, "ForwardConfig": weighted}]) == {
        BLUE: 90,
        GREEN: 10,
    }
    assert forward_weights([{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503"}}]) == {}


def test_percentages_normalise_any_scale_and_drop_zero():
    assert percentages({BLUE: 1}) == {BLUE: 100}
    assert percentages({BLUE: 3, GREEN: 1}) == {BLUE: 75, GREEN: 25}
    assert percentages({BLUE: 0, GREEN: 999}) == {GREEN: 100}
    assert percentages({}) == {}


def test_forward_actions_keep_authentication_order_and_stickiness():
    stickiness = {"Enabled": True, "DurationSeconds": 60}
    current = [
        {"Type": "authenticate-oidc", "Order": 1, "AuthenticateOidcConfig": {"Issuer": "x"}},
        {
            "Type": "forward",
            "Order": 2,
            "ForwardConfig": {"TargetGroups": [], "TargetGroupStickinessConfig": stickiness},
        },
    ]
    actions = forward_actions(current, {GREEN: 10, BLUE: 90})
    assert actions[0] == current[0]
    assert actions[1] == {
        "Type": "forward",
        "Order": 2,
        "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": GREEN, "Weight": 10}, {"TargetGroupArn": BLUE, "Weight": 90}],
            "TargetGroupStickinessConfig": stickiness,
        },
    }


def test_forward_actions_replace_a_fixed_response():
    actions = forward_actions([{"Type": "fixed-response", "FixedResponseConfig": {}}], {BLUE: 100})
    assert actions == [
        {"Type": "forward", "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": BLUE, "Weight": 100}]}}
    ]


def test_capacity_update_keeps_the_groups_limits():
    assert capacity_update({"MinSize": 1, "MaxSize": 10}, 4) == {"MinSize": 1, "MaxSize": 10, "DesiredCapacity": 4}
    assert capacity_update({"MinSize": 6, "MaxSize": 2}, 4) == {"MinSize": 4, "MaxSize": 4, "DesiredCapacity": 4}


# -- counting and errors ---------------------------------------------------------------------------------------------
class Recorder:
    def __init__(self, raise_exc=None):
        self.calls = []
        self.raise_exc = raise_exc

    def __getattr__(self, name):
        def call(**params):
            self.calls.append((name, params))
            if self.raise_exc:
                raise self.raise_exc
            return {}

        return call


def test_counting_client_counts_and_asks_for_retries():
    counts = Counter()
    raw = Recorder()
    CountingClient(raw, "ec2", counts).describe_images(ImageIds=["ami-1"])
    CountingClient(raw, "ec2", counts, retry=False).describe_images(ImageIds=["ami-2"])
    assert counts == Counter({"ec2.describe_images": 2})
    assert raw.calls == [
        ("describe_images", {"ImageIds": ["ami-1"], "aws_retry": True}),
        ("describe_images", {"ImageIds": ["ami-2"]}),
    ]


def backend(**clients):
    base = {name: clients.get(name, Recorder()) for name in ("ec2", "autoscaling", "elbv2", "ssm")}
    return AwsBackend(
        base, "web", "prod", listener_arn="arn:listener", retry=False, owner="tester", sleep=lambda s: None
    )


def test_client_errors_become_aws_errors_naming_the_call():
    b = backend(elbv2=Recorder(client_error("AccessDenied", "not allowed to DescribeListeners")))
    with pytest.raises(AwsError) as err:
        b.describe()
    assert err.value.msg == "describe listener arn:listener failed: AccessDenied: not allowed to DescribeListeners"
    assert err.value.code == "AccessDenied" and b.api_calls() == 1


def test_programming_errors_are_not_hidden():
    b = backend(elbv2=Recorder(KeyError("bug")))
    with pytest.raises(KeyError):
        b.describe()


def test_listener_forwarding_elsewhere_is_refused():
    class Elb(Recorder):
        def describe_listeners(self, **params):
            return {"Listeners": [{"DefaultActions": [{"Type": "forward", "TargetGroupArn": "arn:tg/other"}]}]}

        def describe_target_groups(self, **params):
            return {"TargetGroups": [{"TargetGroupName": n, "TargetGroupArn": f"arn:tg/{n}"} for n in params["Names"]]}

    with pytest.raises(BlueGreenError, match="forwards to \\['arn:tg/other'\\], which is neither the blue"):
        backend(elbv2=Elb()).describe()


# -- the gate --------------------------------------------------------------------------------------------------------
class GateAsg(Recorder):
    def describe_auto_scaling_groups(self, **params):
        instances = [
            {"InstanceId": "i-1", "LifecycleState": "InService", "HealthStatus": "HEALTHY"},
            {"InstanceId": "i-2", "LifecycleState": "InService", "HealthStatus": "Healthy"},
            {"InstanceId": "i-3", "LifecycleState": "Pending", "HealthStatus": "Healthy"},
        ]
        return {"AutoScalingGroups": [{"DesiredCapacity": 2, "Instances": instances}]}


class GateEc2(Recorder):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def describe_instances(self, **params):
        found = [
            {"InstanceId": i, "ImageId": self.images[i], "State": {"Name": "running"}} for i in params["InstanceIds"]
        ]
        return {"Reservations": [{"Instances": found}]}


class GateElb(Recorder):
    def __init__(self, states):
        super().__init__()
        self.states = states

    def describe_target_groups(self, **params):
        return {"TargetGroups": [{"TargetGroupName": n, "TargetGroupArn": f"arn:tg/{n}"} for n in params["Names"]]}

    def describe_target_health(self, **params):
        return {
            "TargetHealthDescriptions": [
                {"Target": {"Id": i}, "TargetHealth": {"State": s, "Reason": r}} for i, (s, r) in self.states.items()
            ]
        }


def gate_backend(images, states):
    b = backend(autoscaling=GateAsg(), ec2=GateEc2(images), elbv2=GateElb(states))
    b.expected["green"] = "ami-new"
    return b


def test_gate_passes_with_case_insensitive_health_and_ignores_stale_targets():
    # i-9 is a terminated instance moto still lists as healthy: it does not count, only InService instances do.
    states = {"i-1": ("HEALTHY", None), "i-2": ("healthy", None), "i-9": ("healthy", None)}
    result = gate_backend({"i-1": "ami-new", "i-2": "ami-new"}, states).check_health("green")
    assert result.ok, result.detail
    assert result.detail == "web-prod-green: 2/2 instances InService; 2/2 targets healthy in web-prod-green"


def test_gate_fails_on_unhealthy_target_and_wrong_image():
    states = {"i-1": ("unused", "Target.InvalidState"), "i-2": ("healthy", None)}
    result = gate_backend({"i-1": "ami-new", "i-2": "ami-old"}, states).check_health("green")
    assert not result.ok and not result.fatal
    assert "1/2 targets healthy" in result.detail
    assert "not healthy: i-1 unused (Target.InvalidState)" in result.detail
    assert "not on ami-new: i-2 runs ami-old" in result.detail


def test_gate_fails_when_an_instance_is_not_registered():
    result = gate_backend({"i-1": "ami-new", "i-2": "ami-new"}, {"i-1": ("healthy", None)}).check_health("green")
    assert not result.ok and "i-2 not registered" in result.detail


# -- options ---------------------------------------------------------------------------------------------------------
def test_names_default_from_app_and_env_and_can_be_overridden():
    b = AwsBackend(
        {n: Recorder() for n in ("ec2", "autoscaling", "elbv2", "ssm")},
        "web",
        "prod",
        listener_arn="arn:l",
        asg_names={"green": "web-green-v2"},
    )
    assert b.asg_names == {"blue": "web-prod-blue", "green": "web-green-v2"}
    assert b.tg_names == b.lt_names == {"blue": "web-prod-blue", "green": "web-prod-green"}
    assert b.lock_name == "/immutable-infra/locks/web/prod"


# -- SSM lock --------------------------------------------------------------------------------------------------------
class FakeSsm:
    """Parameter Store semantics that matter for the lock: versions, ParameterAlreadyExists, history."""

    def __init__(self):
        self.history = {}  # name -> list of values (version = index + 1)
        self.deleted = []
        self.before_overwrite = None  # hook to let a rival write first

    def put_parameter(self, Name, Value, Type, Overwrite=False, Description=None):  # noqa: N803 (boto3 names)
        if Name in self.history and not Overwrite:
            raise client_error("ParameterAlreadyExists", "The parameter already exists.")
        if Overwrite and self.before_overwrite:
            hook, self.before_overwrite = self.before_overwrite, None
            hook()
        self.history.setdefault(Name, []).append(Value)
        return {"Version": len(self.history[Name])}

    def get_parameter(self, Name):  # noqa: N803
        if Name not in self.history:
            raise client_error("ParameterNotFound")
        return {"Parameter": {"Value": self.history[Name][-1], "Version": len(self.history[Name])}}

    def get_parameter_history(self, Name):  # noqa: N803
        return {"Parameters": [{"Version": n + 1, "Value": v} for n, v in enumerate(self.history[Name])]}

    def delete_parameter(self, Name):  # noqa: N803
        if Name not in self.history:
            raise client_error("ParameterNotFound")
        del self.history[Name]
        self.deleted.append(Name)


NAME = "/immutable-infra/locks/web/prod"


def lock(ssm, owner="me", now=1000.0):
    return SsmLock(ssm, NAME, "web/prod", owner, ttl=600, now=lambda: now)


def test_lock_is_exclusive_and_names_owner_and_expiry():
    ssm = FakeSsm()
    first = lock(ssm, "ci@a (pid 1)")
    first.acquire()
    value = json.loads(ssm.history[NAME][-1])
    assert value["owner"] == "ci@a (pid 1)" and value["expires_epoch"] == 1600.0
    with pytest.raises(LockedError) as err:
        lock(ssm, "ci@b").acquire()
    assert str(err.value).startswith(
        "locked: deploy of web/prod in progress by ci@a (pid 1) since 1970-01-01T00:16:40Z"
    )
    assert "expires at 1970-01-01T00:26:40Z" in str(err.value) and f"aws ssm delete-parameter --name {NAME}" in str(
        err.value
    )
    first.release()
    assert NAME not in ssm.history


def test_expired_lock_is_taken_over():
    ssm = FakeSsm()
    lock(ssm, "dead run", now=0).acquire()
    late = lock(ssm, "next run", now=601)
    late.acquire()
    assert late.held and late.took_over["owner"] == "dead run"
    assert json.loads(ssm.history[NAME][-1])["owner"] == "next run"


def test_take_over_race_has_one_winner_and_the_loser_restores_its_value():
    ssm = FakeSsm()
    lock(ssm, "dead run", now=0).acquire()
    winner = lock(ssm, "winner", now=700)
    loser = lock(ssm, "loser", now=700)
    # The winner writes between the loser's read of the expired lock and the loser's own overwrite.
    ssm.before_overwrite = lambda: ssm.put_parameter(Name=NAME, Value=winner._value(), Type="String", Overwrite=True)
    with pytest.raises(LockedError, match="in progress by winner"):
        loser.acquire()
    assert not loser.held
    assert json.loads(ssm.history[NAME][-1])["token"] == winner.token  # winner's value put back
    loser.release()
    assert NAME in ssm.history  # the loser never deletes the winner's lock


def test_release_leaves_a_lock_taken_over_by_another_run():
    ssm = FakeSsm()
    slow = lock(ssm, "slow run", now=0)
    slow.acquire()
    lock(ssm, "next run", now=601).acquire()
    slow.release()
    assert json.loads(ssm.history[NAME][-1])["owner"] == "next run"


def test_lock_written_by_hand_without_expiry_is_respected():
    ssm = FakeSsm()
    ssm.put_parameter(Name=NAME, Value="held by ops", Type="String")
    with pytest.raises(LockedError, match="by an unknown owner since an unknown time"):
        lock(ssm).acquire()
