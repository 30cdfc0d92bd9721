"""Unit tests for revocations (module_utils/supply/_revocation.py) and their file-backend storage; the SSM backend
stores them too against moto_server (tests/integration/test_ledger.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import add_revocation
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import describe
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import new_revocation
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import revocation_problem
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import revoked_by

CHAIN = ["dev", "staging", "prod"]
A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
BASE = "sha256:" + "c" * 64
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_a_revocation_is_checked_and_says_who_when_why():
    item = new_revocation(A, "artifact", "CVE-2026-1234 in openssl", "alice", NOW)
    assert item == {
        "id": A,
        "kind": "artifact",
        "reason": "CVE-2026-1234 in openssl",
        "by": "alice",
        "at": "2027-01-15T08:00:00Z",
        "from": "2027-01-15T08:00:00Z",
    }
    assert revocation_problem(item) is None
    assert describe(item, A) == f"{A} is revoked (by alice at 2027-01-15T08:00:00Z: CVE-2026-1234 in openssl)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("127.0.0.1:5000/web:1.0", "artifact", "r", "a"), "is not immutable"),
        ((A, "artifact", "  ", "a"), "a revocation needs a reason"),
        ((A, "artifact", "r", ""), "needs who revokes"),
        ((A, "other", "r", "a"), "kind 'other' is not one of artifact, base"),
        ((None, "artifact", "r", "a"), "needs the ID"),
    ],
)
def test_bad_revocations_are_refused_with_the_fix(args, message):
    with pytest.raises(LedgerError, match=message):
        new_revocation(*args, now=NOW)


def test_from_a_date_on():
    item = new_revocation(A, "artifact", "r", "a", NOW, "2027-02-01T00:00:00+01:00")
    assert item["from"] == "2027-01-31T23:00:00Z"
    assert revoked_by([item], A, None, NOW) is None
    assert revoked_by([item], A, None, NOW + 20 * 86400) == item
    with pytest.raises(LedgerError, match="not an ISO-8601 time with a zone"):
        new_revocation(A, "artifact", "r", "a", NOW, "next tuesday")


def test_a_base_revocation_covers_what_was_baked_from_it_only():
    item = new_revocation(BASE, "base", "bad base", "bob", NOW)
    assert revoked_by([item], A, BASE.upper().replace("SHA256", "sha256"), NOW) == item
    assert revoked_by([item], A, "docker.io/debian@" + BASE, NOW) == item
    assert revoked_by([item], A, "sha256:" + "d" * 64, NOW) is None
    assert revoked_by([item], A, None, NOW) is None
    assert "baked from the revoked base image" in describe(item, A)


def test_the_same_id_twice_changes_nothing():
    first = new_revocation(A, "artifact", "first", "alice", NOW)
    changed, after, stands = add_revocation([], first)
    assert changed and after == [first] and stands == first
    again = new_revocation(A.replace("a" * 64, "A" * 64), "artifact", "second", "bob", NOW + 60)
    assert add_revocation(after, again) == (False, after, first)
    # the same digest as a base is another revocation
    assert add_revocation(after, new_revocation(BASE, "base", "b", "bob", NOW))[0] is True


def params(**extra):
    base = {"app": "web", "env": None, "chain": CHAIN, "action": "revoke", "artifact_id": A, "reason": "CVE-1"}
    return dict(base, **dict({"by": "alice"}, **extra))


def test_file_ledger_stores_revocations_beside_the_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_NOW", "2027-01-15T08:00:00Z")
    path = tmp_path / "ledger.json"
    ledger = FileLedger(str(path))
    run_record(ledger, {"app": "web", "env": "dev", "chain": CHAIN, "action": "deploy", "artifact_id": B}, False)
    # check mode: nothing written
    before = path.read_bytes()
    planned = run_record(ledger, params(), True)
    assert planned["changed"] is True and path.read_bytes() == before
    done = run_record(ledger, params(), False)
    assert done["changed"] is True
    assert done["revocation"]["by"] == "alice" and done["revocations"] == [done["revocation"]]
    state = json.loads(path.read_text())
    assert state["revocations"]["web"] == [done["revocation"]]
    assert state["apps"]["web"]["dev"]["live"] == B  # the entries are untouched
    # again: nothing changes, not even the bytes; the first revocation stands
    written = path.read_bytes()
    again = run_record(ledger, params(reason="other", by="bob"), False)
    assert again["changed"] is False and again["revocation"]["reason"] == "CVE-1"
    assert path.read_bytes() == written
    # a later promotion keeps the revocations, and the gate returns them
    gate = run_record(ledger, {"app": "web", "env": "dev", "chain": CHAIN, "action": "deploy", "artifact_id": A}, False)
    assert gate["revocations"] == [done["revocation"]]
    assert json.loads(path.read_text())["revocations"]["web"] == [done["revocation"]]
    assert ledger.revocations("other") == []


def test_a_base_revocation_keeps_its_descendants(tmp_path):
    ledger = FileLedger(str(tmp_path / "ledger.json"))
    done = run_record(
        ledger,
        params(artifact_id=BASE, revocation={"kind": "base", "from": None, "artifacts": [B, A]}),
        False,
    )
    assert done["revocation"]["kind"] == "base" and done["revocation"]["artifacts"] == [A, B]


def test_a_corrupt_revocation_list_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps({"schema": 1, "apps": {}, "revocations": {"web": [{"reason": "no id"}]}}))
    with pytest.raises(LedgerError, match="revocations.web\\[0\\] is not an object with an id"):
        FileLedger(str(path)).revocations("web")


def test_other_actions_still_need_env(tmp_path):
    with pytest.raises(LedgerError, match="action=deploy needs env"):
        run_record(FileLedger(str(tmp_path / "l.json")), params(action="deploy"), False)
