#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: promotion_hook
short_description: Check an environment's promotion hooks, or post the promotion's JSON to a webhook
version_added: 0.2.0
description:
  - The promotion playbooks (C(deploy.yml), C(promote.yml), C(rollback.yml)) use it for the hooks of
    C(promotion_environments.<env>.hooks) (C(docs/progressive.md)). It does one of two things.
  - With O(hooks), it checks the hooks of O(env) and returns them per phase in RV(hooks), without header values;
    a task file must exist (a relative path is taken from O(base_dir)). Bad settings fail with the setting's name
    and how to fix it.
  - With O(webhook), it sends one HTTP POST of O(payload) as JSON (C(Content-Type application/json)) and fails
    unless the answer is 2xx, naming the URL (without user, password or query string), the status and the start
    of the answer. Redirects are not followed.
  - Header values are never returned or printed. Put tokens in O(headers), not in the URL.
  - The check of O(hooks) runs in the action plugin, in the controller's process, so the settings (webhook header
    values included) are never logged or returned; only RV(hooks) is.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  hooks:
    description:
      - "The environment's hooks, C({pre: [...], post: [...], on_rollback: [...]}); each item is
        C({tasks: <file>, name: <optional>}) or C({webhook: <url>, timeout: <s>, headers: {...}, validate_certs:
        <bool>, name: <optional>}). Mutually exclusive with O(webhook)."
    type: raw
  env:
    description: The environment whose hooks O(hooks) are (for the messages). Required with O(hooks).
    type: str
  base_dir:
    description: Where a relative task file path is taken from (the playbooks give the directory they run from).
    type: path
  webhook:
    description:
      - The URL to post O(payload) to (http or https). Mutually exclusive with O(hooks).
      - "Handled as a secret (chat webhooks carry their token in the path): the action runs the call in the
        controller's process, so the URL is in no invocation and no system log, and messages show it without user,
        password, query string and the path beyond its first segment."
    type: str
  headers:
    description: HTTP headers sent with the POST; the values are never logged or returned.
    type: dict
    default: {}
  timeout:
    description: Seconds to wait for the webhook's answer.
    type: float
    default: 10
  validate_certs:
    description: Verify the webhook's TLS certificate (https).
    type: bool
    default: true
  payload:
    description:
      - The JSON to post, exactly the documented schema (C(docs/progressive.md)) - C(schema), C(hook), C(action),
        C(app), C(env), C(from_env), C(artifact), C(previous_artifact), C(forced), C(reason). Required with
        O(webhook).
    type: dict
  label:
    description: How messages name this hook (the playbooks give e.g. C(pre-promotion hook 1 (webhook URL))).
    type: str
attributes:
  check_mode:
    support: partial
    description: Can run in check mode.
    details: O(hooks) is checked the same; a webhook is not called in check mode.
  diff_mode:
    support: none
    description: Nothing to compare.
  idempotent:
    support: none
    description: Each call with O(webhook) posts again.
seealso:
  - module: immutable.infra.promotion
"""

EXAMPLES = r"""
- name: Check the hooks of prod
  immutable.infra.promotion_hook:
    hooks: "{{ promotion_environments.prod.hooks }}"
    env: prod
    base_dir: "{{ lookup('ansible.builtin.env', 'PWD') }}"
  register: prod_hooks

- name: Tell the release channel
  immutable.infra.promotion_hook:
    webhook: https://hooks.example.com/promotions
    headers:
      Authorization: "Bearer {{ vault_hook_token }}"
    timeout: 5
    payload:
      schema: immutable.infra/promotion-hook/1
      hook: post
      action: promote
      app: web
      env: prod
      from_env: staging
      artifact: 127.0.0.1:5000/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      previous_artifact: null
      forced: false
      reason: null
"""

RETURN = r"""
hooks:
  description:
    - With O(hooks), the hooks per phase (C(pre), C(post), C(on_rollback); empty lists for the phases not set).
      Each item has C(phase), C(index) (in the setting's list), C(kind) (C(tasks) or C(webhook)), C(label), C(name),
      and for a task file C(tasks), its absolute path. No URL or header value.
  returned: when O(hooks) is given
  type: dict
  sample: {"pre": [{"phase": "pre", "index": 0, "kind": "webhook", "name": null,
           "label": "pre-promotion hook 1 (webhook https://hooks.example.com/promotions)"}], "post": [],
           "on_rollback": []}
status:
  description: The webhook's HTTP status.
  returned: when O(webhook) is given and not in check mode
  type: int
  sample: 200
url:
  description: The webhook URL as messages show it (without user, password, query string and the path beyond its
    first segment).
  returned: when O(webhook) is given
  type: str
  sample: https://hooks.example.com/services/…
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import HookError
from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import call_webhook
from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import check_hooks

ARGUMENT_SPEC = dict(
    hooks=dict(type="raw"),
    env=dict(type="str"),
    base_dir=dict(type="path"),
    webhook=dict(type="str"),
    headers=dict(type="dict", default={}, no_log=True),
    timeout=dict(type="float", default=10),
    validate_certs=dict(type="bool", default=True),
    payload=dict(type="dict"),
    label=dict(type="str"),
)
MODULE_CHECKS = dict(
    mutually_exclusive=[("hooks", "webhook")],
    required_one_of=[("hooks", "webhook")],
    required_by={"hooks": ("env",)},
    required_together=[("webhook", "payload")],
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True, **MODULE_CHECKS)
    params = module.params
    if params["webhook"] is None:
        try:
            hooks = check_hooks(params["hooks"], params["env"], params["base_dir"] or os.getcwd())
        except HookError as exc:
            module.fail_json(msg=str(exc))
        module.exit_json(changed=False, hooks=hooks)
    result = call_webhook(params, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
