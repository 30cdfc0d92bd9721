"""Unit tests for the gate's soak time, verification and approvals, the ledger's clock (IMMUTABLE_NOW) and the
evidence kept in a history record: pure tables over ledger states, and the file backend on a real file system.
(Both backends deciding the same for these rules: tests/integration/test_ledger.py, on moto_server.)"""

from __future__ import annotations

import json
import re

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_policy
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_promotion
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_approval
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_record
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import compact_evidence
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import format_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import last_evidence
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import utc_now
from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record

CHAIN = ["dev", "staging", "prod"]
A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
C = "127.0.0.1:5000/web@sha256:" + "c" * 64
T0 = "2026-12-04T10:00:00Z"
SOAK30 = {"soak_minutes": 30}
APPROVAL = {"approval": {"required": True, "approvers": ["alice", "bob"]}}


def at(minutes: float) -> str:
    """T0 + minutes, as the ledger writes times."""
    return format_utc(parse_utc(T0) + minutes * 60)


def now(minutes: float) -> float:
    return parse_utc(T0) + minutes * 60


def state(**envs):
    """state(staging=[(A, "promote", minutes), ...], prod=...) -> a ledger state for app web; an item
    ("approve", id, by, minutes) records an approval."""
    apps = {}
    for env, items in envs.items():
        entry = None
        for item in items:
            if item[0] == "approve":
                entry = plan_approval(entry, item[1], item[2], at(item[3]))[1]
                continue
            artifact, action, minutes, *rest = item
            verified = rest[0] if rest else True
            entry = plan_record(entry, artifact, action, "t@h", at(minutes), verified=verified)[1]
        apps[env] = entry
    return {"schema": 1, "apps": {"web": apps}}


def gate(ledger_state, minutes, from_env="staging", to_env="prod", artifact=None, policy=None, **kwargs):
    return check_promotion(
        CHAIN, ledger_state, "web", from_env, to_env, artifact, policy=policy, now=now(minutes), **kwargs
    )


# --- the clock ------------------------------------------------------------------------------------------------


def test_the_clock_follows_immutable_now_and_refuses_a_bad_value(monkeypatch):
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T10:00:00Z")
    assert utc_now() == "2026-12-04T10:00:00Z"
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T11:30:00+01:00")
    assert utc_now() == "2026-12-04T10:30:00Z", "an offset is converted to UTC"
    for bad in ("tomorrow", "2026-12-04T10:00:00", "2026-02-30T10:00:00Z"):
        monkeypatch.setenv("IMMUTABLE_NOW", bad)
        with pytest.raises(LedgerError, match=rf"IMMUTABLE_NOW='{bad}' is not an ISO-8601 UTC time: give it like"):
            utc_now()
    monkeypatch.delenv("IMMUTABLE_NOW")
    assert parse_utc(utc_now()) is not None


# --- soak and verification ------------------------------------------------------------------------------------

STAGING_A = [(A, "promote", 0)]


