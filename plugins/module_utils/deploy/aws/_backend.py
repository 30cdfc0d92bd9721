# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""AWS backend of bg_swap: an ALB listener over two target groups, each fed by an ASG pinned to a numbered LT version.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Truth for the live colour is the listener's default forward action (never tags, never TargetGroup.LoadBalancerArns,
which moto leaves stale). A colour "runs" an AMI when its ASG is pinned to a launch template version whose ImageId is
the AMI AND every InService instance of the ASG has that ImageId (checked on EC2, not on the ASG's LT version, which
moto misreports). Deploying writes a new numbered launch template version with the full data of the current one and
only ImageId (and optionally InstanceType) replaced; SourceVersion is never used (moto ignores it).

The boto3 clients are injected (the module passes amazon.aws RetryingBotoClientWrapper clients built with
AWSRetry.jittered_backoff; every call is made with aws_retry=True). Every call goes through CountingClient so the
module can report how many AWS API calls a swap made. Errors become BlueGreenError (AwsError) naming the call; the
error codes that mean "not found" are told apart with amazon.aws's is_boto3_error_code.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections import Counter
from contextlib import contextmanager

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
except ImportError:  # bg_swap imports this module only after check_sdk_version_supported() found botocore

    class BotoCoreError(Exception):
        pass

    class ClientError(Exception):
        pass


from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_name
from ansible_collections.immutable.infra.plugins.module_utils.aws._ssm_lock import SsmLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import Figures
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import ColourStatus
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import HealthResult
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Live
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import other

LOCK_PREFIX = "/immutable-infra/locks"
STATE_PREFIX = "/immutable-infra/bg-state"
AUTH_ACTIONS = ("authenticate-oidc", "authenticate-cognito")
# the AWS error codes that mean "not found" for the calls below
LISTENER_MISSING = ("ListenerNotFound", "ValidationError")
LOAD_BALANCER_MISSING = ("LoadBalancerNotFound",)
TARGET_GROUPS_MISSING = ("TargetGroupNotFound", "ValidationError")
LAUNCH_TEMPLATE_MISSING = (
    "InvalidLaunchTemplateName.NotFoundException",
    "InvalidLaunchTemplateName.MalformedException",
    "InvalidLaunchTemplateId.NotFound",
    "InvalidLaunchTemplateId.Malformed",
    "InvalidLaunchTemplateId.VersionNotFound",
)
AMI_MISSING = ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable")
PARAMETER_MISSING = ("ParameterNotFound",)


class AwsError(BlueGreenError):
    """An AWS API call failed; `code` is the AWS error code (None for connection errors)."""

    def __init__(self, msg: str, code: str | None = None, **extra):
        super().__init__(msg, **extra)
        self.code = code


def error_text(exc: Exception) -> str:
    """`<Code>: <message>` of a ClientError, the text of any other botocore error (a connection error)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error") or {}
        return f"{error.get('Code')}: {error.get('Message') or exc}"
    return str(exc)


def failure(what: str, exc: Exception) -> AwsError:
    """AwsError `<what> failed: <Code>: <message>` for a botocore error."""
    code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
    return AwsError(f"{what} failed: {error_text(exc)}", code=code)


class CountingClient:
    """Proxy of a boto3 client: counts every call per `service.operation` and adds aws_retry=True when asked."""

    def __init__(self, client, service: str, counts: Counter, retry: bool = True):
        self._client = client
        self._service = service
        self._counts = counts
        self._retry = retry

    def __getattr__(self, operation: str):
        method = getattr(self._client, operation)

        def call(**params):
            self._counts[f"{self._service}.{operation}"] += 1
            if self._retry:
                params["aws_retry"] = True
            return method(**params)

        return call


def default_owner() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


def forward_weights(actions: list) -> dict:
    """Target group ARN -> weight of the listener's forward action ({} when it forwards nowhere)."""
    for action in actions or []:
        if action.get("Type") != "forward":
            continue
        groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
        if groups:
            return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
        if action.get("TargetGroupArn"):
            return {action["TargetGroupArn"]: 1}
    return {}


