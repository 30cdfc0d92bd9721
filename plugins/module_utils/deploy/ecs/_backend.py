# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ECS backend of bg_swap: CodeDeploy-style ECS blue/green done directly (docs/ecs.md).

PRIVATE to the collection: no compatibility promise outside immutable.infra.

One ECS service per app and environment with the EXTERNAL deployment controller; each colour is a task set of it
(externalId blue|green) registered in that colour's target group; an ALB listener forwards to the two target groups.
The listener is the only truth for the live colour (read and written by the aws backend's code, inherited from
AwsBackend: listener and target group resolution, weighted forward actions, the SSM lock and state parameter,
CountingClient with amazon.aws's AWSRetry, the analysis by CloudWatch alarms and target health).

A deployment registers a task definition revision whose container image is the artifact's digest reference (a
mutable tag is refused), replaces the idle colour's task set by one on that revision, waits for the task set to
reach STEADY_STATE (a botocore waiter with attempts derived from the timeout), gates on the task set and the colour's
target group health, then moves the listener's weights; the PRIMARY task set follows the colour with the most
traffic. A colour "runs" an artifact when its task set's task definition has that image in the container.
"""

from __future__ import annotations

import math

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

try:
    from botocore.exceptions import WaiterError
    from botocore.waiter import WaiterModel
    from botocore.waiter import create_waiter_with_client
except ImportError:  # bg_swap imports this module only after check_sdk_version_supported() found botocore

    class WaiterError(Exception):
        pass

    WaiterModel = create_waiter_with_client = None


from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import ColourStatus
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import HealthResult
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import other
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import validate_artifact
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import AwsBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import CountingClient
from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import failure

CLUSTER_MISSING = ("ClusterNotFoundException",)
# ECS says ThrottlingException, which amazon.aws's AWSRetry does not retry by default (it knows "Throttling"):
# bg_swap passes these as catch_extra_error_codes
EXTRA_RETRY_CODES = ("ThrottlingException",)
TASK_DEFINITION_MISSING = ("ClientException", "InvalidParameterException")
# the task definition fields register_task_definition takes back (describe_task_definition adds others: arn,
# revision, status, requiresAttributes, compatibilities, registeredAt/By)
REGISTRABLE = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)
# what a new task set copies from the other colour's task set (else from the service)
PLACEMENT = ("launchType", "capacityProviderStrategy", "platformVersion", "networkConfiguration")
LIVE_TASK_SET = ("PRIMARY", "ACTIVE")
# a botocore waiter for a task set (botocore has none): STEADY_STATE, or a failure when it is gone
TASK_SET_WAITER = {
    "version": 2,
    "waiters": {
        "TaskSetSteady": {
            "operation": "DescribeTaskSets",
            "delay": 5,
            "maxAttempts": 60,
            "acceptors": [
                {
                    "matcher": "pathAll",
                    "argument": "taskSets[].stabilityStatus",
                    "expected": "STEADY_STATE",
                    "state": "success",
                },
                {"matcher": "pathAny", "argument": "failures[].reason", "expected": "MISSING", "state": "failure"},
            ],
        }
    },
}


def image_of(task_definition: dict, container: str) -> str | None:
    for item in task_definition.get("containerDefinitions") or []:
        if item.get("name") == container:
            return item.get("image")
    return None


def with_image(task_definition: dict, container: str, image: str) -> dict:
    """register_task_definition's arguments: the given revision's registrable fields, only `container`'s image
    replaced."""
    args = {key: task_definition[key] for key in REGISTRABLE if task_definition.get(key) not in (None, [], {})}
    args["containerDefinitions"] = [
        dict(item, image=image) if item.get("name") == container else dict(item)
        for item in task_definition.get("containerDefinitions") or []
    ]
    return args


def raw_client(client):
    """The boto3 client behind amazon.aws's RetryingBotoClientWrapper (waiters take the plain client)."""
    return getattr(client, "client", client)


