#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_gc
short_description: Delete old bake artifacts from a registry repository, keeping the newest and the ones in use
version_added: 0.1.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Lists the manifests of a repository through the registry HTTP API, takes those with an C(fp-*) tag as bake
    artifacts, keeps the O(keep) newest (by the C(org.opencontainers.image.created) label) and every digest in
    O(protected), and deletes the others with C(DELETE /v2/<repo>/manifests/<digest>), which removes every tag of
    that digest. Manifests without an C(fp-*) tag are never touched.
  - Dry run by default (O(dry_run=true)), which reports what would go and changes nothing. Check mode does the same.
  - The registry must have deletion enabled. Deleting manifests does not free blob storage; run the registry's
    own garbage collection (C(registry garbage-collect)) for that.
options:
  repository:
    description: Repository including the registry host, for example V(127.0.0.1:5000/web). No tag or digest.
    type: str
    required: true
  keep:
    description: Number of newest bake artifacts to keep (at least 1), besides the protected ones.
    type: int
    default: 5
  protected:
    description:
      - Digests (V(sha256:...)) or references (V(host/repo@sha256:...)) that must never be deleted, typically the
        C(live) and C(previous) IDs of every environment in the ledger. Protection is by digest.
    type: list
    elements: str
    default: []
  dry_run:
    description: Only report what would be deleted. Set V(false) to delete.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reports what would be deleted and deletes nothing, like O(dry_run=true).
  diff_mode:
    support: none
    description: No diff; RV(would_delete) lists what goes.
  idempotent:
    support: full
    description: A second run finds nothing more to delete and reports C(changed=false).
seealso:
  - module: immutable.infra.push_image
  - module: immutable.infra.ledger_info
extends_documentation_fragment:
  - immutable.infra.registry
"""

EXAMPLES = r"""
- name: Show which artifacts would go
  immutable.infra.registry_gc:
    repository: 127.0.0.1:5000/web
    keep: 5
    protected: "{{ ledger_ids }}"
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
  register: gc

- name: Delete them
  immutable.infra.registry_gc:
    repository: 127.0.0.1:5000/web
    keep: 5
    protected: "{{ ledger_ids }}"
    dry_run: false
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
"""

RETURN = r"""
repository:
  description: The repository collected.
  returned: always
  type: str
  sample: 127.0.0.1:5000/web
dry_run:
  description: Whether nothing was deleted on purpose (O(dry_run) or check mode).
  returned: always
  type: bool
kept:
  description: Manifests kept, newest first, each with its digest, tags, created time, fingerprint and why.
  returned: always
  type: list
  elements: dict
  sample: [{"digest": "sha256:4f0c...", "tags": ["1.4.0", "fp-3f2a..."], "created": "2026-03-02T10:01:02Z",
            "fingerprint": "sha256:3f2a...", "reason": "one of the 5 newest"}]
would_delete:
  description:
    - Bake artifacts that are (or, in a dry run, would be) deleted, newest first.
    - An artifact whose record is kept in the registry (tag C(sha256-<hex>.record), C(docs/artifact-record.md)) has
      that record manifest's digest as C(record); it is deleted with the artifact. Record tags are never listed as
      manifests of their own.
    - Everything kept beside an artifact under a referrer tag C(sha256-<hex>.<kind>) (its record, its SBOM
      C(.sbom), its signature and attestation) is listed in C(referrers) (C({tag, digest})) and deleted with it; such
      tags are never counted as artifacts.
  returned: always
  type: list
  elements: dict
deleted:
  description: Bake artifacts actually deleted (empty in a dry run).
  returned: always
  type: list
  elements: dict
protected:
  description: The protected digests, as understood from O(protected).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import GcError
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import run_gc


def main():
    module = AnsibleModule(
        argument_spec=dict(
            repository=dict(type="str", required=True),
            keep=dict(type="int", default=5),
            protected=dict(type="list", elements="str", default=[]),
            dry_run=dict(type="bool", default=True),
            **registry_argument_spec(),
        ),
        mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
        required_together=REGISTRY_REQUIRED_TOGETHER,
        supports_check_mode=True,
    )
    p = module.params
    try:
        registry_host, _repo = parse_repository(p["repository"])
        registry = registry_client(registry_host, p, open_url, module.run_command)
        result = run_gc(registry, p["repository"], p["keep"], p["protected"], p["dry_run"], module.check_mode)
    except (GcError, ImageReferenceError, RegistryError) as exc:
        module.fail_json(msg=str(exc), repository=p["repository"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
