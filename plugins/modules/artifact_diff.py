#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_diff
short_description: What changes between two artifacts (containers or AMIs), packages and role inputs
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Compares the SBOMs of two container artifacts (kept by the bakes, see M(immutable.infra.artifact_sbom)) and
    returns the packages added, removed, upgraded and downgraded, with their versions (Debian's version order), and
    the role input files, vars and options that changed between their bakes (from the artifact records'
    C(inputs_manifest), local or kept in the registry; the same sentences a bake prints).
  - "Two AMI artifacts (an AMI ID, or a region map C({region: ami-...}) as JSON) are compared the same way: each
    SBOM is read from the S3 object the AMI's tags name and checked against the sha256 in those tags (what
    M(immutable.infra.bake_ami) stores with C(bake_ami_evidence_bucket)); the record is the local one, else the
    AMIs' tags (without the role inputs). AWS credentials come from the usual C(AWS_*) environment or profile; see
    O(region) and O(endpoint_url). A container cannot be compared with an AMI."
  - C(playbooks/diff.yml) runs it between two environments or artifact IDs and prints RV(summary).
  - Read only, never changes anything. An artifact without an SBOM fails the task naming the fix.
options:
  from_artifact:
    description: The artifact ID compared from (e.g. what is live), C(<repository>@sha256:<64 hex>), or an AMI ID or
      region map of AMIs (JSON).
    type: str
    required: true
  to_artifact:
    description: The artifact ID compared to (e.g. the candidate), of the same kind as O(from_artifact).
    type: str
    required: true
  artifacts_dir:
    description: The bakes' artifacts directory; its records and SBOMs are read first, then the registry's.
    type: path
  app:
    description: The artifact name (C(bake_name), for AMIs C(bake_ami_record_name)) whose local records are read;
      default the last part of the repository of each ID (AMIs - no local record, the AMIs' tags).
    type: str
  limit:
    description: At most this many package lines in RV(summary) (the rest are counted).
    type: int
    default: 50
extends_documentation_fragment:
  - immutable.infra.ami_reader
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Reads in check mode too.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.artifact_sbom
"""

EXAMPLES = r"""
- name: What prod gets if staging's artifact is promoted
  immutable.infra.artifact_diff:
    from_artifact: "{{ lookup('immutable.infra.ledger', 'web/prod', field='live', path=ledger_path) }}"
    to_artifact: "{{ lookup('immutable.infra.ledger', 'web/staging', field='live', path=ledger_path) }}"
    artifacts_dir: "{{ playbook_dir }}/artifacts"
  register: web_diff

- name: Print it
  ansible.builtin.debug:
    msg: "{{ web_diff.summary }}"
"""

RETURN = r"""
from:
  description: The artifact compared from, with where its SBOM and record were read (C(record) null when none).
  returned: success
  type: dict
  sample: {"id": "127.0.0.1:5000/web@sha256:1f0c...", "sbom": "127.0.0.1:5000/web:sha256-1f0c....sbom", "record": null}
  # an AMI: {"id": "{\"eu-west-1\": \"ami-0a1b...\"}", "sbom": "s3://evidence/immutable-infra/ami-0a1b.../sbom.cdx.json",
  #          "record": "ec2:eu-west-1/ami-0a1b..."}
to:
  description: The artifact compared to, as RV(from).
  returned: success
  type: dict
packages:
  description: The package changes.
  returned: success
  type: dict
  contains:
    added:
      description: Packages only in RV(to) (C(name), C(version), C(purl), C(type)).
      type: list
      elements: dict
    removed:
      description: Packages only in RV(from).
      type: list
      elements: dict
    upgraded:
      description: Packages with a newer version in RV(to) (C(name), C(type), C(arch), C(from), C(to), C(purl)).
      type: list
      elements: dict
    downgraded:
      description: Packages with an older version in RV(to).
      type: list
      elements: dict
counts:
  description: How many packages were added, removed, upgraded and downgraded.
  returned: success
  type: dict
  sample: {"added": 1, "removed": 0, "upgraded": 2, "downgraded": 0}
inputs:
  description: The role files, vars and options that changed between the two bakes; null when a record is missing.
  returned: success
  type: list
  elements: str
  sample: ["role probe file tasks/main.yml changed"]
summary:
  description: Compact lines for people, C(+ name version), C(- name version), C(^ name old -> new) (upgrade),
    C(v name old -> new) (downgrade), then the inputs.
  returned: success
  type: list
  elements: str
  sample: ["packages: 1 added, 0 removed, 1 upgraded, 0 downgraded", "+ curl 7.88.1-10+deb12u8",
           "^ openssl 3.0.15-1~deb12u1 -> 3.0.16-1~deb12u1", "inputs: role web file tasks/main.yml changed"]
"""

import json

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import AMI_READER_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_map
from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import boto3_ami_reader
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_clients
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import artifact_diff
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import summary_lines
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import REBAKE_FOR_SBOM
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import read_sbom

ARGUMENT_SPEC = dict(
    from_artifact=dict(type="str", required=True),
    to_artifact=dict(type="str", required=True),
    artifacts_dir=dict(type="path"),
    app=dict(type="str"),
    limit=dict(type="int", default=50),
    **AMI_READER_ARGUMENT_SPEC,
    **registry_argument_spec(),
)


def read_ami_side(module, reader, artifact_id, option):
    """As read_side, for an AMI artifact: the SBOM from the S3 object its tags name (checked), the record local or
    from its tags."""
    params = module.params
    try:
        sbom_where, data = reader.required_sbom(artifact_id)
        record_where, record = find_record(artifact_id, params["artifacts_dir"], params["app"] or "", None, reader)
    except (EvidenceError, RecordError) as exc:
        module.fail_json(msg=f"{option} {artifact_id}: {exc}")
    return {"id": artifact_id, "sbom": sbom_where, "record": record_where}, json.loads(data), record


def read_side(module, client_for, artifact_id, option):
    """({id, sbom, record}, sbom document, record or None) of one artifact."""
    params = module.params
    repository = str(artifact_id).partition("@")[0]
    try:
        host, path = parse_repository(repository)
    except ImageReferenceError as exc:
        module.fail_json(
            msg=f"{option} {artifact_id!r} is not a container artifact ID <repository>@sha256:<hex>: {exc}"
        )
    app = params["app"] or path.rsplit("/", 1)[-1]
    try:
        where, data = read_sbom(client_for(host), artifact_id, params["artifacts_dir"], app)
        record_where, record = find_record(artifact_id, params["artifacts_dir"], app, client_for)
    except (SbomError, RecordError) as exc:
        module.fail_json(msg=f"{option} {artifact_id}: {exc}")
    except RegistryError as exc:
        module.fail_json(msg=f"{option} {artifact_id}: the registry: {exc.message}")
    if data is None:
        module.fail_json(
            msg=f"{option} {artifact_id} has no SBOM, neither locally nor in the registry (tag sha256-<hex>.sbom):"
            f" {REBAKE_FOR_SBOM}"
        )
    return {"id": artifact_id, "sbom": where, "record": record_where}, json.loads(data), record


def run_module(module):
    params = module.params
    amis = [ami_map(params[option]) is not None for option in ("from_artifact", "to_artifact")]
    if amis[0] != amis[1]:
        module.fail_json(
            msg=f"from_artifact {params['from_artifact']} and to_artifact {params['to_artifact']} are not of one kind"
            " (a container and an AMI): their packages cannot be compared; give two container IDs or two AMI IDs"
        )
    if amis[0]:
        reader = boto3_ami_reader(params["region"], params["endpoint_url"])
        old_side, old_sbom, old_record = read_ami_side(module, reader, params["from_artifact"], "from_artifact")
        new_side, new_sbom, new_record = read_ami_side(module, reader, params["to_artifact"], "to_artifact")
    else:
        client_for = registry_clients(params, open_url, module.run_command)
        old_side, old_sbom, old_record = read_side(module, client_for, params["from_artifact"], "from_artifact")
        new_side, new_sbom, new_record = read_side(module, client_for, params["to_artifact"], "to_artifact")
    diff = artifact_diff(old_sbom, new_sbom, old_record, new_record)
    module.exit_json(
        changed=False,
        summary=summary_lines(diff, limit=max(params["limit"], 0)),
        **{"from": old_side, "to": new_side},
        **diff,
    )


def main():
    run_module(
        AnsibleModule(
            argument_spec=ARGUMENT_SPEC,
            supports_check_mode=True,
            mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
            required_together=REGISTRY_REQUIRED_TOGETHER,
        )
    )


if __name__ == "__main__":
    main()
