# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""immutable.infra.promotion: the promotion playbooks' settings check, gate, switch, tag and record in one task.

The flow goes one way, each part only after the one before succeeded: settings -> ledger gate (check mode) ->
docker, swarm, ecs: router (docker, when needed), environment tag plan, bg_swap, environment tag; aws: the AMI
of the environment's region, bg_swap backend=aws -> ledger record -> summary. How a rollback goes (switch back or
deploy) is bg_swap's decision. Each part is the collection's own module (ledger, router, bg_swap, push_image), run in
process on the controller (plugin_utils/_in_process.py) or as a module where it needs its own process and AWS clients
(the SSM ledger, bg_swap backend=aws). One task instead of many saves the start-up of each, which was most of a
promotion's time beyond the health gate (docs/promotion.md).
"""

from __future__ import annotations

import os
import socket
import time
from contextlib import contextmanager

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import router_is_up
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import no_log_values
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import validate_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import RolloutLock
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ami_for_region
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import analysis_secrets
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import aws_swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ecs_swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import env_region
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import env_tag_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_analysis_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_batch
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_group
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_hosts
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_lock_path
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_max_fail_percentage
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_router
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_summary
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import latest_artifact_id
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ledger_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import read_records
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import record_of
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_record
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import router_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import settings_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import summary_lines
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swap_state
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swarm_swap_args

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
        params, hidden, failed = validate_args(self.module_name, self.module_file(), self._task.args)
        # the analysis' Prometheus header values are secrets: hidden wherever the result would echo them
        hidden = set(hidden) | analysis_secrets(self._task.args.get("settings"))
        if not failed:
            aws, aws_hidden, failed = self._aws_connection(params["aws"])
            hidden = set(hidden) | aws_hidden
        if failed:
            result.update(failed)
        else:
            try:
                result.update(self._promote(params, aws, task_vars))
            except PromotionError as exc:
                result.update(failed=True, msg=exc.message)
        if "timings" in result:
            result["timings"]["step"] = round(time.monotonic() - started, 3)
        return remove_values(result, hidden)

    @staticmethod
    def _aws_connection(given):
        """promotion_aws checked as amazon.aws's common options (no_log ones, e.g. secret_key, are never shown).

        Returns (the options as given, their no_log values, failed result or None)."""
        if not given:
            return {}, set(), None
        from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec

        spec = aws_argument_spec()
        validated = ArgumentSpecValidator(spec).validate(given)
        try:
            hidden = no_log_values(spec, given) | no_log_values(spec, validated.validated_parameters)
        except TypeError as exc:
            return None, set(), {"failed": True, "msg": f"invalid promotion_aws: {exc}"}
        if validated.error_messages:
            msg = "invalid promotion_aws (amazon.aws connection options): " + "; ".join(validated.error_messages)
            return None, hidden, remove_values({"failed": True, "msg": msg}, hidden)
        # as given: bg_swap validates them again, as it did when they came through module_defaults
        return dict(given), hidden, None

    # -- the steps ---------------------------------------------------------------------------------------------

    @contextmanager
    def _timed(self, out, phase):
        start = time.monotonic()
        try:
            yield
        finally:
            timings = out.setdefault("timings", {})
            timings[phase] = round(timings.get(phase, 0) + time.monotonic() - start, 3)

    def _promote(self, params, aws, task_vars):
        settings = resolve_settings(params["settings"], os.environ.get("PWD") or os.getcwd())
        action, env, from_env = params["action"], params["env"], params["from_env"]
        check_envs = params["check_envs"]
        if check_envs is None:
            check_envs = [from_env, env] if action == "promote" else [env]
        problem = settings_problem(settings, check_envs, params["usage"])
        if problem:
            raise PromotionError(problem)
        # a bad key or signature setting fails here, before anything (never in the fleet rescue's release step)
        policies = {} if params["step"] == "release" else _signature_policies(settings, check_envs)
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
        if params["step"] == "release":
            abort_msg = self._fleet_abort(params, out, task_vars) if params["abort"] and action != "rollback" else ""
            released = self._rollout_lock(settings, env, params).release()
            return dict(out, released=released, abort_msg=abort_msg)
        if params["step"] in ("revoke", "revoked"):
            from ansible_collections.immutable.infra.plugins.plugin_utils._supply_gate import revoke_step
            from ansible_collections.immutable.infra.plugins.plugin_utils._supply_gate import revoked_step

            step = revoke_step if params["step"] == "revoke" else revoked_step
            return step(self, params, out, check_envs, _client_for(params), task_vars, self._check_mode())
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
        if action != "rollback":
            # the ID must have a record: the local one, else the one kept in the registry beside the image
            with self._timed(out, "record"):
                out["record"] = resolve_record(
                    records,
                    gate["artifact_id"],
                    settings["artifacts_dir"],
                    settings["app"],
                    _client_for(params),
                    _ami_reader(aws, settings),
                )
        # the verification gate (docs/supply-chain.md): revocations, the signature policy, then the package diff;
        # before anything is pulled, switched, tagged or recorded, for one host and for a fleet's plan alike
        with self._timed(out, "verification"):
            from ansible_collections.immutable.infra.plugins.plugin_utils._supply_gate import verification_gate

            policy = policies[env] if env in policies else _signature_policies(settings, [env])[env]
            verification_gate(params, out, policy, _client_for(params), _ami_reader(aws, settings))
        if params["step"] == "gate":
            return out
        hosts = fleet_hosts(settings, env, (task_vars or {}).get("groups"))
        if params["step"] == "plan" and params["hooks"] and not hosts:
            # the environment has hooks and runs on the controller: the hooks play runs them around this step
            return out
        if params["step"] in ("plan", "record"):
            out["fleet"] = {"hosts": hosts}
            if hosts and params["step"] == "plan":
                problem = fleet_analysis_problem(settings, env)
                if problem:
                    raise PromotionError(problem)
                return self._fleet_plan(params, task_vars, out, hosts)
            if params["step"] == "record":
                if not hosts:
                    raise PromotionError(
                        f"{self.module_name}: step=record is for an environment that is a fleet, but the inventory"
                        f" group {fleet_group(settings, env)} of {env} has no hosts"
                    )
                return self._fleet_record(params, task_vars, out, hosts)
        out.update(done=False)
        if settings["backend"] == "docker":
            failed = self._switch_docker(params, task_vars, out)
        elif settings["backend"] == "aws":
            failed = self._switch_aws(aws, task_vars, out)
        elif settings["backend"] == "ecs":
            failed = self._switch_ecs(params, aws, task_vars, out)
        elif settings["backend"] == "swarm":
            failed = self._switch_swarm(params, task_vars, out)
        else:
            failed = None
        if failed:
            if (out.get("swap") or {}).get("failed_check") == "analysis" and action != "rollback":
                failed["msg"] = failed.get("msg", "") + self._record_abort(params, out, task_vars)
            return dict(out, failed=True, **failed)
        with self._timed(out, "ledger_record"):
            recorded = self._ledger(
                settings,
                request,
                records,
                out["artifact_id"],
                task_vars,
                self._check_mode(),
                evidence=dict(run_evidence({"": out.get("swap") or {}}, params["hook_results"]), **out["supply"]),
            )
        out["recorded"] = recorded
        if recorded.get("failed"):
            return dict(out, failed=True, msg=recorded.get("msg", "the ledger refused the record"))
        summary = summary_lines(settings, request, out.get("swap") or {}, recorded) + out["supply_lines"]
        return dict(out, done=True, summary=summary, changed=out["changed"] or bool(recorded.get("changed")))

    def _check_mode(self):
        return bool(self._play_context.check_mode)

    # -- fleets: plan (play 1), the hosts (play 2, in the playbook), record (play 3); docs/fleet.md --------------

    def _rollout_lock(self, settings, env, params):
        """The environment's lock for a whole fleet rollout, held on behalf of the ansible-playbook process."""
        what = f"{settings['app']}/{env}"
        if settings["ledger"].get("backend", "file") == "ssm":
            return _SsmRolloutLock(settings, env, what, params.get("lock_token"))
        return RolloutLock(fleet_lock_path(settings, env), what, os.getppid())

    def _fleet_plan(self, params, task_vars, out, hosts):
        """The settings and the gate passed: take the environment's lock, plan the environment tag, and return what
        the hosts' play needs. Nothing on any host has changed."""
        from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError

        settings, request, artifact_id = out["settings"], out["request"], out["artifact_id"]
        env = request["env"]
        batch = fleet_batch(settings, env)
        max_fail = fleet_max_fail_percentage(settings)
        lock = self._rollout_lock(settings, env, params)
        try:
            lock.acquire()
        except LockedError as exc:
            return dict(out, failed=True, locked=True, msg=str(exc))
        try:
            record = record_of(out["records"], artifact_id)
            with self._timed(out, "env_tag_plan"):
                planned = self._env_tag(params, settings, env, record, task_vars, check_mode=True)
            if planned.get("failed"):
                raise PromotionError(
                    f"the environment tag {env} cannot be added to {artifact_id}, so no host was touched:"
                    f" {planned.get('msg', '')}"
                )
        except BaseException:
            lock.release()
            raise
        before = (out["gate"].get("before") or {}) if isinstance(out["gate"].get("before"), dict) else {}
        swap = swap_args(settings, env, artifact_id, swap_state(request["action"]))
        if settings["manage_router"]:
            swap["router"] = fleet_router(settings, env)
        out["fleet"] = {
            "group": fleet_group(settings, env),
            "hosts": hosts,
            "batch": batch,
            "max_fail_percentage": max_fail,
            "previous_id": before.get("live"),
            "hooks": bool(params["hooks"]),
            "swap": swap,
            "lock": {"path": getattr(lock, "path", None) or getattr(lock, "name", None), "token": lock.token_out()},
        }
        return dict(out, done=False)

    def _fleet_record(self, params, task_vars, out, hosts):
        """After the hosts' play: every host must run the ID (else nothing is recorded), then the environment tag,
        the ledger record with the hosts, the lock released, the summary."""
        settings, request, artifact_id = out["settings"], out["request"], out["artifact_id"]
        env, app = request["env"], settings["app"]
        lock = self._rollout_lock(settings, env, params)
        try:
            swaps, missing, aborted = {}, [], {}
            hostvars = (task_vars or {}).get("hostvars") or {}
            for host in hosts:
                try:
                    swap = hostvars[host].get("fleet_swap")
                except (KeyError, TypeError):
                    swap = None
                ok = isinstance(swap, dict) and not (
                    swap.get("failed") or swap.get("unreachable") or swap.get("skipped")
                )
                if ok:
                    swaps[host] = swap
                else:
                    missing.append(host)
                    if isinstance(swap, dict) and swap.get("failed") and swap.get("failed_check") == "analysis":
                        aborted[host] = swap  # its bg_swap failed on its analysis: traffic back on its old colour
            out["fleet"] = {"hosts": hosts, "swaps": swaps}
            if missing:
                msg = (
                    f"{app}/{env}: {', '.join(missing)} of {len(hosts)} hosts did not switch to {artifact_id}"
                    f" in this run, so the ledger was not updated (a partial rollout is never recorded as live);"
                    f" switched: {', '.join(swaps) or 'none'}. Run the playbook again once the hosts answer."
                )
                # with promotion_max_fail_percentage above 0 the rescue records nothing: a host's analysis abort is
                # recorded here, as the rescue does with 0 (the first such host, with its verdicts)
                if aborted and request["action"] != "rollback":
                    host, swap = next(iter(aborted.items()))
                    out["swap"] = {"msg": str(swap.get("msg") or ""), "analysis": list(swap.get("analysis") or [])}
                    msg += self._record_abort(params, out, task_vars, host=host)
                return dict(out, failed=True, msg=msg)
            check_mode = self._check_mode()
            record = record_of(out["records"], artifact_id)
            with self._timed(out, "env_tag"):
                tag = self._env_tag(params, settings, env, record, task_vars, check_mode)
            out["tag"] = tag
            if tag.get("failed"):
                return dict(
                    out,
                    failed=True,
                    msg=f"{app}/{env} now runs {artifact_id} on {', '.join(hosts)}, but adding the environment tag"
                    " failed, so the ledger was not updated (run the playbook again once the registry answers):"
                    f" {tag.get('msg', '')}",
                )
            with self._timed(out, "ledger_record"):
                recorded = self._ledger(
                    settings,
                    request,
                    out["records"],
                    artifact_id,
                    task_vars,
                    check_mode,
                    hosts=list(hosts),
                    evidence=dict(run_evidence(swaps, params["hook_results"]), **out["supply"]),
                )
            out["recorded"] = recorded
            if recorded.get("failed"):
                return dict(out, failed=True, msg=recorded.get("msg", "the ledger refused the record"))
            changed = any(swap.get("changed") for swap in swaps.values()) or bool(tag.get("changed"))
            summary = fleet_summary(settings, request, recorded, hosts, swaps) + out["supply_lines"]
            return dict(out, done=True, summary=summary, changed=changed or bool(recorded.get("changed")))
        finally:
            lock.release()

    def _switch_docker(self, params, task_vars, out):
        """Router (when needed), the env tag's plan, bg_swap, the env tag. Returns None, or what failed."""
        settings, request, artifact_id = out["settings"], out["request"], out["artifact_id"]
        env, app = request["env"], settings["app"]
        check_mode = self._check_mode()
        router_dir = str(settings["environments"][env]["router_dir"])
        # idempotent, before the switch: the first deploy to an environment sets its router up and starts it
        if settings["manage_router"] and (settings["manage_router_always"] or not router_is_up(router_dir, app, env)):
            with self._timed(out, "router"):
                out["router"] = self._router(settings, env, task_vars, check_mode)
            if out["router"].get("failed"):
                return {"msg": f"the router of {app}/{env} could not be set up: {out['router'].get('msg', '')}"}
            out["changed"] = bool(out["router"].get("changed"))
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        args = swap_args(settings, env, artifact_id, swap_state(request["action"]))
        return self._tagged_switch(params, task_vars, out, bg_swap, args)

    def _switch_aws(self, aws, task_vars, out):
        """The AMI of the environment's region, then bg_swap backend=aws (as a module: it needs AWS clients)."""
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        settings, request = out["settings"], out["request"]
        env = request["env"]
        region = env_region(settings, env, os.environ)
        ami = ami_for_region(out["artifact_id"], region, env)  # refused here: nothing switched or recorded
        args = aws_swap_args(settings, env, ami, region, swap_state(request["action"]), aws)
        with self._timed(out, "swap"):
            # DOCKER_ONLY: bg_swap backend=aws runs as a module, in its own process with AWS clients
            swap = self.run_module_step(
                "immutable.infra.bg_swap",
                bg_swap,
                args,
                task_vars,
                check_mode=self._check_mode(),
                only_when=DOCKER_ONLY,
            )
        swap.pop("invocation", None)  # the module's arguments: the AWS connection is not the result's business
        out["swap"] = swap
        if swap.get("failed"):
            return {"msg": swap.get("msg", "bg_swap failed")}
        out["changed"] = bool(swap.get("changed"))
        return None

    def _switch_ecs(self, params, aws, task_vars, out):
        """bg_swap backend=ecs (docs/ecs.md; as a module: it needs AWS clients) between the environment tag's plan
        and the tag."""
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        settings, request = out["settings"], out["request"]
        region = env_region(settings, request["env"], os.environ)
        args = ecs_swap_args(settings, request["env"], out["artifact_id"], region, swap_state(request["action"]), aws)
        return self._tagged_switch(params, task_vars, out, bg_swap, args)

    def _switch_swarm(self, params, task_vars, out):
        """bg_swap backend=swarm (docs/swarm.md; as a module: it drives the manager's docker CLI) between the
        environment tag's plan and the tag. The registry login goes with the services (--with-registry-auth), so
        every node can pull."""
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        settings, request = out["settings"], out["request"]
        args = swarm_swap_args(settings, request["env"], out["artifact_id"], swap_state(request["action"]))
        if params.get("registry_username"):
            args.update(registry_username=params["registry_username"], registry_password=params["registry_password"])
        return self._tagged_switch(params, task_vars, out, bg_swap, args)

    def _tagged_switch(self, params, task_vars, out, bg_swap, args):
        """The environment tag's plan (registry credentials, a tag held by another digest: refused before anything
        is switched), bg_swap with args, then the tag (a tag that fails after the switch leaves the ledger alone)."""
        settings, env, artifact_id = out["settings"], out["request"]["env"], out["artifact_id"]
        app = settings["app"]
        record = record_of(out["records"], artifact_id)
        with self._timed(out, "env_tag_plan"):
            planned = self._env_tag(params, settings, env, record, task_vars, check_mode=True)
        if planned.get("failed"):
            return {
                "tag": planned,
                "msg": f"the environment tag {env} cannot be added to {artifact_id}, so nothing was switched or"
                f" recorded: {planned.get('msg', '')}",
            }
        with self._timed(out, "swap"):
            swap = self.run_module_step(
                "immutable.infra.bg_swap",
                bg_swap,
                args,
                task_vars,
                check_mode=self._check_mode(),
                only_when=DOCKER_ONLY,
            )
        swap.pop("invocation", None)  # the module's arguments (connections, the registry login) are not a result
        out["swap"] = swap
        if swap.get("failed"):
            return {"msg": swap.get("msg", "bg_swap failed")}
        out["changed"] = bool(out.get("changed")) or bool(swap.get("changed"))  # the router may have changed
        with self._timed(out, "env_tag"):
            out["tag"] = self._env_tag(params, settings, env, record, task_vars, self._check_mode())
        if out["tag"].get("failed"):
            return {
                "msg": f"{app}/{env} now runs {artifact_id}, but adding the environment tag failed, so the ledger was"
                " not updated (verify.yml reports the drift; run the playbook again once the registry answers):"
                f" {out['tag'].get('msg', '')}"
            }
        out["changed"] = out["changed"] or bool(out["tag"].get("changed"))
        return None

    # -- one module each ---------------------------------------------------------------------------------------

    def _router(self, settings, env, task_vars, check_mode):
        from ansible_collections.immutable.infra.plugins.modules import router

        args = router_args(settings, env)
        return self.run_module_step("immutable.infra.router", router, args, task_vars, check_mode=check_mode)

    def _ledger(self, settings, request, records, artifact_id, task_vars, check_mode, hosts=None, evidence=None):
        """The ledger module: the gate in check mode (evidence None), else the record of this run with its evidence
        (the analysis and the hooks; the ledger's gate adds the soak and the approval it relied on)."""
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
        if request["action"] != "rollback" and not check_mode:
            # the gate (check mode) gives the ID; _promote then finds its record (resolve_record) before this run
            args["known_ids"] = [record["id"] for record in records]
            record = record_of(records, artifact_id)
            if not check_mode and record:
                args["record"] = record["path"]
        if hosts is not None:
            args["hosts"] = hosts
        if evidence is not None:
            args["evidence"] = evidence
            # verified: the switch succeeded (bg_swap fails on a failed analysis) and no analysis verdict says else
            args["verified"] = all(item.get("verdict") == "passed" for item in evidence["analysis"])
        return self.run_module_step(
            "immutable.infra.ledger", ledger, args, task_vars, check_mode=check_mode, only_when=FILE_LEDGER_ONLY
        )

    def _record_abort(self, params, out, task_vars, host=""):
        """bg_swap aborted the rollout on its analysis (traffic back on the old colour): record the abort in the
        ledger with the verdicts (docs/ledger.md, "Evidence"). Nothing went live, so live and previous stay; the
        environment no longer vouches for the artifact. On a fleet, `host` is the host whose analysis aborted it:
        the reason names it and each verdict carries it. Returns what to add to the failure's message."""
        from ansible_collections.immutable.infra.plugins.modules import ledger

        if self._check_mode():
            return ""
        settings, request, swap = out["settings"], out["request"], out.get("swap") or {}
        where = f" on {host}" if host else ""
        reason = f"aborted by its analysis{where}: {swap.get('msg', '')}"
        args = ledger_args(settings, "abort", request["env"], "", out["artifact_id"], False, reason[:300])
        args.pop("force", None)
        if request["action"] == "promote":
            args["from_env"] = request["from_env"]
        args["evidence"] = run_evidence({host: swap}, params["hook_results"])
        with self._timed(out, "ledger_record"):
            recorded = self.run_module_step(
                "immutable.infra.ledger", ledger, args, task_vars, check_mode=False, only_when=FILE_LEDGER_ONLY
            )
        out["recorded"] = recorded
        if recorded.get("failed"):
            return f" (recording the abort in the ledger failed too: {recorded.get('msg', '')})"
        what = f"{settings['app']}/{request['env']}"
        return f" - the abort is recorded in the ledger ({what}: action abort, with the analysis{where})"

    def _fleet_abort(self, params, out, task_vars):
        """The fleet rescue (step=release with abort): a host's bg_swap aborted on its analysis and every host is back
        on its previous colour; record the abort as _record_abort does for one host. Returns the message's addition."""
        abort = params["abort"]
        host = str(abort.get("host") or "")
        if not host or params["artifact"] is None:
            raise PromotionError(
                f"{self.module_name}: abort needs its host (the fleet host whose analysis aborted the rollout) and"
                " artifact (the ID whose rollout was aborted)"
            )
        analysis = abort.get("analysis") or []
        if not isinstance(analysis, list):
            raise PromotionError(f"{self.module_name}: abort.analysis must be the list bg_swap returned on {host}")
        out["artifact_id"] = params["artifact"]
        out["swap"] = {"msg": str(abort.get("msg") or ""), "analysis": analysis}
        return self._record_abort(params, out, task_vars, host=host).lstrip(" -")

    def _env_tag(self, params, settings, env, record, task_vars, check_mode):
        from ansible_collections.immutable.infra.plugins.modules import push_image

        args = env_tag_args(settings, env, record)
        if args is None:
            return {}
        for key in ("registry_username", "registry_password"):
            if params[key]:
                args[key] = params[key]
        return self.run_module_step("immutable.infra.push_image", push_image, args, task_vars, check_mode=check_mode)


