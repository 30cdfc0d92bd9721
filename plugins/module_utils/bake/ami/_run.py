# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bake_ami's entry point: validate the inputs for a state, then run it.

PRIVATE to the collection: no API promise outside it.
"""

from __future__ import annotations

import os

from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._builder import Builder
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cache import CacheLookup
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._capture import Capture
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._cleanup import Cleanup
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import AmiError
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import new_bake_id
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._retention import Retention
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import check_kms_coverage
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import check_shareable
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_accounts
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_ami_name
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_bake_id
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_fingerprint
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_org_arns
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._validation import validate_regions


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
    if state in ("cached", "captured"):
        # also at state=cached: bake.yml's cache lookup passes the sharing settings, so this fails before a builder
        check_shareable(
            region,
            [r for r in params.get("copy_regions") or [] if r != region],
            params.get("region_kms_keys") or {},
            bool(params.get("encrypted")),
            bool(params.get("share_accounts") or params.get("share_organizations") or params.get("share_ous")),
        )
    if state == "retained":
        if not (params.get("family") or params.get("name_prefix")):
            raise AmiError("state=retained needs family (tag) or name_prefix to select the image family")
        if params.get("keep") is None or params["keep"] < 1:
            raise AmiError("keep must be at least 1: retention never deregisters a family's newest image")


def run(state: str, params: dict, ec2, region: str, client_for, check_mode: bool, fetch=None, autoscaling=None) -> dict:
    """Dispatch one state; returns the module result (raises AmiError). autoscaling: the region's Auto Scaling client
    (state=retained keeps the images of its launch configurations)."""
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
        return Retention(ec2, check_mode, autoscaling).run(
            params.get("family"), params.get("name_prefix"), params["keep"], params.get("protected_ids") or []
        )
    raise AmiError(f"unknown state {state!r}")
