#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_sign
short_description: Sign a pushed container artifact and attest its provenance, beside it in the registry
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Signs the image O(image) (a digest reference) with an ECDSA P-256 key the user holds and stores the signature
    beside it in its repository as cosign does, tag C(sha256-<hex>.sig) (an OCI manifest whose layer is the "simple
    signing" payload naming the repository and the digest, and whose annotation C(dev.cosignproject.cosign/signature)
    is the signature), so C(cosign verify --key) checks it where cosign is installed.
  - Writes the bake's provenance, an in-toto Statement v1 with a SLSA provenance v1 predicate (subject the image's
    digest; the base image ID, each role's fingerprint, the source revision and this collection's version as
    resolved dependencies), in a DSSE envelope signed with the same key, tagged C(sha256-<hex>.att) (cosign's
    attestation tag), and, with O(artifacts_dir), as C(<artifacts_dir>/<name>/provenance/sha256-<hex>.intoto.json).
  - A signature of this digest by this key, and an attestation of this digest signed by this key, are left alone,
    so a cached re-bake writes nothing. Another digest's signature or a modified attestation under those tags is
    replaced; other signers' signatures of this digest are kept.
  - With O(key_check_only=true) only the key is loaded and checked (the bake does this before anything builds).
  - Documentation in C(docs/supply-chain.md).
