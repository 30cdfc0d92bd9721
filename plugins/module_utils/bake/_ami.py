# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""AMI life cycle for immutable.infra.bake_ami. PRIVATE to the collection: no API promise outside it.

Plain classes with the EC2 clients injected (a boto3 client wrapped in amazon.aws's RetryingBotoClientWrapper, so
every call is made with ``aws_retry=True`` and throttling is retried with jittered backoff). Planners turn the
current state plus the wanted state into a list of actions; appliers run them, and skip every mutation in check
mode. Errors are raised as AmiError(message, original_exception); the module turns them into fail_json.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
    from botocore.exceptions import WaiterError
except ImportError:  # AnsibleAWSModule reports the missing SDK.
    BotoCoreError = ClientError = WaiterError = Exception  # type: ignore[assignment,misc]

# Module utils also run under older target Pythons (datetime.UTC is 3.11+).
UTC = datetime.timezone.utc  # noqa: UP017

TAG_PREFIX = "immutable-infra:"
TAG_FINGERPRINT = TAG_PREFIX + "fingerprint"
TAG_BAKE_ID = TAG_PREFIX + "bake-id"
TAG_CREATED = TAG_PREFIX + "created"
TAG_ROLE = TAG_PREFIX + "role"
TAG_FAMILY = TAG_PREFIX + "family"
TAG_REVISION = TAG_PREFIX + "revision"
TAG_SOURCE_AMI = TAG_PREFIX + "source-ami"
TAG_SOURCE_REGION = TAG_PREFIX + "source-region"
TAG_BASE_AMI = TAG_PREFIX + "base-ami"
TAG_COPIES = TAG_PREFIX + "copies"

ROLE_BUILDER = "builder"
ROLE_KEY_PAIR = "key-pair"
ROLE_SECURITY_GROUP = "security-group"
ROLE_IMAGE = "image"

LIVE_INSTANCE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]

AMI_NAME_RE = re.compile(r"^[a-zA-Z0-9()\[\] ./\-'@_]{3,128}$")
ACCOUNT_RE = re.compile(r"^\d{12}$")
ORG_ARN_RE = re.compile(r"^arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}$")
OU_ARN_RE = re.compile(r"^arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$")
BAKE_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
TAG_VALUE_MAX = 256


class AmiError(Exception):
    """A failure with a message that names the bad input or step and how to fix it."""

    def __init__(self, message: str, original: BaseException | None = None, **result: Any):
        super().__init__(message)
        self.message = message
        self.original = original
        self.result = result


