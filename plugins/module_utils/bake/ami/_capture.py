# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The capture: stop, create image, copy to regions in parallel with per-region KMS keys, share, tag.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cache import fingerprint_filters
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cache import newest
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_BUILDER
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_IMAGE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BASE_AMI
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FAMILY
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_REVISION
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_ROLE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_SOURCE_AMI
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_SOURCE_REGION
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import api
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import decode_copies
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import encode_copies
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import instances_of
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import iso
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import snapshot_ids
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_dict
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_list
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_spec
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import utcnow
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import wait_for


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
        created_image = api(
            self.ec2,
            "create_image",
            f"create image {params['name']!r} from {instance_id}",
            expected=("InvalidAMIName.Duplicate",),
            InstanceId=instance_id,
            Name=params["name"],
            Description=params.get("description") or f"immutable.infra bake {params.get('bake_id') or ''}".strip(),
            TagSpecifications=[tag_spec("image", tags)],
        )
        if created_image is None:  # a run killed after create_image: the image with that name is ours
            image_id = self.reuse_duplicate(params)
            actions[-1]["reused"] = image_id
        else:
            image_id = created_image["ImageId"]
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
