#!/usr/bin/python

# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
---
module: artifact_ami_evidence
short_description: Store an AMI's SBOM, signature and provenance in S3 and tag the AMIs with their sha256
version_added: 0.1.0
description:
  - The AMI half of the supply chain (C(docs/supply-chain.md), "AMIs"), run by C(playbooks/bake.yml) after the
    capture of an AMI bake and on its cached re-bakes.
  - The SBOM is read by syft on the controller from the builder's package tree (O(package_tree), the tar of its
    package databases that C(playbooks/tasks/bake_ami_sbom.yml) fetched before the capture), or is the CycloneDX JSON
    that syft wrote of the builder's whole filesystem (O(sbom_path)); either way made deterministic and named after
    the source AMI. On a cached re-bake (neither given) the SBOM kept in the bucket is reused as is, when its sha256
    is the one the AMI's tag names; nothing is generated.
  - With a signing key, the payload that binds every AMI ID of the bake with its region, the owning account and the
    SBOM's sha256 is signed (ECDSA P-256, the container path's keys), and an in-toto/SLSA provenance statement
    (subjects the AMIs, materials the base AMI, each role's fingerprint, the source revision and the collection) is
    signed as a DSSE envelope. A signature or statement this key already made of the same AMIs is left alone.
  - "The objects are C(s3://<bucket>/<prefix><source AMI>/sbom.cdx.json), C(signature.json) and
    C(provenance.dsse.json). The AMI and every copy get the tags C(immutable-infra:evidence) (that location),
    C(immutable-infra:sbom-sha256), C(immutable-infra:signature-sha256) and C(immutable-infra:provenance-sha256)."
author:
  - immutable.infra contributors (@immutable-infra)
attributes:
  check_mode:
    support: full
    description: Reads the AMIs and the bucket and says whether anything would be written or tagged; writes nothing.
  diff_mode:
    support: none
    description: No diff.
options:
  amis:
    description: "The bake's AMIs, C({region: ami_id}), as M(immutable.infra.bake_ami) returns them with
      C(state=captured) or C(state=cached)."
    type: dict
    required: true
  bucket:
    description: The S3 bucket that keeps the evidence (it must exist; the controller needs C(s3:GetObject) and
      C(s3:PutObject) on O(prefix)).
    type: str
    required: true
  prefix:
    description: The key prefix inside O(bucket).
    type: str
    default: immutable-infra/
  sbom_path:
    description:
      - The file syft wrote on the builder, fetched to the controller (CycloneDX JSON of the builder's filesystem).
        Omitted on a cached re-bake, where the kept SBOM is reused.
      - Mutually exclusive with O(package_tree).
    type: path
  package_tree:
    description:
      - The builder's package tree on the controller (an uncompressed tar written by the
        C(immutable.infra.package_tree) lookup's command); syft reads it here with the catalogers of an image scan.
        Read, never changed or removed. Omitted on a cached re-bake, where the kept SBOM is reused.
      - A tree that holds no package database, or an unsafe member (an absolute path, a device), fails the task.
    type: path
  syft:
    description:
      - The syft binary that reads O(package_tree) on the controller. Default C(IMMUTABLE_SYFT), else C(syft) on
        C(PATH), else beside the module's Python.
    type: path
  artifacts_dir:
    description: When given, a copy of the SBOM is written to C(<artifacts_dir>/<name>/sbom/<source AMI>.cdx.json).
    type: path
  name:
    description: The record's name (the provenance's name and the local copy's directory).
    type: str
    required: true
  private_key:
    description: The signing key, PEM text (ECDSA P-256). Without a key (and without O(private_key_path)) only the
      SBOM is stored.
    type: str
  private_key_path:
    description: A file holding the signing key.
    type: path
  private_key_password:
    description: The signing key's password.
    type: str
  fingerprint:
    description: The bake's fingerprint.
    type: str
    required: true
  base_ami:
    description: The base AMI ID the bake resolved.
    type: str
    required: true
  roles:
    description: "Each role's fingerprint, C({name: sha256:...}), in bake order."
    type: dict
    default: {}
  revision:
    description: The source revision.
    type: str
    default: ""
  source:
    description: The source repository.
    type: str
    default: ""
  version:
    description: The bake's version.
    type: str
    default: ""
  collection_version:
    description: The collection version of the bake.
    type: str
    default: ""
  bake_id:
    description: The bake ID.
    type: str
    required: true
  started:
    description: The bake's start (seconds since the epoch).
    type: float
    required: true
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
"""

EXAMPLES = r"""
- name: Keep the AMI's SBOM, signature and provenance in S3
  immutable.infra.artifact_ami_evidence:
    region: eu-west-1
    amis: "{{ captured.amis }}"
    bucket: example-supply-chain
    sbom_path: /tmp/web-ami.syft.json
    artifacts_dir: artifacts
    name: web-ami
    private_key_path: /secure/signing.pem
    fingerprint: "{{ fp.fingerprint }}"
    base_ami: ami-0123456789abcdef0
    roles: "{{ fp.inputs.roles }}"
    bake_id: "{{ bake_id }}"
    started: "{{ bake_started }}"
"""

RETURN = r"""
location:
  description: Where the objects are, C(s3://<bucket>/<prefix><source AMI>/).
  returned: always
  type: str
reused:
  description: The objects that were kept as they were (C(sbom), C(signature), C(provenance)).
  returned: always
  type: list
  elements: str
sbom:
  description: The record's C(sbom) field, or null when the AMI has no SBOM (a cached AMI baked without one).
  returned: always
  type: dict
sbom_source:
  description: What the SBOM was read from this run, C(package-tree) (O(package_tree)) or C(image) (O(sbom_path),
    the builder's filesystem); null when no SBOM was generated (the kept one reused, or none).
  returned: always
  type: str
sbom_cache:
  description:
    - With O(package_tree) and O(artifacts_dir), C(hit) when an SBOM of an earlier bake of O(name) was made from the
      same package tree (same syft version and catalogers) and was reused without running syft, else C(miss); null
      otherwise. The index is C(<artifacts_dir>/<name>/sbom/package-trees.json), as for containers.
  returned: always
  type: str
signature:
  description: The record's C(signature) field.
  returned: always
  type: dict
"""

import json
import os
import time

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule
from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import OBJECTS
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import ensure_evidence
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import package_tree_raw
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import remember_tree
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import read_private_key

ARGUMENT_SPEC = dict(
    amis=dict(type="dict", required=True),
    bucket=dict(type="str", required=True),
    prefix=dict(type="str", default="immutable-infra/"),
    sbom_path=dict(type="path"),
    package_tree=dict(type="path"),
    syft=dict(type="path"),
    artifacts_dir=dict(type="path"),
    name=dict(type="str", required=True),
    private_key=dict(type="str", no_log=True),
    private_key_path=dict(type="path"),
    private_key_password=dict(type="str", no_log=True),
    fingerprint=dict(type="str", required=True),
    base_ami=dict(type="str", required=True),
    roles=dict(type="dict", default={}),
    revision=dict(type="str", default=""),
    source=dict(type="str", default=""),
    version=dict(type="str", default=""),
    collection_version=dict(type="str", default=""),
    bake_id=dict(type="str", required=True),
    started=dict(type="float", required=True),
)


def sbom_field(result, local):
    if result["sbom"] is None:
        return None
    document = json.loads(result["sbom"])
    tool = ((document.get("metadata") or {}).get("tools") or {}).get("components") or [{}]
    return {
        "format": "cyclonedx-json",
        "spec_version": str(document.get("specVersion", "")),
        "generator": f"{tool[0].get('name', 'syft')} {tool[0].get('version', '')}".strip(),
        "path": local,
        "sha256": "sha256:" + result["sha256s"]["sbom"],
        "packages": len(document.get("components") or []),
        "reference": result["location"] + OBJECTS["sbom"],
    }


def read_package_tree(module):
    """package_tree_raw (supply/_ami_evidence.py) of O(package_tree); fails the task when the tree is unusable."""
    params = module.params
    amis = {str(region): str(ami) for region, ami in params["amis"].items()}
    cache_dir = os.path.join(params["artifacts_dir"], params["name"], "sbom") if params["artifacts_dir"] else None
    try:
        return package_tree_raw(
            params["package_tree"], f"ec2:{module.region}/{amis.get(module.region, '')}", cache_dir, params["syft"]
        )
    except SbomError as exc:
        module.fail_json(msg=f"cannot read the builder's package tree {params['package_tree']}: {exc}. Nothing stored")
    return None


def run_module(module):
    params = module.params
    try:
        key = read_private_key(params)
    except SignError as exc:
        module.fail_json(msg=f"{exc}. Nothing was stored")
    raw = None
    if params["sbom_path"]:
        try:
            with open(params["sbom_path"], "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            module.fail_json(msg=f"cannot read the builder's SBOM {params['sbom_path']}: {exc.strerror}")
    tree = {}
    if params["package_tree"]:
        tree = read_package_tree(module)
        raw = tree["raw"]
    retry = AWSRetry.jittered_backoff(retries=10)
    clients = {}

    def ec2_for(region):
        if region not in clients:
            clients[region] = module.client("ec2", region=region or module.region, retry_decorator=retry)
        return clients[region]

    bake = {
        "fingerprint": params["fingerprint"],
        "base_ami": params["base_ami"],
        "roles": [{"name": name, "fingerprint": value} for name, value in params["roles"].items()],
        "name": params["name"],
        "revision": params["revision"],
        "source": params["source"],
        "version": params["version"],
        "collection_version": params["collection_version"],
        "bake_id": params["bake_id"],
        "started": params["started"],
        "finished": time.time(),
    }
    try:
        s3 = module.client("s3", retry_decorator=retry)
        result = ensure_evidence(
            ec2_for,
            s3,
            params["amis"],
            module.region,
            params["bucket"],
            params["prefix"],
            raw,
            key,
            bake,
            check_mode=module.check_mode,
            tree_digest=tree.get("tree"),
        )
    except (EvidenceError, SignError) as exc:
        module.fail_json(msg=f"cannot keep the evidence of {json.dumps(params['amis'], sort_keys=True)}: {exc}")
    changed = result["changed"]
    generated = result["sbom"] is not None and "sbom" not in result["reused"]
    local = None
    if result["sbom"] is not None and params["artifacts_dir"]:
        source_ami = str(params["amis"][module.region])
        local = os.path.join("sbom", f"{source_ami}.cdx.json")
        target = os.path.join(params["artifacts_dir"], params["name"], local)
        try:
            with open(target, "rb") as handle:
                same = handle.read() == result["sbom"]
        except OSError:
            same = False
        if not same and not module.check_mode:
            try:
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target + ".tmp", "wb") as handle:
                    handle.write(result["sbom"])
                os.replace(target + ".tmp", target)
            except OSError as exc:
                module.fail_json(msg=f"stored in S3, but cannot write {target}: {exc}")
        if tree.get("key") and generated and not module.check_mode:
            remember_tree(tree["key"], target)
    signed = key is not None and "signature" in result["sha256s"]
    signature = {
        "signed": signed,
        "key_id": key_id(key) if signed else None,
        "signature": result["location"] + OBJECTS["signature"] if signed else None,
        "attestation": result["location"] + OBJECTS["provenance"] if signed else None,
        "provenance": None,
    }
    module.exit_json(
        changed=changed,
        location=result["location"],
        reused=result["reused"],
        sbom=sbom_field(result, local or ""),
        sbom_source=("package-tree" if tree else "image") if generated else None,
        sbom_cache=tree.get("cache") if generated else None,
        signature=signature,
    )


def main():
    module = AnsibleAWSModule(
        argument_spec=with_hidden_access_key(ARGUMENT_SPEC),
        supports_check_mode=True,
        mutually_exclusive=[("private_key", "private_key_path"), ("sbom_path", "package_tree")],
    )
    run_module(module)


if __name__ == "__main__":
    main()
