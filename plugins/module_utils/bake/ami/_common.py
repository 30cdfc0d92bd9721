# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The AMI life cycle's shared parts: tags, names, AmiError and the AWS call helpers (retries, paging, waiters).

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

import datetime
import math
import re
import time
import uuid
from typing import Any

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
    from botocore.exceptions import WaiterError
except ImportError:  # AnsibleAWSModule reports the missing SDK.
    BotoCoreError = ClientError = WaiterError = Exception  # type: ignore[assignment,misc]


from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

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


def api(client, operation: str, description: str, expected: tuple = (), **params) -> dict | None:
    """One AWS call with amazon.aws's jittered-backoff retries; SDK errors become AmiError.

    An error whose code is in `expected` is no failure: the call returns None (the caller handles that case)."""
    try:
        return getattr(client, operation)(aws_retry=True, **params)
    except is_boto3_error_code(list(expected)):
        return None
    except (ClientError, BotoCoreError) as e:  # pylint: disable=duplicate-except
        raise AmiError(f"Failed to {description}", e) from e


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
