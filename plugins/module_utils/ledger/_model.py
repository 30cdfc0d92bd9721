# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ledger's data: IDs (digest references, AMI IDs, region maps), entries, states and their validation.

PRIVATE to the collection: no compatibility promise outside immutable.infra. The schema is documented in
docs/ledger.md.
"""

from __future__ import annotations

import copy
import json
import re
import time

SCHEMA = 1
ACTIONS = ("deploy", "promote", "rollback", "repair")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AMI_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-fA-F]{64}$")


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


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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
    a rollback withdraws the id that was live before it (it was judged bad).
    """
    verdict: dict = {}
    live_before = None
    for item in (entry or {}).get("history", []):
        key = canonical_id(item.get("id"))
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