def run_evidence(swaps: dict, hook_results: list) -> dict:
    """The evidence of this run for its ledger record (docs/ledger.md, "Evidence"): bg_swap's analysis verdicts per
    traffic step (each item with its host for a fleet; swaps maps host -> bg_swap result, "" without hosts) and the
    hooks' results as the playbook gave them. The ledger adds the soak and approval its gate relied on, and keeps it
    small (module_utils/ledger/_model.compact_evidence)."""
    analysis = []
    for host, swap in swaps.items():
        for item in (swap or {}).get("analysis", []) or []:
            if isinstance(item, dict):
                analysis.append(dict(item, host=host) if host else dict(item))
    hooks = [dict(item) for item in hook_results or [] if isinstance(item, dict)]
    return {"analysis": analysis, "hooks": hooks}


def _signature_policies(settings, envs):
    """Each environment's signature policy (module_utils/supply/_policy.py), checked: a bad setting fails early."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import PolicyError
    from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import signature_policy

    try:
        return {env: signature_policy(settings, env) for env in envs}
    except PolicyError as exc:
        raise PromotionError(exc.message) from None


def _client_for(params):
    """RegistryClient per registry host, with the step's registry credentials (else the docker config's); one per
    host for the whole step (the verification gate, the record, the diff read the same registry)."""
    from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryClient

    clients = {}

    def client_for(host):
        if host not in clients:
            username, password = params.get("registry_username") or None, params.get("registry_password") or None
            clients[host] = RegistryClient(host, username=username, password=password)
        return clients[host]

    return client_for


def _ami_reader(aws, settings):
    """read_ami for find_record: EC2 clients of promotion_aws (amazon.aws's options, aliases resolved), one per
    region of the artifact (an AMI ID alone: promotion_aws.region, else AWS_REGION); S3 clients for the AMIs'
    evidence (the verification gate, docs/supply-chain.md "AMIs")."""

    def ec2_for(region, service="ec2"):
        import boto3
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
        from ansible_collections.amazon.aws.plugins.module_utils.modules import aws_argument_spec

        given = ArgumentSpecValidator(aws_argument_spec()).validate(aws or {}).validated_parameters
        kwargs = {
            "region_name": region or given.get("region") or settings["aws_region"] or None,
            "endpoint_url": given.get("endpoint_url") or None,
            "aws_access_key_id": given.get("access_key") or None,
            "aws_secret_access_key": given.get("secret_key") or None,
            "aws_session_token": given.get("session_token") or None,
        }
        session = boto3.session.Session(profile_name=given.get("profile") or None)
        return session.client(service, **{key: value for key, value in kwargs.items() if value is not None})

    from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_reader

    return ami_reader(ec2_for)


class _SsmRolloutLock:
    """The SSM ledger's environment lock for a fleet rollout: common SsmLock on `<prefix>/<app>/<env>.promotion.lock`
    with a ttl (promotion_ledger.lock_ttl, default 1800 s), so a run that died frees it by itself. The plan step
    returns its token, which the record and release steps are given back (lock_token)."""

    def __init__(self, settings, env, what, token=None):
        import boto3

        from ansible_collections.immutable.infra.plugins.module_utils.aws._ssm_lock import SsmLock

        ledger = settings["ledger"]
        kwargs = {key: ledger[key] for key in ("endpoint_url",) if ledger.get(key)}
        if ledger.get("region"):
            kwargs["region_name"] = ledger["region"]
        client = boto3.client("ssm", **kwargs)
        owner = f"ansible-playbook pid {os.getppid()} on {socket.gethostname()}"
        self.name = f"{str(ledger['prefix']).rstrip('/')}/{settings['app']}/{env}.promotion.lock"
        self.lock = SsmLock(
            client, self.name, what, owner, ttl=float(ledger.get("lock_ttl") or 1800), activity="promotion"
        )
        if token:
            self.lock.token = token
            self.lock.held = True

    def acquire(self):
        from botocore.exceptions import BotoCoreError
        from botocore.exceptions import ClientError

        try:
            self.lock.acquire()
        except (BotoCoreError, ClientError) as exc:
            raise PromotionError(
                f"cannot take the environment lock {self.name} in SSM ({exc}): check the ledger's AWS connection"
                " (promotion_ledger region, endpoint_url, credentials)"
            ) from None

    def release(self):
        from botocore.exceptions import BotoCoreError
        from botocore.exceptions import ClientError

        held = self.lock.held
        try:
            self.lock.release()
        except (BotoCoreError, ClientError) as exc:
            raise PromotionError(
                f"cannot release the environment lock {self.name} in SSM ({exc}): it expires after its ttl, or delete"
                " the parameter once no promotion runs"
            ) from None
        return held

    def token_out(self):
        return self.lock.token
