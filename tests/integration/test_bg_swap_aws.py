"""bg_swap aws backend through ansible-playbook against a real moto_server on 127.0.0.1:5060 (started here).

Each test builds its own app/env with boto3: a VPC with two subnets, an ALB, a listener forwarding to the blue target
group, two target groups, two launch templates and two ASGs (blue live with AMI 1 x2, green empty).
What moto cannot prove (real health checks, draining, timing) is listed in docs/bg_swap.md.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook
from moto_fixtures import FAKE_ENV
from moto_fixtures import FAKE_KEYS
from moto_fixtures import start_moto
from moto_fixtures import stop_moto

PLAYBOOK = Path(__file__).parent / "playbooks" / "bg_aws_swap.yml"
BAD_PLAYBOOK = Path(__file__).parent / "playbooks" / "bg_aws_bad_inputs.yml"
MOTO_PORT = 5060
REGION = "eu-west-1"
CREDENTIALS = {
    **FAKE_ENV,
    "AWS_DEFAULT_REGION": REGION,
}

pytestmark = [pytest.mark.moto]


@pytest.fixture(scope="module")
def moto():
    try:
        process, endpoint = start_moto(MOTO_PORT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield endpoint
    finally:
        stop_moto(process)


def client(endpoint, service):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        **FAKE_KEYS,
    )


@pytest.fixture(scope="module")
def amis(moto):
    ec2 = client(moto, "ec2")
    ids = []
    for index in range(3):
        ids.append(
            ec2.register_image(
                Name=f"bgtest-ami-{index}",
                RootDeviceName="/dev/sda1",
                BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}],
                Architecture="x86_64",
                VirtualizationType="hvm",
            )["ImageId"]
        )
    return ids


class AwsEnv:
    """One app/env on moto: listener -> blue (AMI 1, 2 instances), green empty."""

    def __init__(self, endpoint, unique, amis, tmp: Path):
        self.endpoint = endpoint
        self.app = f"bg{unique}"
        self.env = "test"
        self.amis = amis
        self.ec2 = client(endpoint, "ec2")
        self.elb = client(endpoint, "elbv2")
        self.asg = client(endpoint, "autoscaling")
        self.ssm = client(endpoint, "ssm")
        self.results = tmp
        self.runs = 0
        self.names = {c: f"{self.app}-{self.env}-{c}" for c in ("blue", "green")}
        self._build()

    def _build(self):
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
                "SubnetId"
            ]
            for n, az in ((1, "a"), (2, "b"))
        ]
        lb = self.elb.create_load_balancer(
            Name=f"{self.app}-{self.env}", Subnets=subnets, Scheme="internal", Type="application"
        )["LoadBalancers"][0]["LoadBalancerArn"]
        self.tg = {}
        for colour, name in self.names.items():
            self.tg[colour] = self.elb.create_target_group(
                Name=name,
                Protocol="HTTP",
                Port=80,
                VpcId=vpc,
                TargetType="instance",
                HealthCheckPath="/healthz",
            )["TargetGroups"][0]["TargetGroupArn"]
            self.ec2.create_launch_template(
                LaunchTemplateName=name,
                LaunchTemplateData={
                    "ImageId": self.amis[0],
                    "InstanceType": "t3.micro",
                    "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "app", "Value": self.app}]}],
                },
            )
            self.asg.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateName": name, "Version": "1"},
                MinSize=0,
                MaxSize=4,
                DesiredCapacity=2 if colour == "blue" else 0,
                VPCZoneIdentifier=",".join(subnets),
                TargetGroupARNs=[self.tg[colour]],
            )
        self.listener = self.elb.create_listener(
            LoadBalancerArn=lb,
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.tg["blue"]}],
        )["Listeners"][0]["ListenerArn"]

    def args(self, **extra):
        args = {
            "app": self.app,
            "env": self.env,
            "listener_arn": self.listener,
            "endpoint_url": self.endpoint,
            "region": REGION,
            "health_checks_required": 2,
            "health_interval": 0.2,
            "health_timeout": 5,
            "verify_timeout": 2,
        }
        args.update(extra)
        return args

    def swap(self, *flags, **extra) -> dict:
        self.runs += 1
        out = self.results / f"r{self.runs}.json"
        res = run_playbook(
            PLAYBOOK, {"bg_args": self.args(**extra), "bg_result_file": str(out)}, *flags, env=CREDENTIALS
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(out.read_text())

    def swap_async(self, **extra) -> subprocess.Popen:
        self.runs += 1
        out = self.results / f"r{self.runs}.json"
        proc = subprocess.Popen(
            [
                "ansible-playbook",
                str(PLAYBOOK),
                "-e",
                json.dumps({"bg_args": self.args(**extra), "bg_result_file": str(out)}),
            ],
            cwd=REPO_ROOT,
            env=ansible_env(CREDENTIALS),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.result_file = out
        return proc

    # -- reading the truth back --------------------------------------------------------------------------------------
    def weights(self) -> dict:
        """Colour -> weight of the listener's forward action, as AWS returns it."""
        action = self.elb.describe_listeners(ListenerArns=[self.listener])["Listeners"][0]["DefaultActions"][0]
        colour = {arn: c for c, arn in self.tg.items()}
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
        if groups:
            return {colour[g["TargetGroupArn"]]: g.get("Weight", 1) for g in groups}
        return {colour[action["TargetGroupArn"]]: 1}

    def group(self, colour) -> dict:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.names[colour]])["AutoScalingGroups"][0]

    def images(self, colour) -> list:
        ids = [i["InstanceId"] for i in self.group(colour)["Instances"] if i["LifecycleState"] == "InService"]
        if not ids:
            return []
        res = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return sorted(i["ImageId"] for r in res for i in r["Instances"])

    def pinned(self, colour) -> tuple:
        """(version, ImageId, InstanceType) of the launch template version the ASG is pinned to."""
        version = self.group(colour)["LaunchTemplate"]["Version"]
        data = self.ec2.describe_launch_template_versions(LaunchTemplateName=self.names[colour], Versions=[version])[
            "LaunchTemplateVersions"
        ][0]["LaunchTemplateData"]
        return version, data["ImageId"], data.get("InstanceType")

    def lt_versions(self, colour) -> int:
        return len(
            self.ec2.describe_launch_template_versions(LaunchTemplateName=self.names[colour])["LaunchTemplateVersions"]
        )


