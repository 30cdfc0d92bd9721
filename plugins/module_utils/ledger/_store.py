# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger interface (Ledger) that both backends implement, and what the ledger module does with it.

PRIVATE to the collection: no compatibility promise outside immutable.infra. Backends: _file.FileLedger (a local
JSON file) and _ssm.SsmLedger (AWS SSM Parameter Store).
"""

from __future__ import annotations

import copy
import os

from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_abort
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_policy
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_promotion
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_repair
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_rollback
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_approval
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_record
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_chain
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_env
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_name
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import format_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import utc_now


class RecordResult:
    def __init__(self, changed, before, after, plan=None):
        self.changed = changed
        self.before = before
        self.after = after
        self.plan = plan


class Ledger:
    """The interface: read(app=None), entry(app, env), record(...) -> (changed, entry).

    Backends implement read(), entry() and _update(app, env, mutate), which runs `mutate(state_of_app)` under the
    backend's lock and writes what it returns.
    """

    location = ""

    def read(self, app=None) -> dict:
        raise NotImplementedError

    def entry(self, app, env):
        raise NotImplementedError

    def _update(self, app, env, mutate):
        raise NotImplementedError

    def apply(
        self,
        app,
        env,
        artifact_id,
        action,
        by,
        from_env=None,
        record=None,
        reason=None,
        forced=False,
        verified=True,
        at=None,
        gate=None,
        dry_run=False,
        hosts=None,
        evidence=None,
    ) -> RecordResult:
        """Record a deploy/promotion/rollback; `gate(state_of_app)` (re-)checks the plan on fresh data under the
        lock and returns it (a dict that may override id/forced, and whose `evidence` - the soak and approval the
        gate relied on - joins `evidence` in the history record). dry_run computes without locking or writing."""
        check_name("app", app)
        check_name("environment", env)

        def mutate(state):
            plan = gate(state) if gate else None
            target = plan["id"] if plan else artifact_id
            is_forced = plan["forced"] if plan and "forced" in plan else forced
            before = get_entry(state, app, env)
            stored = dict(evidence or {})
            if plan and plan.get("evidence"):
                stored.update({key: value for key, value in plan["evidence"].items() if value is not None})
            changed, after = plan_record(
                before,
                target,
                action,
                by=by,
                at=at or utc_now(),
                from_env=from_env,
                record=record,
                reason=reason,
                forced=is_forced,
                verified=verified,
                hosts=hosts,
                evidence=stored,
            )
            return RecordResult(changed, copy.deepcopy(before), after, plan)

        if dry_run:
            return mutate(self.read(app))
        return self._update(app, env, mutate)

    def approve(self, app, env, artifact_id, by, at=None, approval=None, dry_run=False) -> RecordResult:
        """Record an approval of artifact_id for env by `by` (plan_approval), under the backend's lock."""
        check_name("app", app)
        check_name("environment", env)

        def mutate(state):
            before = get_entry(state, app, env)
            changed, after = plan_approval(before, artifact_id, by, at or utc_now(), approval)
            mine = next(item for item in after["approvals"] if item["by"] == str(by).strip())
            return RecordResult(changed, copy.deepcopy(before), after, {"id": mine["id"], "approval": mine})

        if dry_run:
            return mutate(self.read(app))
        return self._update(app, env, mutate)

    # -- revocations (docs/supply-chain.md, "Revocation"): per app, never removed -------------------------------

    def revocations(self, app) -> list:
        """The app's revocations, oldest first."""
        raise NotImplementedError

    def _add_revocation(self, app, item, dry_run):
        """Store `item` unless the app holds a revocation of the same ID: (changed, the revocation that stands)."""
        raise NotImplementedError

    def revoke(self, app, item, dry_run=False) -> RecordResult:
        """Record a revocation (module_utils/supply/_revocation.new_revocation builds it); a second revocation of the
        same ID changes nothing. plan = the revocation that stands."""
        check_name("app", app)
        before = self.revocations(app)
        changed, stands = self._add_revocation(app, item, dry_run)
        after = before + [stands] if changed else before
        return RecordResult(changed, before, after, stands)

    def record(self, app, env, artifact_id, action, by, **kwargs):
        result = self.apply(app, env, artifact_id, action, by, **kwargs)
        return result.changed, result.after


