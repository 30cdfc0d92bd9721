"""The promotion playbooks with promotion_backend=aws against a real moto_server on 127.0.0.1:5061 (started here).

One moto holds everything: three registered AMIs, one ALB with a listener per environment (dev :80, staging :81,
prod :82) forwarding to the blue target group, two target groups / launch templates / ASGs per environment (both
empty at first), and the SSM ledger. What moto cannot prove (real health checks, draining, timing, instances that
actually boot the AMI) is listed in docs/bg_swap.md; here "runs AMI X" means moto's DescribeInstances says ImageId X.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest
from conftest import REPO_ROOT
from conftest import run_playbook
from moto_fixtures import FAKE_ACCESS_KEY_ID
from moto_fixtures import FAKE_ENV
from moto_fixtures import FAKE_KEYS
from moto_fixtures import start_moto
from moto_fixtures import stop_moto

MOTO_PORT = 5061
REGION = "us-east-1"
CHAIN = ["dev", "staging", "prod"]
PORTS = {"dev": 80, "staging": 81, "prod": 82}
PLAYBOOKS = REPO_ROOT / "playbooks"
CREDENTIALS = dict(FAKE_ENV)
AWS_SECRET = "promotion-aws-secret-9f3d1c"

pytestmark = [pytest.mark.moto]


@pytest.fixture(scope="module")
def moto():
    try:
        process, endpoint = start_moto(MOTO_PORT, env={"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})
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
    return [
        ec2.register_image(
            Name=f"promo-aws-ami-{index}",
            RootDeviceName="/dev/sda1",
            BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}],
            Architecture="x86_64",
            VirtualizationType="hvm",
        )["ImageId"]
        for index in range(3)
    ]


def show(res: subprocess.CompletedProcess) -> str:
    return res.stdout[-6000:] + res.stderr[-3000:]


class AwsChain:
    """dev/staging/prod of one app on moto, its inventory, artifact records and SSM ledger."""

    def __init__(self, endpoint: str, unique: str, amis: list, root: Path):
        self.endpoint = endpoint
        self.app = f"pa{unique}"
        self.amis = amis
        self.root = root
        self.ec2 = client(endpoint, "ec2")
        self.elb = client(endpoint, "elbv2")
        self.asg = client(endpoint, "autoscaling")
        self.ssm = client(endpoint, "ssm")
        self.prefix = f"/promotion-aws-test/{unique}"
        self.ids = [{REGION: ami} for ami in amis]
        self.elsewhere = {"eu-west-1": "ami-0123456789abcdef0"}  # a record without an AMI for us-east-1
        self._build()
        self._inventory()

    def name(self, env: str, colour: str) -> str:
        return f"{self.app}-{env}-{colour}"

    def _build(self):
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"][
                "SubnetId"
            ]
            for n, az in ((1, "a"), (2, "b"))
        ]
        self.lb_name = self.app
        lb = self.elb.create_load_balancer(Name=self.lb_name, Subnets=subnets, Scheme="internal", Type="application")[
            "LoadBalancers"
        ][0]["LoadBalancerArn"]
        self.tg, self.listener = {}, {}
        for env in CHAIN:
            for colour in ("blue", "green"):
                name = self.name(env, colour)
                self.tg[self.name(env, colour)] = self.elb.create_target_group(
                    Name=name, Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance", HealthCheckPath="/healthz"
                )["TargetGroups"][0]["TargetGroupArn"]
                self.ec2.create_launch_template(
                    LaunchTemplateName=name, LaunchTemplateData={"ImageId": self.amis[0], "InstanceType": "t3.micro"}
                )
                self.asg.create_auto_scaling_group(
                    AutoScalingGroupName=name,
                    LaunchTemplate={"LaunchTemplateName": name, "Version": "1"},
                    MinSize=0,
                    MaxSize=4,
                    DesiredCapacity=0,
                    VPCZoneIdentifier=",".join(subnets),
                    TargetGroupARNs=[self.tg[name]],
                )
            self.listener[env] = self.elb.create_listener(
                LoadBalancerArn=lb,
                Protocol="HTTP",
                Port=PORTS[env],
                DefaultActions=[{"Type": "forward", "TargetGroupArn": self.tg[self.name(env, "blue")]}],
            )["Listeners"][0]["ListenerArn"]

    def _inventory(self):
        records = self.root / "artifacts" / self.app / "records"
        records.mkdir(parents=True)
        for index, artifact_id in enumerate([*self.ids, self.elsewhere]):
            fingerprint = f"sha256:{index:064x}"
            record = {"schema": 1, "name": self.app, "kind": "ami", "id": artifact_id, "fingerprint": fingerprint}
            (records / f"{index:02d}.json").write_text(json.dumps(record))
        (self.root / "artifacts" / self.app / "latest.json").write_text((records / "00.json").read_text())
        self.inventory = self.root / "inventory"
        group_vars = self.inventory / "group_vars" / "all"
        group_vars.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "inventories" / "local" / "hosts.yml", self.inventory / "hosts.yml")
        gate = {"health_checks_required": 2, "health_interval": 0.2, "health_timeout": 20, "verify_timeout": 2}
        settings = {
            "promotion_chain": CHAIN,
            "promotion_app": self.app,
            "promotion_backend": "aws",
            "promotion_artifacts_dir": str(self.root / "artifacts"),
            "promotion_ledger": {
                "backend": "ssm",
                "prefix": self.prefix,
                "region": REGION,
                "endpoint_url": self.endpoint,
            },
            # the AWS connection reaches bg_swap (through the promotion step's aws option) and drift_info (through
            # verify.yml's module_defaults) only from here: without it they would call the real AWS endpoints, which
            # this machine cannot reach. The secret key (moto takes any) must never be shown.
            "promotion_aws": {
                "region": REGION,
                "endpoint_url": self.endpoint,
                "access_key": FAKE_ACCESS_KEY_ID,
                "secret_key": AWS_SECRET,
            },
            "promotion_environments": {
                "dev": dict(gate, listener_arn=self.listener["dev"]),
                "staging": dict(gate, load_balancer_name=self.lb_name, listener_port=PORTS["staging"]),
                "prod": dict(gate, listener_arn=self.listener["prod"], region=REGION, desired_capacity=2),
            },
        }
        (group_vars / "promotion.yml").write_text(json.dumps(settings, indent=1))

    def run(self, playbook: str, **extra) -> subprocess.CompletedProcess:
        return run_playbook(PLAYBOOKS / playbook, extra, "-i", str(self.inventory), env=CREDENTIALS)

    # -- the truth, read back from moto ----------------------------------------------------------------------------
    def weights(self, env: str) -> dict:
        action = self.elb.describe_listeners(ListenerArns=[self.listener[env]])["Listeners"][0]["DefaultActions"][0]
        colour = {self.tg[self.name(env, c)]: c for c in ("blue", "green")}
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
        if groups:
            return {colour[g["TargetGroupArn"]]: g.get("Weight", 1) for g in groups if g.get("Weight", 1)}
        return {colour[action["TargetGroupArn"]]: 1}

    def live_colour(self, env: str) -> str:
        weights = self.weights(env)
        assert len(weights) == 1, weights  # all traffic on one colour
        return next(iter(weights))

    def group(self, env: str, colour: str) -> dict:
        name = self.name(env, colour)
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0]

    def images(self, env: str, colour: str) -> list:
        ids = [i["InstanceId"] for i in self.group(env, colour)["Instances"] if i["LifecycleState"] == "InService"]
        if not ids:
            return []
        res = self.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        return sorted(i["ImageId"] for r in res for i in r["Instances"])

    def serving(self, env: str) -> list:
        """The AMIs of the InService instances behind the colour the listener forwards to."""
        return self.images(env, self.live_colour(env))

    def entry(self, env: str) -> dict | None:
        try:
            value = self.ssm.get_parameter(Name=f"{self.prefix}/{self.app}/{env}")["Parameter"]["Value"]
        except self.ssm.exceptions.ParameterNotFound:
            return None
        return json.loads(value)


@pytest.fixture
def chain(moto, unique, amis, tmp_path):
    return AwsChain(moto, unique, amis, tmp_path)


def test_ami_deploy_promote_gate_force_rollback_and_drift(chain):
    ami_a, ami_b, ami_c = chain.amis
    id_a, id_b = chain.ids[0], chain.ids[1]

    # deploy (the newest record, latest.json = AMI A) -> staging -> prod
    res = chain.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    assert "colour: green (switched)" in res.stdout, show(res)
    assert AWS_SECRET not in res.stdout + res.stderr
    res = chain.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    res = chain.run("promote.yml", **{"from": "staging", "to": "prod"})
    assert res.returncode == 0, show(res)
    for env in CHAIN:
        assert chain.live_colour(env) == "green"
        assert chain.entry(env)["live"] == id_a, env
    assert chain.serving("dev") == [ami_a] and chain.serving("staging") == [ami_a]
    assert chain.serving("prod") == [ami_a, ami_a]  # prod's desired_capacity from the inventory
    lt_version = chain.group("prod", "green")["LaunchTemplate"]["Version"]
    assert lt_version.isdigit(), lt_version  # pinned to a numbered version, never $Latest

    # a new AMI in dev; skipping staging is refused and prod does not move
    res = chain.run("deploy.yml", env="dev", artifact=json.dumps(id_b))
    assert res.returncode == 0, show(res)
    assert chain.live_colour("dev") == "blue" and chain.serving("dev") == [ami_b]
    res = chain.run("promote.yml", **{"from": "dev", "to": "prod"})
    assert res.returncode != 0 and "skips the chain" in res.stdout, show(res)
    assert chain.live_colour("prod") == "green" and chain.group("prod", "blue")["DesiredCapacity"] == 0
    assert chain.entry("prod")["live"] == id_a

    # forced, with the reason recorded
    res = chain.run("promote.yml", **{"from": "dev", "to": "prod", "force": True, "reason": "hotfix CHG-7"})
    assert res.returncode == 0, show(res)
    assert "FORCED" in res.stdout, show(res)
    assert chain.live_colour("prod") == "blue" and chain.serving("prod") == [ami_b, ami_b]
    prod = chain.entry("prod")
    assert prod["live"] == id_b and prod["history"][-1]["forced"] is True
    assert prod["history"][-1]["reason"] == "hotfix CHG-7"

    # rollback prod: the listener goes back to green, which still runs AMI A (instant, no new version)
    res = chain.run("rollback.yml", env="prod", reason="5xx after B")
    assert res.returncode == 0, show(res)
    assert "instant switch back to the kept colour" in res.stdout, show(res)
    assert chain.live_colour("prod") == "green" and chain.serving("prod") == [ami_a, ami_a]
    assert chain.group("prod", "green")["LaunchTemplate"]["Version"] == lt_version
    prod = chain.entry("prod")
    assert (prod["live"], prod["previous"]) == (id_a, id_b)
    assert prod["history"][-1]["action"] == "rollback" and prod["history"][-1]["reason"] == "5xx after B"

    # no drift: the old colours still run their old AMIs, but only the listener's colour is compared
    res = chain.run("verify.yml")
    assert res.returncode == 0, show(res)
    assert "no drift" in res.stdout, show(res)

    # out of band: prod's live ASG is moved to a hand-made launch template version with AMI C and scaled up by one;
    # moto launches the new instance from it (the old ones keep AMI A), and verify must see it
    name = chain.name("prod", "green")
    version = chain.ec2.create_launch_template_version(
        LaunchTemplateName=name, SourceVersion=lt_version, LaunchTemplateData={"ImageId": ami_c}
    )["LaunchTemplateVersion"]["VersionNumber"]
    chain.asg.update_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": str(version)},
        DesiredCapacity=3,
    )
    assert chain.serving("prod") == sorted([ami_a, ami_a, ami_c])  # what moto really shows
    res = chain.run("verify.yml")
    assert res.returncode != 0, show(res)
    assert f"runs {ami_c}, the ledger says {ami_a}" in res.stdout, show(res)
    assert "prod: " in res.stdout and "DRIFT" in res.stdout
    res = chain.run("verify.yml", env="staging")  # other environments are still clean
    assert res.returncode == 0 and "no drift" in res.stdout, show(res)


def test_bad_input_is_refused_and_nothing_moves(chain):
    res = chain.run("deploy.yml", env="qa")
    assert res.returncode != 0 and 'unknown environment "qa"' in res.stdout, show(res)

    res = chain.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode != 0, show(res)
    assert f"from_env 'dev' has no live artifact for app '{chain.app}'" in res.stdout, show(res)

    res = chain.run("deploy.yml", env="dev", artifact=json.dumps(chain.elsewhere))
    assert res.returncode != 0, show(res)
    assert "has no AMI for region us-east-1 of environment dev" in res.stdout, show(res)
    assert "never rebakes or copies" in res.stdout, show(res)

    for env in CHAIN:
        assert chain.weights(env) == {"blue": 1}
        assert chain.group(env, "green")["DesiredCapacity"] == 0 and chain.entry(env) is None
