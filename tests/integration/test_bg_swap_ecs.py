"""bg_swap backend=ecs against a real moto_server on 127.0.0.1:5081 (started here, one per module).

Each test builds its own app/env with boto3: a VPC, an ALB with a listener forwarding to the blue target group, two
target groups (type ip), an ECS cluster, a task definition family and a service with the EXTERNAL deployment
controller (no task set yet). moto runs no task and registers no target: what that leaves unproven is in docs/ecs.md.
The artifacts are digest references; ECS on moto never pulls them.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import boto3
import pytest
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry
from ansible_collections.amazon.aws.plugins.module_utils.retries import RetryingBotoClientWrapper
from conftest import REPO_ROOT
from conftest import run_playbook
from moto_fixtures import FAKE_ENV
from moto_fixtures import FAKE_KEYS
from moto_fixtures import register_base_ami
from moto_fixtures import start_moto
from moto_fixtures import stop_moto

from ansible_collections.immutable.infra.plugins.module_utils.aws._ssm_lock import SsmLock
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate as validate_analysis
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreen
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Options
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._backend import EcsBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._drift import EcsInspector
from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._drift import ecs_findings

MOTO_PORT = 5081
REGION = "eu-west-1"
OTHER_REGION = "eu-central-1"
REPO = "127.0.0.1:5000/ecsweb"
DIGESTS = [f"{REPO}@sha256:{str(n) * 64}" for n in range(1, 4)]

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


def client(endpoint, service, region=REGION):
    return boto3.client(service, endpoint_url=endpoint, region_name=region, **FAKE_KEYS)


class EcsEnv:
    """One app/env on moto: listener -> blue target group, a cluster, a task definition family, an EXTERNAL service."""

    def __init__(self, endpoint: str, unique: str, target_type: str = "ip", env: str = "test", region: str = REGION):
        self.endpoint = endpoint
        self.region = region
        self.app = f"ecs{unique}"
        self.env = env
        self.cluster = f"{self.app}-{env}-cluster"
        self.service = f"{self.app}-{self.env}"
        self.clients = {name: client(endpoint, name, region) for name in ("ecs", "elbv2", "ssm", "ec2")}
        ec2, elb, ecs = self.clients["ec2"], self.clients["elbv2"], self.clients["ecs"]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [
            ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"{region}{az}")["Subnet"][
                "SubnetId"
            ]
            for n, az in ((1, "a"), (2, "b"))
        ]
        lb = elb.create_load_balancer(Name=self.service, Subnets=self.subnets, Type="application")["LoadBalancers"][0]
        self.tg = {
            colour: elb.create_target_group(
                Name=f"{self.service}-{colour}", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType=target_type
            )["TargetGroups"][0]["TargetGroupArn"]
            for colour in ("blue", "green")
        }
        self.listener = elb.create_listener(
            LoadBalancerArn=lb["LoadBalancerArn"],
            Protocol="HTTP",
            Port=80,
            DefaultActions=[{"Type": "forward", "TargetGroupArn": self.tg["blue"]}],
        )["Listeners"][0]["ListenerArn"]
        ecs.create_cluster(clusterName=self.cluster)
        ecs.register_task_definition(
            family=self.service,
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[
                {
                    "name": "web",
                    "image": f"{REPO}:bootstrap",
                    "essential": True,
                    "portMappings": [{"containerPort": 8080}],
                }
            ],
        )
        ecs.create_service(
            cluster=self.cluster,
            serviceName=self.service,
            desiredCount=2,
            launchType="FARGATE",
            deploymentController={"type": "EXTERNAL"},
            networkConfiguration={"awsvpcConfiguration": {"subnets": self.subnets, "securityGroups": []}},
        )

    def backend(self, **kwargs) -> EcsBackend:
        args = dict(cluster=self.cluster, listener_arn=self.listener, region=self.region, poll_interval=0.05)
        args.update(kwargs)
        # wrapped as AnsibleAWSModule.client(retry_decorator=...) does in bg_swap
        retry = AWSRetry.jittered_backoff(retries=3)
        clients = {name: RetryingBotoClientWrapper(c, retry) for name, c in self.clients.items()}
        return EcsBackend(clients, self.app, self.env, **args)

    def weights(self) -> dict:
        actions = self.clients["elbv2"].describe_listeners(ListenerArns=[self.listener])["Listeners"][0][
            "DefaultActions"
        ]
        colour_of = {arn: colour for colour, arn in self.tg.items()}
        for action in actions:
            groups = (action.get("ForwardConfig") or {}).get("TargetGroups")
            if groups:
                return {colour_of[g["TargetGroupArn"]]: g["Weight"] for g in groups if g.get("Weight")}
            if action.get("TargetGroupArn"):
                return {colour_of[action["TargetGroupArn"]]: 100}
        return {}

    def task_sets(self) -> dict:
        service = self.clients["ecs"].describe_services(cluster=self.cluster, services=[self.service])["services"][0]
        return {ts["externalId"]: ts for ts in service["taskSets"] if ts["status"] in ("PRIMARY", "ACTIVE")}

    def image(self, task_definition: str) -> str:
        found = self.clients["ecs"].describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
        return found["containerDefinitions"][0]["image"]


@pytest.fixture
def ecs_env(moto, unique):
    return EcsEnv(moto, unique)


def flow(backend, **options) -> BlueGreen:
    opts = Options(health_checks_required=2, health_interval=0.01, health_timeout=10, verify_timeout=5)
    for key, value in options.items():
        setattr(opts, key, value)
    return BlueGreen(backend, opts)


class ListenerWatch:
    """Reads the listener's weights from moto every few ms while a run goes on: the steps as moto holds them."""

    def __init__(self, env: EcsEnv):
        self.env = env
        self.seen = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            weights = self.env.weights()
            if not self.seen or self.seen[-1] != weights:
                self.seen.append(weights)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


