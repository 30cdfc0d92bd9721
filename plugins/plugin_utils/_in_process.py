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

The result is the one the module gives: the same validation messages, ``invocation`` (the validated arguments),
the no_log values hidden the same way, the same refusal of check mode by a module without it. Only public
ansible-core interfaces are used: ``ArgumentSpecValidator``, ``remove_values`` and, for a run as a module,
``ActionBase._execute_module`` (with a copy of the task when a step needs another check mode than the task's).
The collection's modules declare no aliases or deprecated options (tests/unit/plugins/test_in_process.py checks),
so validation has no warnings that could get lost here. tests/integration/test_in_process_parity.py runs every
module both ways and compares the results.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Mapping

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils.common.text.converters import to_bytes
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.errors import UnsupportedError
from ansible.plugins.action import ActionBase

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


def _strings_of(value):
    """The strings a no_log value stands for, as AnsibleModule hides them: every non-empty string in it (the values
    of a dict, the items of a list), numbers as text; booleans and None hide nothing."""
    if isinstance(value, (str, bytes)):
        return {to_text(value, errors="surrogate_or_strict")} if value else set()
    if isinstance(value, Mapping):
        return set().union(*(_strings_of(item) for item in value.values()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return set().union(*(_strings_of(item) for item in value))
    if value is None or isinstance(value, bool):
        return set()
    if isinstance(value, (int, float)):
        return {str(value)}
    raise TypeError(f"unknown parameter type: {type(value)}")


def no_log_values(argument_spec, params):
    """The values of the options marked no_log in `argument_spec` (sub-options included) found in `params`.

    ansible-core keeps the set AnsibleModule masks in a private attribute of its validation result, so this walks
    the argument spec itself, with the same rules. validate_args calls it on the task's arguments as given (what
    AnsibleModule collects before converting types) and on the validated ones (defaults and fallbacks)."""
    found = set()
    for name, option in argument_spec.items():
        value = params.get(name)
        if option.get("no_log", False):
            found |= _strings_of(value)
        suboptions = option.get("options")
        if suboptions and value is not None and option.get("type") in ("dict", "list"):
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Mapping):
                    found |= no_log_values(suboptions, item)
    return found


def validate_args(module_name, module_file, args):
    """Validate `args` with the module file's own ARGUMENT_SPEC and MODULE_OPTIONS, as AnsibleModule would.

    Returns (params, no_log_values, failed): failed is None, or the failed result AnsibleModule would give (its
    message, the task's arguments in ``invocation`` with the no_log values hidden)."""
    options = dict(module_file.MODULE_OPTIONS)
    for not_validation in ("supports_check_mode", "check_boto3"):
        options.pop(not_validation, None)
    spec = dict(module_file.ARGUMENT_SPEC)
    # the common AWS options (and their boto3 import) only matter when the task gives one of them
    if getattr(module_file, "AWS_COMMON_OPTIONS", False) and set(args) - set(spec):
        from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec

        from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key

        # the access key ID hidden as the module hides it when it runs as a module
        spec = with_hidden_access_key(dict(aws_argument_spec(), **spec))
    validated = ArgumentSpecValidator(spec, **options).validate(args)
    params = validated.validated_parameters
    try:
        hidden = no_log_values(spec, args) | no_log_values(spec, params)
    except TypeError as exc:
        return None, set(), {"failed": True, "msg": str(exc)}
    if validated.error_messages:
        msg = validated.errors.msg
        if isinstance(validated.errors[0], UnsupportedError):
            msg = f"Unsupported parameters for ({module_name}) module: {msg}"
        failed = {"failed": True, "msg": msg, "invocation": {"module_args": params}}
        return None, hidden, module_result(failed, hidden)
    return params, hidden, None


def add_path_info(result):
    """What AnsibleModule adds to a result that names a file (``path``, else ``dest``): owner, mode, state, size."""
    path = result.get("path", result.get("dest"))
    if path is None:
        return result
    b_path = to_bytes(path, errors="surrogate_or_strict")
    if not os.path.exists(b_path):
        return result
    info = os.lstat(b_path)
    try:
        owner = pwd.getpwuid(info.st_uid)[0]
    except KeyError:
        owner = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid)[0]
    except KeyError:
        group = str(info.st_gid)
    if os.path.islink(b_path):
        state = "link"
    elif os.path.isdir(b_path):
        state = "directory"
    elif os.stat(b_path).st_nlink > 1:
        state = "hard"
    else:
        state = "file"
    result.update(uid=info.st_uid, gid=info.st_gid, owner=owner, group=group, state=state)
    result["mode"] = f"0{stat.S_IMODE(info.st_mode):03o}"
    context = _selinux_context(b_path)
    if context is not None:
        result["secontext"] = context
    result["size"] = info.st_size
    return result


def _selinux_context(b_path):
    """The file's SELinux context where SELinux is enabled (as AnsibleModule reports it), else None."""
    try:
        import selinux  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    if not selinux.is_selinux_enabled():
        return None
    try:
        return ":".join(selinux.lgetfilecon_raw(b_path)[1].split(":", 3))
    except OSError:
        return None


def module_result(result, hidden):
    """The result as AnsibleModule returns it: no_log values hidden, top-level booleans and None kept as they are."""
    kept = {key: value for key, value in result.items() if value is None or isinstance(value, bool)}
    return dict(remove_values(result, hidden), **kept)


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
        check_mode = bool(self._play_context.check_mode)
        if not self._in_process_allowed():
            # a normal module run (another host, environment, become, async): the module's code is not imported
            # here, it would only cost the worker time (bg_swap's imports amazon.aws and boto3: a third of a
            # second of CPU for every host of a fleet, in every task)
            result.update(self._execute_as_module(self.module_name, self._task.args, task_vars, check_mode))
            return result
        module_file = self.module_file()
        result.update(self.run_module_step(self.module_name, module_file, self._task.args, task_vars, check_mode))
        return result

    def run_module_step(self, module_name, module_file, args, task_vars, check_mode=False, only_when=None):
        """Run a collection module with `args`: in process when allowed (see the module docstring), else as a module.

        Also how an action plugin runs another module of the collection as one step of its work (check_mode
        applies to that step only). Returns the module's result, with no_log values removed."""
        if not self._in_process_allowed(args, only_when):
            return self._execute_as_module(module_name, args, task_vars, check_mode)
        params, hidden, failed = validate_args(module_name, module_file, args)
        if failed:
            return failed
        if check_mode and not module_file.MODULE_OPTIONS.get("supports_check_mode", False):
            msg = f"remote module ({module_name}) does not support check mode"
            done = {"skipped": True, "changed": False, "msg": msg}
            return module_result(dict(done, invocation={"module_args": params}), hidden)
        module = InProcessModule(params, check_mode=check_mode, no_log_values=hidden)
        try:
            module_file.run_module(module)
            done = {"failed": True, "msg": f"{module_name} returned without a result"}
        except ModuleDone as exc:
            done = exc.result
        add_path_info(done)
        done.setdefault("invocation", {"module_args": params})
        if module.warnings:
            done.setdefault("warnings", []).extend(module.warnings)
        return module_result(done, hidden)

    def _execute_as_module(self, module_name, args, task_vars, check_mode):
        """ActionBase._execute_module with `check_mode` for this run only.

        _execute_module takes the check mode from the task (``_update_module_args`` sets ``_ansible_check_mode`` from
        ``self._task.check_mode`` and overwrites any given), and ansible-core offers no argument for it. When the step's
        check mode is the task's, the module runs through this action; otherwise through the ``normal`` action of a
        copy of the task with that check mode (Task.copy and the action loader, as ansible-core's task executor runs
        ``async_status``), so the task itself is never changed."""
        if bool(check_mode) == bool(self._task.check_mode):
            return self._execute_module(module_name=module_name, module_args=dict(args), task_vars=task_vars)
        task = self._task.copy()
        task.check_mode = bool(check_mode)
        action = self._shared_loader_obj.action_loader.get(
            "ansible.legacy.normal",
            task=task,
            connection=self._connection,
            play_context=self._play_context,
            loader=self._loader,
            templar=self._templar,
            shared_loader_obj=self._shared_loader_obj,
        )
        return action._execute_module(  # pylint: disable=protected-access
            module_name=module_name, module_args=dict(args), task_vars=task_vars
        )