# --------------------------------------------------------------------------------------------------- helpers


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def iso(ts: datetime.datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime.datetime | None:
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def tag_dict(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_spec(resource_type: str, tags: dict[str, str]) -> dict:
    return {"ResourceType": resource_type, "Tags": tag_list(tags)}


def new_bake_id() -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def temp_name(bake_id: str) -> str:
    return f"immutable-infra-{bake_id}"


def encode_copies(amis: dict[str, str]) -> dict[str, str]:
    """{region: ami} -> tags holding "region=ami,..." in chunks that fit AWS's 256-character tag values."""
    items = [f"{r}={a}" for r, a in sorted(amis.items())]
    chunks: list[str] = []
    current = ""
    for item in items:
        candidate = f"{current},{item}" if current else item
        if len(candidate) > TAG_VALUE_MAX:
            chunks.append(current)
            candidate = item
        current = candidate
    if current:
        chunks.append(current)
    return {(TAG_COPIES if i == 0 else f"{TAG_COPIES}-{i + 1}"): chunk for i, chunk in enumerate(chunks)}


def decode_copies(tags: dict[str, str]) -> dict[str, str]:
    amis = {}
    for key, value in tags.items():
        if key == TAG_COPIES or key.startswith(TAG_COPIES + "-"):
            for item in value.split(","):
                region, _sep, ami = item.partition("=")
                if region and ami:
                    amis[region] = ami
    return amis


def snapshot_ids(image: dict) -> list[str]:
    return [
        m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings") or [] if m.get("Ebs", {}).get("SnapshotId")
    ]


def api(client, operation: str, description: str, **params) -> dict:
    """One AWS call with amazon.aws's jittered-backoff retries; SDK errors become AmiError."""
    try:
        return getattr(client, operation)(aws_retry=True, **params)
    except (ClientError, BotoCoreError) as e:
        raise AmiError(f"Failed to {description}", e) from e


def error_code(exc: BaseException | None) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "")
    return ""


def paged(client, operation: str, key: str, description: str, **params) -> list[dict]:
    items: list[dict] = []
    while True:
        page = api(client, operation, description, **params)
        items.extend(page.get(key) or [])
        token = page.get("NextToken")
        if not token:
            return items
        params["NextToken"] = token


def instances_of(client, filters: list[dict], description: str) -> list[dict]:
    reservations = paged(client, "describe_instances", "Reservations", description, Filters=filters)
    return [i for r in reservations for i in r.get("Instances") or []]


def raw_client(client):
    return getattr(client, "client", client)


def wait_for(client, waiter_name: str, what: str, timeout: int, delay: float, **params) -> None:
    """A botocore waiter with max_attempts derived from the timeout (at least one poll)."""
    delay = max(delay, 0)
    attempts = max(1, math.ceil(timeout / delay)) if delay else max(1, int(timeout) + 1)
    waiter = raw_client(client).get_waiter(waiter_name)
    try:
        waiter.wait(WaiterConfig={"Delay": delay, "MaxAttempts": attempts}, **params)
    except WaiterError as e:
        reason = str(e)
        if "Max attempts exceeded" in reason:
            raise AmiError(
                f"Timed out after {timeout}s waiting for {what}; raise wait_timeout if the resource is just slow", e
            ) from e
        raise AmiError(f"Failed waiting for {what}: {reason}", e) from e


# --------------------------------------------------------------------------------------------------- validation


def validate_ami_name(name: str | None) -> None:
    if name is None or not AMI_NAME_RE.match(name):
        raise AmiError(
            f"invalid AMI name {name!r}: AWS requires 3-128 characters of letters, digits and"
            " ( ) [ ] space . / - ' @ _; set name to e.g. 'web-1.4.0-20260101'"
        )


def validate_accounts(accounts: list[str]) -> None:
    bad = [a for a in accounts if not ACCOUNT_RE.match(str(a))]
    if bad:
        raise AmiError(
            f"invalid account id(s) in share_accounts: {', '.join(map(str, bad))}; AWS account ids are 12 digits"
        )


def validate_org_arns(organizations: list[str], ous: list[str]) -> None:
    bad = [a for a in organizations if not ORG_ARN_RE.match(a)]
    if bad:
        raise AmiError(
            f"invalid organization ARN(s) in share_organizations: {', '.join(bad)};"
            " expected arn:aws:organizations::<account>:organization/o-<id>"
        )
    bad = [a for a in ous if not OU_ARN_RE.match(a)]
    if bad:
        raise AmiError(
            f"invalid organizational unit ARN(s) in share_ous: {', '.join(bad)};"
            " expected arn:aws:organizations::<account>:ou/o-<id>/ou-<id>"
        )


def validate_regions(regions: list[str], known: set[str] | None, what: str) -> None:
    for region in regions:
        if not REGION_RE.match(region or "") or (known and region not in known):
            hint = f" (known: {', '.join(sorted(known)[:8])}, ...)" if known else ""
            raise AmiError(f"unknown region {region!r} in {what}: use an AWS region name such as eu-west-1{hint}")


def check_kms_coverage(copy_regions: list[str], region_kms_keys: dict[str, str], encrypted: bool) -> None:
    if not encrypted:
        return
    missing = [r for r in copy_regions if not region_kms_keys.get(r)]
    if missing:
        raise AmiError(
            f"encrypted is true but region_kms_keys has no KMS key for region(s) {', '.join(missing)}; add"
            f" region_kms_keys: {{{missing[0]}: <key id, ARN or alias>}} (a copy is encrypted with a key of its own"
            " region)"
        )


def validate_bake_id(bake_id: str | None) -> None:
    if bake_id is not None and not BAKE_ID_RE.match(bake_id):
        raise AmiError(f"invalid bake_id {bake_id!r}: use 1-63 letters, digits and dashes")


def validate_fingerprint(fingerprint: str | None, state: str) -> None:
    if not fingerprint:
        raise AmiError(f"state={state} needs fingerprint (the bake's content hash, e.g. sha256:...)")
    if len(fingerprint) > TAG_VALUE_MAX:
        raise AmiError("fingerprint is longer than 256 characters, the limit of an AWS tag value")


# --------------------------------------------------------------------------------------------------- cache lookup


def fingerprint_filters(fingerprint: str, states: list[str]) -> list[dict]:
    return [{"Name": f"tag:{TAG_FINGERPRINT}", "Values": [fingerprint]}, {"Name": "state", "Values": states}]


def newest(images: list[dict]) -> dict | None:
    return max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"])) if images else None


class CacheLookup:
    """state=cached: one describe_images call in the source region; the source image lists its copies in a tag."""

    def __init__(self, ec2, region: str):
        self.ec2 = ec2
        self.region = region

    def run(self, fingerprint: str, copy_regions: list[str]) -> dict:
        images = api(
            self.ec2,
            "describe_images",
            f"look up images tagged {TAG_FINGERPRINT}={fingerprint}",
            Owners=["self"],
            Filters=fingerprint_filters(fingerprint, ["available"]),
        ).get("Images", [])
        image = newest(images)
        amis: dict[str, str] = {}
        if image:
            amis = decode_copies(tag_dict(image))
            amis[self.region] = image["ImageId"]
        wanted = [self.region] + [r for r in copy_regions if r != self.region]
        missing = [r for r in wanted if r not in amis]
        return {
            "changed": False,
            "hit": not missing,
            "amis": amis,
            "missing_regions": missing,
            "image_id": image["ImageId"] if image else None,
            "tags": tag_dict(image) if image else {},
        }


# --------------------------------------------------------------------------------------------------- builder


def resolve_base_ami(ec2, base_ami: str | None, base_filter: dict | None) -> dict:
    if base_ami:
        images = api(ec2, "describe_images", f"describe base AMI {base_ami}", ImageIds=[base_ami]).get("Images", [])
        if not images:
            raise AmiError(f"base_ami {base_ami} not found in this region; check the id and the region")
        return images[0]
    filters = [{"Name": "name", "Values": [base_filter["name"]]}, {"Name": "state", "Values": ["available"]}]
    if base_filter.get("architecture"):
        filters.append({"Name": "architecture", "Values": [base_filter["architecture"]]})
    owners = base_filter.get("owners") or ["self"]
    images = api(ec2, "describe_images", "resolve base_ami_filter", Owners=owners, Filters=filters).get("Images", [])
    image = newest(images)
    if not image:
        arch = f", architecture={base_filter['architecture']}" if base_filter.get("architecture") else ""
        raise AmiError(
            f"base_ami_filter matched no available image (name={base_filter['name']!r}, owners={owners}{arch});"
            " fix the name pattern or owners, or set base_ami to an AMI id"
        )
    return image


def detect_controller_ip(fetch: Callable[[str], str], url: str) -> str:
    try:
        text = fetch(url).strip()
        socket.inet_aton(text)
    except Exception as e:  # noqa: BLE001 - any failure means: tell the user to set ssh_cidr
        raise AmiError(
            f"could not detect the controller's public IP from {url} ({e}); set ssh_cidr to the address range"
            " the controller connects from (e.g. 203.0.113.7/32)",
            e if isinstance(e, Exception) else None,
        ) from e
    return f"{text}/32"


def wait_for_ssh_banner(host: str, port: int, timeout: float, interval: float = 2.0) -> bool:
    """True once something at host:port sends an SSH banner ("SSH-"), False when `timeout` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            with socket.create_connection((host, port), timeout=min(5.0, max(remaining, 0.1))) as conn:
                conn.settimeout(min(5.0, max(deadline - time.monotonic(), 0.1)))
                if conn.recv(4).startswith(b"SSH-"):
                    return True
        except OSError:
            pass
        time.sleep(min(interval, max(deadline - time.monotonic(), 0)))


def write_private_key(path: str, material: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, material.encode())
    finally:
        os.close(fd)


def builder_view(instance: dict, bake_id: str, params: dict, sg_id: str | None, key_name: str | None) -> dict:
    public_ip = instance.get("PublicIpAddress")
    private_ip = instance.get("PrivateIpAddress")
    use_public = params.get("ssh_interface", "public_ip") == "public_ip"
    address = (public_ip if use_public and public_ip else None) or private_ip
    return {
        "instance_id": instance["InstanceId"],
        "state": instance.get("State", {}).get("Name"),
        "public_ip": public_ip,
        "private_ip": private_ip,
        "address": address,
        "private_key_path": params.get("private_key_path"),
        "key_name": key_name or instance.get("KeyName"),
        "security_group_id": sg_id or next((g["GroupId"] for g in instance.get("SecurityGroups") or []), None),
        "bake_id": bake_id,
        "base_ami": instance.get("ImageId"),
    }


class Builder:
    """state=builder: temporary key pair + security group (port 22 from ssh_cidr only) + IMDSv2 builder."""

    def __init__(
        self,
        ec2,
        region: str,
        check_mode: bool,
        fetch: Callable[[str], str] | None = None,
        ssh_probe: Callable[[str, int, float], bool] = wait_for_ssh_banner,
        poll_interval: float = 5,
    ):
        self.ec2 = ec2
        self.region = region
        self.check_mode = check_mode
        self.fetch = fetch
        self.ssh_probe = ssh_probe
        self.poll_interval = poll_interval

    def existing(self, bake_id: str) -> dict | None:
        found = instances_of(
            self.ec2,
            [
                {"Name": f"tag:{TAG_BAKE_ID}", "Values": [bake_id]},
                {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_BUILDER]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ],
            f"look up the builder of bake {bake_id}",
        )
        return found[0] if found else None

    def resolve_vpc(self, subnet_id: str | None, vpc_id: str | None) -> str:
        if vpc_id:
            return vpc_id
        if subnet_id:
            subnets = api(self.ec2, "describe_subnets", f"describe subnet {subnet_id}", SubnetIds=[subnet_id])
            return subnets["Subnets"][0]["VpcId"]
        vpcs = api(
            self.ec2, "describe_vpcs", "find the default VPC", Filters=[{"Name": "isDefault", "Values": ["true"]}]
        ).get("Vpcs", [])
        if not vpcs:
            raise AmiError(f"no default VPC in {self.region}: set subnet_id (and vpc_id) for the builder")
        return vpcs[0]["VpcId"]

    def plan(self, params: dict) -> dict:
        bake_id = params["bake_id"]
        current = self.existing(bake_id)
        if current:
            return {"bake_id": bake_id, "existing": current, "actions": []}
        base = resolve_base_ami(self.ec2, params.get("base_ami"), params.get("base_ami_filter"))
        ssh_cidr = params.get("ssh_cidr") or detect_controller_ip(self.fetch, params["ip_check_url"])
        vpc_id = self.resolve_vpc(params.get("subnet_id"), params.get("vpc_id"))
        name = temp_name(bake_id)
        actions = [
            {"action": "create_key_pair", "key_name": name, "private_key_path": params["private_key_path"]},
            {"action": "create_security_group", "group_name": name, "vpc_id": vpc_id, "ssh_cidr": ssh_cidr},
            {"action": "run_instances", "base_ami": base["ImageId"], "instance_type": params["instance_type"]},
        ]
        return {"bake_id": bake_id, "base": base, "ssh_cidr": ssh_cidr, "vpc_id": vpc_id, "actions": actions}

    def tags(self, bake_id: str, role: str, created: str) -> dict[str, str]:
        return {"Name": temp_name(bake_id), TAG_BAKE_ID: bake_id, TAG_ROLE: role, TAG_CREATED: created}

    def launch_spec(self, params: dict, plan: dict, key_name: str, sg_id: str, created: str) -> dict:
        base = plan["base"]
        bake_id = plan["bake_id"]
        root = base.get("RootDeviceName") or "/dev/xvda"
        base_size = next(
            (m["Ebs"].get("VolumeSize") for m in base.get("BlockDeviceMappings") or [] if m.get("DeviceName") == root),
            None,
        )
        ebs: dict[str, Any] = {"Encrypted": True, "DeleteOnTermination": True, "VolumeType": params["volume_type"]}
        size = params.get("volume_size") or base_size
        if size:
            ebs["VolumeSize"] = size
        kms = (params.get("region_kms_keys") or {}).get(self.region)
        if kms:
            ebs["KmsKeyId"] = kms
        spec: dict[str, Any] = {
            "ImageId": base["ImageId"],
            "InstanceType": params["instance_type"],
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": key_name,
            "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
            "BlockDeviceMappings": [{"DeviceName": root, "Ebs": ebs}],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                tag_spec("instance", {**self.tags(bake_id, ROLE_BUILDER, created), TAG_BASE_AMI: base["ImageId"]}),
                tag_spec("volume", self.tags(bake_id, ROLE_BUILDER, created)),
            ],
        }
        if params.get("associate_public_ip_address") is not None:
            nic: dict[str, Any] = {
                "DeviceIndex": 0,
                "Groups": [sg_id],
                "AssociatePublicIpAddress": params["associate_public_ip_address"],
                "DeleteOnTermination": True,
            }
            if params.get("subnet_id"):
                nic["SubnetId"] = params["subnet_id"]
            spec["NetworkInterfaces"] = [nic]
        else:
            spec["SecurityGroupIds"] = [sg_id]
            if params.get("subnet_id"):
                spec["SubnetId"] = params["subnet_id"]
        if params.get("iam_instance_profile"):
            profile = params["iam_instance_profile"]
            spec["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
        return spec

    def run(self, params: dict) -> dict:
        plan = self.plan(params)
        bake_id = plan["bake_id"]
        if plan.get("existing"):
            builder = builder_view(plan["existing"], bake_id, params, None, None)
            if not self.check_mode and params.get("wait_for_ssh"):
                self.ensure_ssh(params, builder, bake_id, remove_on_failure=False)
            return {"changed": False, "builder": builder, "bake_id": bake_id, "actions": []}
        result = {"changed": True, "bake_id": bake_id, "actions": plan["actions"], "ssh_cidr": plan["ssh_cidr"]}
        if self.check_mode:
            result["builder"] = {"bake_id": bake_id, "base_ami": plan["base"]["ImageId"]}
            return result
        created = iso(utcnow())
        name = temp_name(bake_id)
        try:
            key = api(
                self.ec2,
                "create_key_pair",
                "create the temporary key pair",
                KeyName=name,
                KeyType=params["key_type"],
                TagSpecifications=[tag_spec("key-pair", self.tags(bake_id, ROLE_KEY_PAIR, created))],
            )
            write_private_key(params["private_key_path"], key.pop("KeyMaterial"))
            sg_id = api(
                self.ec2,
                "create_security_group",
                "create the temporary security group",
                GroupName=name,
                Description=f"immutable.infra bake {bake_id}: SSH from the controller only",
                VpcId=plan["vpc_id"],
                TagSpecifications=[tag_spec("security-group", self.tags(bake_id, ROLE_SECURITY_GROUP, created))],
            )["GroupId"]
            api(
                self.ec2,
                "authorize_security_group_ingress",
                f"open port 22 to {plan['ssh_cidr']}",
                GroupId=sg_id,
                IpPermissions=[
                    {
                        "IpProtocol": "tcp",
                        "FromPort": 22,
                        "ToPort": 22,
                        "IpRanges": [{"CidrIp": plan["ssh_cidr"], "Description": "bake controller"}],
                    }
                ],
            )
            spec = self.launch_spec(params, plan, name, sg_id, created)
            instance_id = api(self.ec2, "run_instances", "launch the builder", **spec)["Instances"][0]["InstanceId"]
            wait_for(
                self.ec2,
                "instance_running",
                f"builder {instance_id} to run",
                params["wait_timeout"],
                self.poll_interval,
                InstanceIds=[instance_id],
            )
            instance = instances_of(
                self.ec2, [{"Name": "instance-id", "Values": [instance_id]}], "describe the builder"
            )[0]
        except AmiError as e:
            removed = Cleanup(self.ec2, self.region, False, poll_interval=self.poll_interval).remove_bake(
                bake_id, params.get("private_key_path"), params["wait_timeout"]
            )
            raise AmiError(
                f"{e.message}; the bake's temporary resources were removed", e.original, removed=removed
            ) from e
        builder = builder_view(instance, bake_id, params, sg_id, name)
        if params.get("wait_for_ssh"):
            self.ensure_ssh(params, builder, bake_id, remove_on_failure=True)
        result["builder"] = builder
        return result

    def ensure_ssh(self, params: dict, builder: dict, bake_id: str, remove_on_failure: bool) -> None:
        host = params.get("ssh_host") or builder["address"]
        port = params["ssh_port"]
        if self.ssh_probe(host, port, params["ssh_timeout"]):
            return
        removed = None
        if remove_on_failure:
            removed = Cleanup(self.ec2, self.region, False, poll_interval=self.poll_interval).remove_bake(
                bake_id, params.get("private_key_path"), params["wait_timeout"]
            )
        raise AmiError(
            f"builder {builder['instance_id']} did not answer SSH on {host}:{port} within {params['ssh_timeout']}s"
            + ("; the builder and its temporary key pair and security group were removed" if removed else "")
            + ". Check that the subnet routes to the controller (public IP or VPN), that ssh_cidr covers the"
            " controller's address, and that the base AMI starts sshd; or raise ssh_timeout",
            removed=removed,
        )


# --------------------------------------------------------------------------------------------------- capture


def plan_launch_permissions(current: list[dict], accounts: list[str], orgs: list[str], ous: list[str]) -> list[dict]:
    have = {(k, v) for perm in current for k, v in perm.items()}
    wanted = (
        [("UserId", a) for a in accounts]
        + [("OrganizationArn", o) for o in orgs]
        + [("OrganizationalUnitArn", u) for u in ous]
    )
    return [{k: v} for k, v in wanted if (k, v) not in have]


def plan_tags(current: dict[str, str], wanted: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in wanted.items() if current.get(k) != v}


class Capture:
    """state=captured: stop, create image, wait, tag (image + snapshots), copy in parallel, share."""

    def __init__(
        self,
        ec2,
        region: str,
        client_for: Callable[[str], Any],
        check_mode: bool,
        poll_interval: float = 15,
        max_workers: int | None = None,
    ):
        self.ec2 = ec2
        self.region = region
        self.client_for = client_for
        self.check_mode = check_mode
        self.poll_interval = poll_interval
        self.max_workers = max_workers

    # ---- lookups
    def find_by_fingerprint(self, client, fingerprint: str) -> dict | None:
        images = api(
            client,
            "describe_images",
            f"look up images tagged {TAG_FINGERPRINT}={fingerprint}",
            Owners=["self"],
            Filters=fingerprint_filters(fingerprint, ["pending", "available"]),
        ).get("Images", [])
        return newest(images)

    def find_builder(self, params: dict) -> dict | None:
        if params.get("instance_id"):
            filters = [{"Name": "instance-id", "Values": [params["instance_id"]]}]
        elif params.get("bake_id"):
            filters = [
                {"Name": f"tag:{TAG_BAKE_ID}", "Values": [params["bake_id"]]},
                {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_BUILDER]},
            ]
        else:
            raise AmiError("state=captured needs instance_id or bake_id to find the builder to capture")
        filters.append({"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]})
        found = instances_of(self.ec2, filters, "look up the builder")
        return found[0] if found else None

    def describe_image(self, client, image_id: str) -> dict:
        images = api(client, "describe_images", f"describe image {image_id}", ImageIds=[image_id]).get("Images", [])
        if not images:
            raise AmiError(f"image {image_id} vanished while capturing")
        return images[0]

    def wait_available(self, client, image_id: str, timeout: int, where: str) -> dict:
        wait_for(
            client,
            "image_available",
            f"image {image_id} in {where} to become available",
            timeout,
            self.poll_interval,
            ImageIds=[image_id],
        )
        return self.describe_image(client, image_id)

    # ---- tags and sharing
    def provenance(self, params: dict, source_ami: str | None, base_ami: str | None, created: str) -> dict[str, str]:
        tags = dict(params.get("tags") or {})
        tags.update({TAG_FINGERPRINT: params["fingerprint"], TAG_ROLE: ROLE_IMAGE, TAG_CREATED: created})
        optional = {
            TAG_BAKE_ID: params.get("bake_id"),
            TAG_FAMILY: params.get("family"),
            TAG_REVISION: params.get("revision"),
            TAG_BASE_AMI: base_ami,
            TAG_SOURCE_AMI: source_ami,
            TAG_SOURCE_REGION: self.region if source_ami else None,
        }
        tags.update({k: str(v) for k, v in optional.items() if v})
        return tags

    def ensure_tags(self, client, image: dict, wanted: dict[str, str], actions: list, region: str) -> bool:
        current = tag_dict(image)
        if TAG_CREATED in current:
            wanted = {**wanted, TAG_CREATED: current[TAG_CREATED]}
        for key in (TAG_BAKE_ID, TAG_BASE_AMI):
            if key in current:  # provenance of the run that made it stays, even when a later run reuses it
                wanted = {**wanted, key: current[key]}
        changed = False
        missing = plan_tags(current, wanted)
        if missing:
            actions.append({"action": "tag_image", "region": region, "image_id": image["ImageId"], "tags": missing})
            if not self.check_mode:
                api(
                    client,
                    "create_tags",
                    f"tag image {image['ImageId']} in {region}",
                    Resources=[image["ImageId"]],
                    Tags=tag_list(missing),
                )
            changed = True
        snaps = snapshot_ids(image)
        if snaps:
            described = api(
                client, "describe_snapshots", f"describe snapshots of {image['ImageId']}", SnapshotIds=snaps
            ).get("Snapshots", [])
            untagged = [s["SnapshotId"] for s in described if plan_tags(tag_dict(s), wanted)]
            if untagged:
                actions.append({"action": "tag_snapshots", "region": region, "snapshot_ids": untagged})
                if not self.check_mode:
                    # Separate call: snapshot TagSpecifications at create_image are not portable (moto crashes).
                    api(
                        client,
                        "create_tags",
                        f"tag snapshots of {image['ImageId']} in {region}",
                        Resources=untagged,
                        Tags=tag_list(wanted),
                    )
                changed = True
        return changed

    def ensure_shared(self, client, image: dict, params: dict, actions: list, region: str) -> bool:
        accounts = params.get("share_accounts") or []
        orgs = params.get("share_organizations") or []
        ous = params.get("share_ous") or []
        if not (accounts or orgs or ous):
            return False
        image_id = image["ImageId"]
        current = api(
            client,
            "describe_image_attribute",
            f"read launch permissions of {image_id}",
            ImageId=image_id,
            Attribute="launchPermission",
        ).get("LaunchPermissions", [])
        add = plan_launch_permissions(current, accounts, orgs, ous)
        changed = False
        if add:
            actions.append({"action": "share_image", "region": region, "image_id": image_id, "add": add})
            if not self.check_mode:
                api(
                    client,
                    "modify_image_attribute",
                    f"share {image_id} in {region}",
                    ImageId=image_id,
                    LaunchPermission={"Add": add},
                )
            changed = True
        if accounts:
            for snap in snapshot_ids(image):
                have = api(
                    client,
                    "describe_snapshot_attribute",
                    f"read volume permissions of {snap}",
                    SnapshotId=snap,
                    Attribute="createVolumePermission",
                ).get("CreateVolumePermissions", [])
                users = sorted(set(accounts) - {p.get("UserId") for p in have})
                if users:
                    actions.append({"action": "share_snapshot", "region": region, "snapshot_id": snap, "add": users})
                    if not self.check_mode:
                        api(
                            client,
                            "modify_snapshot_attribute",
                            f"share snapshot {snap} in {region}",
                            SnapshotId=snap,
                            Attribute="createVolumePermission",
                            OperationType="add",
                            UserIds=users,
                        )
                    changed = True
        return changed

    # ---- the source image
    def create_source(self, params: dict, actions: list) -> tuple[dict | None, bool]:
        builder = self.find_builder(params)
        if not builder:
            which = params.get("instance_id") or f"bake_id {params.get('bake_id')}"
            raise AmiError(
                f"no image tagged with this fingerprint and no live builder for {which} in {self.region}:"
                " run state=builder (and provisioning) first"
            )
        instance_id = builder["InstanceId"]
        base_ami = builder.get("ImageId")
        if builder["State"]["Name"] != "stopped":
            actions.append({"action": "stop_instance", "instance_id": instance_id})
        actions.append({"action": "create_image", "name": params["name"], "instance_id": instance_id})
        if self.check_mode:
            return None, True
        if builder["State"]["Name"] != "stopped":
            api(self.ec2, "stop_instances", f"stop builder {instance_id}", InstanceIds=[instance_id])
        wait_for(
            self.ec2,
            "instance_stopped",
            f"builder {instance_id} to stop",
            params["wait_timeout"],
            self.poll_interval,
            InstanceIds=[instance_id],
        )
        created = iso(utcnow())
        tags = self.provenance(params, None, base_ami, created)
        try:
            image_id = api(
                self.ec2,
                "create_image",
                f"create image {params['name']!r} from {instance_id}",
                InstanceId=instance_id,
                Name=params["name"],
                Description=params.get("description") or f"immutable.infra bake {params.get('bake_id') or ''}".strip(),
                TagSpecifications=[tag_spec("image", tags)],
            )["ImageId"]
        except AmiError as e:
            if error_code(e.original) != "InvalidAMIName.Duplicate":
                raise
            image_id = self.reuse_duplicate(params)
            actions[-1]["reused"] = image_id
        return self.wait_available(self.ec2, image_id, params["wait_timeout"], self.region), True

    def reuse_duplicate(self, params: dict) -> str:
        images = api(
            self.ec2,
            "describe_images",
            f"find image named {params['name']!r}",
            Owners=["self"],
            Filters=[{"Name": "name", "Values": [params["name"]]}],
        ).get("Images", [])
        for image in images:
            if tag_dict(image).get(TAG_FINGERPRINT) == params["fingerprint"]:
                return image["ImageId"]
        other = images[0]["ImageId"] if images else "?"
        raise AmiError(
            f"an image named {params['name']!r} already exists ({other}) without fingerprint"
            f" {params['fingerprint']}: it is another bake's image; choose a different name (e.g. add the"
            " fingerprint or a timestamp) or deregister that image"
        )

    # ---- copies
    def copy_one(self, region: str, source: dict, params: dict) -> dict:
        client = self.client_for(region)
        actions: list = []
        existing = self.find_by_fingerprint(client, params["fingerprint"])
        changed = False
        tags = self.provenance(params, source["ImageId"], tag_dict(source).get(TAG_BASE_AMI), iso(utcnow()))
        if existing:
            image = existing
        else:
            changed = True
            kms = (params.get("region_kms_keys") or {}).get(region)
            actions.append(
                {
                    "action": "copy_image",
                    "region": region,
                    "source": source["ImageId"],
                    "encrypted": bool(params.get("encrypted")),
                    "kms_key_id": kms,
                }
            )
            if self.check_mode:
                return {"region": region, "image_id": None, "changed": True, "actions": actions}
            request: dict[str, Any] = {
                "SourceImageId": source["ImageId"],
                "SourceRegion": self.region,
                "Name": source.get("Name") or params["name"],
                "Description": source.get("Description") or "",
                "ClientToken": hashlib.sha256(f"{source['ImageId']}:{region}".encode()).hexdigest()[:48],
            }
            if params.get("encrypted"):
                request["Encrypted"] = True
                if kms:
                    request["KmsKeyId"] = kms
            image_id = api(client, "copy_image", f"copy {source['ImageId']} to {region}", **request)["ImageId"]
            # Tag at once (copy_image's own tag options are not portable): a killed run's copy is found next time.
            api(client, "create_tags", f"tag copy {image_id} in {region}", Resources=[image_id], Tags=tag_list(tags))
            image = {"ImageId": image_id, "State": "pending", "Tags": tag_list(tags)}
        if image.get("State") != "available" and not self.check_mode:
            image = self.wait_available(client, image["ImageId"], params["wait_timeout"], region)
        changed |= self.ensure_tags(client, image, tags, actions, region)
        changed |= self.ensure_shared(client, image, params, actions, region)
        return {"region": region, "image_id": image["ImageId"], "changed": changed, "actions": actions}

    def copy_all(self, regions: list[str], source: dict, params: dict) -> tuple[dict, dict]:
        results: dict[str, dict] = {}
        failures: dict[str, str] = {}
        if not regions:
            return results, failures
        for region in regions:  # create clients up front: botocore sessions are not thread-safe, clients are
            self.client_for(region)
        with ThreadPoolExecutor(max_workers=self.max_workers or len(regions)) as pool:
            futures = {region: pool.submit(self.copy_one, region, source, params) for region in regions}
            for region, future in futures.items():
                try:
                    results[region] = future.result()
                except AmiError as e:
                    detail = str(e.original) if e.original else ""
                    failures[region] = f"{e.message}: {detail}" if detail else e.message
                except Exception as e:  # noqa: BLE001 - report per region, never lose the others
                    failures[region] = f"{type(e).__name__}: {e}"
        return results, failures

    def run(self, params: dict) -> dict:
        actions: list = []
        changed = False
        source = self.find_by_fingerprint(self.ec2, params["fingerprint"])
        if source:
            actions.append({"action": "reuse_image", "image_id": source["ImageId"]})
            if source.get("State") != "available" and not self.check_mode:
                source = self.wait_available(self.ec2, source["ImageId"], params["wait_timeout"], self.region)
        else:
            source, changed = self.create_source(params, actions)
        copy_regions = [r for r in params.get("copy_regions") or [] if r != self.region]
        if source is None:  # check mode, nothing created yet: report the whole plan
            for region in copy_regions:
                actions.append({"action": "copy_image", "region": region})
            return {"changed": True, "amis": {}, "actions": actions, "image_id": None}
        wanted_tags = self.provenance(params, None, tag_dict(source).get(TAG_BASE_AMI), iso(utcnow()))
        changed |= self.ensure_tags(self.ec2, source, wanted_tags, actions, self.region)
        changed |= self.ensure_shared(self.ec2, source, params, actions, self.region)
        results, failures = self.copy_all(copy_regions, source, params)
        amis = {self.region: source["ImageId"]}
        for region, res in results.items():
            actions.extend(res["actions"])
            changed |= res["changed"]
            if res["image_id"]:
                amis[region] = res["image_id"]
        recorded = decode_copies(tag_dict(source))
        copies = {r: a for r, a in amis.items() if r != self.region}
        if copies and {**recorded, **copies} != recorded:
            new_tags = encode_copies({**recorded, **copies})
            actions.append({"action": "record_copies", "image_id": source["ImageId"], "tags": new_tags})
            if not self.check_mode:
                api(
                    self.ec2,
                    "create_tags",
                    f"record copies on {source['ImageId']}",
                    Resources=[source["ImageId"]],
                    Tags=tag_list(new_tags),
                )
            changed = True
        result = {
            "changed": changed,
            "amis": amis,
            "image_id": source["ImageId"],
            "name": source.get("Name"),
            "actions": actions,
        }
        if failures:
            raise AmiError(
                "copying the image failed in region(s) "
                + "; ".join(f"{r}: {msg}" for r, msg in sorted(failures.items()))
                + ". The image and the successful copies are kept and tagged with the fingerprint: re-run the same"
                " task to copy only the missing regions",
                failed_regions=failures,
                **result,
            )
        return result


# --------------------------------------------------------------------------------------------------- cleanup


def resource_age(resource: dict, now: datetime.datetime, fallback_key: str | None) -> float | None:
    created = parse_time(tag_dict(resource).get(TAG_CREATED)) or (
        parse_time(resource.get(fallback_key)) if fallback_key else None
    )
    return (now - created).total_seconds() if created else None


def plan_orphans(
    instances: list[dict], key_pairs: list[dict], groups: list[dict], now: datetime.datetime, min_age: int
) -> dict:
    """Group temporary resources by bake id; keep only bakes whose every resource is older than min_age."""
    bakes: dict[str, dict] = {}
    young: set[str] = set()
    for kind, items, fallback in (
        ("instances", instances, "LaunchTime"),
        ("key_pairs", key_pairs, "CreateTime"),
        ("security_groups", groups, None),
    ):
        for item in items:
            bake_id = tag_dict(item).get(TAG_BAKE_ID)
            if not bake_id:
                continue
            age = resource_age(item, now, fallback)
            if age is None or age < min_age:
                young.add(bake_id)
            bakes.setdefault(bake_id, {"instances": [], "key_pairs": [], "security_groups": []})[kind].append(item)
    return {b: r for b, r in sorted(bakes.items()) if b not in young}


class Cleanup:
    """state=absent: remove a bake's builder, key pair and security group, or sweep orphans of killed runs."""

    def __init__(self, ec2, region: str, check_mode: bool, poll_interval: float = 5, now=utcnow):
        self.ec2 = ec2
        self.region = region
        self.check_mode = check_mode
        self.poll_interval = poll_interval
        self.now = now

    def tagged(self, bake_id: str | None) -> tuple[list[dict], list[dict], list[dict]]:
        tag_filter = (
            {"Name": f"tag:{TAG_BAKE_ID}", "Values": [bake_id]}
            if bake_id
            else {"Name": "tag-key", "Values": [TAG_BAKE_ID]}
        )
        role_filter = {"Name": f"tag:{TAG_ROLE}", "Values": [ROLE_BUILDER, ROLE_KEY_PAIR, ROLE_SECURITY_GROUP]}
        instances = instances_of(
            self.ec2,
            [tag_filter, role_filter, {"Name": "instance-state-name", "Values": LIVE_INSTANCE_STATES}],
            "look up builders",
        )
        keys = api(
            self.ec2, "describe_key_pairs", "look up temporary key pairs", Filters=[tag_filter, role_filter]
        ).get("KeyPairs", [])
        groups = paged(
            self.ec2,
            "describe_security_groups",
            "SecurityGroups",
            "look up temporary security groups",
            Filters=[tag_filter, role_filter],
        )
        return instances, keys, groups

    @staticmethod
    def summary(instances: list[dict], keys: list[dict], groups: list[dict]) -> dict:
        return {
            "instances": sorted(i["InstanceId"] for i in instances),
            "key_pairs": sorted(k["KeyName"] for k in keys),
            "security_groups": sorted(g["GroupId"] for g in groups),
        }

    def apply(self, instances: list[dict], keys: list[dict], groups: list[dict], timeout: int) -> None:
        ids = [i["InstanceId"] for i in instances]
        if ids:
            api(self.ec2, "terminate_instances", f"terminate {', '.join(ids)}", InstanceIds=ids)
            wait_for(
                self.ec2,
                "instance_terminated",
                f"{', '.join(ids)} to terminate",
                timeout,
                self.poll_interval,
                InstanceIds=ids,
            )
        for key in keys:
            api(self.ec2, "delete_key_pair", f"delete key pair {key['KeyName']}", KeyName=key["KeyName"])
        for group in groups:
            self.delete_group(group["GroupId"], timeout)

    def delete_group(self, group_id: str, timeout: int) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                api(self.ec2, "delete_security_group", f"delete security group {group_id}", GroupId=group_id)
                return
            except AmiError as e:
                code = error_code(e.original)
                if code == "InvalidGroup.NotFound":
                    return
                # The builder's network interface can outlive "terminated" by a few seconds.
                if code != "DependencyViolation" or time.monotonic() > deadline:
                    raise
                time.sleep(self.poll_interval)

    def remove_bake(self, bake_id: str, private_key_path: str | None, timeout: int) -> dict:
        instances, keys, groups = self.tagged(bake_id)
        removed = self.summary(instances, keys, groups)
        if not self.check_mode:
            self.apply(instances, keys, groups, timeout)
        if private_key_path and os.path.exists(private_key_path):
            removed["private_key_path"] = private_key_path
            if not self.check_mode:
                os.unlink(private_key_path)
        return removed

    def run(self, bake_id: str | None, min_age: int, private_key_path: str | None, timeout: int) -> dict:
        if bake_id:
            removed = self.remove_bake(bake_id, private_key_path, timeout)
            changed = any(removed.get(k) for k in ("instances", "key_pairs", "security_groups", "private_key_path"))
            return {"changed": changed, "removed": {bake_id: removed} if changed else {}, "bake_id": bake_id}
        instances, keys, groups = self.tagged(None)
        orphans = plan_orphans(instances, keys, groups, self.now(), min_age)
        removed = {}
        for orphan_id, res in orphans.items():
            removed[orphan_id] = self.summary(res["instances"], res["key_pairs"], res["security_groups"])
            if not self.check_mode:
                self.apply(res["instances"], res["key_pairs"], res["security_groups"], timeout)
        return {"changed": bool(removed), "removed": removed, "bake_id": None}


# --------------------------------------------------------------------------------------------------- retention


def plan_retention(images: list[dict], keep: int, protected: set[str], referenced: dict[str, str]) -> dict:
    ordered = sorted(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]), reverse=True)
    kept = [i["ImageId"] for i in ordered[:keep]]
    delete, skipped = [], []
    for image in ordered[keep:]:
        image_id = image["ImageId"]
        if image_id in protected:
            skipped.append({"image_id": image_id, "reason": "protected (listed in protected_ids)"})
        elif image_id in referenced:
            skipped.append({"image_id": image_id, "reason": f"referenced by {referenced[image_id]}"})
        else:
            delete.append(
                {
                    "image_id": image_id,
                    "name": image.get("Name"),
                    "created": image.get("CreationDate"),
                    "snapshot_ids": snapshot_ids(image),
                }
            )
    return {"kept": kept, "deregister": delete, "skipped": skipped}