@pytest.fixture
def aws(moto, unique, amis, tmp_path):
    return AwsEnv(moto, unique, amis, tmp_path)


def failed(result: dict) -> bool:
    return bool(result.get("failed"))


def test_first_deploy_noop_and_explicit_rollback(aws):
    ami1, ami2, _unused = aws.amis
    assert aws.weights() == {"blue": 1} and aws.images("blue") == [ami1, ami1]

    first = aws.swap(artifact=ami2)
    assert not failed(first), first
    assert (first["live_colour"], first["previous_colour"]) == ("green", "blue")
    assert (first["artifact"], first["previous_artifact"]) == (ami2, ami1)
    assert aws.weights() == {"green": 100}
    version, image, instance_type = aws.pinned("green")
    assert version.isdigit() and int(version) == first["launch_template_versions"]["green"] == 2
    assert (image, instance_type) == (ami2, "t3.micro")  # full data kept, only ImageId replaced
    assert aws.images("green") == [ami2, ami2]  # desired capacity taken from the live colour
    assert aws.images("blue") == [ami1, ami1]  # old colour kept for rollback
    assert set(first["timings"]) >= {"deploy", "gate", "switch", "verify"}
    assert isinstance(first["api_calls"], int) and first["api_calls"] > 0
    assert first["api_calls"] == sum(first["api_calls_by_operation"].values())
    assert first["api_calls_by_operation"]["elbv2.modify_listener"] == 1
    print(
        f"\nAPI calls, first swap (blue -> green, steps [100]): {first['api_calls']} {first['api_calls_by_operation']}"
    )

    noop = aws.swap(artifact=ami2)
    assert not failed(noop) and noop["changed"] is False, noop
    assert (noop["live_colour"], noop["previous_colour"], noop["previous_artifact"]) == ("green", "blue", ami1)
    assert aws.lt_versions("green") == 2  # no new version on a no-op
    print(f"API calls, no-op deploy: {noop['api_calls']}")

    back = aws.swap(state="rolled_back")
    assert not failed(back), back
    assert back["changed"] and (back["live_colour"], back["artifact"]) == ("blue", ami1)
    assert (back["previous_colour"], back["previous_artifact"]) == ("green", ami2)
    assert aws.weights() == {"blue": 100}
    print(f"API calls, explicit rollback (old colour running): {back['api_calls']}")
    again = aws.swap(state="rolled_back")
    assert not failed(again) and again["changed"] is False, again
    assert aws.weights() == {"blue": 100}


