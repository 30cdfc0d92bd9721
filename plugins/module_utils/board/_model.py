# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion board's data: per app, one column per environment of the chain, from the ledger, the artifact
records and the last verify's result.

PRIVATE to the collection: no compatibility promise outside immutable.infra. Pure: the readers are in _read.py, the
renderers in _html.py and _text.py. The data is documented in docs/board.md (the board module returns it as JSON).
"""

from __future__ import annotations

import calendar
import time

from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import approval_message
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import approval_status
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_policy
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_promotion
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import soak_message
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import soak_status
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import accepted_ids
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import canonical_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds

SCHEMA = 1
# the fields of a ledger history record the board shows in their own places; any other field is shown as it is
HISTORY_FIELDS = (
    "id",
    "at",
    "by",
    "action",
    "from_env",
    "record",
    "reason",
    "forced",
    "verified",
    "hosts",
    "evidence",
)
# how the board names a history record's action (the ledger's word stays in data-action and the JSON's action)
ACTION_LABELS = {"abort": "aborted"}
FIRST_STEPS = (
    "ansible-playbook playbooks/bake.yml",
    "ansible-playbook playbooks/deploy.yml -e env={first}",
)


def short_id(value) -> str:
    """A short form people can compare: sha256:<12 hex> for a digest reference, the AMI ID, region: AMI pairs."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{region}:{ami}" for region, ami in sorted(value.items()))
    text = str(value)
    if "@sha256:" in text:
        return "sha256:" + text.split("@sha256:", 1)[1][:12]
    return text


def parse_time(text) -> float | None:
    """Seconds since the epoch of a ledger or record time (YYYY-MM-DDTHH:MM:SSZ); None when it is not one."""
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def age(since, now: float) -> str:
    """'45s', '12m', '5h', '3d' from a ledger time to now; '' when the time is unknown."""
    start = parse_time(since)
    if start is None:
        return ""
    seconds = max(0, int(now - start))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _key(value):
    try:
        return canonical_id(value)
    except LedgerError:
        return repr(value)


def record_index(records) -> dict:
    """canonical artifact ID -> the record that baked it (the newest record wins when two share an ID)."""
    index = {}
    for record in sorted(records or [], key=lambda item: str(item.get("created") or "")):
        if isinstance(record, dict) and record.get("id") is not None:
            index[_key(record["id"])] = record
    return index


def artifact(value, records: dict) -> dict | None:
    """What the board shows of one artifact ID: the ID, its short form and, from its record, version and bake."""
    if value is None:
        return None
    record = records.get(_key(value)) or {}
    return {
        "id": value,
        "short": short_id(value),
        "version": str(record.get("version") or ""),
        "created": record.get("created"),
        "bake_id": record.get("bake_id"),
        "kind": record.get("kind") or ("container" if "@" in str(value) else "ami"),
    }


def evidence_summary(evidence) -> str:
    """A history record's evidence (docs/ledger.md, "Evidence") in one short line: the first analysis verdict that
    did not pass (its step, host and detail) or how many passed, the hooks that failed or passed, the soak and the
    approval. Empty when the record has none."""
    if not isinstance(evidence, dict):
        return ""
    parts = []
    analysis = [item for item in evidence.get("analysis") or [] if isinstance(item, dict)]
    bad = [item for item in analysis if item.get("verdict") != "passed"]
    if bad:
        first = bad[0]
        where = f" on {first['host']}" if first.get("host") else ""
        detail = f": {first['detail']}" if first.get("detail") else ""
        parts.append(f"analysis {first.get('verdict')} at {first.get('step')}%{where}{detail}")
    elif analysis:
        parts.append(f"analysis passed ({len(analysis)} step{'s' if len(analysis) != 1 else ''})")
    hooks = [item for item in evidence.get("hooks") or [] if isinstance(item, dict)]
    failed = [item for item in hooks if not item.get("ok")]
    if failed:
        parts.append("; ".join(str(item.get("detail") or f"{item.get('hook')} hook failed") for item in failed))
    elif hooks:
        parts.append("hooks ok: " + ", ".join(str(item.get("hook")) for item in hooks))
    soak = evidence.get("soak")
    if isinstance(soak, dict) and soak.get("required_min"):
        parts.append(f"soak {soak.get('minutes')} of {soak.get('required_min')} min in {soak.get('from_env')}")
    approval = evidence.get("approval")
    if isinstance(approval, dict) and approval.get("by"):
        parts.append(f"approved by {approval['by']}")
    return "; ".join(parts)


