# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion gate and the record planner: pure functions over a ledger state (no I/O).

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

import copy
import math
import shlex

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import ACTIONS
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import EVENT_ACTIONS
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import accepted_ids
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import canonical_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_chain
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_env
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_name
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import compact_evidence
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import empty_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import normalize_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import same_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import show_id

APPROVALS_KEPT = 10


def check_promotion(
    chain,
    ledger_state,
    app,
    from_env,
    to_env,
    artifact_id,
    force=False,
    reason=None,
    known_ids=None,
    policy=None,
    now=None,
):
    """Check a deploy (from_env None) or a promotion against the chain gate; return the plan or raise LedgerError.

    The plan: {app, env, from_env, id, action, forced, overridden, evidence}; `forced` is true only when force was
    needed, `overridden` lists the gate messages that force overrode, `evidence` the soak and approval the decision
    relied on (None when to_env requires none). Never overridable: an unknown environment, a from_env without a live
    artifact, an invalid or unknown artifact id, force without a reason, a missing approval.

    policy: to_env's rules, {soak_minutes: N, approval: {required: bool, approvers: [names]}} (check_policy).
    A promotion from P needs the artifact live in P for soak_minutes since it became live there (soak_status);
    a deploy or a promotion into an environment with approval.required needs a valid approval (approval_status).
    now: seconds since the epoch (default: the ledger's clock, now_seconds()).
    """
    policy = check_policy(policy, to_env)
    now = now_seconds() if now is None else now
    chain = check_chain(chain)
    check_name("app", app)
    check_env(chain, to_env)
    if from_env is not None:
        check_env(chain, from_env, "from_env environment")
    if force and not (reason or "").strip():
        raise LedgerError("force needs a non-empty reason: it is recorded in the ledger history next to the override")

    overridden = []
    if from_env is None:
        action = "deploy"
        if artifact_id is None:
            raise LedgerError(f"deploy to {to_env!r} needs artifact_id (the immutable id from the artifact record)")
        artifact_id = normalize_id(artifact_id)
        if to_env != chain[0]:
            index = chain.index(to_env)
            overridden.append(
                f"{to_env!r} is not the first environment of the chain {' -> '.join(chain)}: it only accepts "
                f"artifacts promoted from {chain[index - 1]!r} (set from_env: {chain[index - 1]}); a deploy goes to "
                f"{chain[0]!r}"
            )
    else:
        action = "promote"
        source = get_entry(ledger_state, app, from_env)
        if not source or source.get("live") is None:
            raise LedgerError(
                f"from_env {from_env!r} has no live artifact for app {app!r}: deploy or promote one there first "
                f"(the chain is {' -> '.join(chain)})"
            )
        artifact_id = normalize_id(source["live"] if artifact_id is None else artifact_id)
        if to_env == from_env:
            raise LedgerError(f"promotion from {from_env!r} to itself: promote to the next environment of the chain")
        index = chain.index(from_env)
        successor = chain[index + 1] if index + 1 < len(chain) else None
        if to_env != successor:
            if successor is None:
                overridden.append(f"{from_env!r} is the last environment of the chain {' -> '.join(chain)}")
            else:
                overridden.append(
                    f"promotion from {from_env!r} to {to_env!r} skips the chain {' -> '.join(chain)}: "
                    f"{from_env!r} promotes to {successor!r} only"
                )
        verdict = accepted_ids(source).get(canonical_id(artifact_id))
        if verdict != "ok":
            live = show_id(source["live"])
            if verdict is None:
                why = f"was never live in {from_env!r} (live there: {live})"
            elif verdict == "rolled back":
                why = f"was rolled back in {from_env!r} (live there: {live})"
            elif verdict == "aborted":
                why = f"was aborted in {from_env!r} by its analysis (its last record there; live there: {live})"
            else:
                why = f"was live in {from_env!r} but its last record there says verified=false"
            overridden.append(f"artifact {show_id(artifact_id)} {why}")

    evidence = {"soak": None, "approval": None}
    target = get_entry(ledger_state, app, to_env) or {}
    if target.get("live") is not None and same_id(target["live"], artifact_id):
        # nothing goes live (a playbook run again): soak and approval are for an artifact going live
        policy = {"soak_minutes": 0, "approval": {"required": False, "approvers": []}}
    if from_env is not None and policy["soak_minutes"]:
        soak = soak_status(source, artifact_id, policy["soak_minutes"], now)
        evidence["soak"] = dict(soak, from_env=from_env)
        if not soak["ok"] and verdict not in ("rolled back", "aborted"):  # said above
            overridden.append(soak_message(soak, artifact_id, from_env, to_env))

    if known_ids is not None:
        known = {canonical_id(known) for known in known_ids}
        if canonical_id(artifact_id) not in known:
            raise LedgerError(
                f"artifact id {show_id(artifact_id)} is unknown to every artifact record: bake it first "
                "(bake_ami / push_image write the record) or pass the id from an existing record"
            )

    if overridden and not force:
        raise LedgerError(
            f"{to_env!r} refuses artifact {show_id(artifact_id)} for app {app!r}: {'; '.join(overridden)}. "
            f"Promote along the chain {' -> '.join(chain)} (each environment accepts only what is live and "
            "verified in the one before it) or set force: true with a reason"
        )
    if policy["approval"]["required"]:
        # after the other rules: a refusal that force can override is said first; an approval it cannot override
        approval = approval_status(target, artifact_id, policy["approval"])
        if not approval["ok"]:
            raise LedgerError(approval_message(app, to_env, artifact_id, policy["approval"], approval))
        evidence["approval"] = {key: approval[key] for key in ("by", "at")}
    return {
        "app": app,
        "env": to_env,
        "from_env": from_env,
        "id": artifact_id,
        "action": action,
        "forced": bool(overridden),
        "overridden": overridden,
        "evidence": evidence,
    }


