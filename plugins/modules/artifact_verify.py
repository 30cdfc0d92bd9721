#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_verify
short_description: Verify an artifact's signature and signed provenance against trusted keys and its record
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Fetches the signature (C(sha256-<hex>.sig)) and the provenance attestation (C(sha256-<hex>.att)) kept beside
    the artifact in its repository by M(immutable.infra.artifact_sign), and checks, against a list of trusted public
    keys, that
  - the signature verifies over its payload and the payload names exactly this digest (a signature copied from
    another image, or a tag moved to other content, is refused);
  - the DSSE envelope's signature verifies (a modified statement is refused), the statement's subject is this
    digest, and its materials (fingerprint, base image ID, each role's fingerprint, source revision) equal the
    artifact record's (the local record under O(artifacts_dir), else the one kept in the registry).
  - "An AMI artifact (an AMI ID, or a region map C({region: ami-...}) as JSON) is checked the same way from the S3
    objects its tags name (C(docs/supply-chain.md), \"AMIs\"): the objects' sha256 against the tags, the signature
    against the trusted keys and over every AMI of the artifact with its region and account, the provenance's
    subjects and materials against the record (the local one under O(artifacts_dir)/O(name), else the AMIs' tags).
    AWS credentials come from the usual C(AWS_*) environment or profile; see O(region) and O(endpoint_url)."
  - Read only. Returns a structured result (RV(verified), RV(problems), RV(signature), RV(provenance)) for a
    promotion gate; with O(fail_on_error=true) (the default) the task fails with the problems as its message.
  - Documentation in C(docs/supply-chain.md).
options:
  artifact:
    description: The artifact, C(<repository>@sha256:<64 hex>) (never a tag), or an AMI ID or region map (JSON).
    type: str
    required: true
  public_keys:
    description:
      - The trusted public keys; each is PEM text (C(-----BEGIN PUBLIC KEY-----)) or the path of a file holding
        one. A signature by any of them is accepted.
    type: list
    elements: str
    required: true
  artifacts_dir:
    description: Where the local artifact records are (C(bake_artifacts_dir)); without it, or without a local record
      of the artifact, the record kept in the registry is used.
    type: path
  name:
    description: The artifact name whose local records are searched; default the repository's last path component.
    type: str
  require_provenance:
    description: Also require the provenance attestation (otherwise a missing one is reported, not a problem).
    type: bool
    default: true
  fail_on_error:
    description: Fail the task when a check fails. V(false) returns the result with RV(verified=false).
    type: bool
    default: true
extends_documentation_fragment:
  - immutable.infra.ami_reader
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Read only; the same in check mode.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: Read only.
"""

EXAMPLES = r"""
- name: Refuse an artifact that is not signed by our key
  immutable.infra.artifact_verify:
    artifact: 127.0.0.1:5000/web@sha256:9c1e0d5b2f0e3a4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c
    public_keys:
      - /etc/immutable-infra/signing.pub
    artifacts_dir: "{{ playbook_dir }}/artifacts"

- name: Ask, and decide later (a gate)
  immutable.infra.artifact_verify:
    artifact: "{{ candidate }}"
    public_keys: "{{ trusted_keys }}"
    fail_on_error: false
  register: checked
"""

RETURN = r"""
verified:
  description: Whether the signature (and the provenance, unless O(require_provenance=false) and it is missing)
    passed every check.
  returned: always
  type: bool
problems:
  description: One sentence per failed check, naming what is wrong; empty when verified.
  returned: always
  type: list
  elements: str
  sample: ["no signature: the registry holds no sha256-9c1e….sig for 127.0.0.1:5000/web@sha256:9c1e…"]
signature:
  description: The signature check.
  returned: always
  type: dict
  contains:
    status:
      description: V(valid), V(missing), V(invalid), V(wrong_key) (not signed by a trusted key) or V(other_digest)
        (the payload names another image).
      type: str
    reference:
      description: C(<repository>:sha256-<hex>.sig).
      type: str
    key_id:
      description: The trusted key that verified it (C(sha256:<hex> of its DER)), else null.
      type: str
    detail:
      description: What was found, as a sentence.
      type: str
provenance:
  description: The provenance check.
  returned: always
  type: dict
  contains:
    status:
      description: V(valid), V(missing), V(invalid), V(wrong_key), V(subject_mismatch), V(materials_mismatch) or
        V(no_record) (no artifact record of this digest).
      type: str
    reference:
      description: C(<repository>:sha256-<hex>.att).
      type: str
    key_id:
      description: The trusted key that verified the envelope, else null.
      type: str
    subject:
      description: The digests the statement is about.
      type: list
      elements: str
    materials:
      description: What the statement claims (base, roles, fingerprint, revision, collection_version).
      type: dict
    detail:
      description: What was found, as a sentence.
      type: str
record:
  description: Where the artifact record compared with came from (a file, or C(<repository>:sha256-<hex>.record)).
  returned: always
  type: str
"""


from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import AMI_READER_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_map
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_public_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import verify_artifact

ARGUMENT_SPEC = dict(
    artifact=dict(type="str", required=True),
    public_keys=dict(type="list", elements="str", required=True),
    artifacts_dir=dict(type="path"),
    name=dict(type="str"),
    **AMI_READER_ARGUMENT_SPEC,
    require_provenance=dict(type="bool", default=True),
    fail_on_error=dict(type="bool", default=True),
    **registry_argument_spec(),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
    required_together=REGISTRY_REQUIRED_TOGETHER,
)


def trusted_keys(entries):
    """The public keys of public_keys (PEM text or file paths); SignError names the bad entry."""
    if not entries:
        raise SignError("public_keys is empty: give at least one trusted public key (PEM text or a file)")
    keys = []
    for index, entry in enumerate(entries):
        text = str(entry)
        where = f"public_keys[{index}]"
        if "-----BEGIN" not in text:
            path = text
            where = f"public_keys[{index}] ({path})"
            try:
                with open(path, "rb") as handle:
                    text = handle.read()
            except OSError as exc:
                raise SignError(f"{where} is neither PEM text nor a readable file: {exc.strerror}") from None
        keys.append(load_public_key(text, where=where))
    return keys


def verify_ami_artifact(params, keys, artifact):
    """(result, where the record came from) of an AMI artifact, through boto3's usual credentials."""
    from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import boto3_ami_reader

    reader = boto3_ami_reader(params["region"], params["endpoint_url"])
    try:
        where, record = find_record(artifact, params["artifacts_dir"], params["name"] or "", None, reader)
    except RecordError as exc:
        where, record = f"refused: {exc}", None
    return reader.verify(artifact, keys, record, require_provenance=params["require_provenance"]), where


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    artifact = params["artifact"]
    if ami_map(artifact) is not None:
        try:
            result, where = verify_ami_artifact(params, trusted_keys(params["public_keys"]), artifact)
        except (SignError, EvidenceError) as exc:
            module.fail_json(msg=f"cannot verify {artifact}: {exc}", verified=False, problems=[str(exc)])
        result.update(changed=False, artifact=artifact, record=where)
        if not result["verified"] and params["fail_on_error"]:
            module.fail_json(msg=f"{artifact} is refused: " + " | ".join(result["problems"]), **result)
        module.exit_json(**result)
    try:
        keys = trusted_keys(params["public_keys"])
        repository, host, path, digest = split_id(artifact)
        client = registry_client(host, params, open_url, module.run_command)
        if client.manifest(path, digest) is None:
            raise SignError(f"{artifact} is not in the registry")
        name = params["name"] or path.rsplit("/", 1)[-1]
        try:
            where, record = find_record(artifact, params["artifacts_dir"], name, lambda _host: client)
        except RecordError as exc:
            where, record = f"refused: {exc}", None
        result = verify_artifact(
            client, repository, path, digest, keys, record, require_provenance=params["require_provenance"]
        )
    except (SignError, RecordError) as exc:
        module.fail_json(msg=f"cannot verify {artifact}: {exc}", verified=False, problems=[str(exc)])
    except RegistryError as exc:
        module.fail_json(msg=f"cannot verify {artifact}: {exc.message}", verified=False, problems=[exc.message])
    result.update(changed=False, artifact=artifact, record=where)
    if not result["verified"] and params["fail_on_error"]:
        module.fail_json(msg=f"{artifact} is refused: " + " | ".join(result["problems"]), **result)
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