def _history(entry: dict, records: dict) -> list:
    out = []
    for item in reversed((entry or {}).get("history") or []):
        shown = artifact(item.get("id"), records) or {}
        action = str(item.get("action") or "")
        out.append(
            {
                "action": action,
                "label": ACTION_LABELS.get(action, action),
                "evidence": evidence_summary(item.get("evidence")),
                "artifact": shown,
                "at": item.get("at"),
                "by": item.get("by"),
                "from_env": item.get("from_env"),
                "forced": bool(item.get("forced")),
                "reason": item.get("reason"),
                "verified": bool(item.get("verified")),
                "hosts": list(item.get("hosts") or []),
                "extra": {key: value for key, value in item.items() if key not in HISTORY_FIELDS},
            }
        )
    return out


def _live_record(entry: dict) -> dict:
    """The history record that made the live ID live (the newest one naming it)."""
    live = _key(entry.get("live"))
    for item in reversed(entry.get("history") or []):
        if _key(item.get("id")) == live:
            return item
    return {}


def _waits(app, env, here, source, source_env, artifact_id, policy, now) -> list:
    """What the artifact still waits for before env accepts it: [(state, why)] for the soak in the environment before
    and the approval for env (policy: env's soak_minutes and approval, as the promotion settings give them)."""
    waits = []
    if source_env is not None and policy["soak_minutes"]:
        soak = soak_status(source, artifact_id, policy["soak_minutes"], now)
        if not soak["ok"]:
            waits.append(("soaking", soak_message(soak, artifact_id, source_env, env)))
    if policy["approval"]["required"]:
        status = approval_status(here, artifact_id, policy["approval"])
        if not status["ok"]:
            waits.append(("needs approval", approval_message(app, env, artifact_id, policy["approval"], status)))
    return waits


def _incoming(chain, state, app, index, records, newest, policies=None, now=None) -> dict | None:
    """What this environment would accept next: the live ID of the environment before it (the gate decides), or for
    the first environment the newest bake when it is not live there. With the environment's policy (soak_minutes,
    approval), an artifact that the chain allows but that still soaks upstream or needs an approval says so."""
    env = chain[index]
    here = get_entry(state, app, env) or {}
    now = time.time() if now is None else now
    try:
        policy = check_policy((policies or {}).get(env), env)
    except LedgerError as exc:
        policy, policy_problem = check_policy(None, env), exc.message
    else:
        policy_problem = None
    if index == 0:
        if newest is None or _key(newest.get("id")) == _key(here.get("live")):
            return None
        shown = artifact(newest.get("id"), records)
        waits = _waits(app, env, here, None, None, newest.get("id"), policy, now)
        if waits:
            return {"from_env": None, "artifact": shown, "state": waits[0][0], "why": "; ".join(w for _s, w in waits)}
        return {
            "from_env": None,
            "artifact": shown,
            "state": "waiting",
            "why": f"newest bake, not deployed: ansible-playbook playbooks/deploy.yml -e env={env}",
        }
    source_env = chain[index - 1]
    source = get_entry(state, app, source_env) or {}
    if source.get("live") is None:
        return None
    shown = artifact(source["live"], records)
    if _key(source["live"]) == _key(here.get("live")):
        return {"from_env": source_env, "artifact": shown, "state": "current", "why": f"same as {source_env}"}
    try:
        check_promotion(chain, state, app, source_env, env, None)
    except LedgerError as exc:
        return {"from_env": source_env, "artifact": shown, "state": "refused", "why": exc.message}
    if policy_problem:
        return {"from_env": source_env, "artifact": shown, "state": "refused", "why": policy_problem}
    waits = _waits(app, env, here, source, source_env, source["live"], policy, now)
    if waits:
        return {"from_env": source_env, "artifact": shown, "state": waits[0][0], "why": "; ".join(w for _s, w in waits)}
    why = f"ansible-playbook playbooks/promote.yml -e from={source_env} -e to={env}"
    if accepted_ids(here).get(_key(source["live"])) == "rolled back":
        why = f"the gate accepts it, but it was rolled back in {env} before: {why}"
    return {"from_env": source_env, "artifact": shown, "state": "waiting", "why": why}


