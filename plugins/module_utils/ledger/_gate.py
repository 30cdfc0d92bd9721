# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion gate and the record planner: pure functions over a ledger state (no I/O).

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

import copy

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import ACTIONS
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import accepted_ids
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import canonical_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_chain
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_env
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_name
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import empty_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import normalize_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import same_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import show_id


def check_promotion(chain, ledger_state, app, from_env, to_env, artifact_id, force=False, reason=None, known_ids=None):
    """Check a deploy (from_env None) or a promotion against the chain gate; return the plan or raise LedgerError.

    The plan: {app, env, from_env, id, action, forced, overridden}; `forced` is true only when force was needed,
    `overridden` lists the gate messages that force overrode. Never overridable: an unknown environment, a
    from_env without a live artifact, an invalid or unknown artifact id, force without a reason.
    """
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
            else:
                why = f"was live in {from_env!r} but its last record there says verified=false"
            overridden.append(f"artifact {show_id(artifact_id)} {why}")

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
    return {
        "app": app,
        "env": to_env,
        "from_env": from_env,
        "id": artifact_id,
        "action": action,
        "forced": bool(overridden),
        "overridden": overridden,
    }


def check_rollback(chain, ledger_state, app, env, artifact_id=None):
    """Plan a rollback of app in env to artifact_id (default: the previous one); raise LedgerError when impossible."""
    if chain is not None:
        check_env(check_chain(chain), env)
    check_name("app", app)
    entry = get_entry(ledger_state, app, env)
    if not entry or entry.get("live") is None:
        raise LedgerError(f"app {app!r} has nothing live in {env!r}: there is nothing to roll back")
    history = entry.get("history", [])
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
    if not any(same_id(item.get("id"), target) for item in entry.get("history", [])):
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
):
    """current entry + what happened -> (changed, new entry). Pure; never mutates `entry`.

    hosts: the hosts that run the ID (a fleet environment), stored in the history record when given.

    Idempotent: the id already live, recorded last with the same action and verified flag, is changed=false.
    deploy/promote: live <- id, previous <- the old live (when it differs). rollback: live and previous swap
    (rollback to an older id: live <- that id, previous <- the old live).
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
    if (
        action != "repair"  # a repair is an event (fresh containers): recorded each time
        and same_id(current.get("live"), artifact_id)
        and last is not None
        and last.get("action") == action
        and bool(last.get("verified")) == bool(verified)
        and (hosts is None or sorted(last.get("hosts") or []) == sorted(hosts))
    ):
        return False, current
    old_live = current.get("live")
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
    history.append(added)
    return True, current
