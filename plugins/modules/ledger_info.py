#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ledger_info
short_description: Read the promotion ledger (live, previous and history per app and environment)
version_added: 0.1.0
description:
  - Reads the ledger that M(immutable.infra.ledger) writes, from a local JSON file or from AWS SSM Parameter Store.
  - Returns the whole ledger, one app, or one app and environment. Reads never change anything.
  - A corrupt ledger fails with the reason and how to recover; a missing ledger file reads as empty.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  backend:
    description:
      - Where the ledger lives. V(file) needs O(path); V(ssm) needs O(prefix), boto3 and AWS credentials.
    type: str
    choices: [file, ssm]
    default: file
  path:
    description: The ledger JSON file. Required when O(backend=file).
    type: path
  prefix:
    description: The SSM parameter path of the ledger. Required when O(backend=ssm).
    type: str
  app:
    description: Only this app. Without it, every app.
    type: str
  env:
    description: Only this environment of O(app); also returns RV(entry).
    type: str
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - The AWS options and boto3 matter only for O(backend=ssm).
attributes:
  check_mode:
    support: full
    description: Reads only; runs the same in check mode.
  diff_mode:
    support: none
    description: Reads only.
  idempotent:
    support: full
    description: Reads only; never changed.
seealso:
  - module: immutable.infra.ledger
  - plugin: immutable.infra.ledger
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Read what is live for web in every environment
  immutable.infra.ledger_info:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    app: web
  delegate_to: localhost
  register: web_ledger

- name: Show the live artifact in prod
  ansible.builtin.debug:
    msg: "{{ web_ledger.ledger.apps.web.prod.live }}"

- name: Read one entry from the team ledger on SSM
  immutable.infra.ledger_info:
    backend: ssm
    prefix: /immutable-infra/ledger
    region: eu-west-1
    app: api
    env: prod
  register: api_prod
"""

RETURN = r"""
ledger:
  description:
    - The ledger (filtered by O(app) and O(env) when given) in the documented schema (C(docs/ledger.md)).
    - With O(backend=ssm), the history is the bounded one stored in each parameter.
  returned: always
  type: dict
  contains:
    schema:
      description: The schema version.
      type: int
      sample: 1
    apps:
      description:
        - App name -> environment name -> entry (live, previous, history; C(approvals) when some are valid). A
          history record keeps C(evidence) when its run had some (C(docs/ledger.md), "Evidence").
      type: dict
  sample:
    schema: 1
    apps:
      web:
        dev:
          live: "127.0.0.1:5000/web@sha256:bbb..."
          previous: "127.0.0.1:5000/web@sha256:aaa..."
          history: []
entry:
  description: The entry of O(app) in O(env); null when there is none.
  returned: when O(env) is given
  type: dict
  sample: {"live": "ami-0123456789abcdef0", "previous": null, "history": []}
evidence:
  description:
    - The evidence of the newest deploy or promotion recorded in O(env) (its C(id), C(action), C(at), C(by) and
      C(evidence) - C(analysis), C(soak), C(approval), C(hooks)); null when none has evidence.
  returned: when O(env) is given
  type: dict
  sample:
    id: "127.0.0.1:5000/web@sha256:bbb..."
    action: promote
    at: "2026-12-04T10:31:00Z"
    by: "deploy@ci-runner"
    evidence:
      analysis: [{"step": 100, "verdict": "passed", "requests": 240, "errors": 0, "error_rate": 0.0}]
      soak: {"from_env": "staging", "required_min": 30, "live_since": "2026-12-04T10:00:00Z", "minutes": 31}
      approval: {"by": "alice", "at": "2026-12-04T10:20:00Z"}
      hooks: []
revocations:
  description:
    - The revocations of O(app) (C(id), C(kind) V(artifact) or V(base), C(reason), C(by), C(at), C(from), and
      C(artifacts) for a base image), oldest first (C(docs/supply-chain.md), "Revocation"); without O(app), app name
      -> its revocations.
  returned: always
  type: raw
  sample: [{"id": "127.0.0.1:5000/web@sha256:aaa...", "kind": "artifact", "reason": "CVE-2026-1234", "by": "alice",
            "at": "2026-12-04T10:00:00Z", "from": "2026-12-04T10:00:00Z"}]
location:
  description: The ledger file path or the SSM prefix.
  returned: always
  type: str
  sample: /srv/deploy/ledger/ledger.json
"""


from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import filter_state
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import last_evidence

ARGUMENT_SPEC = dict(
    backend=dict(type="str", choices=["file", "ssm"], default="file"),
    path=dict(type="path"),
    prefix=dict(type="str"),
    app=dict(type="str"),
    env=dict(type="str"),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    check_boto3=False,
    required_if=[("backend", "file", ["path"]), ("backend", "ssm", ["prefix"])],
    required_by={"env": "app"},
)
# AnsibleAWSModule adds the common AWS options; the in-process action adds them too
AWS_COMMON_OPTIONS = True


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    try:
        if params["backend"] == "file":
            ledger = FileLedger(params["path"])
        else:
            # imported here: the file ledger runs in process on the controller and must not import boto3
            from ansible_collections.amazon.aws.plugins.module_utils.botocore import check_sdk_version_supported
            from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleBotocoreError

            try:
                check_sdk_version_supported(warn=module.warn)
            except AnsibleBotocoreError as exc:
                module.fail_json(msg=f"backend=ssm needs boto3 and botocore where the module runs: {exc.message}")
            from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

            ledger = SsmLedger(module.client("ssm"), params["prefix"])
        state = filter_state(ledger.read(params["app"]), params["app"], params["env"])
        if params["app"] is not None:
            revocations = ledger.revocations(params["app"])
        else:
            revocations = {app: ledger.revocations(app) for app in sorted(state["apps"])}
            revocations = {app: items for app, items in revocations.items() if items}
    except LedgerError as exc:
        if exc.original is not None:
            module.fail_json_aws(exc.original, msg=exc.context)
        module.fail_json(msg=exc.message)
    result = dict(changed=False, ledger=state, revocations=revocations, location=ledger.location)
    if params["env"] is not None:
        result["entry"] = get_entry(state, params["app"], params["env"])
        result["evidence"] = last_evidence(result["entry"])
    module.exit_json(**result)


def main():
    from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

    run_module(AnsibleAWSModule(argument_spec=with_hidden_access_key(ARGUMENT_SPEC), **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
