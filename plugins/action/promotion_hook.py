# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""immutable.infra.promotion_hook: the hooks' settings check runs here, in the controller's process; a webhook call
runs the module as usual.

Why the check is not a module run: its argument is the environment's whole hooks setting, webhook header values
included (they may be secrets). A module would log its arguments to the system log and return them in
``invocation`` (shown with -v), where only options declared no_log are hidden. Here nothing of the argument is
returned but the checked list, which holds no header value and no URL credentials (module_utils/common/_hooks.py).
The webhook call's own ``headers`` option is no_log, so the module hides it everywhere.
"""

from __future__ import annotations

import os

from ansible.plugins.action import ActionBase

from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import HookError
from ansible_collections.immutable.infra.plugins.module_utils.common._hooks import check_hooks

CHECK_OPTIONS = {"hooks", "env", "base_dir"}


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if "hooks" not in args:
            result.update(self._execute_module("immutable.infra.promotion_hook", module_args=args, task_vars=task_vars))
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
