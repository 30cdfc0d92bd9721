# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""immutable.infra.promotion: the promotion playbooks' settings check, gate, switch, tag and record in one task.

Each step is the collection's own module (ledger, bg_swap, push_image) with the arguments the playbooks used to
give it as a separate task, run in process on the controller (plugin_utils/_in_process.py) or as a module where it
needs its own process (the SSM ledger). One task instead of six saves the start-up of each, which was most of a
promotion's time beyond the health gate (docs/promotion.md, "Speed").
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModule
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import validate_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import env_tag_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import latest_artifact_id
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ledger_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import read_records
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import record_of
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import rollback_switch_state
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import router_is_up
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import settings_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import summary_lines
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_args

FILE_LEDGER_ONLY = {"backend": ("file", ("file",))}
DOCKER_ONLY = {"backend": ("docker", ("docker",))}


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.promotion"

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import promotion

        return promotion

    def run(self, tmp=None, task_vars=None):
        started = time.monotonic()
        result = ActionBase.run(self, tmp, task_vars)
        if not self._in_process_allowed():
            result.update(
                failed=True,
                msg=f"{self.module_name} runs on the controller: run the task with connection: local, without"
                " become, async, environment or delegate_to another host",
            )
            return result
        params, no_log_values, failed = validate_args(self.module_name, self.module_file(), self._task.args)
        if failed:
            result.update(failed)
        else:
            try:
                result.update(self._promote(params, task_vars))
            except PromotionError as exc:
                result.update(failed=True, msg=exc.message)
        if "timings" in result:
            result["timings"]["step"] = round(time.monotonic() - started, 3)
        return remove_values(result, no_log_values)

    # -- the steps ---------------------------------------------------------------------------------------------

    @contextmanager
    def _timed(self, out, phase):
        start = time.monotonic()
        try:
            yield
        finally:
            timings = out.setdefault("timings", {})
            timings[phase] = round(timings.get(phase, 0) + time.monotonic() - start, 3)

    def _promote(self, params, task_vars):
        resume = params["resume"]
        if resume:
            carried = ("settings", "records", "request", "artifact_id", "gate")
            if not all(key in resume for key in carried):
                raise PromotionError(
                    "resume must be the registered result of an earlier immutable.infra.promotion step (step=apply)"
                    " of the same run that changed nothing (router_needed or switch_in_playbook)"
                )
            out = {key: resume[key] for key in carried}
            return self._apply(params, task_vars, out, resumed=True)
        settings = resolve_settings(params["settings"], os.environ.get("PWD") or os.getcwd())
        action, env, from_env = params["action"], params["env"], params["from_env"]
        check_envs = params["check_envs"]
        if check_envs is None:
            check_envs = [from_env, env] if action == "promote" else [env]
        problem = settings_problem(settings, check_envs, params["usage"])
        if problem:
            raise PromotionError(problem)
        records = read_records(settings["artifacts_dir"], settings["app"])
        request = {
            "action": action,
            "env": env,
            "from_env": from_env,
            "force": params["force"],
            "reason": params["reason"],
        }
        out = {"changed": False, "settings": settings, "records": records, "request": request}
        if params["step"] == "settings":
            return out
        if action is None:
            raise PromotionError(f"{self.module_name}: action is required with step={params['step']}")
        artifact = params["artifact"]
        if action == "deploy" and artifact is None:
            artifact = latest_artifact_id(settings["artifacts_dir"], settings["app"])
        with self._timed(out, "ledger_check"):
            gate = self._ledger(settings, request, records, artifact, task_vars, check_mode=True)
        out["gate"] = gate
        if gate.get("failed"):
            return dict(out, failed=True, msg=gate.get("msg", "the promotion gate refused the artifact"))
        out["artifact_id"] = gate["artifact_id"]
        if params["step"] == "gate":
            return out
        return self._apply(params, task_vars, out, resumed=False)

    def _apply(self, params, task_vars, out, resumed):
        settings, request = out["settings"], out["request"]
        env, artifact_id = request["env"], out["artifact_id"]
        check_mode = bool(self._play_context.check_mode)
        out.update(changed=False, done=False, router_needed=False, switch_in_playbook=False)
        if settings["backend"] == "aws":
            if not resumed:
                return dict(out, switch_in_playbook=True)
            out["swap"] = params["swap"] or {}
            out["switch_state"] = params["switch_state"] or "deployed"
        elif settings["backend"] == "docker":
            envcfg = settings["environments"][env]
            if (
                not resumed
                and settings["manage_router"]
                and (
                    settings["manage_router_always"]
                    or not router_is_up(str(envcfg["router_dir"]), settings["app"], env)
                )
            ):
                return dict(out, router_needed=True)
            record = record_of(out["records"], artifact_id)
            # the tag's plan first (registry credentials, a tag held by another digest): refused, nothing switched
            with self._timed(out, "env_tag_plan"):
                planned = self._env_tag(params, settings, env, record, task_vars, check_mode=True)
            if planned.get("failed"):
                return dict(
                    out,
                    failed=True,
                    tag=planned,
                    msg=f"the environment tag {env} cannot be added to {artifact_id}, so nothing was switched or"
                    f" recorded: {planned.get('msg', '')}",
                )
            state = self._rollback_state(settings, env, artifact_id) if request["action"] == "rollback" else "deployed"
            out["switch_state"] = state
            with self._timed(out, "swap"):
                swap = self._swap(settings, env, artifact_id, state, task_vars, check_mode)
            out["swap"] = swap
            if swap.get("failed"):
                return dict(out, failed=True, msg=swap.get("msg", "bg_swap failed"))
            out["changed"] = bool(swap.get("changed"))
            with self._timed(out, "env_tag"):
                tag = self._env_tag(params, settings, env, record, task_vars, check_mode)
            out["tag"] = tag
            if tag.get("failed"):
                return dict(
                    out,
                    failed=True,
                    msg=f"{settings['app']}/{env} now runs {artifact_id}, but adding the environment tag failed, so"
                    f" the ledger was not updated (verify.yml reports the drift; run the playbook again once the"
                    f" registry answers): {tag.get('msg', '')}",
                )
            out["changed"] = out["changed"] or bool(tag.get("changed"))
        with self._timed(out, "ledger_record"):
            recorded = self._ledger(settings, request, out["records"], artifact_id, task_vars, check_mode=check_mode)
        out["recorded"] = recorded
        if recorded.get("failed"):
            return dict(out, failed=True, msg=recorded.get("msg", "the ledger refused the record"))
        summary = summary_lines(settings, request, out.get("swap") or {}, out.get("switch_state", "deployed"), recorded)
        return dict(out, done=True, summary=summary, changed=out["changed"] or bool(recorded.get("changed")))

    # -- one module each ---------------------------------------------------------------------------------------

    def _swap(self, settings, env, artifact_id, state, task_vars, check_mode):
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        args = swap_args(settings, env, artifact_id, state)
        return self.run_module_step(
            "immutable.infra.bg_swap", bg_swap, args, task_vars, check_mode=check_mode, only_when=DOCKER_ONLY
        )

    def _ledger(self, settings, request, records, artifact_id, task_vars, check_mode):
        from ansible_collections.immutable.infra.plugins.modules import ledger

        args = ledger_args(
            settings,
            request["action"],
            request["env"],
            request["from_env"],
            artifact_id,
            request["force"],
            request["reason"],
        )
        if request["action"] != "rollback":
            args["known_ids"] = [record["id"] for record in records]
            record = record_of(records, artifact_id)
            if not check_mode and record:
                args["record"] = record["path"]
        return self.run_module_step(
            "immutable.infra.ledger", ledger, args, task_vars, check_mode=check_mode, only_when=FILE_LEDGER_ONLY
        )

    def _env_tag(self, params, settings, env, record, task_vars, check_mode):
        from ansible_collections.immutable.infra.plugins.modules import push_image

        args = env_tag_args(settings, env, record)
        if args is None:
            return {}
        for key in ("registry_username", "registry_password"):
            if params[key]:
                args[key] = params[key]
        return self.run_module_step("immutable.infra.push_image", push_image, args, task_vars, check_mode=check_mode)

    @staticmethod
    def _rollback_state(settings, env, artifact_id):
        """rolled_back when the kept previous colour still runs the rollback target (an instant switch back).

        Reads bg_swap's state file and the colour's artifact label the way bg_swap does (NginxSwitch, DockerCli)."""
        # imported here: only a docker rollback needs them
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import LABEL_PREFIX
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import NginxSwitch
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import SwitchError
        from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
        from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCliError
        from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import engine_socket

        app = settings["app"]
        conf_dir = os.path.join(str(settings["environments"][env]["router_dir"]), "conf.d")
        try:
            bg_state = NginxSwitch(None, app, env, conf_dir).read_state()
        except SwitchError:
            return "deployed"  # bg_swap reports the broken state file itself
        previous = bg_state.get("previous")
        if previous not in ("blue", "green"):
            return "deployed"
        docker = DockerCli(InProcessModule({}, check_mode=False).run_command, engine=engine_socket("docker"))
        try:
            info = docker.inspect(f"{app}-{env}-{previous}", kind="container")
        except DockerCliError:
            info = None
        labels = ((info or {}).get("Config") or {}).get("Labels") or {}
        return rollback_switch_state(bg_state, labels.get(f"{LABEL_PREFIX}.artifact"), artifact_id)