SWAP_PLAYBOOK = """
- name: bg_swap backend=ecs on moto
  hosts: localhost
  gather_facts: false
  module_defaults:
    immutable.infra.bg_swap:
      backend: ecs
      app: "{{ app }}"
      env: test
      cluster: "{{ cluster }}"
      listener_arn: "{{ listener }}"
      region: eu-west-1
      endpoint_url: "{{ endpoint }}"
      health_checks_required: 2
      health_interval: 0.05
  tasks:
    - name: First deployment (listener on blue, which has no task set)
      immutable.infra.bg_swap:
        artifact: "{{ digests[0] }}"
      register: first
    - name: The same artifact again
      immutable.infra.bg_swap:
        artifact: "{{ digests[0] }}"
      register: again
    - name: The next artifact in weighted steps
      immutable.infra.bg_swap:
        artifact: "{{ digests[1] }}"
        traffic_steps: [25, 50, 100]
        step_pause: 1.0
      register: second
    - name: Roll back
      immutable.infra.bg_swap:
        state: rolled_back
      register: back
    - name: A mutable tag
      immutable.infra.bg_swap:
        artifact: 127.0.0.1:5000/ecsweb:1.0
      register: tag
      ignore_errors: true
    - name: No drift against the ledger's digest
      immutable.infra.drift_info:
        app: "{{ app }}"
        region: eu-west-1
        endpoint_url: "{{ endpoint }}"
        environments:
          - {name: test, backend: ecs, cluster: "{{ cluster }}", expected: "{{ digests[0] }}"}
      register: drift
    - name: Results
      ansible.builtin.copy:
        content: "{{ {'first': first, 'again': again, 'second': second, 'back': back, 'tag': tag, 'drift': drift}
          | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_deploy_steps_rollback_and_drift_through_the_module(ecs_env, tmp_path):
    """deploy -> no-op -> the next digest in weighted steps read back from the listener -> rollback -> drift_info."""
    playbook = tmp_path / "swap.yml"
    playbook.write_text(SWAP_PLAYBOOK)
    out = tmp_path / "out.json"
    extra = {
        "app": ecs_env.app,
        "cluster": ecs_env.cluster,
        "listener": ecs_env.listener,
        "endpoint": ecs_env.endpoint,
        "digests": DIGESTS,
        "out": str(out),
    }
    with ListenerWatch(ecs_env) as watch:
        res = run_playbook(playbook, extra, env=FAKE_ENV)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    results = json.loads(out.read_text())

    first, again, second, back = (results[k] for k in ("first", "again", "second", "back"))
    assert first["changed"] and first["live_colour"] == "green" and first["artifact"] == DIGESTS[0]
    assert ecs_env.image(first["task_definitions"]["green"]) == DIGESTS[0]
    assert not again["changed"] and again["live_colour"] == "green"
    assert second["changed"] and second["live_colour"] == "blue" and second["previous_artifact"] == DIGESTS[0]
    # the weighted steps as the listener held them (read from moto while the run went on)
    # blue (no task set) -> green (first) -> 25/50/100 % to blue (second) -> green again (rollback)
    assert watch.seen == [
        {"blue": 100},
        {"green": 100},
        {"blue": 25, "green": 75},
        {"blue": 50, "green": 50},
        {"blue": 100},
        {"green": 100},
    ]
    assert back["changed"] and back["rollback_method"] == "switch_back"
    assert back["live_colour"] == "green" and back["artifact"] == DIGESTS[0]
    assert ecs_env.weights() == {"green": 100}
    task_sets = ecs_env.task_sets()
    assert task_sets["green"]["status"] == "PRIMARY"
    assert ecs_env.image(task_sets["green"]["taskDefinition"]) == DIGESTS[0]
    assert ecs_env.image(task_sets["blue"]["taskDefinition"]) == DIGESTS[1]  # kept for the next rollback
    assert "api_calls" in back and back["api_calls"] > 0

    tag = results["tag"]
    assert tag["failed"] and "not an immutable image reference" in tag["msg"] and "sha256" in tag["msg"]
    assert results["drift"]["drift"] is False, results["drift"]

    # by hand: the service moved to a task definition with another image -> drift names it
    ecs = ecs_env.clients["ecs"]
    other = ecs.register_task_definition(
        family=ecs_env.service,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": "web", "image": DIGESTS[2], "portMappings": [{"containerPort": 8080}]}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=ecs_env.cluster, service=ecs_env.service, taskDefinition=other)
    findings = ecs_findings(
        EcsInspector(ecs).read(ecs_env.cluster, ecs_env.service, "web"), ecs_env.cluster, ecs_env.service, DIGESTS[0]
    )
    assert any(DIGESTS[2] in item and "service" in item for item in findings["mismatches"]), findings


def test_gate_failure_keeps_traffic_and_lock_held_changes_nothing(moto, unique):
    # target groups of type instance (ECS on EC2, bridge networking): moto reports a stopped instance "unused"
    ecs_env = EcsEnv(moto, unique, target_type="instance")
    backend = ecs_env.backend()
    flow(backend).deploy(DIGESTS[0])
    assert ecs_env.weights() == {"green": 100}

    # a target of blue's target group that is not healthy: the gate fails, traffic stays on green
    ec2 = ecs_env.clients["ec2"]
    instance = ec2.run_instances(ImageId=register_base_ami(ec2), MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ecs_env.clients["elbv2"].register_targets(TargetGroupArn=ecs_env.tg["blue"], Targets=[{"Id": instance}])
    ec2.stop_instances(InstanceIds=[instance])
    with pytest.raises(BlueGreenError) as failed:
        flow(ecs_env.backend(), health_timeout=0.5).deploy(DIGESTS[1])
    health = ecs_env.clients["elbv2"].describe_target_health(TargetGroupArn=ecs_env.tg["blue"])
    state = health["TargetHealthDescriptions"][0]["TargetHealth"]["State"]
    assert state != "healthy"
    assert "not healthy: " + instance in failed.value.msg
    assert failed.value.extra["failed_check"] == "health_gate" and "traffic stays on green" in failed.value.msg
    assert ecs_env.weights() == {"green": 100}
    # a rerun reuses the idle colour's revision and task set: nothing registered or created twice
    ecs = ecs_env.clients["ecs"]
    revisions = ecs.list_task_definitions(familyPrefix=ecs_env.service)["taskDefinitionArns"]
    blue_set = ecs_env.task_sets()["blue"]["taskSetArn"]
    with pytest.raises(BlueGreenError):
        flow(ecs_env.backend(), health_timeout=0.2).deploy(DIGESTS[1])
    assert ecs.list_task_definitions(familyPrefix=ecs_env.service)["taskDefinitionArns"] == revisions
    assert ecs_env.task_sets()["blue"]["taskSetArn"] == blue_set

    # another run holds the lock: refused, nothing changed
    ssm = ecs_env.clients["ssm"]
    held = SsmLock(ssm, backend.lock_name, f"{ecs_env.app}/{ecs_env.env}", "other-run@ci (pid 1)", ttl=600)
    held.acquire()
    before = ecs_env.task_sets()
    try:
        with pytest.raises(BlueGreenError) as locked:
            flow(ecs_env.backend()).deploy(DIGESTS[2])
    finally:
        held.release()
    assert locked.value.extra["failed_check"] == "lock" and "other-run@ci" in locked.value.msg
    assert ecs_env.weights() == {"green": 100}
    assert {c: ts["taskDefinition"] for c, ts in ecs_env.task_sets().items()} == {
        c: ts["taskDefinition"] for c, ts in before.items()
    }


def test_an_alarm_during_a_weighted_step_puts_the_listener_back_and_an_ok_alarm_passes(ecs_env):
    """The analysis between steps on ecs is the aws backend's (CloudWatch alarms, target health), here on moto: an
    alarm put in ALARM while the listener holds the first step fails it and all traffic goes back; with the alarm OK
    both steps pass. moto runs no task, so no target is ever registered: target_health is off here (docs/ecs.md)."""
    cloudwatch = client(ecs_env.endpoint, "cloudwatch")
    alarm = f"{ecs_env.app}-5xx"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm, MetricName="HTTPCode_Target_5XX_Count", Namespace="AWS/ApplicationELB", Statistic="Sum",
        Period=60, EvaluationPeriods=1, Threshold=5, ComparisonOperator="GreaterThanThreshold",
    )  # fmt: skip
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="quiet")
    ecs_env.clients["cloudwatch"] = cloudwatch  # bg_swap adds it when the analysis names alarms
    flow(ecs_env.backend()).deploy(DIGESTS[0])
    assert ecs_env.weights() == {"green": 100}
    settings = validate_analysis({"window": 1.5, "cloudwatch_alarms": [alarm], "target_health": False}, "ecs")
    raised = threading.Event()

    def alarm_at_the_first_step():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not raised.is_set():
            if ecs_env.weights() == {"blue": 20, "green": 80}:
                cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="5xx from blue")
                raised.set()
            time.sleep(0.02)

    watcher = threading.Thread(target=alarm_at_the_first_step, daemon=True)
    watcher.start()
    with pytest.raises(BlueGreenError) as aborted:
        flow(ecs_env.backend(), traffic_steps=[20, 100], analysis=settings).deploy(DIGESTS[1])
    raised.set()
    watcher.join(timeout=5)
    extra = aborted.value.extra
    assert extra["failed_check"] == "analysis" and extra["rolled_back"] is True, aborted.value.msg
    [step] = extra["analysis"]
    assert (step["step"], step["verdict"], step["alarms"]) == (20, "failed", [alarm]), step
    assert ecs_env.weights() == {"green": 100}  # read back from moto: all traffic on the old target group

    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="OK", StateReason="fixed")
    good = flow(ecs_env.backend(), traffic_steps=[20, 100], analysis=settings).deploy(DIGESTS[1])
    assert [(item["step"], item["verdict"]) for item in good["analysis"]] == [(20, "passed"), (100, "passed")]
    assert ecs_env.weights() == {"blue": 100}


def test_check_mode_plans_and_changes_nothing(ecs_env):
    result = BlueGreen(ecs_env.backend(), Options(), check_mode=True).deploy(DIGESTS[0])
    assert result["changed"] and result["plan"]["deploy_to"] == "green"
    assert result["plan"]["cluster"] == ecs_env.cluster and result["plan"]["service"] == ecs_env.service
    assert ecs_env.task_sets() == {} and ecs_env.weights() == {"blue": 100}
    ecs = ecs_env.clients["ecs"]
    assert len(ecs.list_task_definitions(familyPrefix=ecs_env.service)["taskDefinitionArns"]) == 1


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"cluster": "no-such-cluster"}, "ECS cluster 'no-such-cluster' not found"),
        ({"service": "no-such-service"}, "ECS service 'no-such-service' not found"),
        ({"listener_arn": "LISTENER-GONE"}, "not found"),
    ],
)
def test_bad_input_is_refused_before_anything_changes(ecs_env, change, needle):
    if change.get("listener_arn") == "LISTENER-GONE":
        change = {"listener_arn": ecs_env.listener.rsplit("/", 1)[0] + "/0123456789abcdef"}
    with pytest.raises(BlueGreenError) as failed:
        flow(ecs_env.backend(**change)).deploy(DIGESTS[0])
    assert needle in failed.value.msg and ("pass" in failed.value.msg or "create" in failed.value.msg)
    assert ecs_env.task_sets() == {}
    assert ecs_env.weights() == {"blue": 100}


def test_promotion_playbooks_with_promotion_backend_ecs(moto, unique, tmp_path):
    """deploy.yml -> promote.yml -> a new deploy -> rollback.yml -> verify.yml (no drift) -> a hand change ->
    verify.yml fails naming it; promote.yml is called as for the other backends, the backend is a group var."""
    # prod in another region than promotion_aws's: deploy, promote and verify must all go to the environment's own
    envs = {
        env: EcsEnv(moto, unique, env=env, region=region) for env, region in (("dev", REGION), ("prod", OTHER_REGION))
    }
    app = envs["dev"].app
    records = tmp_path / "artifacts" / app / "records"
    records.mkdir(parents=True)
    for index, digest in enumerate(DIGESTS[:2]):
        (records / f"{index:02d}.json").write_text(
            json.dumps({"schema": 1, "name": app, "kind": "container", "id": digest})
        )
    (tmp_path / "artifacts" / app / "latest.json").write_text((records / "00.json").read_text())
    inventory = tmp_path / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "inventories" / "local" / "hosts.yml", inventory / "hosts.yml")
    gate = {"health_checks_required": 2, "health_interval": 0.05, "verify_timeout": 2}
    prefix = f"/ecs-promotion-test/{unique}"
    settings = {
        "promotion_chain": ["dev", "prod"],
        "promotion_app": app,
        "promotion_backend": "ecs",
        "promotion_artifacts_dir": str(tmp_path / "artifacts"),
        "promotion_ledger": {"backend": "ssm", "prefix": prefix, "region": REGION, "endpoint_url": moto},
        "promotion_aws": {
            "region": REGION,
            "endpoint_url": moto,
            "access_key": FAKE_KEYS["aws_access_key_id"],
            "secret_key": FAKE_KEYS["aws_secret_access_key"],
        },
        "promotion_environments": {
            "dev": dict(gate, cluster=envs["dev"].cluster, listener_arn=envs["dev"].listener),
            "prod": dict(
                gate,
                cluster=envs["prod"].cluster,
                load_balancer_name=f"{app}-prod",
                listener_port=80,
                region=OTHER_REGION,
            ),
        },
    }
    (inventory / "group_vars" / "all" / "promotion.yml").write_text(json.dumps(settings))

    def run(playbook, **extra):
        res = run_playbook(REPO_ROOT / "playbooks" / playbook, extra, "-i", str(inventory), env=FAKE_ENV)
        return res, res.stdout[-6000:] + res.stderr[-2000:]

    def live(env):
        task_sets = envs[env].task_sets()
        colour = next(iter(envs[env].weights()))
        return colour, envs[env].image(task_sets[colour]["taskDefinition"])

    res, out = run("deploy.yml", env="dev")
    assert res.returncode == 0, out
    assert "colour: green (switched)" in out and FAKE_KEYS["aws_secret_access_key"] not in out
    res, out = run("promote.yml", **{"from": "dev", "to": "prod"})
    assert res.returncode == 0, out
    assert live("dev") == ("green", DIGESTS[0]) and live("prod") == ("green", DIGESTS[0])
    res, out = run("deploy.yml", env="dev", artifact=DIGESTS[1])
    assert res.returncode == 0, out
    assert live("dev") == ("blue", DIGESTS[1])
    res, out = run("rollback.yml", env="dev")
    assert res.returncode == 0, out
    assert "instant switch back to the kept colour" in out and live("dev") == ("green", DIGESTS[0])
    ledger = json.loads(envs["dev"].clients["ssm"].get_parameter(Name=f"{prefix}/{app}/dev")["Parameter"]["Value"])
    assert ledger["live"] == DIGESTS[0] and ledger["previous"] == DIGESTS[1]

    # (verify.yml without drift: drift_info backend=ecs in the first test, which costs no playbook run)
    # by hand: prod's service moved to a task definition with another image
    ecs = envs["prod"].clients["ecs"]
    other = ecs.register_task_definition(
        family=f"{app}-prod",
        containerDefinitions=[
            {"name": "web", "image": DIGESTS[2], "memory": 128, "portMappings": [{"containerPort": 8080}]}
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.update_service(cluster=envs["prod"].cluster, service=f"{app}-prod", taskDefinition=other)
    res, out = run("verify.yml")
    assert res.returncode != 0 and "changed by hand" in out and DIGESTS[2] in out, out