class EcsBackend(AwsBackend):
    """bg_swap's backend interface (deploy/_bluegreen.py) for ECS task sets behind an ALB listener."""

    def __init__(
        self,
        clients: dict,
        app: str,
        env: str,
        cluster: str,
        service: str | None = None,
        task_family: str | None = None,
        container_name: str | None = None,
        container_port: int | None = None,
        wait_timeout: float = 600.0,
        **kwargs,
    ):
        # the aws backend's EC2 and Auto Scaling clients are never used here
        super().__init__(dict(clients, ec2=None, autoscaling=None), app, env, **kwargs)
        self.ecs = CountingClient(clients["ecs"], "ecs", self.counts, kwargs.get("retry", True))
        self._ecs_raw = raw_client(clients["ecs"])
        self.cluster = cluster
        self.service_name = service or f"{app}-{env}"
        self.task_family = task_family or self.service_name
        self.container_name = container_name
        self.container_port = container_port
        self.wait_timeout = wait_timeout
        self._task_definitions = {}  # ARN -> task definition (immutable once registered)
        self.registered = {}  # colour -> task definition ARN this run put on it

    # -- reading --------------------------------------------------------------------------------------------------
    def _service(self) -> dict:
        what = f"describe ECS service {self.service_name} in cluster {self.cluster}"
        try:
            answer = self._call(
                self.ecs,
                "describe_services",
                what,
                missing=CLUSTER_MISSING,
                cluster=self.cluster,
                services=[self.service_name],
            )
        except is_boto3_error_code(CLUSTER_MISSING):
            raise BlueGreenError(
                f"ECS cluster {self.cluster!r} not found in region {self.region or '(default)'}: pass the name of an "
                "existing cluster as cluster (aws ecs list-clusters); nothing was changed"
            ) from None
        services = [s for s in answer.get("services") or [] if s.get("status") != "INACTIVE"]
        if not services:
            raise BlueGreenError(
                f"ECS service {self.service_name!r} not found in cluster {self.cluster}: create it with "
                "deploymentController {type: EXTERNAL} (docs/ecs.md) or pass its name as service; nothing was changed"
            )
        service = services[0]
        controller = (service.get("deploymentController") or {}).get("type", "ECS")
        if controller != "EXTERNAL":
            raise BlueGreenError(
                f"ECS service {self.service_name} uses the {controller} deployment controller; backend=ecs drives "
                "task sets and needs deploymentController {type: EXTERNAL}: create the service with it "
                "(docs/ecs.md); nothing was changed"
            )
        return service

    def _task_sets(self, service: dict | None = None) -> dict:
        """colour -> its live task set (PRIMARY or ACTIVE; DRAINING ones are on their way out)."""
        service = service or self._service()
        found = {}
        for task_set in service.get("taskSets") or []:
            colour = task_set.get("externalId")
            if colour in COLOURS and task_set.get("status") in LIVE_TASK_SET:
                found[colour] = task_set
        return found

    def _task_definition(self, ref: str) -> dict:
        if ref in self._task_definitions:
            return self._task_definitions[ref]
        what = f"describe task definition {ref}"
        try:
            answer = self._call(
                self.ecs, "describe_task_definition", what, missing=TASK_DEFINITION_MISSING, taskDefinition=ref
            )
        except is_boto3_error_code(TASK_DEFINITION_MISSING) as exc:
            raise BlueGreenError(
                f"task definition {ref!r} not found ({failure(what, exc).msg}): register one for {self.app}/{self.env}"
                f" (family {self.task_family}, the container and its port, docs/ecs.md) or pass task_family",
                failed_check="deploy",
            ) from None
        task_definition = answer["taskDefinition"]
        if ":" in ref.rsplit("/", 1)[-1]:  # a revision (family:N or its ARN) never changes; a family may
            self._task_definitions[ref] = task_definition
        self._task_definitions[task_definition["taskDefinitionArn"]] = task_definition
        return task_definition

    def _container(self, task_definition: dict) -> str:
        names = [c.get("name") for c in task_definition.get("containerDefinitions") or []]
        if self.container_name:
            if self.container_name not in names:
                raise BlueGreenError(
                    f"task definition {task_definition.get('taskDefinitionArn')} has no container "
                    f"{self.container_name!r} (it has {names}): pass one of those as container_name",
                    failed_check="deploy",
                )
            return self.container_name
        if len(names) != 1:
            raise BlueGreenError(
                f"task definition {task_definition.get('taskDefinitionArn')} has {len(names)} containers {names}: "
                "pass the one that serves traffic as container_name",
                failed_check="deploy",
            )
        return names[0]

    def _port(self, task_definition: dict, container: str) -> int:
        if self.container_port:
            return int(self.container_port)
        for item in task_definition.get("containerDefinitions") or []:
            if item.get("name") == container:
                for mapping in item.get("portMappings") or []:
                    if mapping.get("containerPort"):
                        return int(mapping["containerPort"])
        raise BlueGreenError(
            f"container {container} of {task_definition.get('taskDefinitionArn')} maps no port: pass container_port",
            failed_check="deploy",
        )

    def _artifact_of(self, task_set: dict) -> str | None:
        task_definition = self._task_definition(task_set["taskDefinition"])
        return image_of(task_definition, self._container(task_definition))

    # -- waits ----------------------------------------------------------------------------------------------------
    def _wait_steady(self, colour: str, task_set_arn: str) -> None:
        """A botocore waiter on DescribeTaskSets until the task set is STEADY_STATE, attempts from wait_timeout."""
        delay = max(self.poll_interval, 0.1)
        attempts = max(1, math.ceil(self.wait_timeout / delay))
        model = WaiterModel(TASK_SET_WAITER)
        waiter = create_waiter_with_client("TaskSetSteady", model, self._ecs_raw)
        self.counts["ecs.describe_task_sets (waiter)"] += 1
        what = f"task set {task_set_arn} ({colour}) of ECS service {self.service_name} in cluster {self.cluster}"
        try:
            waiter.wait(
                cluster=self.cluster,
                service=self.service_name,
                taskSets=[task_set_arn],
                WaiterConfig={"Delay": delay, "MaxAttempts": attempts},
            )
        except WaiterError as exc:
            last = (exc.last_response or {}).get("taskSets") or [{}]
            status = last[0].get("stabilityStatus") or "unknown"
            if "Max attempts exceeded" in str(exc):
                raise BlueGreenError(
                    f"timed out after {self.wait_timeout:g}s waiting for {what} to reach STEADY_STATE (last: "
                    f"{status}); check its events (aws ecs describe-services) or raise health_timeout",
                    failed_check="deploy",
                ) from None
            raise BlueGreenError(f"waiting for {what} failed: {exc}", failed_check="deploy") from None

    # -- backend interface ------------------------------------------------------------------------------------------
    def colour_status(self, colour: str) -> ColourStatus:
        task_set = self._task_sets().get(colour)
        if task_set is None:
            return ColourStatus(exists=False)
        scale = float((task_set.get("scale") or {}).get("value", 100.0))
        return ColourStatus(exists=True, running=scale > 0, artifact=self._artifact_of(task_set))

    def preflight(self, artifact: str) -> None:
        """Bad input fails here, before anything changes (also in check mode)."""
        validate_artifact("docker", artifact)  # the same digest reference rule: never a mutable tag
        self._resolve_target_groups()
        self._service()
        template = self._template()
        self._port(template, self._container(template))

    def _template(self, task_sets: dict | None = None) -> dict:
        """The task definition a new revision is made from: the live colour's, else the family's latest."""
        task_sets = self._task_sets() if task_sets is None else task_sets
        live = self.describe().colour
        for colour in (live, other(live)):
            if colour in task_sets:
                return self._task_definition(task_sets[colour]["taskDefinition"])
        return self._task_definition(self.task_family)

    def plan_extra(self, colour: str) -> dict:
        return {
            "cluster": self.cluster,
            "service": self.service_name,
            "task_family": self.task_family,
            "target_group": self.tg_names[colour],
        }

    def _placement(self, service: dict, task_sets: dict, colour: str) -> dict:
        source = task_sets.get(other(colour)) or task_sets.get(colour) or service
        return {key: source[key] for key in PLACEMENT if source.get(key)}

    def prepare(self, colour: str, artifact: str) -> None:
        service = self._service()
        task_sets = self._task_sets(service)
        template = self._template(task_sets)
        container = self._container(template)
        current = task_sets.get(colour)
        idle = self._task_definition(current["taskDefinition"]) if current else {}
        if image_of(template, container) == artifact:
            arn = template["taskDefinitionArn"]
        elif idle and image_of(idle, container) == artifact:
            arn = idle["taskDefinitionArn"]  # a rerun after a failed gate: the revision is there already
        else:
            registered = self._call(
                self.ecs,
                "register_task_definition",
                f"register a revision of task definition {template.get('family')}",
                **with_image(template, container, artifact),
            )["taskDefinition"]
            arn = registered["taskDefinitionArn"]
            self._task_definitions[arn] = registered
        self.registered[colour] = arn
        self.expected[colour] = artifact
        tg_arn = self._resolve_target_groups()[colour]
        if (
            current
            and current["taskDefinition"] == arn
            and any(lb.get("targetGroupArn") == tg_arn for lb in current.get("loadBalancers") or [])
        ):
            self.start(colour)  # already there (a rerun after a failed gate): scale it up again
            return
        placement = self._placement(service, task_sets, colour)
        if current:
            # Replace, never mutate: the idle colour's old task set goes, a new one on the new revision comes.
            self._call(
                self.ecs,
                "delete_task_set",
                f"delete the old {colour} task set {current['taskSetArn']}",
                cluster=self.cluster,
                service=self.service_name,
                taskSet=current["taskSetArn"],
                force=True,
            )
        created = self._call(
            self.ecs,
            "create_task_set",
            f"create the {colour} task set of ECS service {self.service_name}",
            cluster=self.cluster,
            service=self.service_name,
            taskDefinition=arn,
            externalId=colour,
            loadBalancers=[
                {"targetGroupArn": tg_arn, "containerName": container, "containerPort": self._port(template, container)}
            ],
            **placement,
        )["taskSet"]
        self._wait_steady(colour, created["taskSetArn"])

    def _scale(self, colour: str, percent: float) -> None:
        task_set = self._task_sets().get(colour)
        if task_set is None:
            raise BlueGreenError(
                f"the {colour} task set of ECS service {self.service_name} is gone: deploy the artifact again",
                failed_check="deploy",
            )
        self._call(
            self.ecs,
            "update_task_set",
            f"scale the {colour} task set {task_set['taskSetArn']} to {percent:g}%",
            cluster=self.cluster,
            service=self.service_name,
            taskSet=task_set["taskSetArn"],
            scale={"value": float(percent), "unit": "PERCENT"},
        )
        if percent > 0:
            self._wait_steady(colour, task_set["taskSetArn"])

    def start(self, colour: str) -> None:
        self._scale(colour, 100)

    def stop(self, colour: str) -> None:
        self._scale(colour, 0)

    def check_health(self, colour: str) -> HealthResult:
        task_set = self._task_sets().get(colour)
        if task_set is None:
            return HealthResult(False, f"the {colour} task set of {self.service_name} is gone", fatal=True)
        expected = self.expected.get(colour)
        image = self._artifact_of(task_set)
        if expected is None:
            expected = self.expected[colour] = image
        desired = int(task_set.get("computedDesiredCount") or 0)
        running = int(task_set.get("runningCount") or 0)
        stability = task_set.get("stabilityStatus") or "unknown"
        arn = self._resolve_target_groups()[colour]
        descriptions = self._call(
            self.elb, "describe_target_health", f"describe target health of {self.tg_names[colour]}", TargetGroupArn=arn
        ).get("TargetHealthDescriptions", [])
        states = [
            (
                (item.get("Target") or {}).get("Id"),
                str((item.get("TargetHealth") or {}).get("State", "")).lower(),
                (item.get("TargetHealth") or {}).get("Reason"),
            )
            for item in descriptions
        ]
        healthy = [target for target, state, _reason in states if state == "healthy"]
        bad = sorted(f"{t} {s or 'unknown'}{f' ({r})' if r else ''}" for t, s, r in states if s != "healthy")
        parts = [
            f"task set {task_set.get('id')} {stability}, {running}/{desired} tasks running",
            f"{len(healthy)}/{desired} targets healthy in {self.tg_names[colour]}",
        ]
        if bad:
            parts.append("not healthy: " + ", ".join(bad))
        if image != expected:
            parts.append(f"runs {image}, not {expected}")
        # ECS reports computedDesiredCount for every task set (moto_server does not: it runs no task); a colour that
        # wants no task would pass every count above and serve nothing
        idle = "computedDesiredCount" in task_set and desired == 0
        if idle:
            parts.append(
                f"no task is desired: {self.service_name}'s desiredCount (or the task set's scale) is 0, so nothing"
                " would serve; give the service a desiredCount of at least 1"
            )
        ok = image == expected and stability == "STEADY_STATE" and running >= desired and len(healthy) >= desired
        ok = ok and not idle
        return HealthResult(ok and not bad, "; ".join(parts))

    def set_traffic(self, weights: dict) -> None:
        super().set_traffic(weights)
        biggest = max((c for c in weights if weights[c] > 0), key=lambda c: weights[c], default=None)
        task_set = self._task_sets().get(biggest) if biggest else None
        if task_set is None or task_set.get("status") == "PRIMARY":
            return
        try:
            self._call(
                self.ecs,
                "update_service_primary_task_set",
                f"make the {biggest} task set primary in ECS service {self.service_name}",
                cluster=self.cluster,
                service=self.service_name,
                primaryTaskSet=task_set["taskSetArn"],
            )
        except BlueGreenError as exc:
            raise BlueGreenError(exc.msg, failed_check="switch") from None

    def record_fields(self) -> dict:
        return {
            "backend": "ecs",
            "cluster": self.cluster,
            "service": self.service_name,
            "listener_arn": self.listener_arn,
            "task_definitions": dict(self.registered),
        }

    def details(self) -> dict:
        return {
            "listener_arn": self.listener_arn,
            "target_groups": dict(self.tg_arns or {}),
            "cluster": self.cluster,
            "service": self.service_name,
            "task_definitions": dict(self.registered),
            "lock_parameter": self.lock_name,
            "state_parameter": self.state_name,
            "api_calls": self.api_calls(),
            "api_calls_by_operation": dict(sorted(self.counts.items())),
        }
