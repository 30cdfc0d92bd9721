# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cache lookup: an AMI with the bake's fingerprint in every wanted region.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import api
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import decode_copies
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import tag_dict


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
