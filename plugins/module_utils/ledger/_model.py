# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger's data: IDs (digest references, AMI IDs, region maps), entries, states and their validation.

PRIVATE to the collection: no compatibility promise outside immutable.infra. The schema is documented in
docs/ledger.md.
"""

from __future__ import annotations

import calendar
import copy
import datetime
import json
import os
import re
import time

SCHEMA = 1
ACTIONS = ("deploy", "promote", "rollback", "repair", "abort")
# records of an event that put nothing live: the history walks (gate, rollback, soak) skip them for "what was live"
EVENT_ACTIONS = ("abort",)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AMI_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-fA-F]{64}$")
# the one clock of every ledger decision (docs/ledger.md, "The clock"): tests and what-if runs set it
CLOCK_VARIABLE = "IMMUTABLE_NOW"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
ISO_UTC_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?(Z|[+-]\d\d:?\d\d)$", re.IGNORECASE
)
# evidence kept in a history record (docs/ledger.md, "Evidence"): small, so an SSM parameter (4 KB) holds it
EVIDENCE_LIST_MAX = 12
EVIDENCE_DETAIL_MAX = 120
EVIDENCE_BYTES_MAX = 2000


class LedgerError(Exception):
    """A ledger operation was refused; the message names the bad input and the fix. Nothing was written.

    `original` keeps a backend exception (for example a botocore ClientError) when there is one.
    """

    def __init__(self, message: str, original: BaseException | None = None, context: str | None = None):
        super().__init__(message)
        self.message = message
        self.original = original
        self.context = context or message


# ---------------------------------------------------------------------------------------------------------------
# Identifiers and names
# ---------------------------------------------------------------------------------------------------------------


def parse_utc(text) -> float | None:
    """Seconds since the epoch of an ISO-8601 time with a zone (2026-12-04T10:00:00Z, ...+01:00); None otherwise.

    The ledger writes YYYY-MM-DDTHH:MM:SSZ; a time without a zone is refused (None): it would be a guess."""
    match = ISO_UTC_RE.match(str(text).strip()) if isinstance(text, str) else None
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        moment = datetime.datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
    seconds = float(calendar.timegm(moment.timetuple()))
    if zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return seconds


def format_utc(seconds: float) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(seconds))


def now_seconds(environ=None) -> float:
    """Now, in seconds since the epoch: IMMUTABLE_NOW when set (an ISO-8601 UTC time, for tests and what-if runs:
    "would prod accept this tomorrow at 10:00?"), else the system clock. An invalid IMMUTABLE_NOW is an error."""
    value = (os.environ if environ is None else environ).get(CLOCK_VARIABLE, "")
    if not str(value).strip():
        return time.time()
    seconds = parse_utc(value)
    if seconds is None:
        raise LedgerError(
            f"{CLOCK_VARIABLE}={value!r} is not an ISO-8601 UTC time: give it like 2026-12-04T10:00:00Z (it sets the"
            " ledger's clock, for tests and what-if runs), or unset it to use the system clock"
        )
    return seconds


def utc_now(environ=None) -> str:
    """The ledger's clock (YYYY-MM-DDTHH:MM:SSZ): every ledger decision and record time comes from here."""
    return format_utc(now_seconds(environ))


def check_name(kind: str, value) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or value.endswith(".lock"):
        raise LedgerError(
            f"{kind} name {value!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, not ending in '.lock')"
        )
    return value


