# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Revocations of artifacts and of base images (docs/supply-chain.md, "Revocation"): the data and its rules.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A revocation is ``{id, kind, reason, by, at, from}``: ``kind`` ``artifact`` (the immutable artifact ID) or ``base``
(a base image ID, ``base.id`` of the artifact records: it revokes every artifact whose record says it was baked from
that base); ``at`` when it was recorded, ``from`` when it takes effect (default ``at``), both ISO-8601 UTC. The
ledger backends store them per app (module_utils/ledger); these functions are pure.
"""

from __future__ import annotations

import hashlib
import json
import re

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import canonical_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import format_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import show_id

KINDS = ("artifact", "base")
BASE_ID = re.compile(r"^(?:[^\s@]+@)?sha256:[0-9a-f]{64}$|^ami-[0-9a-f]{8,17}$")
REASON_MAX = 300


def base_key(value) -> str:
    """A base image ID compared case-blind, a digest reference by its digest (repo@sha256:x and sha256:x match)."""
    text = str(value or "").strip().lower()
    return text.rpartition("@")[2]


def revocation_key(item: dict) -> str:
    """The stored identity of a revocation (its kind and ID): one revocation per ID, a second one changes nothing."""
    ident = canonical_id(item["id"]) if item["kind"] == "artifact" else base_key(item["id"])
    return hashlib.sha256(f"{item['kind']}:{ident}".encode()).hexdigest()[:40]


def new_revocation(artifact_id, kind, reason, by, now: float, effective_from=None, artifacts=None) -> dict:
    """A checked revocation; LedgerError names the bad input and how to give it."""
    if kind not in KINDS:
        raise LedgerError(f"revocation kind {kind!r} is not one of {', '.join(KINDS)}")
    if artifact_id in (None, "", {}):
        raise LedgerError("a revocation needs the ID: -e artifact=<artifact ID or base image ID>")
    if kind == "artifact":
        stored = canonical_id(artifact_id)  # LedgerError for a tag or a name: only immutable IDs are revoked
        if stored.startswith("{"):
            stored = json.loads(stored)
    else:
        stored = str(artifact_id).strip()
        if not BASE_ID.match(stored.lower()):
            raise LedgerError(
                f"base image ID {artifact_id!r} is not an image ID: give the base.id of an artifact record"
                " (sha256:<64 hex>, <repository>@sha256:<64 hex> or ami-...)"
            )
    reason = str(reason or "").strip()
    if not reason:
        raise LedgerError(
            "a revocation needs a reason: -e reason='CVE-2026-1234 in openssl' (it is shown to whoever is refused)"
        )
    if len(reason) > REASON_MAX:
        raise LedgerError(f"the reason is {len(reason)} characters long: keep it under {REASON_MAX}")
    by = str(by or "").strip()
    if not by:
        raise LedgerError("a revocation needs who revokes: -e by=<your name>")
    start = now
    if effective_from not in (None, ""):
        start = parse_utc(str(effective_from))
        if start is None:
            raise LedgerError(
                f"from {effective_from!r} is not an ISO-8601 time with a zone: give it like 2026-12-04T10:00:00Z"
            )
    item = {"id": stored, "kind": kind, "reason": reason, "by": by, "at": format_utc(now), "from": format_utc(start)}
    if artifacts:
        item["artifacts"] = sorted({show_id(value) for value in artifacts})[:20]
    return item


def revocation_problem(item) -> str | None:
    """What is wrong with a stored revocation (None when it is fine)."""
    if not isinstance(item, dict):
        return "is not an object"
    if item.get("kind") not in KINDS:
        return f"kind {item.get('kind')!r} is not artifact or base"
    for key in ("id", "reason", "by", "at", "from"):
        if item.get(key) in (None, ""):
            return f"has no {key}"
    if parse_utc(item.get("from")) is None or parse_utc(item.get("at")) is None:
        return "at/from are not ISO-8601 UTC times"
    return None


def add_revocation(revocations: list, item: dict) -> tuple:
    """(changed, revocations after, the revocation that stands): a second revocation of the same ID changes nothing."""
    key = revocation_key(item)
    for existing in revocations or []:
        if revocation_key(existing) == key:
            return False, list(revocations), existing
    return True, list(revocations or []) + [item], item


def effective(item: dict, now: float) -> bool:
    start = parse_utc(item.get("from") or item.get("at"))
    return start is None or start <= now


def revoked_by(revocations, artifact_id, base_id, now: float):
    """The first revocation in effect at `now` that covers the artifact (its own ID, or its record's base ID)."""
    try:
        wanted = canonical_id(artifact_id)
    except LedgerError:
        wanted = None
    base = base_key(base_id) if base_id else None
    for item in revocations or []:
        if not isinstance(item, dict) or not effective(item, now):
            continue
        if item.get("kind") == "artifact":
            try:
                if wanted is not None and canonical_id(item.get("id")) == wanted:
                    return item
            except LedgerError:
                continue
        elif base and base_key(item.get("id")) == base:
            return item
    return None


def describe(item: dict, artifact_id) -> str:
    """One sentence: what is revoked, by whom, when, why."""
    when = item.get("at")
    if item.get("from") and item.get("from") != item.get("at"):
        when = f"{item.get('at')}, in effect from {item.get('from')}"
    what = (
        f"{show_id(artifact_id)} is revoked"
        if item.get("kind") == "artifact"
        else f"{show_id(artifact_id)} is revoked: it was baked from the revoked base image {item.get('id')}"
    )
    return f"{what} (by {item.get('by')} at {when}: {item.get('reason')})"