class Retention:
    """state=retained: keep the newest N of a family, deregister older ones with their snapshots."""

    def __init__(self, ec2, check_mode: bool):
        self.ec2 = ec2
        self.check_mode = check_mode

    def family_images(self, family: str | None, name_prefix: str | None) -> list[dict]:
        filters = []
        if family:
            filters.append({"Name": f"tag:{TAG_FAMILY}", "Values": [family]})
        if name_prefix:
            filters.append({"Name": "name", "Values": [name_prefix + "*"]})
        return api(self.ec2, "describe_images", "list the family's images", Owners=["self"], Filters=filters).get(
            "Images", []
        )

    def referenced_images(self) -> dict[str, str]:
        """{ami id: "launch template NAME version N"} for every version of every launch template in the region."""
        refs: dict[str, str] = {}
        templates = paged(self.ec2, "describe_launch_templates", "LaunchTemplates", "list launch templates")
        for template in templates:
            versions = paged(
                self.ec2,
                "describe_launch_template_versions",
                "LaunchTemplateVersions",
                f"list versions of launch template {template['LaunchTemplateName']}",
                LaunchTemplateId=template["LaunchTemplateId"],
            )
            for version in versions:
                image_id = (version.get("LaunchTemplateData") or {}).get("ImageId")
                if image_id and image_id not in refs:
                    refs[image_id] = (
                        f"launch template {template['LaunchTemplateName']} version {version.get('VersionNumber')}"
                    )
        return refs

    def run(self, family: str | None, name_prefix: str | None, keep: int, protected_ids: list[str]) -> dict:
        images = self.family_images(family, name_prefix)
        plan = plan_retention(images, keep, set(protected_ids), self.referenced_images() if images else {})
        if not self.check_mode:
            for item in plan["deregister"]:
                api(self.ec2, "deregister_image", f"deregister {item['image_id']}", ImageId=item["image_id"])
                for snap in item["snapshot_ids"]:  # after deregistering: before, AWS answers InvalidSnapshot.InUse
                    try:
                        api(
                            self.ec2,
                            "delete_snapshot",
                            f"delete snapshot {snap} of {item['image_id']}",
                            SnapshotId=snap,
                        )
                    except AmiError as e:
                        if error_code(e.original) != "InvalidSnapshot.NotFound":
                            raise
        return {"changed": bool(plan["deregister"]), **plan}