def _drift(verify: dict | None, env: str) -> dict | None:
    found = ((verify or {}).get("environments") or {}).get(env)
    if not isinstance(found, dict):
        return None
    return {
        "at": (verify or {}).get("at"),
        "checked": bool(found.get("checked", True)),
        "drift": bool(found.get("drift")),
        "mismatches": [str(item) for item in found.get("mismatches") or []],
    }


def _environment(chain, state, app, index, records, newest, verify, now, policies=None) -> dict:
    env = chain[index]
    entry = get_entry(state, app, env) or {}
    made_live = _live_record(entry) if entry.get("live") is not None else {}
    verdict = accepted_ids(entry).get(_key(entry.get("live"))) if entry.get("live") is not None else None
    return {
        "name": env,
        "live": artifact(entry.get("live"), records),
        "previous": artifact(entry.get("previous"), records),
        "since": made_live.get("at"),
        "age": age(made_live.get("at"), now),
        "by": made_live.get("by"),
        "action": made_live.get("action"),
        "from_env": made_live.get("from_env"),
        "verified": verdict == "ok",
        "verdict": verdict,
        "hosts": list(made_live.get("hosts") or []),
        "incoming": _incoming(chain, state, app, index, records, newest, policies, now),
        "drift": _drift(verify, env),
        "history": _history(entry, records),
    }


def app_board(app, chain, state, records=(), verify=None, now=None, policies=None) -> dict:
    """One app's board: its environments in chain order (then any the ledger has outside the chain). policies: env ->
    its soak_minutes and approval (the promotion settings' environments), for what "next in" waits for."""
    now = time.time() if now is None else now
    entries = ((state or {}).get("apps") or {}).get(app) or {}
    envs = list(chain) + sorted(env for env in entries if env not in chain)
    index = record_index(records)
    newest = max(index.values(), key=lambda record: str(record.get("created") or ""), default=None)
    columns = [_environment(envs, state, app, i, index, newest, verify, now, policies) for i in range(len(envs))]
    hint = None
    if not any(column["live"] for column in columns):
        first = envs[0] if envs else "dev"
        hint = f"nothing of {app} is live yet: run " + ", then ".join(FIRST_STEPS).format(first=first)
    return {"name": app, "hint": hint, "verified_at": (verify or {}).get("at"), "environments": columns}


def build_board(state, chain, apps=None, records=None, verify=None, location="", now=None, policies=None) -> dict:
    """The whole board. apps: the apps to show (default: every app of the ledger); records and verify: app -> the
    app's artifact records / its last verify result; policies: env -> {soak_minutes, approval} (the promotion
    settings' environments; other keys are ignored)."""
    chain = [str(env) for env in chain]
    # the ledger's clock (IMMUTABLE_NOW when set), so the soak left matches what the promotion gate would say
    now = now_seconds() if now is None else now
    names = list(apps) if apps else sorted((state or {}).get("apps") or {})
    policies = {
        str(env): {key: value for key, value in cfg.items() if key in ("soak_minutes", "approval")}
        for env, cfg in (policies or {}).items()
        if isinstance(cfg, dict)
    }
    shown = [
        app_board(app, chain, state, (records or {}).get(app, ()), (verify or {}).get(app), now, policies)
        for app in names
    ]
    empty = not any(env["live"] for app in shown for env in app["environments"])
    first = chain[0] if chain else "dev"
    return {
        "schema": SCHEMA,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "location": location,
        "chain": chain,
        "empty": empty,
        "hint": (
            f"The ledger ({location or 'not written yet'}) has no live artifact yet. Run first: "
            + ", then ".join(FIRST_STEPS).format(first=first)
            if empty
            else None
        ),
        "apps": shown,
    }
