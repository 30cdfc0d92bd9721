#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_record
short_description: Write the artifact record of a bake and point latest.json at it
version_added: 0.1.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Writes C(<path>/<name>/records/<bake_id>.json) and C(<path>/<name>/latest.json) atomically (temporary file,
    fsync, rename), creating the directories. The record schema is documented in the collection's C(docs/bake.md).
  - Used by the C(immutable.infra.bake) playbook; one module call, so a cached re-bake stays fast.
  - Records must hold no secrets; this module writes what it is given.
options:
  path:
    description: Directory holding the records of every artifact name.
    type: path
    required: true
  bake_id:
    description: ID of the bake; the record's file name.
    type: str
    required: true
  record:
    description: The record. Needs at least C(schema), C(name), C(kind), C(fingerprint) and C(id).
    type: dict
    required: true
attributes:
  check_mode:
    support: full
    description: Reports whether the files would change and writes nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: Writing the same record again reports no change.
"""

EXAMPLES = r"""
- name: Record the artifact
  immutable.infra.artifact_record:
    path: "{{ playbook_dir }}/artifacts"
    bake_id: "{{ bake_id }}"
    record:
      schema: 1
      name: web
      kind: container
      fingerprint: "{{ bake_fp.fingerprint }}"
      id: "{{ push.image }}"
"""

RETURN = r"""
path:
  description: The record of this bake.
  returned: success
  type: str
  sample: /srv/bakes/artifacts/web/records/20261126T201500-a1b2c3.json
latest:
  description: The copy of the newest record.
  returned: success
  type: str
  sample: /srv/bakes/artifacts/web/latest.json
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import write_record

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    bake_id=dict(type="str", required=True),
    record=dict(type="dict", required=True),
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    try:
        result = write_record(
            module.params["path"], module.params["record"], module.params["bake_id"], check_mode=module.check_mode
        )
    except (RecordError, OSError) as exc:
        module.fail_json(msg=f"cannot write the artifact record under {module.params['path']}: {exc}")
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