def normalize_id(value):
    """Return the immutable artifact ID in its stored form, or raise LedgerError.

    Accepted: a container digest reference `repo@sha256:<64 hex>`, an AMI ID `ami-...`, or a region map
    `{"eu-west-1": "ami-...", ...}` (also as a JSON string). Tags and names are refused: they can move.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise LedgerError(f"artifact id {value!r} looks like a region map but is not valid JSON") from None
        elif AMI_RE.match(text):
            return text
        elif DIGEST_RE.match(text):
            repo, digest = text.split("@", 1)
            return f"{repo}@{digest.lower()}"
        else:
            raise LedgerError(
                f"artifact id {value!r} is not immutable: use the digest reference repo@sha256:<64 hex> "
                "(push_image returns it), an AMI id ami-... or a region map {region: ami-...} (bake_ami returns it); "
                "never a tag or a name"
            )
    if isinstance(value, dict):
        if not value:
            raise LedgerError("artifact id is an empty region map: give at least one {region: ami-...}")
        out = {}
        for region in sorted(value):
            ami = value[region]
            if not isinstance(region, str) or not REGION_RE.match(region):
                raise LedgerError(f"artifact id region map has an invalid region {region!r} (expected e.g. eu-west-1)")
            if not isinstance(ami, str) or not AMI_RE.match(ami.strip()):
                raise LedgerError(f"artifact id region map has {region}: {ami!r}, which is not an AMI id (ami-...)")
            out[region] = ami.strip()
        return out
    raise LedgerError(
        f"artifact id {value!r} has type {type(value).__name__}: give a string (repo@sha256:..., ami-...) "
        "or a region map {region: ami-...}"
    )


def canonical_id(value) -> str | None:
    """A string that is equal for equal artifact IDs (key order and digest case do not matter)."""
    if value is None:
        return None
    value = normalize_id(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def same_id(left, right) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return canonical_id(left) == canonical_id(right)


def show_id(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def empty_state() -> dict:
    return {"schema": SCHEMA, "apps": {}}


def _short(value, limit=EVIDENCE_DETAIL_MAX):
    if isinstance(value, str) and len(value) > limit:
        return value[: limit - 3] + "..."
    return value


def compact_evidence(evidence) -> dict | None:
    """The evidence stored in a history record (None when every part is empty: nothing is stored), small enough
    for an SSM parameter (4 KB with the record): empty parts left out, lists
    capped at 12 items (the first ones and the last, with `dropped`), strings at 120 characters; when still larger
    than 2000 bytes, the details go; then only the verdicts stay."""
    if not evidence:
        return None
    if not isinstance(evidence, dict):
        raise LedgerError(
            f"evidence must be a mapping (analysis, soak, approval, hooks), not {type(evidence).__name__}"
        )

    def shrink(value):
        if isinstance(value, dict):
            return {str(key): shrink(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            items = list(value)
            if len(items) > EVIDENCE_LIST_MAX:
                head = EVIDENCE_LIST_MAX - 1
                items = items[:head] + items[-1:] + [{"dropped": len(value) - EVIDENCE_LIST_MAX}]
            return [shrink(item) for item in items]
        if isinstance(value, str):
            return _short(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return _short(str(value))

    out = shrink({key: value for key, value in evidence.items() if value not in (None, [], {}, "")})
    if not out:
        return None

    def size(value):
        return len(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8"))

    if size(out) > EVIDENCE_BYTES_MAX:
        for key in ("analysis", "hooks"):
            if isinstance(out.get(key), list):
                out[key] = [
                    {k: v for k, v in item.items() if k != "detail"} if isinstance(item, dict) else item
                    for item in out[key]
                ]
    if size(out) > EVIDENCE_BYTES_MAX:
        keep = ("step", "verdict", "hook", "kind", "ok", "host", "dropped")
        for key in ("analysis", "hooks"):
            if isinstance(out.get(key), list):
                out[key] = [
                    {k: v for k, v in item.items() if k in keep} if isinstance(item, dict) else item
                    for item in out[key]
                ]
        out["truncated"] = True
    return out


def last_evidence(entry) -> dict | None:
    """The newest deploy or promotion of an entry that has evidence: {id, action, at, by, evidence}; None if none."""
    for item in reversed((entry or {}).get("history") or []):
        if item.get("action") in ("deploy", "promote") and item.get("evidence"):
            return {key: item.get(key) for key in ("id", "action", "at", "by", "evidence")}
    return None


def empty_entry() -> dict:
    return {"live": None, "previous": None, "history": []}


# ---------------------------------------------------------------------------------------------------------------
# Planners (pure)
# ---------------------------------------------------------------------------------------------------------------


def check_chain(chain) -> list:
    if not isinstance(chain, (list, tuple)) or not chain:
        raise LedgerError("chain is empty: give the ordered environments, for example [dev, staging, prod]")
    seen = set()
    for env in chain:
        check_name("environment", env)
        if env in seen:
            raise LedgerError(f"chain {' -> '.join(chain)} names environment {env!r} twice")
        seen.add(env)
    return list(chain)


def check_env(chain, env, what="environment") -> None:
    if env not in chain:
        raise LedgerError(
            f"unknown {what} {env!r}: the chain is {' -> '.join(chain)}; "
            "use one of those or add it to the chain in inventory/group vars"
        )


def get_entry(state: dict, app: str, env: str) -> dict | None:
    return ((state or {}).get("apps") or {}).get(app, {}).get(env)


def accepted_ids(entry: dict | None) -> dict:
    """IDs an environment vouches for: canonical id -> why (for messages).

    Walking the history in order: a record with verified=true vouches for its id, verified=false withdraws it, and
    a rollback withdraws the id that was live before it (it was judged bad). An abort (its analysis failed during
    the rollout, nothing went live) withdraws its id too.
    """
    verdict: dict = {}
    live_before = None
    for item in (entry or {}).get("history", []):
        key = canonical_id(item.get("id"))
        if item.get("action") in EVENT_ACTIONS:
            verdict[key] = "aborted"
            continue
        if item.get("action") == "rollback" and live_before is not None:
            verdict[canonical_id(live_before)] = "rolled back"
        if item.get("verified"):
            verdict[key] = "ok"
        else:
            verdict[key] = "not verified"
        live_before = item.get("id")
    return verdict


# ---------------------------------------------------------------------------------------------------------------
# Validation of stored data
# ---------------------------------------------------------------------------------------------------------------


def entry_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("history", []), list):
        return "history is not a list"
    for key in ("live", "previous"):
        if entry.get(key) is not None:
            try:
                normalize_id(entry[key])
            except LedgerError as exc:
                return f"{key}: {exc}"
    for index, item in enumerate(entry.get("history", [])):
        if not isinstance(item, dict) or "id" not in item:
            return f"history[{index}] is not an object with an id"
    return None


def state_problem(state) -> str | None:
    if not isinstance(state, dict):
        return "the top level is not an object"
    if state.get("schema") != SCHEMA:
        return f"schema is {state.get('schema')!r}, this collection reads schema {SCHEMA}"
    apps = state.get("apps")
    if not isinstance(apps, dict):
        return "apps is not an object"
    revocations = state.get("revocations", {})
    if not isinstance(revocations, dict) or not all(isinstance(items, list) for items in revocations.values()):
        return "revocations is not an object of lists (app -> revocations)"
    for app, items in revocations.items():
        for index, item in enumerate(items):
            if not isinstance(item, dict) or "id" not in item or "kind" not in item:
                return f"revocations.{app}[{index}] is not an object with an id and a kind"
    for app, envs in apps.items():
        if not isinstance(envs, dict):
            return f"apps.{app} is not an object"
        for env, entry in envs.items():
            problem = entry_problem(entry)
            if problem:
                return f"apps.{app}.{env} {problem}"
    return None


def filter_state(state: dict, app=None, env=None) -> dict:
    apps = state.get("apps", {})
    if app is None:
        return {"schema": SCHEMA, "apps": copy.deepcopy(apps)}
    envs = copy.deepcopy(apps.get(app, {}))
    if env is not None:
        envs = {env: envs[env]} if env in envs else {}
    return {"schema": SCHEMA, "apps": {app: envs} if envs else {}}