def test_weighted_steps_stop_old_then_rollback_scales_it_up(aws):
    ami1, ami2, ami3 = aws.amis
    first = aws.swap(artifact=ami2, traffic_steps=[10, 50, 100], step_pause=0.5, old_colour_action="stop")
    assert not failed(first), first
    assert first["traffic_steps"] == [10, 50, 100] and first["live_colour"] == "green"
    assert first["api_calls_by_operation"]["elbv2.modify_listener"] == 3
    assert aws.weights() == {"green": 100}
    assert aws.group("blue")["DesiredCapacity"] == 0  # old colour scaled to 0 after success
    assert aws.pinned("blue")[1] == ami1  # ... but still pinned to its version for a rollback
    print(f"\nAPI calls, weighted swap [10, 50, 100] + stop old: {first['api_calls']}")

    # Rolling back to the colour scaled to 0 scales it up (to the live colour's capacity) and gates it first.
    back = aws.swap(state="rolled_back")
    assert not failed(back), back
    assert (back["live_colour"], back["artifact"], back["previous_artifact"]) == ("blue", ami1, ami2)
    assert aws.weights() == {"blue": 100} and aws.images("blue") == [ami1, ami1]
    assert back["api_calls_by_operation"]["autoscaling.update_auto_scaling_group"] == 1
    print(f"API calls, rollback to a colour scaled to 0: {back['api_calls']}")

    # The next deploy goes to green, which still runs AMI 2: its instances are replaced, never reused.
    before = {i["InstanceId"] for i in aws.group("green")["Instances"]}
    third = aws.swap(artifact=ami3, traffic_steps=[50, 100], step_pause=0.2)
    assert not failed(third), third
    assert (third["live_colour"], third["previous_colour"], third["previous_artifact"]) == ("green", "blue", ami1)
    assert aws.pinned("green")[1] == ami3 and aws.images("green") == [ami3, ami3]
    assert not before & {i["InstanceId"] for i in aws.group("green")["Instances"]}
    assert third["launch_template_versions"] == {"green": 3}


def test_weights_are_on_the_listener_during_the_steps(aws):
    ami2 = aws.amis[1]
    proc = aws.swap_async(artifact=ami2, traffic_steps=[10, 50, 100], step_pause=2)
    seen = []
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        weights = aws.weights()
        if not seen or seen[-1] != weights:
            seen.append(weights)
        time.sleep(0.1)
    proc.wait(timeout=60)
    result = json.loads(proc.result_file.read_text())
    assert not failed(result), result
    assert {"green": 10, "blue": 90} in seen and {"green": 50, "blue": 50} in seen
    assert seen[-1] == {"green": 100}


def test_gate_failure_by_a_stopped_instance_keeps_blue(aws):
    ami1, ami2, _unused = aws.amis
    proc = aws.swap_async(artifact=ami2, health_checks_required=200, health_interval=0.2, health_timeout=12)
    stopped = None
    deadline = time.monotonic() + 40
    while stopped is None and time.monotonic() < deadline and proc.poll() is None:
        green = [i["InstanceId"] for i in aws.group("green")["Instances"]]
        if len(green) == 2 and aws.images("green") == [ami2, ami2]:
            aws.ec2.stop_instances(InstanceIds=[green[0]])
            stopped = green[0]
        time.sleep(0.1)
    proc.wait(timeout=60)
    if stopped is None:
        pytest.fail("the deploy never scaled green up to 2 instances of AMI 2")
    result = json.loads(proc.result_file.read_text())
    assert failed(result), result
    assert "health gate failed for green" in result["msg"] and "traffic stays on blue" in result["msg"]
    assert f"{stopped} unused" in result["msg"]  # moto reports a stopped target 'unused' (Target.InvalidState)
    assert result["failed_check"] == "health_gate" and result["live_colour"] == "blue"
    assert result["api_calls"] > 0
    assert aws.weights() == {"blue": 1}  # the listener never moved
    assert aws.images("blue") == [ami1, ami1]


def test_post_switch_failure_rolls_back_automatically(aws):
    ami2 = aws.amis[1]
    proc = aws.swap_async(artifact=ami2, traffic_steps=[10, 100], step_pause=3, verify_timeout=1)
    stopped = None
    deadline = time.monotonic() + 40
    while stopped is None and time.monotonic() < deadline and proc.poll() is None:
        if aws.weights() == {"green": 10, "blue": 90}:
            victim = aws.group("green")["Instances"][0]["InstanceId"]
            aws.ec2.stop_instances(InstanceIds=[victim])
            stopped = victim
        time.sleep(0.05)
    proc.wait(timeout=60)
    if stopped is None:
        pytest.fail("never saw the listener at green 10 / blue 90")
    result = json.loads(proc.result_file.read_text())
    assert failed(result), result
    assert "post-switch verification failed for green" in result["msg"] and "rolled back" in result["msg"]
    assert result["rolled_back"] is True and result["live_colour"] == "blue" and result["failed_check"] == "verify"
    assert aws.weights() == {"blue": 100}