@pytest.mark.parametrize(
    ("case", "ledger_state", "minutes", "artifact", "expected"),
    [
        (
            "soak not elapsed: refused with the time left",
            state(staging=STAGING_A),
            12.5,
            None,
            f"staging has run {A} for 12 min of the 30 min soak prod requires: 18 min left; or force with a reason",
        ),
        ("soak elapsed", state(staging=STAGING_A), 30, None, "ok"),
        (
            "re-records of the live ID in staging (a repair, a re-verification) never reset the soak",
            state(staging=[(A, "promote", 0), (A, "repair", 20), (A, "deploy", 25, False), (A, "deploy", 26)]),
            30,
            None,
            "ok",
        ),
        (
            "a promotion of it further down the chain never resets the soak upstream",
            state(staging=STAGING_A, prod=[(C, "deploy", 0), (A, "promote", 20), (C, "rollback", 25)]),
            30,
            None,
            "ok",
        ),
        (
            "replaced (not rolled back) in staging: the time it ran counts",
            state(staging=[(A, "promote", 0), (B, "promote", 31)]),
            60,
            A,
            "ok",
        ),
        (
            "replaced too early in staging",
            state(staging=[(A, "promote", 0), (B, "promote", 10)]),
            60,
            A,
            f"staging ran {A} for 10 min (until {at(10)}) of the 30 min soak prod requires: 20 min left",
        ),
        (
            "a rollback away from it in staging resets its verification",
            state(staging=[(A, "promote", 0), (B, "promote", 5), (A, "rollback", 40)]),
            60,
            B,
            f"artifact {B} was rolled back in 'staging'",
        ),
        (
            "promoted again after the rollback: verified again, its soak starts again",
            state(staging=[(A, "promote", 0), (B, "promote", 5), (A, "rollback", 40), (B, "promote", 50)]),
            60,
            B,
            f"staging has run {B} for 10 min of the 30 min soak prod requires: 20 min left",
        ),
        (
            "live long enough but not verified",
            state(staging=[(A, "promote", 0, False)]),
            60,
            None,
            "its last record there says verified=false",
        ),
        (
            "already live in prod: nothing goes live, no soak",
            state(staging=STAGING_A, prod=[(A, "deploy", 1)]),
            2,
            A,
            "ok",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_soak_table(case, ledger_state, minutes, artifact, expected):
    try:
        plan = gate(ledger_state, minutes, artifact=artifact, policy=SOAK30)
    except LedgerError as exc:
        assert expected != "ok", f"{case}: refused: {exc}"
        assert expected in str(exc), case
        assert "force: true with a reason" in str(exc)
        return
    assert expected == "ok", f"{case}: accepted, expected a refusal"
    assert not plan["forced"]


def test_soak_evidence_and_force_overrides_it_recorded():
    plan = gate(state(staging=STAGING_A), 31, policy=SOAK30)
    assert plan["evidence"]["soak"] == {
        "from_env": "staging",
        "required_min": 30,
        "live_since": T0,
        "minutes": 31,
        "left_min": 0,
        "ok": True,
    }
    with pytest.raises(LedgerError, match="force needs a non-empty reason"):
        gate(state(staging=STAGING_A), 5, policy=SOAK30, force=True)
    plan = gate(state(staging=STAGING_A), 5, policy=SOAK30, force=True, reason="hotfix CHG-7")
    assert plan["forced"] and "25 min left" in plan["overridden"][0]
    assert plan["evidence"]["soak"]["ok"] is False and plan["evidence"]["soak"]["minutes"] == 5
    # a deploy (no environment before it) has no soak
    assert gate(state(), 0, from_env=None, to_env="dev", artifact=A, policy=SOAK30)["evidence"]["soak"] is None


def test_soak_follows_immutable_now(monkeypatch):
    ledger_state = state(staging=STAGING_A)
    monkeypatch.setenv("IMMUTABLE_NOW", at(29))
    with pytest.raises(LedgerError, match="1 min left"):
        check_promotion(CHAIN, ledger_state, "web", "staging", "prod", None, policy=SOAK30)
    monkeypatch.setenv("IMMUTABLE_NOW", at(30))
    assert check_promotion(CHAIN, ledger_state, "web", "staging", "prod", None, policy=SOAK30)["id"] == A


# --- approvals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "prod", "artifact", "expected"),
    [
        ("no approval: refused, naming the approvers and the command", [], A, "one of alice, bob may approve it with"),
        ("approved", [("approve", A, "alice", 1)], A, "alice"),
        ("two approvers: the newest counts", [("approve", A, "alice", 1), ("approve", A, "bob", 2)], A, "bob"),
        ("an approval of another artifact does not count", [("approve", B, "alice", 1)], A, "there is none"),
        (
            "void once another artifact is approved after it",
            [("approve", A, "alice", 1), ("approve", B, "bob", 2)],
            A,
            "there is none",
        ),
        (
            "void once another artifact went live after it",
            [(C, "deploy", 0), ("approve", A, "alice", 1), (B, "deploy", 2, True)],
            A,
            "there is none",
        ),
        (
            "an approval of the artifact that went live stays (a run again)",
            [("approve", B, "alice", 1), (B, "deploy", 2, True)],
            B,
            "ok",
        ),
        (
            "a name no longer among the approvers does not count",
            [("approve", A, "carol", 1)],
            A,
            "(approved by carol, who is not an approver of prod)",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_approval_table(case, prod, artifact, expected):
    ledger_state = state(staging=[(A, "promote", 0), (B, "promote", 0)], prod=prod)
    try:
        plan = gate(ledger_state, 60, artifact=artifact, policy=APPROVAL)
    except LedgerError as exc:
        assert expected in ("there is none", "one of alice, bob may approve it with") or expected.startswith(
            "(approved"
        ), f"{case}: refused: {exc}"
        assert expected in str(exc), case
        assert f"ansible-playbook playbooks/approve.yml -e env=prod -e artifact={artifact} -e by=alice" in str(exc)
        return
    assert expected == "ok" or plan["evidence"]["approval"]["by"] == expected, case


def test_force_never_overrides_a_missing_approval_and_any_name_counts_without_approvers():
    ledger_state = state(staging=STAGING_A)
    with pytest.raises(LedgerError, match="prod requires an approval of"):
        gate(ledger_state, 60, policy=APPROVAL, force=True, reason="in a hurry")
    anyone = {"approval": {"required": True}}
    with pytest.raises(LedgerError, match=r"anyone \(no approvers listed: any name counts\).* -e by=<name>"):
        gate(ledger_state, 60, policy=anyone)
    approved = state(staging=STAGING_A, prod=[("approve", A, "carol", 1)])
    assert gate(approved, 60, policy=anyone)["evidence"]["approval"] == {"by": "carol", "at": at(1)}
    # a deploy into an environment that requires approvals needs one too
    with pytest.raises(LedgerError, match="dev requires an approval"):
        gate(state(), 0, from_env=None, to_env="dev", artifact=A, policy=anyone)


def test_plan_approval_refuses_a_name_outside_the_approvers_and_is_idempotent():
    with pytest.raises(
        LedgerError, match=r"carol is not an approver of this environment: the approvers are alice, bob"
    ):
        plan_approval(None, A, "carol", T0, APPROVAL["approval"])
    with pytest.raises(LedgerError, match="needs the approver's name"):
        plan_approval(None, A, " ", T0)
    changed, entry = plan_approval(None, A, "alice", T0, APPROVAL["approval"])
    assert changed and entry == {
        "live": None,
        "previous": None,
        "history": [],
        "approvals": [{"id": A, "by": "alice", "at": T0}],
    }
    assert plan_approval(entry, A, "alice", at(5)) == (False, entry)
    changed, other = plan_approval(entry, B, "bob", at(6))
    assert changed and other["approvals"] == [{"id": B, "by": "bob", "at": at(6)}]
    many = other
    for index in range(12):
        many = plan_approval(many, B, f"approver{index}", at(10 + index))[1]
    assert [item["by"] for item in many["approvals"]] == [f"approver{index}" for index in range(2, 12)]
    # a record that makes another artifact live drops the approvals; a repair of the live one does not
    live = plan_record(other, C, "deploy", "t@h", at(7))[1]
    assert "approvals" not in live
    kept = plan_record(plan_record(other, B, "deploy", "t@h", at(7))[1], B, "repair", "t@h", at(8))[1]
    assert kept["approvals"] == other["approvals"]


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ({"soak_minutes": -1}, r"promotion_environments.prod.soak_minutes -1 is not a number of minutes"),
        ({"soak_minutes": "half an hour"}, "is not a number of minutes"),
        ({"soak_minutes": True}, "is not a number of minutes"),
        ({"approval": "alice"}, r"promotion_environments.prod.approval must be a mapping"),
        ({"approval": {"required": "yes please"}}, r"approval.required 'yes please' must be true or false"),
        ({"approval": {"required": True, "approvers": "alice"}}, r"approvers 'alice' must be a list of names"),
        ({"approval": {"required": True, "approvers": ["alice", ""]}}, r"approvers has '', which is not a name"),
    ],
)
def test_bad_policies_are_refused_with_the_setting_named(policy, words):
    with pytest.raises(LedgerError, match=words):
        check_policy(policy, "prod")


# --- through the file ledger: the flow, the evidence, ledger_info's view --------------------------------------


def params(**overrides):
    out = {"app": "web", "chain": CHAIN, "by": "ci@runner", "force": False, "verified": True}
    out.update(overrides)
    return out


def test_file_ledger_flow_records_the_approval_and_the_evidence(tmp_path, monkeypatch):
    ledger = FileLedger(tmp_path / "ledger.json")
    policy = {"soak_minutes": 30, **APPROVAL}
    monkeypatch.setenv("IMMUTABLE_NOW", T0)
    run_record(ledger, params(action="deploy", env="dev", artifact_id=A), False)
    run_record(ledger, params(action="promote", env="staging", from_env="dev"), False)
    promote = params(action="promote", env="prod", from_env="staging", **policy)
    with pytest.raises(LedgerError, match="staging has run .* for 0 min of the 30 min soak prod requires: 30 min left"):
        run_record(ledger, promote, False)
    monkeypatch.setenv("IMMUTABLE_NOW", at(31))
    with pytest.raises(LedgerError, match="prod requires an approval"):
        run_record(ledger, promote, True)
    with pytest.raises(LedgerError, match="carol is not an approver"):
        run_record(ledger, params(action="approve", env="prod", artifact_id=A, by="carol", **policy), False)
    with pytest.raises(LedgerError, match="an approval needs artifact, by: ansible-playbook playbooks/approve.yml"):
        run_record(ledger, params(action="approve", env="prod", by=None, **policy), False)
    approved = run_record(ledger, params(action="approve", env="prod", artifact_id=A, by="alice", **policy), False)
    assert approved["changed"] and approved["evidence"]["approval"] == {"id": A, "by": "alice", "at": at(31)}
    assert ledger.entry("web", "prod")["live"] is None, "an approval puts nothing live"
    checked = run_record(ledger, promote, True)
    assert checked["evidence"]["approval"] == {"by": "alice", "at": at(31)} and checked["evidence"]["soak"]["ok"]

    monkeypatch.setenv("IMMUTABLE_NOW", at(32))
    given = {
        "analysis": [{"step": 100, "verdict": "passed", "requests": 40, "errors": 0, "detail": "x" * 500}],
        "hooks": [{"hook": "pre", "kind": "tasks", "ok": True, "detail": "smoke ok"}],
    }
    done = run_record(ledger, dict(promote, evidence=given), False)
    assert done["changed"] and done["after"]["live"] == A
    item = ledger.entry("web", "prod")["history"][-1]
    assert item["at"] == at(32)
    evidence = item["evidence"]
    assert evidence["approval"] == {"by": "alice", "at": at(31)}
    assert evidence["soak"]["minutes"] == 32 and evidence["soak"]["live_since"] == T0
    assert evidence["hooks"] == given["hooks"]
    assert len(evidence["analysis"][0]["detail"]) == 120, "details are shortened"
    assert last_evidence(ledger.entry("web", "prod")) == {
        "id": A,
        "action": "promote",
        "at": at(32),
        "by": "ci@runner",
        "evidence": evidence,
    }
    # the approval of the artifact that went live stays (a run again passes); another one going live voids it
    assert ledger.entry("web", "prod")["approvals"] == [{"id": A, "by": "alice", "at": at(31)}]
    assert run_record(ledger, promote, True)["changed"] is False
    run_record(ledger, params(action="deploy", env="prod", artifact_id=B, force=True, reason="hotfix"), False)
    assert "approvals" not in ledger.entry("web", "prod")


def test_evidence_stays_small_enough_for_an_ssm_parameter():
    analysis = [
        {
            "step": step,
            "verdict": "passed",
            "requests": 1000,
            "errors": 3,
            "error_rate": 0.003,
            "latency_ms": {"p": 95, "value": 12.5},
            "window_s": 30.0,
            "detail": "d" * 400,
        }
        for step in range(40)
    ]
    hooks = [{"hook": "post", "kind": "webhook", "ok": True, "detail": "h" * 400}] * 20
    evidence = compact_evidence({"analysis": analysis, "hooks": hooks, "soak": {"ok": True}, "approval": None})
    assert len(json.dumps(evidence, separators=(",", ":"))) <= 2000 and evidence["truncated"] is True
    assert evidence["analysis"][-1] == {"dropped": 28} and evidence["analysis"][0] == {"step": 0, "verdict": "passed"}
    record = plan_record(None, A, "promote", "ci@runner", T0, from_env="staging", evidence=evidence)[1]
    value, tier, archived = SsmLedger(None, "/ledger").encode(record)
    assert tier is None and archived == 0 and len(value.encode()) <= 4096
    small = compact_evidence({"analysis": analysis[:2], "hooks": []})
    assert small["analysis"][1]["detail"].endswith("...") and "truncated" not in small
    with pytest.raises(LedgerError, match="evidence must be a mapping"):
        compact_evidence(["not", "a", "mapping"])


# --- an aborted rollout (bg_swap's analysis failed; traffic back on the old colour) -----------------------------


def test_an_abort_keeps_live_and_previous_and_withdraws_the_artifact(tmp_path, monkeypatch):
    ledger = FileLedger(tmp_path / "ledger.json")
    monkeypatch.setenv("IMMUTABLE_NOW", T0)
    for artifact in (A, B):
        run_record(ledger, params(action="deploy", env="dev", artifact_id=artifact), False)
    run_record(ledger, params(action="promote", env="staging", from_env="dev", artifact_id=A), False)
    before = ledger.entry("web", "staging")
    analysis = [{"step": 10, "verdict": "failed", "requests": 50, "errors": 11, "error_rate": 0.22}]
    aborted = params(action="abort", env="staging", from_env="dev", artifact_id=B, reason="aborted by its analysis")
    for _attempt in range(2):  # an event: recorded every time
        result = run_record(ledger, dict(aborted, evidence={"analysis": analysis}), False)
        assert result["changed"] and result["artifact_id"] == B
    entry = ledger.entry("web", "staging")
    assert (entry["live"], entry["previous"]) == (before["live"], before["previous"]) == (A, None)
    item = entry["history"][-1]
    assert (item["action"], item["verified"], item["from_env"]) == ("abort", False, "dev")
    assert item["evidence"] == {"analysis": analysis}
    # staging does not vouch for B; A (live) still passes, with its soak counted from when it went live
    monkeypatch.setenv("IMMUTABLE_NOW", at(31))
    with pytest.raises(LedgerError, match=f"artifact {re.escape(B)} was aborted in 'staging' by its analysis"):
        run_record(ledger, params(action="promote", env="prod", from_env="staging", artifact_id=B, **SOAK30), True)
    checked = run_record(ledger, params(action="promote", env="prod", from_env="staging", **SOAK30), True)
    assert checked["artifact_id"] == A and checked["evidence"]["soak"]["minutes"] == 31
    # nothing to roll back to: the abort never made B live there
    with pytest.raises(LedgerError, match="no previous artifact to roll back to"):
        run_record(ledger, params(action="rollback", env="staging"), True)
    with pytest.raises(LedgerError, match="an abort record needs artifact_id"):
        run_record(ledger, params(action="abort", env="staging"), False)
