# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The record an AMI keeps with itself: the tags bake_ami writes on the image and on every copy.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

An AMI record is read from there when no local record has the ID (docs/artifact-record.md, "Kept with the
artifact"): the promotion step on another machine learns that the artifact was baked, its fingerprint and its bake.
The tags are the essentials (a tag value holds at most 256 characters); the full record stays where the bake wrote it.
"""

from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_IMAGE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BASE_AMI
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_REVISION
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_ROLE


def ami_map(artifact_id):
    """{region or None: ami-...} of an AMI artifact (a region map, its JSON text, or one AMI ID); None otherwise."""
    parsed = artifact_id
    if isinstance(parsed, str) and parsed.strip().startswith("{"):
        try:
            parsed = json.loads(parsed)
        except ValueError:
            return None
    if isinstance(parsed, dict) and parsed and all(str(ami).startswith("ami-") for ami in parsed.values()):
        return {str(region): str(ami) for region, ami in parsed.items()}
    if isinstance(parsed, str) and parsed.strip().startswith("ami-"):
        return {None: parsed.strip()}
    return None


def read_ami_record(ec2_for, artifact_id):
    """What the AMIs of an artifact say about themselves: the bake's tags (bake_ami writes them on the image and every
    copy: fingerprint, role, bake id, revision, created). None when no AMI of it carries a fingerprint tag (not baked
    by the collection); else (where, an abridged record: kind, id, fingerprint, bake_id, revision, created, version).
    RecordError when one is missing, is not a baked image, or the AMIs disagree on the fingerprint (altered tags, or
    a map mixing two bakes). ec2_for(region) gives an EC2 client (region None: the default one)."""
    amis = ami_map(artifact_id)
    if not amis:
        return None
    found = {}
    for region, ami in sorted(amis.items(), key=lambda item: str(item[0])):
        where = f"{ami} ({region or 'default region'})"
        try:
            images = ec2_for(region).describe_images(ImageIds=[ami]).get("Images") or []
        except Exception as exc:  # noqa: BLE001 - botocore's errors; the message names the AMI and the cause
            raise RecordError(f"cannot describe {where} to read its record ({type(exc).__name__}: {exc})") from None
        if not images:
            raise RecordError(f"{where} does not exist (deregistered?): it cannot be deployed")
        found[where] = {tag["Key"]: tag["Value"] for tag in images[0].get("Tags") or []}
    fingerprints = {where: tags.get(TAG_FINGERPRINT) for where, tags in found.items()}
    if not any(fingerprints.values()):
        return None
    if len(set(fingerprints.values())) != 1 or any(tags.get(TAG_ROLE) != ROLE_IMAGE for tags in found.values()):
        raise RecordError(
            "the AMIs of artifact "
            f"{json.dumps(artifact_id, sort_keys=True) if isinstance(artifact_id, dict) else artifact_id} do not"
            " describe one bake: "
            + "; ".join(
                f"{where} {TAG_FINGERPRINT}={tags.get(TAG_FINGERPRINT)!r} {TAG_ROLE}={tags.get(TAG_ROLE)!r}"
                for where, tags in found.items()
            )
            + ". Refused: deploy the region map bake_ami recorded, or re-run that bake to restore its tags"
        )
    tags = next(iter(found.values()))
    where = "ec2:" + ",".join(f"{region}/{ami}" if region else ami for region, ami in sorted(amis.items(), key=str))
    return where, {
        "kind": "ami",
        "id": artifact_id,
        "fingerprint": tags[TAG_FINGERPRINT],
        "bake_id": tags.get(TAG_BAKE_ID, ""),
        "revision": tags.get(TAG_REVISION, ""),
        "created": tags.get(TAG_CREATED, ""),
        "version": "",
        "base": {"image": tags[TAG_BASE_AMI], "id": tags[TAG_BASE_AMI]} if tags.get(TAG_BASE_AMI) else None,
    }


class AmiReader:
    """read_ami for find_record (called with an artifact ID: the AMIs' tags through ec2_for(region)), and what the
    verification gate reads of an AMI artifact: its signature and provenance (verify), its SBOM (sbom), in the S3
    bucket its tags name (supply/_ami_evidence.py). ec2_for(region, service) gives a client of that AWS service."""

    def __init__(self, ec2_for):
        self.ec2_for = ec2_for

    def __call__(self, artifact_id):
        return read_ami_record(self.ec2_for, artifact_id)

    def _s3_for(self, region):
        return self.ec2_for(region, "s3")

    def verify(self, artifact_id, public_keys, record, require_provenance=True):
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import verify_ami

        return verify_ami(self.ec2_for, self._s3_for, ami_map(artifact_id), public_keys, record, require_provenance)

    def sbom(self, artifact_id):
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import read_ami_sbom

        return read_ami_sbom(self.ec2_for, self._s3_for, ami_map(artifact_id))

    def required_sbom(self, artifact_id):
        """(s3://bucket/key, bytes) of the SBOM; EvidenceError when the AMIs carry no evidence tags (saying how to get
        one), the object was replaced or cannot be read."""
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
        from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import read_ami_sbom_at

        where, data = read_ami_sbom_at(self.ec2_for, self._s3_for, ami_map(artifact_id))
        if data is None:
            raise EvidenceError(
                "no SBOM is kept: its AMIs carry no evidence tags. Bake it with bake_sbom=true (the default) and"
                " bake_ami_evidence_bucket set; a cached re-bake of the same inputs adds it"
            )
        return where, data


def ami_reader(ec2_for):
    """read_ami for find_record (and the gate's AMI checks): an AmiReader over ec2_for(region[, service])."""
    return AmiReader(ec2_for)


# the options of a module that reads AMI artifacts (doc fragment immutable.infra.ami_reader)
AMI_READER_ARGUMENT_SPEC = dict(region=dict(type="str"), endpoint_url=dict(type="str"))


def boto3_ami_reader(region=None, endpoint_url=None):
    """An AmiReader through boto3's usual credentials (AWS_* environment or profile): region for an AMI ID given
    without one, endpoint_url for another EC2 and S3 endpoint (the modules' region and endpoint_url options)."""
    import boto3

    session = boto3.session.Session()

    def client_for(ami_region, service="ec2"):
        kwargs = {"region_name": ami_region or region, "endpoint_url": endpoint_url}
        return session.client(service, **{key: value for key, value in kwargs.items() if value})

    return AmiReader(client_for)