# ---------------------------------------------------------------------------------------------------------------
# Soak, verification and approvals (docs/ledger.md)
# ---------------------------------------------------------------------------------------------------------------


def check_policy(policy, env) -> dict:
    """An environment's gate rules, checked: {soak_minutes: float >= 0, approval: {required, approvers}}."""
    policy = policy or {}
    if not isinstance(policy, dict):
        raise LedgerError(f"the gate policy of {env!r} must be a mapping (soak_minutes, approval)")
    soak = policy.get("soak_minutes")
    if soak in (None, ""):
        soak = 0
    if isinstance(soak, bool) or not isinstance(soak, (int, float, str)):
        soak = None
    else:
        try:
            soak = float(soak)
        except ValueError:
            soak = None
    if soak is None or not math.isfinite(soak) or soak < 0:
        raise LedgerError(
            f"promotion_environments.{env}.soak_minutes {policy.get('soak_minutes')!r} is not a number of minutes:"
            " give 0 or more (for example 30), or leave it out for no soak time"
        )
    approval = policy.get("approval")
    if approval in (None, False):
        approval = {}
    elif approval is True:
        approval = {"required": True}
    if not isinstance(approval, dict):
        raise LedgerError(
            f"promotion_environments.{env}.approval must be a mapping such as {{required: true, approvers: [alice,"
            " bob]}}"
        )
    required = approval.get("required", bool(approval))
    if not isinstance(required, bool):
        raise LedgerError(f"promotion_environments.{env}.approval.required {required!r} must be true or false")
    approvers = approval.get("approvers")
    if approvers in (None, ""):
        approvers = []
    if isinstance(approvers, str) or not isinstance(approvers, (list, tuple)):
        raise LedgerError(
            f"promotion_environments.{env}.approval.approvers {approvers!r} must be a list of names, such as [alice,"
            " bob] (leave it out to accept any name)"
        )
    names = []
    for name in approvers:
        if not isinstance(name, str) or not name.strip():
            raise LedgerError(f"promotion_environments.{env}.approval.approvers has {name!r}, which is not a name")
        names.append(name.strip())
    return {"soak_minutes": soak, "approval": {"required": required, "approvers": names}}