options:
  image:
    description: The artifact, C(<repository>@sha256:<64 hex>). Required unless O(key_check_only=true).
    type: str
  private_key:
    description:
      - The private key, PEM text (PKCS#8 or SEC1 EC P-256, optionally encrypted). Never logged or returned.
      - Exactly one of O(private_key) and O(private_key_path).
    type: str
  private_key_path:
    description: A file holding the private key PEM.
    type: path
  private_key_password:
    description: The password of an encrypted private key. Never logged or returned.
    type: str
  key_check_only:
    description: Only load the key and return its ID and public key; nothing else is read or written.
    type: bool
    default: false
  name:
    description: The artifact (bake) name. Required unless O(key_check_only=true).
    type: str
  fingerprint:
    description: The bake's fingerprint (C(sha256:<64 hex>)). Required unless O(key_check_only=true).
    type: str
  base:
    description: What the bake started from, C({image, id}) as in the artifact record.
    type: dict
  roles:
    description: The roles and their fingerprints in bake order (the fingerprint lookup's C(inputs.roles)).
    type: dict
  revision:
    description: The bake's source revision (a git commit).
    type: str
    default: ""
  source:
    description: The bake's source URL; may be empty.
    type: str
    default: ""
  version:
    description: The bake's version tag; empty when none.
    type: str
    default: ""
  collection_version:
    description: This collection's version (the fingerprint lookup's C(inputs.collection_version)).
    type: str
    default: ""
  bake_id:
    description: The bake's ID (the record's C(bake_id)).
    type: str
    default: ""
  started:
    description: When the bake started, seconds since the epoch.
    type: float
  finished:
    description: When the bake finished (the record's C(created)), seconds since the epoch; default now.
    type: float
  artifacts_dir:
    description: Also keep the DSSE envelope under C(<artifacts_dir>/<name>/provenance/).
    type: path
extends_documentation_fragment:
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Reads the registry and says what would be written; writes nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: An artifact signed and attested with this key is left alone.
notes:
  - Keys are never committed. Make one with C(openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8
    -nocrypt > signing.pem) and its public key with C(openssl ec -in signing.pem -pubout > signing.pub).
"""

EXAMPLES = r"""
- name: Sign the artifact and attest its provenance
  immutable.infra.artifact_sign:
    image: "{{ bake_push.image }}"
    private_key: "{{ bake_signing_key }}"
    name: web
    fingerprint: "{{ bake_fp.fingerprint }}"
    base:
      image: immutable-infra/base:bookworm
      id: "{{ bake_fp.base_id }}"
    roles: "{{ bake_fp.inputs.roles }}"
    revision: "{{ lookup('ansible.builtin.pipe', 'git rev-parse HEAD') }}"
    collection_version: "{{ bake_fp.inputs.collection_version }}"
    bake_id: "{{ bake_id }}"
    started: "{{ bake_started }}"
    artifacts_dir: "{{ playbook_dir }}/artifacts"

- name: Check the key before anything builds
  immutable.infra.artifact_sign:
    key_check_only: true
    private_key_path: /secure/signing.pem
"""

RETURN = r"""
signed:
  description: Whether the artifact is signed and attested (false with O(key_check_only)).
  returned: success
  type: bool
key_id:
  description: C(sha256:<hex>) of the public key's DER (SubjectPublicKeyInfo).
  returned: success
  type: str
public_key:
  description: The public key, PEM.
  returned: success
  type: str
signature:
  description: The signature in the registry.
  returned: unless O(key_check_only)
  type: dict
  contains:
    reference:
      description: C(<repository>:sha256-<hex>.sig).
      type: str
    digest:
      description: The signature manifest's digest (null in check mode when it would be written).
      type: str
    changed:
      description: Whether it was written in this run.
      type: bool
attestation:
  description: The provenance attestation in the registry, as RV(signature).
  returned: unless O(key_check_only)
  type: dict
provenance_path:
  description: The local copy of the DSSE envelope (with O(artifacts_dir)).
  returned: with O(artifacts_dir), unless O(key_check_only)
  type: str
finished:
  description: The finish time the provenance states (O(finished), or when the task ran); pass it to the record.
  returned: unless O(key_check_only)
  type: float
record_field:
  description:
    - What the artifact record's C(signature) field holds (pass it to M(immutable.infra.artifact_record)'s
      O(immutable.infra.artifact_record#module:signature)); C(provenance) is relative to C(<artifacts_dir>/<name>).
  returned: unless O(key_check_only)
  type: dict
  sample:
    signed: true
    key_id: "sha256:5d1f..."
    signature: "127.0.0.1:5000/web:sha256-9c1e....sig"
    attestation: "127.0.0.1:5000/web:sha256-9c1e....att"
    provenance: provenance/sha256-9c1e....att.json
"""

import json
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import provenance_relative_path
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import ProvenanceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import build_statement
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import public_pem
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import read_private_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import sign_artifact

ARGUMENT_SPEC = dict(
    image=dict(type="str"),
    private_key=dict(type="str", no_log=True),
    private_key_path=dict(type="path"),
    private_key_password=dict(type="str", no_log=True),
    key_check_only=dict(type="bool", default=False),
    name=dict(type="str"),
    fingerprint=dict(type="str"),
    base=dict(type="dict"),
    roles=dict(type="dict"),
    revision=dict(type="str", default=""),
    source=dict(type="str", default=""),
    version=dict(type="str", default=""),
    collection_version=dict(type="str", default=""),
    bake_id=dict(type="str", default=""),
    started=dict(type="float"),
    finished=dict(type="float"),
    artifacts_dir=dict(type="path"),
    **registry_argument_spec(),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE + [("private_key", "private_key_path")],
    required_one_of=[("private_key", "private_key_path")],
    required_together=REGISTRY_REQUIRED_TOGETHER,
    required_if=[("key_check_only", False, ("image", "name", "fingerprint", "base", "roles", "started"))],
)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    try:
        key = read_private_key(params)
    except SignError as exc:
        module.fail_json(msg=f"{exc}. Nothing was signed")
    result = {"changed": False, "signed": False, "key_id": key_id(key), "public_key": public_pem(key)}
    if params["key_check_only"]:
        module.exit_json(**result)
    base = params["base"] or {}
    finished = time.time() if params["finished"] is None else params["finished"]
    try:
        repository, host, path, digest = split_id(params["image"])
        if not base.get("image") or not base.get("id"):
            raise ProvenanceError("base needs image and id (the base image and the ID it resolved to)")
        statement = build_statement(
            repository=repository,
            digest=digest,
            name=params["name"],
            fingerprint=params["fingerprint"],
            base=base,
            roles=[{"name": name, "fingerprint": value} for name, value in params["roles"].items()],
            revision=params["revision"],
            source=params["source"],
            version=params["version"],
            collection_version=params["collection_version"],
            bake_id=params["bake_id"],
            started=params["started"],
            finished=finished,
        )
        client = registry_client(host, params, open_url, module.run_command)
        signed = sign_artifact(client, repository, path, digest, key, statement, check_mode=module.check_mode)
    except (RecordError, ProvenanceError, SignError) as exc:
        module.fail_json(msg=f"cannot sign {params['image']}: {exc}")
    except RegistryError as exc:
        module.fail_json(msg=f"cannot sign {params['image']}: the registry refused: {exc.message}")
    envelope = signed.pop("envelope")
    result.update(signed, signed=True, finished=finished)
    result["changed"] = signed["signature"]["changed"] or signed["attestation"]["changed"]
    if params["artifacts_dir"]:
        target = os.path.join(params["artifacts_dir"], params["name"], provenance_relative_path(digest))
        text = json.dumps(envelope, indent=2, sort_keys=True) + "\n"
        try:
            with open(target, encoding="utf-8") as handle:
                same = handle.read() == text
        except OSError:
            same = False
        if not same:
            result["changed"] = True
            if not module.check_mode:
                try:
                    atomic_write(target, text)
                except OSError as exc:
                    module.fail_json(msg=f"signed, but cannot write {target}: {exc}", **result)
        result["provenance_path"] = target
    result["record_field"] = {
        "signed": True,
        "key_id": result["key_id"],
        "signature": signed["signature"]["reference"],
        "attestation": signed["attestation"]["reference"],
        "provenance": provenance_relative_path(digest) if params["artifacts_dir"] else None,
    }
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
