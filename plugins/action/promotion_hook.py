# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""immutable.infra.promotion_hook: runs here, in the controller's process, not as a module.

Why not a module run: its arguments hold secrets. The hooks' settings check gets the environment's whole hooks
setting, webhook header values included; a webhook call gets a URL that may carry a token in its path (chat
webhooks) and its headers. A module would log its arguments to the system log and return them in ``invocation``
(shown with -v), where only options declared no_log are hidden, and a no_log URL would mask every message that
names it. Here nothing of the arguments is returned but the checked list or the call's result, which hold no header
value and show the URL as module_utils/common/_hooks.safe_url() does.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import HookError
from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import call_webhook
from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import check_hooks
from ansible_collections.immutable.infra.plugins.modules.promotion_hook import ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.modules.promotion_hook import MODULE_CHECKS

CHECK_OPTIONS = {"hooks", "env", "base_dir"}


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if "hooks" not in args:
            # the module's own argument checks and defaults (AnsibleActionFail names what is wrong)
            _validation, params = self.validate_argument_spec(ARGUMENT_SPEC, **MODULE_CHECKS)
            result.update(call_webhook(params, check_mode=bool(self._task.check_mode)))
            return result
        unknown = sorted(set(args) - CHECK_OPTIONS)
        if unknown:
            result.update(
                failed=True,
                msg="immutable.infra.promotion_hook: with hooks, only env and base_dir apply, not "
                + ", ".join(unknown),
            )
            return result
        env = args.get("env")
        if not isinstance(env, str) or not env:
            result.update(failed=True, msg="immutable.infra.promotion_hook: env is required with hooks")
            return result
        base_dir = args.get("base_dir") or os.getcwd()
        try:
            hooks = check_hooks(args.get("hooks"), env, os.path.expanduser(str(base_dir)))
        except HookError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        result.update(changed=False, hooks=hooks)
        return result