def percentages(weights: dict) -> dict:
    """Weights of any scale as percentages (keys with weight 0 dropped)."""
    total = sum(w for w in weights.values() if w > 0)
    if not total:
        return {}
    return {k: round(w * 100 / total) for k, w in weights.items() if w > 0}


def forward_actions(current: list, weights_by_arn: dict) -> list:
    """The listener's default actions with the forward action replaced by a weighted ForwardConfig.

    Authentication actions are kept; any other terminal action (forward, fixed-response, redirect) is replaced.
    The target group stickiness config of the current forward action is kept.
    """
    kept = [dict(a) for a in current or [] if a.get("Type") in AUTH_ACTIONS]
    old_forward = next((a for a in current or [] if a.get("Type") == "forward"), {})
    config = {"TargetGroups": [{"TargetGroupArn": arn, "Weight": int(w)} for arn, w in weights_by_arn.items()]}
    stickiness = (old_forward.get("ForwardConfig") or {}).get("TargetGroupStickinessConfig")
    if stickiness:
        config["TargetGroupStickinessConfig"] = stickiness
    forward = {"Type": "forward", "ForwardConfig": config}
    orders = [a["Order"] for a in kept if "Order" in a]
    if orders:
        forward["Order"] = max(orders) + 1
    return kept + [forward]


def capacity_update(asg: dict, desired: int) -> dict:
    """MinSize/MaxSize/DesiredCapacity so the ASG runs `desired` instances without losing its own limits."""
    return {
        "MinSize": min(int(asg.get("MinSize", 0)), desired),
        "MaxSize": max(int(asg.get("MaxSize", 0)), desired),
        "DesiredCapacity": desired,
    }


