# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cleanup: the builder and every temporary resource, also orphans of killed runs found by tag.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

import datetime
import os
import time

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import LIVE_INSTANCE_STATES
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_BUILDER
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_KEY_PAIR
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_SECURITY_GROUP
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_ROLE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import api
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import instances_of
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import paged
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import parse_time
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_dict
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import utcnow
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import wait_for


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
            # The builder's network interface can outlive "terminated" by a few seconds: DependencyViolation
            # is retried until the timeout; a group already gone is no failure.
            try:
                api(
                    self.ec2,
                    "delete_security_group",
                    f"delete security group {group_id}",
                    expected=("InvalidGroup.NotFound",),
                    GroupId=group_id,
                )
                return
            except AmiError as e:
                if not isinstance(e.original, is_boto3_error_code("DependencyViolation", e.original)):
                    raise
                if time.monotonic() > deadline:
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
