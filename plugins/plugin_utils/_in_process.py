# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Run one of this collection's modules inside its action plugin when the task runs on the controller.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A module run costs about half a second before it does any work: building its zip payload, starting a Python and
compiling every module_utils source from that zip. The bake and promotion playbooks run several controller-side
modules per run (registry look-ups, docker commits, records), so that start-up was a large part of a cached
re-bake. When a task runs on the controller (local connection, no ``environment``, no ``become``, no ``async``), the
action plugin validates the arguments with the module's own argument spec and calls the module's own
``run_module(module)`` with ``InProcessModule``, the few AnsibleModule methods the modules use. Anywhere else the
module runs as usual, so delegating a task to another host behaves exactly as before.

The task's worker process is forked for this task alone and exits after it, so nothing a module does to the
process (environment, working directory) reaches another task.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible.module_utils.common.arg_spec import ModuleArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.text.converters import to_bytes
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase

from ansible_collections.immutable.infra.plugins.plugin_utils import _collection_code_cache

# Each task's worker imports this collection's modules afresh; keep their compiled code (_collection_code_cache.py).
_collection_code_cache.install()

LOCAL_TRANSPORTS = ("local", "ansible.builtin.local")
# what AnsibleModule's own locale check settles on, so tools' output parses the same in and out of process
COMMAND_LOCALE = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LC_MESSAGES": "C.UTF-8"}


class ModuleDone(Exception):
    """exit_json or fail_json was called: carries the module's result."""

    def __init__(self, result):
        super().__init__(result.get("msg", ""))
        self.result = result


class InProcessModule:
    """The part of AnsibleModule this collection's modules use (params, check_mode, run_command, warn, exits)."""

    def __init__(self, params, check_mode, no_log_values=()):
        self.params = params
        self.check_mode = check_mode
        self.no_log_values = set(no_log_values)
        self.warnings = []

    def get_bin_path(self, name, required=False):
        path = shutil.which(name)
        if path is None and required:
            self.fail_json(msg=f"cannot find {name} on PATH ({os.environ.get('PATH', '')}): install it or fix PATH")
        return path

    def warn(self, warning):
        self.warnings.append(warning)

    def exit_json(self, **result):
        result.setdefault("changed", False)
        raise ModuleDone(result)

    def fail_json(self, msg, **result):
        result.update(failed=True, msg=msg)
        raise ModuleDone(result)

    def fail_json_aws(self, exception, msg=None, **result):
        # only the AWS backends call it, and those never run in process (in_process_only_when)
        self.fail_json(msg=f"{msg}: {exception}" if msg else str(exception), **result)

    def run_command(self, args, check_rc=False, data=None, binary_data=False, environ_update=None, **_unused):
        env = dict(os.environ, **COMMAND_LOCALE)
        env.update(environ_update or {})
        if data is not None and not binary_data:
            data = f"{data}\n"
        try:
            proc = subprocess.run(
                [str(arg) for arg in args],
                input=to_bytes(data) if data is not None else None,
                stdin=subprocess.DEVNULL if data is None else None,
                capture_output=True,
                env=env,
                check=False,
            )
        except OSError as exc:
            if check_rc:
                self.fail_json(msg=f"cannot run {args[0]}: {exc}", rc=2)
            raise
        out = to_text(proc.stdout, errors="surrogate_or_strict")
        err = to_text(proc.stderr, errors="surrogate_or_strict")
        if check_rc and proc.returncode != 0:
            self.fail_json(msg=err.strip() or f"{args[0]} exited with {proc.returncode}", rc=proc.returncode)
        return proc.returncode, out, err


def validate_args(module_name, module_file, args):
    """Validate `args` with the module file's own ARGUMENT_SPEC and MODULE_OPTIONS, as AnsibleModule would.

    Returns (params, no_log_values, failed): failed is None, or the failed result naming the module."""
    options = dict(module_file.MODULE_OPTIONS)
    for not_validation in ("supports_check_mode", "check_boto3"):
        options.pop(not_validation, None)
    spec = dict(module_file.ARGUMENT_SPEC)
    # the common AWS options (and their boto3 import) only matter when the task gives one of them
    if getattr(module_file, "AWS_COMMON_OPTIONS", False) and set(args) - set(spec):
        from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec

        spec = dict(aws_argument_spec(), **spec)
    validated = ModuleArgumentSpecValidator(spec, **options).validate(args)
    no_log_values = validated._no_log_values  # pylint: disable=protected-access
    if validated.error_messages:
        failed = {"failed": True, "msg": f"{module_name}: " + "; ".join(validated.error_messages)}
        return None, no_log_values, remove_values(failed, no_log_values)
    return validated.validated_parameters, no_log_values, None


def _has_environment(environment):
    """Whether the task sets environment variables (a play without any gives [{}])."""
    if not environment:
        return False
    if isinstance(environment, list):
        return any(environment)
    return True


class InProcessModuleAction(ActionBase):
    """Base of the action plugins that run their module in process on the controller (see the module docstring).

    A subclass names the module (``module_name``) and returns its module file (``module_file()``), which must
    define ``ARGUMENT_SPEC``, ``MODULE_OPTIONS`` (the other AnsibleModule keyword arguments) and
    ``run_module(module)``; ``AWS_COMMON_OPTIONS = True`` when it is an AnsibleAWSModule (the common AWS options
    are then validated too). ``in_process_only_when`` keeps the paths that need AWS clients out of process.
    """

    module_name = ""
    # {option: (default, values run in process)}: e.g. only the file ledger, not the SSM one (it needs AWS clients)
    in_process_only_when = {}

    @staticmethod
    def module_file():
        raise NotImplementedError

    def _in_process_allowed(self, args=None, only_when=None):
        args = self._task.args if args is None else args
        only_when = self.in_process_only_when if only_when is None else only_when
        for option, (default, allowed) in only_when.items():
            if args.get(option, default) not in allowed:
                return False
        return (
            self._connection.transport in LOCAL_TRANSPORTS
            and not _has_environment(self._task.environment)
            and not self._task.async_val
            and not self._play_context.become
        )

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        result.update(
            self.run_module_step(
                self.module_name,
                self.module_file(),
                self._task.args,
                task_vars,
                check_mode=bool(self._play_context.check_mode),
            )
        )
        return result

    def run_module_step(self, module_name, module_file, args, task_vars, check_mode=False, only_when=None):
        """Run a collection module with `args`: in process when allowed (see the module docstring), else as a module.

        Also how an action plugin runs another module of the collection as one step of its work (check_mode
        applies to that step only). Returns the module's result, with no_log values removed."""
        if not self._in_process_allowed(args, only_when):
            task_check_mode = self._task.check_mode
            self._task.check_mode = check_mode
            try:
                return self._execute_module(module_name=module_name, module_args=dict(args), task_vars=task_vars)
            finally:
                self._task.check_mode = task_check_mode
        params, no_log_values, failed = validate_args(module_name, module_file, args)
        if failed:
            return failed
        module = InProcessModule(params, check_mode=check_mode, no_log_values=no_log_values)
        try:
            module_file.run_module(module)
            done = {"failed": True, "msg": f"{module_name} returned without a result"}
        except ModuleDone as exc:
            done = exc.result
        if module.warnings:
            done.setdefault("warnings", []).extend(module.warnings)
        return remove_values(done, no_log_values)