def default_by() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def run_record(ledger: Ledger, params: dict, check_mode: bool) -> dict:
    """What the ledger module does, testable without Ansible: gate, record, describe."""
    action = params["action"]
    app, env, chain = params["app"], params.get("env"), params["chain"]
    from_env = params.get("from_env")
    reason = params.get("reason")
    force = bool(params.get("force"))
    known_ids = params.get("known_ids")
    check_chain(chain)
    now = now_seconds()  # the one clock (IMMUTABLE_NOW): the gate's soak and the record's time agree
    if action == "revoke":
        return run_revoke(ledger, params, check_mode, now)
    if env in (None, "") and action != "approve":
        raise LedgerError(f"action={action} needs env (the environment of the chain it is about)")
    policy = check_policy({"soak_minutes": params.get("soak_minutes"), "approval": params.get("approval")}, env)
    if action == "approve":
        missing = [
            name
            for name, key in (("env", "env"), ("artifact", "artifact_id"), ("by", "by"))
            if params.get(key) in (None, "")
        ]
        if missing:
            raise LedgerError(
                f"an approval needs {', '.join(missing)}: ansible-playbook playbooks/approve.yml -e env=<environment>"
                " -e artifact=<the immutable id> -e by=<your name> (ledger module: env, artifact_id, by)"
            )
        check_env(chain, env)
        result = ledger.approve(
            app, env, params["artifact_id"], params.get("by"), format_utc(now), policy["approval"], dry_run=check_mode
        )
        return {
            "changed": result.changed,
            "before": result.before,
            "after": result.after,
            "artifact_id": result.plan["id"],
            "action": action,
            "forced": False,
            "overridden": [],
            "evidence": {"approval": result.plan["approval"]},
            "location": ledger.location,
        }
    if action == "abort":
        plan = check_abort(chain, app, env, params.get("artifact_id"), from_env)
        result = ledger.apply(
            app,
            env,
            plan["id"],
            action,
            by=params.get("by") or default_by(),
            from_env=from_env,
            record=params.get("record"),
            reason=reason,
            verified=False,
            dry_run=check_mode,
            hosts=params.get("hosts"),
            at=format_utc(now),
            evidence=params.get("evidence"),
        )
        return {
            "changed": result.changed,
            "before": result.before,
            "after": result.after,
            "artifact_id": plan["id"],
            "action": action,
            "forced": False,
            "overridden": [],
            "evidence": {},
            "location": ledger.location,
        }
    if action == "deploy" and from_env is not None:
        raise LedgerError(f"from_env is for action=promote: set action: promote to promote from {from_env!r}")
    if action == "promote" and from_env is None:
        raise LedgerError("action=promote needs from_env (the environment the artifact is live in)")

    def gate(state):
        if action == "rollback":
            plan = check_rollback(chain, state, app, env, params.get("artifact_id"))
            plan.update(forced=False, overridden=[])
            return plan
        if action == "repair":
            plan = check_repair(chain, state, app, env, params.get("artifact_id"))
            plan.update(forced=False, overridden=[])
            return plan
        return check_promotion(
            chain, state, app, from_env, env, params.get("artifact_id"), force, reason, known_ids, policy, now
        )

    result = ledger.apply(
        app,
        env,
        params.get("artifact_id"),
        action,
        by=params.get("by") or default_by(),
        from_env=from_env,
        record=params.get("record"),
        reason=reason,
        verified=params.get("verified", True),
        gate=gate,
        dry_run=check_mode,
        hosts=params.get("hosts"),
        at=format_utc(now),
        evidence=params.get("evidence"),
    )
    plan = result.plan or {}
    return {
        "changed": result.changed,
        "before": result.before,
        "after": result.after,
        "artifact_id": plan.get("id"),
        "action": action,
        "forced": bool(plan.get("forced")),
        "overridden": plan.get("overridden", []),
        "evidence": plan.get("evidence") or {},
        # what the promotion step's verification gate refuses (docs/supply-chain.md, "Revocation")
        "revocations": ledger.revocations(app),
        "location": ledger.location,
    }


def run_revoke(ledger: Ledger, params: dict, check_mode: bool, now: float) -> dict:
    """action=revoke: record that an artifact (or a base image, and so every artifact baked from it) is revoked."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import new_revocation

    options = params.get("revocation") or {}
    item = new_revocation(
        params.get("artifact_id"),
        options.get("kind") or "artifact",
        params.get("reason"),
        params.get("by") or default_by(),
        now,
        options.get("from"),
        options.get("artifacts"),
    )
    result = ledger.revoke(params["app"], item, dry_run=check_mode)
    return {
        "changed": result.changed,
        "before": None,
        "after": None,
        "artifact_id": item["id"],
        "action": "revoke",
        "forced": False,
        "overridden": [],
        "evidence": {},
        "revocation": result.plan,
        "revocations": result.after,
        "location": ledger.location,
    }