class AwsBackend:
    def __init__(
        self,
        clients: dict,
        app: str,
        env: str,
        listener_arn: str | None = None,
        load_balancer_name: str | None = None,
        listener_port: int | None = None,
        target_groups: dict | None = None,
        asg_names: dict | None = None,
        launch_templates: dict | None = None,
        desired_capacity: int | None = None,
        instance_type: str | None = None,
        lock_ttl: float = 1800,
        poll_interval: float = 1.0,
        drain_timeout: float = 300.0,
        region: str | None = None,
        retry: bool = True,
        owner: str | None = None,
        sleep=time.sleep,
        now=time.monotonic,
    ):
        self.counts = Counter()
        self.ec2 = CountingClient(clients["ec2"], "ec2", self.counts, retry)
        self.asg = CountingClient(clients["autoscaling"], "autoscaling", self.counts, retry)
        self.elb = CountingClient(clients["elbv2"], "elbv2", self.counts, retry)
        self.ssm = CountingClient(clients["ssm"], "ssm", self.counts, retry)
        # only when the analysis names CloudWatch alarms (bg_swap creates the client then)
        self.cloudwatch = (
            CountingClient(clients["cloudwatch"], "cloudwatch", self.counts, retry)
            if (clients.get("cloudwatch") is not None)
            else None
        )
        self.app = app
        self.env = env
        self.listener_arn = listener_arn
        self.load_balancer_name = load_balancer_name
        self.listener_port = listener_port
        self.tg_names = self._per_colour("target_groups", target_groups, app, env)
        self.asg_names = self._per_colour("asg_names", asg_names, app, env)
        self.lt_names = self._per_colour("launch_templates", launch_templates, app, env)
        if desired_capacity is not None and desired_capacity < 1:
            raise BlueGreenError(f"desired_capacity must be at least 1, got {desired_capacity}")
        self.desired_capacity = desired_capacity
        self.instance_type = instance_type
        self.lock_ttl = lock_ttl
        self.poll_interval = poll_interval
        self.drain_timeout = drain_timeout
        self.region = region
        self.owner = owner or default_owner()
        self.sleep = sleep
        self.now = now
        self.tg_arns = None  # colour -> ARN, resolved once
        self.expected = {}  # colour -> AMI the gate expects (set by prepare/start)
        self.versions = {}  # colour -> launch template version pinned by this run
        self._lt_ids = {}
        self.lock_name = f"{LOCK_PREFIX}/{app}/{env}"
        self.state_name = f"{STATE_PREFIX}/{app}/{env}"
        self._state_cache = None

    @staticmethod
    def _per_colour(option: str, given: dict | None, app: str, env: str) -> dict:
        given = dict(given or {})
        unknown = sorted(set(given) - set(COLOURS))
        if unknown:
            raise BlueGreenError(f"{option}: unknown key(s) {unknown}; use blue and green, e.g. {{blue: x, green: y}}")
        names = {c: str(given.get(c) or colour_name(app, env, c)) for c in COLOURS}
        if names["blue"] == names["green"]:
            raise BlueGreenError(f"{option}: blue and green are both {names['blue']!r}: each colour needs its own")
        return names

    # -- AWS calls ----------------------------------------------------------------------------------------------------
    def _call(self, client, operation: str, what: str, missing=(), **params):
        """One AWS call; a botocore error becomes AwsError naming `what`, except the error codes in `missing`,
        which the caller handles (is_boto3_error_code(missing)). Anything else (a bug) is not hidden."""
        try:
            return getattr(client, operation)(**params)
        except is_boto3_error_code(missing):
            raise
        except (ClientError, BotoCoreError) as exc:
            raise failure(what, exc) from None

    def api_calls(self) -> int:
        return sum(self.counts.values())

    # -- resolution ---------------------------------------------------------------------------------------------------
    def _describe_listener(self) -> dict:
        if not self.listener_arn:
            self._resolve_listener_arn()
        what = f"describe listener {self.listener_arn}"
        try:
            listeners = self._call(
                self.elb, "describe_listeners", what, missing=LISTENER_MISSING, ListenerArns=[self.listener_arn]
            )["Listeners"]
        except is_boto3_error_code(LISTENER_MISSING) as exc:
            raise BlueGreenError(
                f"listener {self.listener_arn} not found ({failure(what, exc).msg}): pass the ARN of the ALB listener"
                f" that serves {self.app}/{self.env} as listener_arn, or load_balancer_name and listener_port"
            ) from None
        if not listeners:
            raise BlueGreenError(f"listener {self.listener_arn} not found: pass an existing listener_arn")
        return listeners[0]

    def _resolve_listener_arn(self) -> None:
        name = self.load_balancer_name
        try:
            lbs = self._call(
                self.elb,
                "describe_load_balancers",
                f"describe load balancer {name}",
                missing=LOAD_BALANCER_MISSING,
                Names=[name],
            )
        except is_boto3_error_code(LOAD_BALANCER_MISSING):
            raise BlueGreenError(
                f"load balancer {name!r} not found in region {self.region or '(default)'}: pass the name of the "
                "ALB in front of the two target groups, or listener_arn"
            ) from None
        lb_arn = lbs["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = self._call(
            self.elb, "describe_listeners", f"describe listeners of {name}", LoadBalancerArn=lb_arn
        ).get("Listeners", [])
        for listener in listeners:
            if int(listener.get("Port", 0)) == int(self.listener_port):
                self.listener_arn = listener["ListenerArn"]
                return
        ports = sorted(int(li.get("Port", 0)) for li in listeners)
        raise BlueGreenError(
            f"load balancer {name!r} has no listener on port {self.listener_port} (ports: {ports or 'none'}): "
            "pass the port of the production listener as listener_port"
        )

    def _resolve_target_groups(self) -> dict:
        if self.tg_arns is not None:
            return self.tg_arns
        names = [self.tg_names[c] for c in COLOURS]
        what = f"describe target groups {names}"
        try:
            groups = self._call(self.elb, "describe_target_groups", what, missing=TARGET_GROUPS_MISSING, Names=names)
        except is_boto3_error_code(TARGET_GROUPS_MISSING) as exc:
            raise BlueGreenError(
                f"unknown app/env {self.app}/{self.env}: target groups {names} not found ({failure(what, exc).msg});"
                " create them (one per colour) or pass their names as target_groups: {blue: ..., green: ...}"
            ) from None
        by_name = {g["TargetGroupName"]: g["TargetGroupArn"] for g in groups.get("TargetGroups", [])}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise BlueGreenError(
                f"unknown app/env {self.app}/{self.env}: target group(s) {missing} not found; create them or pass "
                "target_groups: {blue: ..., green: ...}"
            )
        self.tg_arns = {c: by_name[self.tg_names[c]] for c in COLOURS}
        return self.tg_arns

    def _colour_of(self) -> dict:
        return {arn: colour for colour, arn in self._resolve_target_groups().items()}

    def _live_from(self, listener: dict) -> Live:
        arns = self._colour_of()
        weights = percentages(forward_weights(listener.get("DefaultActions")))
        foreign = [arn for arn in weights if arn not in arns]
        if foreign:
            raise BlueGreenError(
                f"listener {self.listener_arn} forwards to {foreign}, which is neither the blue target group "
                f"{self.tg_names['blue']} nor the green one {self.tg_names['green']}; point it at one of them first "
                "(or pass the right target_groups)"
            )
        by_colour = {arns[arn]: w for arn, w in weights.items()}
        colour = max(by_colour, key=lambda c: by_colour[c]) if by_colour else None
        return Live(colour=colour, weights=by_colour)

    def _describe_asg(self, colour: str) -> dict | None:
        name = self.asg_names[colour]
        groups = self._call(
            self.asg,
            "describe_auto_scaling_groups",
            f"describe auto scaling group {name}",
            AutoScalingGroupNames=[name],
        ).get("AutoScalingGroups", [])
        return groups[0] if groups else None

    def _require_asg(self, colour: str) -> dict:
        asg = self._describe_asg(colour)
        if asg is None:
            raise BlueGreenError(
                f"auto scaling group {self.asg_names[colour]!r} of {colour} not found: create it (fed into target "
                f"group {self.tg_names[colour]}) or pass asg_names: {{blue: ..., green: ...}}",
                failed_check="deploy",
            )
        return asg

    @staticmethod
    def _asg_template(asg: dict) -> dict:
        spec = asg.get("LaunchTemplate")
        if not spec:
            mixed = asg.get("MixedInstancesPolicy") or {}
            spec = (mixed.get("LaunchTemplate") or {}).get("LaunchTemplateSpecification")
        return spec or {}

    def _lt_version(self, colour: str, version: str) -> dict:
        name = self.lt_names[colour]
        what = f"describe launch template {name} version {version}"
        try:
            versions = self._call(
                self.ec2,
                "describe_launch_template_versions",
                what,
                missing=LAUNCH_TEMPLATE_MISSING,
                LaunchTemplateName=name,
                Versions=[str(version)],
            ).get("LaunchTemplateVersions", [])
        except is_boto3_error_code(LAUNCH_TEMPLATE_MISSING) as exc:
            raise BlueGreenError(
                f"launch template {name!r} of {colour} (version {version}) not found ({failure(what, exc).msg}): create"
                " it or pass launch_templates: {blue: ..., green: ...}",
                failed_check="deploy",
            ) from None
        if not versions:
            raise BlueGreenError(f"launch template {name!r} has no version {version}", failed_check="deploy")
        return versions[0]

    def _pinned_version(self, colour: str, asg: dict) -> dict | None:
        """The version of our launch template the ASG uses, or None when it uses another template."""
        spec = self._asg_template(asg)
        if spec.get("LaunchTemplateName") != self.lt_names[colour] and not (
            spec.get("LaunchTemplateId") and self._lt_id(colour) == spec.get("LaunchTemplateId")
        ):
            return None
        return self._lt_version(colour, spec.get("Version") or "$Default")

    def _lt_id(self, colour: str) -> str | None:
        if colour not in self._lt_ids:
            self._lt_ids[colour] = self._lt_version(colour, "$Default").get("LaunchTemplateId")
        return self._lt_ids[colour]

    def _instance_images(self, ids: list) -> dict:
        """Instance ID -> (ImageId, state name) from EC2."""
        if not ids:
            return {}
        result = {}
        kwargs = {"InstanceIds": list(ids)}
        while True:
            page = self._call(self.ec2, "describe_instances", f"describe instances {ids}", **kwargs)
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    result[inst["InstanceId"]] = (inst.get("ImageId"), (inst.get("State") or {}).get("Name"))
            if not page.get("NextToken"):
                return result
            kwargs["NextToken"] = page["NextToken"]

    @staticmethod
    def _in_service(asg: dict) -> list:
        return [
            i["InstanceId"]
            for i in asg.get("Instances", [])
            if i.get("LifecycleState") == "InService" and str(i.get("HealthStatus", "")).lower() == "healthy"
        ]

    # -- backend interface --------------------------------------------------------------------------------------------
    def describe(self) -> Live:
        return self._live_from(self._describe_listener())

    def colour_status(self, colour: str) -> ColourStatus:
        asg = self._describe_asg(colour)
        if asg is None:
            return ColourStatus(exists=False)
        pinned = self._pinned_version(colour, asg)
        artifact = ((pinned or {}).get("LaunchTemplateData") or {}).get("ImageId")
        in_service = self._in_service(asg)
        desired = int(asg.get("DesiredCapacity", 0))
        images = self._instance_images(in_service)
        consistent = bool(artifact) and all(images.get(i, (None,))[0] == artifact for i in in_service)
        running = desired > 0 and len(in_service) >= desired
        return ColourStatus(exists=True, running=running, artifact=artifact, consistent=consistent)

    def preflight(self, artifact: str) -> None:
        """Bad input fails here, before anything changes (also in check mode)."""
        try:
            images = self._call(
                self.ec2, "describe_images", f"describe image {artifact}", missing=AMI_MISSING, ImageIds=[artifact]
            )
        except is_boto3_error_code(AMI_MISSING):
            images = {"Images": []}
        found = images.get("Images") or []
        if not found:
            raise BlueGreenError(
                f"AMI {artifact} does not exist in region {self.region or '(default)'} or is not visible to this "
                "account: pass the AMI ID bake_ami returned for this region (copy it here first if it was baked "
                "elsewhere)",
                failed_check="deploy",
            )
        state = found[0].get("State")
        if state != "available":
            raise BlueGreenError(
                f"AMI {artifact} is {state}, not available: wait for it (or bake it again) before deploying",
                failed_check="deploy",
            )
        for colour in COLOURS:
            asg = self._require_asg(colour)
            if self._pinned_version(colour, asg) is None:
                self._lt_version(colour, "$Latest")  # the template must exist

    def plan_extra(self, colour: str) -> dict:
        return {
            "asg": self.asg_names[colour],
            "launch_template": self.lt_names[colour],
            "target_group": self.tg_names[colour],
            "desired_capacity": self._desired(colour),
        }

    def _desired(self, colour: str) -> int:
        if self.desired_capacity:
            return self.desired_capacity
        for name in (other(colour), colour):
            asg = self._describe_asg(name)
            if asg and int(asg.get("DesiredCapacity", 0)) > 0:
                return int(asg["DesiredCapacity"])
        return 1

    def _update_asg(self, colour: str, what: str, **params) -> None:
        name = self.asg_names[colour]
        self._call(
            self.asg,
            "update_auto_scaling_group",
            f"update auto scaling group {name} ({what})",
            AutoScalingGroupName=name,
            **params,
        )

    def prepare(self, colour: str, artifact: str) -> None:
        desired = self._desired(colour)
        asg = self._require_asg(colour)
        pinned = self._pinned_version(colour, asg)
        base = pinned or self._lt_version(colour, "$Latest")
        data = dict(base.get("LaunchTemplateData") or {})
        data["ImageId"] = artifact
        if self.instance_type:
            data["InstanceType"] = self.instance_type
        if pinned and pinned.get("LaunchTemplateData") == data:
            version = int(pinned["VersionNumber"])
        else:
            created = self._call(
                self.ec2,
                "create_launch_template_version",
                f"create a version of launch template {self.lt_names[colour]}",
                LaunchTemplateName=self.lt_names[colour],
                LaunchTemplateData=data,
                VersionDescription=f"immutable.infra bg_swap {self.app}/{self.env} {colour} {artifact}"[:255],
            )
            version = int(created["LaunchTemplateVersion"]["VersionNumber"])
        self.versions[colour] = version
        self.expected[colour] = artifact
        template = {"LaunchTemplateName": self.lt_names[colour], "Version": str(version)}
        current = [i["InstanceId"] for i in asg.get("Instances", [])]
        images = self._instance_images(current)
        stale = [i for i in current if images.get(i, (None,))[0] != artifact]
        if stale:
            # Replace, never mutate: empty the idle ASG, then scale it up on the new version.
            self._update_asg(colour, "drain to 0", LaunchTemplate=template, MinSize=0, DesiredCapacity=0)
            self._wait_empty(colour)
            self._update_asg(colour, f"scale to {desired}", **capacity_update(dict(asg, MinSize=0), desired))
        else:
            self._update_asg(colour, f"pin version {version}", LaunchTemplate=template, **capacity_update(asg, desired))

    def _wait_empty(self, colour: str) -> None:
        start = self.now()
        while True:
            asg = self._describe_asg(colour) or {}
            left = [i["InstanceId"] for i in asg.get("Instances", [])]
            if not left:
                return
            if self.now() - start > self.drain_timeout:
                raise BlueGreenError(
                    f"{self.asg_names[colour]} still has instances {left} {self.drain_timeout:g}s after it was scaled "
                    "to 0 to replace them; check its scale-in protection and lifecycle hooks",
                    failed_check="deploy",
                )
            self.sleep(self.poll_interval)

    def start(self, colour: str) -> None:
        asg = self._require_asg(colour)
        desired = self._desired(colour)
        self._update_asg(colour, f"scale to {desired}", **capacity_update(asg, desired))

    def stop(self, colour: str) -> None:
        self._update_asg(colour, "scale to 0", MinSize=0, DesiredCapacity=0)

    def _target_health(self, colour: str, ids: list) -> dict:
        arn = self._resolve_target_groups()[colour]
        descriptions = self._call(
            self.elb, "describe_target_health", f"describe target health of {self.tg_names[colour]}", TargetGroupArn=arn
        ).get("TargetHealthDescriptions", [])
        health = {}
        for item in descriptions:
            target = (item.get("Target") or {}).get("Id")
            if target in ids:
                th = item.get("TargetHealth") or {}
                health[target] = (str(th.get("State", "")).lower(), th.get("Reason"))
        return health

    def check_health(self, colour: str) -> HealthResult:
        asg = self._describe_asg(colour)
        if asg is None:
            return HealthResult(False, f"auto scaling group {self.asg_names[colour]} is gone", fatal=True)
        desired = int(asg.get("DesiredCapacity", 0))
        if desired < 1:
            return HealthResult(False, f"{self.asg_names[colour]} has desired capacity 0", fatal=True)
        expected = self.expected.get(colour)
        if expected is None:
            pinned = self._pinned_version(colour, asg)
            expected = ((pinned or {}).get("LaunchTemplateData") or {}).get("ImageId")
            self.expected[colour] = expected
        in_service = self._in_service(asg)
        images = self._instance_images(in_service)
        wrong = sorted(
            f"{i} runs {images.get(i, ('?',))[0]}" for i in in_service if images.get(i, (None,))[0] != expected
        )
        health = self._target_health(colour, in_service)
        healthy = [i for i in in_service if health.get(i, ("",))[0] == "healthy"]
        parts = [
            f"{self.asg_names[colour]}: {len(in_service)}/{desired} instances InService",
            f"{len(healthy)}/{desired} targets healthy in {self.tg_names[colour]}",
        ]
        bad = [
            f"{i} {health[i][0] or 'unknown'}{' (' + health[i][1] + ')' if health[i][1] else ''}"
            for i in in_service
            if i in health and health[i][0] != "healthy"
        ]
        bad += [f"{i} not registered" for i in in_service if i not in health]
        if bad:
            parts.append("not healthy: " + ", ".join(sorted(bad)))
        if wrong:
            parts.append(f"not on {expected}: " + ", ".join(wrong))
        ok = not wrong and len(in_service) >= desired and len(healthy) >= desired
        return HealthResult(ok, "; ".join(parts))

    def set_traffic(self, weights: dict) -> None:
        arns = self._resolve_target_groups()
        listener = self._describe_listener()
        actions = forward_actions(listener.get("DefaultActions"), {arns[c]: w for c, w in weights.items() if w > 0})
        try:
            self._call(
                self.elb,
                "modify_listener",
                f"modify listener {self.listener_arn}",
                ListenerArn=self.listener_arn,
                DefaultActions=actions,
            )
        except AwsError as exc:
            raise BlueGreenError(exc.msg, failed_check="switch") from None

    def verify(self, colour: str) -> HealthResult:
        live = self._live_from(self._describe_listener())
        if live.weights != {colour: 100}:
            return HealthResult(False, f"listener {self.listener_arn} forwards {live.weights or 'nowhere'}")
        health = self.check_health(colour)
        return HealthResult(
            health.ok, f"listener forwards 100% to {self.tg_names[colour]}; {health.detail}", fatal=health.fatal
        )

    def _read_record(self) -> dict:
        try:
            value = self._call(
                self.ssm, "get_parameter", f"read {self.state_name}", missing=PARAMETER_MISSING, Name=self.state_name
            )
        except is_boto3_error_code(PARAMETER_MISSING):
            return {}
        try:
            data = json.loads(value["Parameter"]["Value"])
        except (KeyError, TypeError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def read_state(self) -> dict:
        """The last recorded deploy/rollback when it matches the listener; otherwise derived from the ASGs."""
        live = self.describe()
        record = self._read_record()
        if record.get("live") and record.get("live") == live.colour and not live.mixed:
            return record
        if not live.colour:
            return {}
        previous = other(live.colour)
        status = self.colour_status(previous)
        state = {"live": live.colour, "artifact": self.colour_status(live.colour).artifact}
        if status.exists and status.artifact:
            state.update(previous=previous, previous_artifact=status.artifact)
        return state

    def record_fields(self) -> dict:
        """What the state parameter records besides the state (the ecs backend, a subclass, records its own)."""
        return {"backend": "aws", "listener_arn": self.listener_arn, "launch_template_versions": dict(self.versions)}

    def record(self, state: dict) -> None:
        state = dict(
            state,
            schema=1,
            app=self.app,
            env=self.env,
            updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **self.record_fields(),
        )
        self._call(
            self.ssm,
            "put_parameter",
            f"write {self.state_name}",
            Name=self.state_name,
            Value=json.dumps(state, sort_keys=True),
            Type="String",
            Overwrite=True,
        )

    @contextmanager
    def lock(self):
        lock = SsmLock(self.ssm, self.lock_name, f"{self.app}/{self.env}", self.owner, ttl=self.lock_ttl)
        try:
            lock.acquire()
        except LockedError as exc:
            raise BlueGreenError(str(exc), failed_check="lock") from None
        except (ClientError, BotoCoreError) as exc:
            raise BlueGreenError(
                f"could not take the deploy lock {self.lock_name}: {error_text(exc)}", failed_check="lock"
            ) from None
        try:
            yield lock
        finally:
            try:
                lock.release()
            except (ClientError, BotoCoreError):
                pass  # releasing failed (the run itself is done): the lock expires after lock_ttl

    # -- analysis (deploy/_analysis.py): CloudWatch alarms named by the user and the new colour's target health ----
    def _alarm_states(self, names: list) -> dict:
        states = {}
        for start in range(0, len(names), 100):  # DescribeAlarms takes at most 100 names
            chunk = names[start : start + 100]
            answer = self._call(
                self.cloudwatch, "describe_alarms", f"describe CloudWatch alarms {', '.join(chunk)}", AlarmNames=chunk
            )
            for alarm in answer.get("MetricAlarms", []) + answer.get("CompositeAlarms", []):
                states[alarm["AlarmName"]] = alarm.get("StateValue")
        return states

    def _prometheus(self, settings):
        from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import PrometheusSource

        return PrometheusSource(settings.prometheus, self.app, self.env)

    def analysis_preflight(self, settings) -> None:
        """The named alarms exist (a typo would otherwise pass every window) and Prometheus, when given, answers its
        queries; before any change."""
        if settings.prometheus is not None:
            try:
                self._prometheus(settings).preflight(settings.latency_percentile, settings.window)
            except AnalysisError as exc:
                raise BlueGreenError(f"{exc}; nothing was changed", failed_check="analysis") from None
        if not settings.cloudwatch_alarms:
            return
        if self.cloudwatch is None:
            raise BlueGreenError("analysis.cloudwatch_alarms needs a CloudWatch client", failed_check="analysis")
        missing = sorted(set(settings.cloudwatch_alarms) - set(self._alarm_states(settings.cloudwatch_alarms)))
        if missing:
            raise BlueGreenError(
                f"analysis.cloudwatch_alarms: no such CloudWatch alarm(s) {missing} in region "
                f"{self.region or '(default)'}: create them (put_metric_alarm) or fix the names; nothing was changed",
                failed_check="analysis",
            )

    @property
    def analysis_sample_interval(self) -> float:
        return max(self.poll_interval, 0.2)

    def analysis_begin(self, colour: str, settings) -> dict:
        mark = {"colour": colour, "settings": settings, "alarms": set(), "unhealthy": set(), "samples": 0}
        mark["started"] = time.time()  # Prometheus' queries are evaluated over [started, end] in wall-clock time
        self.analysis_sample(mark)
        return mark

    def analysis_sample(self, mark: dict) -> None:
        """One look at the alarms and the new colour's targets; what was seen bad during the window stays bad."""
        settings = mark["settings"]
        mark["samples"] += 1
        if settings.cloudwatch_alarms:
            states = self._alarm_states(settings.cloudwatch_alarms)
            mark["alarms"].update(name for name, state in states.items() if state == "ALARM")
        if settings.target_health:
            arn = self._resolve_target_groups()[mark["colour"]]
            descriptions = self._call(
                self.elb,
                "describe_target_health",
                f"describe target health of {self.tg_names[mark['colour']]}",
                TargetGroupArn=arn,
            ).get("TargetHealthDescriptions", [])
            for item in descriptions:
                health = item.get("TargetHealth") or {}
                state = str(health.get("State", "")).lower()
                if state != "healthy":
                    target = (item.get("Target") or {}).get("Id")
                    reason = health.get("Reason")
                    mark["unhealthy"].add(f"{target} {state or 'unknown'}{f' ({reason})' if reason else ''}")
            if not descriptions:
                mark["unhealthy"].add(f"no target registered in {self.tg_names[mark['colour']]}")

    def analysis_end(self, mark: dict) -> Figures:
        self.analysis_sample(mark)
        figures = Figures()
        settings = mark["settings"]
        if settings.prometheus is not None:
            figures = self._prometheus(settings).figures(mark["colour"], mark["started"], time.time(), settings)
        figures.alarms = sorted(mark["alarms"])
        figures.unhealthy = sorted(mark["unhealthy"])
        figures.targets_checked = bool(settings.target_health)
        figures.notes.append(f"{mark['samples']} looks at the alarms and targets during the window")
        return figures

    def details(self) -> dict:
        return {
            "listener_arn": self.listener_arn,
            "target_groups": dict(self.tg_arns or {}),
            "asg_names": dict(self.asg_names),
            "launch_templates": dict(self.lt_names),
            "launch_template_versions": dict(self.versions),
            "lock_parameter": self.lock_name,
            "state_parameter": self.state_name,
            "api_calls": self.api_calls(),
            "api_calls_by_operation": dict(sorted(self.counts.items())),
        }
