# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: deregister old images and their snapshots, never one that an environment still uses.

In use: listed in protected_ids (the ledger's live and previous IDs, playbooks/gc_ami.yml), the image of an instance
that is not terminated, of a launch configuration, or of any version of a launch template.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FAMILY
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import api
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import instances_of
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import paged
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import snapshot_ids


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

    # every state but terminated: a stopped instance starts again from its image's snapshots
    INSTANCE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]

    def __init__(self, ec2, check_mode: bool, autoscaling=None):
        self.ec2 = ec2
        self.check_mode = check_mode
        self.autoscaling = autoscaling

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
        """{ami id: what uses it}: instances that are not terminated, launch configurations, and every version of
        every launch template in the region."""
        refs: dict[str, str] = {}
        filters = [{"Name": "instance-state-name", "Values": self.INSTANCE_STATES}]
        for instance in instances_of(self.ec2, filters, "list the instances"):
            if instance.get("ImageId") and instance["ImageId"] not in refs:
                refs[instance["ImageId"]] = f"instance {instance['InstanceId']} ({instance['State']['Name']})"
        if self.autoscaling is not None:
            configurations = paged(
                self.autoscaling,
                "describe_launch_configurations",
                "LaunchConfigurations",
                "list launch configurations",
            )
            for configuration in configurations:
                if configuration.get("ImageId") and configuration["ImageId"] not in refs:
                    refs[configuration["ImageId"]] = f"launch configuration {configuration['LaunchConfigurationName']}"
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
                    api(
                        self.ec2,
                        "delete_snapshot",
                        f"delete snapshot {snap} of {item['image_id']}",
                        expected=("InvalidSnapshot.NotFound",),
                        SnapshotId=snap,
                    )
        return {"changed": bool(plan["deregister"]), **plan}