# --------------------------------------------------------------------------------------------------- entry point


def validate(state: str, params: dict, region: str | None, known_regions: set[str] | None) -> None:
    """Every input check that can be made before any AWS call or resource creation."""
    if not region:
        raise AmiError("no region: set region (or AWS_REGION) for bake_ami")
    validate_regions([region], known_regions, "region")
    validate_bake_id(params.get("bake_id"))
    if state in ("cached", "captured"):
        validate_fingerprint(params.get("fingerprint"), state)
    if state in ("cached", "captured"):
        validate_regions(params.get("copy_regions") or [], known_regions, "copy_regions")
    if state == "builder":
        if not params.get("private_key_path"):
            raise AmiError("state=builder needs private_key_path: the module writes the temporary private key there")
        parent = os.path.dirname(os.path.abspath(params["private_key_path"]))
        if not os.path.isdir(parent):
            raise AmiError(f"private_key_path's directory {parent} does not exist; create it first")
        validate_regions(list((params.get("region_kms_keys") or {}).keys()), known_regions, "region_kms_keys")
    if state == "captured":
        validate_ami_name(params.get("name"))
        validate_accounts(params.get("share_accounts") or [])
        validate_org_arns(params.get("share_organizations") or [], params.get("share_ous") or [])
        validate_regions(list((params.get("region_kms_keys") or {}).keys()), known_regions, "region_kms_keys")
        copy_regions = [r for r in params.get("copy_regions") or [] if r != region]
        check_kms_coverage(copy_regions, params.get("region_kms_keys") or {}, params.get("encrypted"))
    if state == "retained":
        if not (params.get("family") or params.get("name_prefix")):
            raise AmiError("state=retained needs family (tag) or name_prefix to select the image family")
        if params.get("keep") is None or params["keep"] < 1:
            raise AmiError("keep must be at least 1: retention never deregisters a family's newest image")


def run(state: str, params: dict, ec2, region: str, client_for, check_mode: bool, fetch=None) -> dict:
    """Dispatch one state; returns the module result (raises AmiError)."""
    poll = params.get("poll_interval", 15)
    if state == "cached":
        return CacheLookup(ec2, region).run(params["fingerprint"], params.get("copy_regions") or [])
    if state == "builder":
        params = {**params, "bake_id": params.get("bake_id") or new_bake_id()}
        return Builder(ec2, region, check_mode, fetch=fetch, poll_interval=poll).run(params)
    if state == "captured":
        return Capture(ec2, region, client_for, check_mode, poll_interval=poll).run(params)
    if state == "absent":
        return Cleanup(ec2, region, check_mode, poll_interval=poll).run(
            params.get("bake_id"), params["orphan_min_age"], params.get("private_key_path"), params["wait_timeout"]
        )
    if state == "retained":
        return Retention(ec2, check_mode).run(
            params.get("family"), params.get("name_prefix"), params["keep"], params.get("protected_ids") or []
        )
    raise AmiError(f"unknown state {state!r}")
