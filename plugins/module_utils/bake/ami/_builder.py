# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The EC2 builder: base AMI resolution, temporary key pair and security group, launch, SSH readiness.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cache import newest
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cleanup import Cleanup
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_BUILDER
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_KEY_PAIR
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_SECURITY_GROUP
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BASE_AMI
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_ROLE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import api
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import instances_of
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import iso
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_spec
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import temp_name
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import utcnow
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import wait_for


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
