# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of bake_ami's inputs: names, accounts, organisations, regions, KMS coverage, IDs.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ACCOUNT_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AMI_NAME_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import BAKE_ID_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ORG_ARN_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import OU_ARN_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import REGION_RE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_VALUE_MAX
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError


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


def is_aws_managed_key(key: str) -> bool:
    """Whether a key reference names an AWS managed key (alias/aws/..., also as an alias ARN)."""
    return str(key).split(":alias/", 1)[-1].startswith(("alias/aws/", "aws/"))


def check_shareable(
    region: str, copy_regions: list[str], region_kms_keys: dict[str, str], encrypted: bool, sharing: bool
) -> None:
    """An AMI shared with another account must be encrypted with a customer-managed key in every region.

    The builder's volumes are always encrypted, with region_kms_keys[region] or else the account's default aws/ebs
    key; AWS managed keys cannot be shared, so another account could not launch (or copy) such an image.
    """
    if not sharing:
        return
    keys = region_kms_keys or {}
    missing = [r for r in [region, *copy_regions] if not keys.get(r)]
    managed = [r for r in [region, *copy_regions] if keys.get(r) and is_aws_managed_key(keys[r])]
    if missing or managed:
        problems = []
        if missing:
            problems.append(f"no key in region_kms_keys for {', '.join(missing)} (so the default aws/ebs key)")
        if managed:
            problems.append(f"an AWS managed key for {', '.join(f'{r}={keys[r]}' for r in managed)}")
        raise AmiError(
            "sharing (share_accounts/share_organizations/share_ous) needs an image encrypted with a customer-managed"
            f" KMS key in every region, but there is {' and '.join(problems)}: an image encrypted with the aws/ebs"
            " key cannot be launched in another account. Create a customer-managed key per region, allow the shared"
            " accounts to use it (kms:Decrypt, kms:CreateGrant, kms:DescribeKey, kms:ReEncrypt*,"
            " kms:GenerateDataKey*) and set region_kms_keys: {region: key} for"
            f" {', '.join([region, *copy_regions])}"
        )
    if copy_regions and not encrypted:
        raise AmiError(
            "sharing with copy_regions needs encrypted: true, so that each copy is re-encrypted with the"
            " customer-managed key of its region from region_kms_keys (a copy without it gets the aws/ebs key)"
        )


def validate_bake_id(bake_id: str | None) -> None:
    if bake_id is not None and not BAKE_ID_RE.match(bake_id):
        raise AmiError(f"invalid bake_id {bake_id!r}: use 1-63 letters, digits and dashes")


def validate_fingerprint(fingerprint: str | None, state: str) -> None:
    if not fingerprint:
        raise AmiError(f"state={state} needs fingerprint (the bake's content hash, e.g. sha256:...)")
    if len(fingerprint) > TAG_VALUE_MAX:
        raise AmiError("fingerprint is longer than 256 characters, the limit of an AWS tag value")