def live_stretch(entry, artifact_id) -> dict | None:
    """The artifact's newest stretch live in an environment, from its history: {since, until, rolled_back}.

    `since` is the time of the record that made it live when something else (or nothing) was live before: records
    of the same ID while it stays live (a repair, a re-record, a promotion of it further down the chain, which is
    in another environment anyway) never reset it. `until` is the time something else became live (None while it
    is live), `rolled_back` whether that was a rollback away from it. None: it was never live there."""
    key = canonical_id(artifact_id)
    live = None
    stretch = None
    for item in (entry or {}).get("history", []):
        item_key = canonical_id(item.get("id"))
        if item_key == live or item.get("action") in EVENT_ACTIONS:
            continue
        if item_key == key:
            stretch = {"since": item.get("at"), "until": None, "rolled_back": False}
        elif live == key and stretch is not None:
            stretch.update(until=item.get("at"), rolled_back=item.get("action") == "rollback")
        live = item_key
    return stretch


def soak_status(entry, artifact_id, minutes, now) -> dict:
    """How long the artifact has been live in the environment of `entry` against the `minutes` required:
    {required_min, live_since, minutes (whole minutes run), left_min (whole minutes left, rounded up), ok}. The run
    counts until now while it is live, until it was replaced when another artifact (no rollback) replaced it; a
    rollback away from it fails the soak (it starts again when the artifact is live there again)."""
    stretch = live_stretch(entry, artifact_id)
    out = {"required_min": minutes, "live_since": None, "minutes": 0, "left_min": math.ceil(minutes), "ok": False}
    if stretch is None:
        return dict(out, why="never live")
    out["live_since"] = stretch["since"]
    start = parse_utc(stretch["since"])
    if start is None:
        return dict(out, why=f"its live time {stretch['since']!r} is not a time")
    if stretch["rolled_back"]:
        return dict(out, why="rolled back", rolled_back_at=stretch["until"])
    end = now if stretch["until"] is None else parse_utc(stretch["until"])
    if end is None:
        return dict(out, why=f"its replacement time {stretch['until']!r} is not a time")
    ran = max(0.0, end - start)
    left = max(0.0, minutes * 60 - ran)
    out.update(minutes=int(ran // 60), left_min=math.ceil(left / 60), ok=left <= 0)
    if stretch["until"] is not None:
        out["until"] = stretch["until"]
    return out


def soak_message(soak, artifact_id, from_env, to_env) -> str:
    required = f"{soak['required_min']:g} min"
    if soak.get("why") == "never live":
        return f"{from_env} never ran {show_id(artifact_id)}, and {to_env} requires a {required} soak there"
    if soak.get("why"):
        return f"the soak of {show_id(artifact_id)} in {from_env} cannot be measured: {soak['why']}"
    ran = f"{from_env} has run {show_id(artifact_id)} for {soak['minutes']} min"
    if soak.get("until"):
        ran = f"{from_env} ran {show_id(artifact_id)} for {soak['minutes']} min (until {soak['until']})"
    return f"{ran} of the {required} soak {to_env} requires: {soak['left_min']} min left; or force with a reason"


def approval_status(entry, artifact_id, approval) -> dict:
    """The approval of artifact_id in the environment of `entry` that counts, if any: {ok, by, at, void}.

    The entry keeps the approvals still valid (plan_approval, plan_record prune them): an approval is for one
    artifact and one environment, and it is void once another artifact was approved for that environment or
    became live there after it. An approval by a name no longer among the approvers does not count."""
    approvers = approval.get("approvers") or []
    key = canonical_id(artifact_id)
    found = [item for item in (entry or {}).get("approvals") or [] if canonical_id(item.get("id")) == key]
    counted = [item for item in found if not approvers or item.get("by") in approvers]
    if counted:
        newest = counted[-1]
        return {"ok": True, "by": newest.get("by"), "at": newest.get("at")}
    return {"ok": False, "by": None, "at": None, "not_approvers": [item.get("by") for item in found]}


def approval_message(app, env, artifact_id, approval, status) -> str:
    approvers = approval.get("approvers") or []
    who = f"one of {', '.join(approvers)}" if approvers else "anyone (no approvers listed: any name counts)"
    ident = show_id(artifact_id)
    quoted = shlex.quote(ident)
    by = approvers[0] if approvers else "<name>"
    also = ""
    if status.get("not_approvers"):
        also = f" (approved by {', '.join(map(str, status['not_approvers']))}, who is not an approver of {env})"
    return (
        f"{env} requires an approval of {ident} for app {app} before it goes live, and there is none{also}:"
        f" {who} may approve it with: ansible-playbook playbooks/approve.yml -e env={env} -e artifact={quoted}"
        f" -e by={by}. An approval is for one artifact and is void once another artifact is approved for {env} or"
        f" goes live there; nothing was changed"
    )


def plan_approval(entry, artifact_id, by, at, approval=None):
    """current entry + an approval of artifact_id by `by` -> (changed, new entry). Pure; never mutates `entry`.

    Refused (LedgerError, nothing written): a name that is not among approval.approvers (when listed). Approving
    an artifact voids the approvals of every other artifact in the environment; the same name approving the same
    artifact again changes nothing. The newest APPROVALS_KEPT approvals of the artifact are kept."""
    approval = approval or {}
    approvers = approval.get("approvers") or []
    if not isinstance(by, str) or not by.strip():
        raise LedgerError("an approval needs the approver's name: give by=<name>")
    by = by.strip()
    if approvers and by not in approvers:
        raise LedgerError(
            f"{by} is not an approver of this environment: the approvers are {', '.join(approvers)}"
            " (promotion_environments.<env>.approval.approvers); nothing was recorded"
        )
    artifact_id = normalize_id(artifact_id)
    current = copy.deepcopy(entry) if entry else empty_entry()
    key = canonical_id(artifact_id)
    kept = [item for item in current.get("approvals") or [] if canonical_id(item.get("id")) == key]
    if any(item.get("by") == by for item in kept):
        current["approvals"] = kept
        return kept != (entry or {}).get("approvals"), current
    # the newest 10 approvals of the artifact (the newest counts; an SSM parameter must hold them)
    current["approvals"] = (kept + [{"id": artifact_id, "by": by, "at": at}])[-APPROVALS_KEPT:]
    return True, current


def check_rollback(chain, ledger_state, app, env, artifact_id=None):
    """Plan a rollback of app in env to artifact_id (default: the previous one); raise LedgerError when impossible."""
    if chain is not None:
        check_env(check_chain(chain), env)
    check_name("app", app)
    entry = get_entry(ledger_state, app, env)
    if not entry or entry.get("live") is None:
        raise LedgerError(f"app {app!r} has nothing live in {env!r}: there is nothing to roll back")
    history = [item for item in entry.get("history", []) if item.get("action") not in EVENT_ACTIONS]
    if artifact_id is None and history and history[-1].get("action") == "rollback":
        # Already rolled back: "previous" is now the artifact rolled away from, never a default target.
        target = entry["live"]
    else:
        target = entry.get("previous") if artifact_id is None else normalize_id(artifact_id)
    if target is None:
        raise LedgerError(
            f"app {app!r} in {env!r} has no previous artifact to roll back to (live: {show_id(entry['live'])}); "
            "give artifact_id of an artifact that was live there before"
        )
    if not any(same_id(item.get("id"), target) for item in history):
        raise LedgerError(
            f"artifact {show_id(target)} was never live for app {app!r} in {env!r}: a rollback returns to an "
            "artifact that was live there before (see the history with immutable.infra.ledger_info)"
        )
    return {"app": app, "env": env, "from_env": None, "id": normalize_id(target), "action": "rollback"}


def check_repair(chain, ledger_state, app, env, artifact_id=None):
    """Plan the record of a repair: fresh containers from the ID already live in env (default: that live ID).

    A repair changes no ID: it replaces drifted containers with fresh ones from the live ID, so the ID must be the
    one live there (no promotion gate: it is already live)."""
    if chain is not None:
        check_env(check_chain(chain), env)
    check_name("app", app)
    entry = get_entry(ledger_state, app, env)
    if not entry or entry.get("live") is None:
        raise LedgerError(f"app {app!r} has nothing live in {env!r}: there is nothing to repair (deploy first)")
    target = entry["live"] if artifact_id is None else normalize_id(artifact_id)
    if not same_id(entry["live"], target):
        raise LedgerError(
            f"a repair re-creates the ID live in {env!r} ({show_id(entry['live'])}), not {show_id(target)}: "
            "use action=deploy, promote or rollback to change the live ID"
        )
    return {"app": app, "env": env, "from_env": None, "id": normalize_id(target), "action": "repair"}


def check_abort(chain, app, env, artifact_id, from_env=None):
    """Plan the record of an aborted rollout: the artifact's analysis failed during the switch into env and the
    traffic went back to the live colour. Nothing went live: live and previous stay; the record (verified=false,
    with the analysis in its evidence) withdraws the artifact in env, so it is not promoted onwards from there."""
    if chain is not None:
        check_env(check_chain(chain), env)
    check_name("app", app)
    if artifact_id is None:
        raise LedgerError(f"an abort record needs artifact_id: the artifact whose rollout into {env!r} was aborted")
    return {"app": app, "env": env, "from_env": from_env, "id": normalize_id(artifact_id), "action": "abort"}


def plan_record(
    entry,
    artifact_id,
    action,
    by,
    at,
    from_env=None,
    record=None,
    reason=None,
    forced=False,
    verified=True,
    hosts=None,
    evidence=None,
):
    """current entry + what happened -> (changed, new entry). Pure; never mutates `entry`.

    hosts: the hosts that run the ID (a fleet environment), stored in the history record when given.
    evidence: what the decision relied on (analysis, soak, approval, hooks), stored compacted (compact_evidence).
    An artifact made live voids the approvals of every other artifact in the environment.

    Idempotent: the id already live, recorded last with the same action and verified flag, is changed=false.
    deploy/promote: live <- id, previous <- the old live (when it differs). rollback: live and previous swap
    (rollback to an older id: live <- that id, previous <- the old live). repair and abort: events, recorded each
    time; an abort leaves live and previous alone (nothing went live) and is never verified.
    """
    if action not in ACTIONS:
        raise LedgerError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    current = copy.deepcopy(entry) if entry else empty_entry()
    if action == "rollback" and artifact_id is None:
        artifact_id = current.get("previous")
        if artifact_id is None:
            raise LedgerError("rollback: there is no previous artifact to roll back to")
    artifact_id = normalize_id(artifact_id)
    history = current.setdefault("history", [])
    last = history[-1] if history else None
    if action in EVENT_ACTIONS:
        verified = False
    if (
        action not in ("repair", *EVENT_ACTIONS)  # events (fresh containers, an abort): recorded each time
        and same_id(current.get("live"), artifact_id)
        and last is not None
        and last.get("action") == action
        and bool(last.get("verified")) == bool(verified)
        and (hosts is None or sorted(last.get("hosts") or []) == sorted(hosts))
    ):
        return False, current
    old_live = current.get("live")
    if action not in EVENT_ACTIONS:
        if old_live is not None and not same_id(old_live, artifact_id):
            current["previous"] = old_live
        current["live"] = artifact_id
    added = {
        "id": artifact_id,
        "at": at,
        "by": by,
        "action": action,
        "from_env": from_env,
        "record": record,
        "reason": reason,
        "forced": bool(forced),
        "verified": bool(verified),
    }
    if hosts is not None:
        added["hosts"] = [str(host) for host in hosts]
    evidence = compact_evidence(evidence)
    if evidence:
        added["evidence"] = evidence
    history.append(added)
    if current.get("approvals") and action not in ("repair", *EVENT_ACTIONS):
        key = canonical_id(artifact_id)
        current["approvals"] = [item for item in current["approvals"] if canonical_id(item.get("id")) == key]
        if not current["approvals"]:
            current.pop("approvals")
    return True, current