def test_check_mode_changes_nothing(aws):
    ami2 = aws.amis[1]
    plan = aws.swap("--check", artifact=ami2, traffic_steps=[10, 100])
    assert not failed(plan) and plan["changed"], plan
    assert plan["plan"]["deploy_to"] == "green" and plan["plan"]["traffic_steps"] == [10, 100]
    assert plan["plan"]["desired_capacity"] == 2 and plan["plan"]["asg"] == aws.names["green"]
    assert aws.weights() == {"blue": 1}
    assert aws.group("green")["DesiredCapacity"] == 0 and aws.lt_versions("green") == 1
    with pytest.raises(aws.ssm.exceptions.ParameterNotFound):
        aws.ssm.get_parameter(Name=f"/immutable-infra/locks/{aws.app}/{aws.env}")


def test_concurrent_run_is_locked_and_an_expired_lock_is_taken_over(aws):
    name = f"/immutable-infra/locks/{aws.app}/{aws.env}"
    now = time.time()
    held = {"owner": "ci@runner-7 (pid 4242)", "since": "2030-01-01T00:00:00Z", "expires": "2030-01-01T00:30:00Z"}
    aws.ssm.put_parameter(Name=name, Type="String", Value=json.dumps(dict(held, expires_epoch=now + 600)))
    result = aws.swap(artifact=aws.amis[1])
    assert failed(result) and result["failed_check"] == "lock", result
    assert result["msg"].startswith(
        f"locked: deploy of {aws.app}/{aws.env} in progress by ci@runner-7 (pid 4242) since 2030-01-01T00:00:00Z"
    )
    assert name in result["msg"]
    assert aws.weights() == {"blue": 1} and aws.group("green")["DesiredCapacity"] == 0

    aws.ssm.put_parameter(Name=name, Type="String", Overwrite=True, Value=json.dumps(dict(held, expires_epoch=now - 1)))
    taken = aws.swap(artifact=aws.amis[1])
    assert not failed(taken) and taken["live_colour"] == "green", taken
    with pytest.raises(aws.ssm.exceptions.ParameterNotFound):
        aws.ssm.get_parameter(Name=name)  # released at the end


BAD_INPUTS = [
    ({"artifact": "ami-0123456789abcdef0"}, "AMI ami-0123456789abcdef0 does not exist in region eu-west-1"),
    ({"artifact": "web:1.0"}, "is not an AMI ID"),
    ({"traffic_steps": [50, 10, 100]}, "strictly increasing"),
    ({"traffic_steps": [10, 50]}, "must end at 100"),
    ({"traffic_steps": [0, 100]}, "outside 1..100"),
    ({"target_groups": {"blue": "nope-blue", "green": "nope-green"}}, "target groups ['nope-blue', 'nope-green']"),
    ({"app": "unknownapp"}, "unknown app/env unknownapp/test"),
    ({"asg_names": {"green": "no-such-asg"}}, "auto scaling group 'no-such-asg' of green not found"),
    ({"launch_templates": {"green": "no-such-lt"}}, "launch template 'no-such-lt' of green"),
    ({"listener_arn": None, "load_balancer_name": "no-such-lb", "listener_port": 80}, "load balancer 'no-such-lb'"),
    ({"listener_arn": None, "load_balancer_name": "LB", "listener_port": 8080}, "no listener on port 8080"),
    ({"listener_arn": "LISTENER/0123456789abcdef"}, "not found"),
    ({"listener_arn": None}, "needs the listener that switches traffic"),
    ({"desired_capacity": 0}, "desired_capacity must be at least 1"),
]


def test_bad_input_is_refused_and_nothing_moves(aws):
    cases = []
    for extra, _message in BAD_INPUTS:
        case = dict(extra)
        if case.get("load_balancer_name") == "LB":
            case["load_balancer_name"] = f"{aws.app}-{aws.env}"
        if str(case.get("listener_arn", "")).startswith("LISTENER/"):
            case["listener_arn"] = aws.listener.rsplit("/", 1)[0] + "/0123456789abcdef"
        cases.append(case)
    out = aws.results / "bad.json"
    res = run_playbook(
        BAD_PLAYBOOK,
        {"bg_args": aws.args(artifact=aws.amis[1]), "bg_cases": cases, "bg_result_file": str(out)},
        env=CREDENTIALS,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(out.read_text())
    assert len(results) == len(BAD_INPUTS)
    for (extra, message), result in zip(BAD_INPUTS, results, strict=True):
        assert result.get("failed") and message in result["msg"], (extra, result.get("msg"))
    assert aws.weights() == {"blue": 1}
    assert aws.group("green")["DesiredCapacity"] == 0 and aws.lt_versions("green") == 1
