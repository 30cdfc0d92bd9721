"""Unit tests for the promotion ledger: planners (pure) and the file backend against a real file system."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import re

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.ledger import _file
from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_promotion
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_repair
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_rollback
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_record
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import accepted_ids
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import canonical_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record

CHAIN = ["dev", "staging", "prod"]
A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
C = "127.0.0.1:5000/web@sha256:" + "c" * 64
AMI1 = {"eu-west-1": "ami-0123456789abcdef0", "us-east-1": "ami-0fedcba9876543210"}
AMI2 = {"eu-west-1": "ami-0aaaaaaaaaaaaaaaa", "us-east-1": "ami-0bbbbbbbbbbbbbbbb"}


def digest(n: int, app: str = "web") -> str:
    return f"127.0.0.1:5000/{app}@sha256:{n:064x}"


def hist(artifact, action="deploy", verified=True, from_env=None):
    return {
        "id": artifact,
        "at": "2026-01-01T00:00:00Z",
        "by": "t@h",
        "action": action,
        "from_env": from_env,
        "record": None,
        "reason": None,
        "forced": False,
        "verified": verified,
    }


def state_with(**envs):
    """state_with(dev=[(A, "deploy", True)], ...) -> a ledger state for app web built from history tuples."""
    apps = {}
    for env, items in envs.items():
        entry = None
        for artifact, action, verified in items:
            entry = plan_record(entry, artifact, action, "t@h", "2026-01-01T00:00:00Z", verified=verified)[1]
        apps[env] = entry
    return {"schema": 1, "apps": {"web": apps}}


# --- ids ------------------------------------------------------------------------------------------------------


def test_ids_compare_canonically():
    assert canonical_id(A.upper().replace("127.0.0.1:5000/WEB@SHA256:", "127.0.0.1:5000/web@sha256:")) == A
    assert canonical_id({"us-east-1": AMI1["us-east-1"], "eu-west-1": AMI1["eu-west-1"]}) == canonical_id(AMI1)
    assert canonical_id(json.dumps(AMI1)) == canonical_id(AMI1)
    assert canonical_id("ami-0123456789abcdef0") == "ami-0123456789abcdef0"
    assert canonical_id(AMI1) != canonical_id(AMI2)


@pytest.mark.parametrize(
    "bad, words",
    [
        ("127.0.0.1:5000/web:1.4.0", "not immutable"),
        ("web", "not immutable"),
        ("127.0.0.1:5000/web@sha256:abc", "not immutable"),
        ({}, "empty region map"),
        ({"eu-west-1": "web:1.0"}, "not an AMI id"),
        ({"Ireland": "ami-0123456789abcdef0"}, "invalid region"),
        ("{not json", "not valid JSON"),
        (42, "type int"),
    ],
)
def test_mutable_or_malformed_ids_are_refused(bad, words):
    with pytest.raises(LedgerError, match=words):
        canonical_id(bad)


# --- plan_record ----------------------------------------------------------------------------------------------


def test_plan_record_deploy_then_idempotent_then_new_id_moves_previous():
    changed, entry = plan_record(None, A, "deploy", "u@h", "t1")
    assert changed and entry["live"] == A and entry["previous"] is None and len(entry["history"]) == 1
    changed, same = plan_record(entry, A, "deploy", "u@h", "t2")
    assert not changed and same == entry
    changed, entry2 = plan_record(entry, B, "deploy", "u@h", "t3", record="artifacts/web.json")
    assert changed and entry2["live"] == B and entry2["previous"] == A
    assert entry2["history"][-1]["record"] == "artifacts/web.json" and entry2["history"][-1]["at"] == "t3"
    assert len(entry["history"]) == 1, "the input entry must not be mutated"


def test_plan_record_same_id_other_action_or_verification_appends_history_without_touching_previous():
    entry = plan_record(None, A, "deploy", "u@h", "t1")[1]
    entry = plan_record(entry, B, "deploy", "u@h", "t2", verified=False)[1]
    changed, entry = plan_record(entry, B, "deploy", "u@h", "t3", verified=True)
    assert changed and entry["live"] == B and entry["previous"] == A and len(entry["history"]) == 3


def test_plan_record_rollback_swaps_live_and_previous_and_is_idempotent():
    entry = plan_record(None, AMI1, "deploy", "u@h", "t1")[1]
    entry = plan_record(entry, AMI2, "promote", "u@h", "t2", from_env="dev")[1]
    changed, rolled = plan_record(entry, None, "rollback", "u@h", "t3", reason="bad health")
    assert changed and rolled["live"] == AMI1 and rolled["previous"] == AMI2
    assert rolled["history"][-1]["action"] == "rollback" and rolled["history"][-1]["reason"] == "bad health"
    changed, again = plan_record(rolled, AMI1, "rollback", "u@h", "t4")
    assert not changed and again == rolled


def test_plan_record_rollback_without_previous_is_refused():
    entry = plan_record(None, A, "deploy", "u@h", "t1")[1]
    with pytest.raises(LedgerError, match="no previous artifact"):
        plan_record(entry, None, "rollback", "u@h", "t2")


# --- the gate -------------------------------------------------------------------------------------------------


def test_deploy_to_first_environment_passes():
    plan = check_promotion(CHAIN, {"schema": 1, "apps": {}}, "web", None, "dev", A)
    assert plan == {
        "app": "web",
        "env": "dev",
        "from_env": None,
        "id": A,
        "action": "deploy",
        "forced": False,
        "overridden": [],
        "evidence": {"soak": None, "approval": None},
    }


def test_promotion_defaults_to_the_live_id_of_from_env():
    state = state_with(dev=[(A, "deploy", True)])
    plan = check_promotion(CHAIN, state, "web", "dev", "staging", None)
    assert plan["id"] == A and plan["action"] == "promote" and not plan["forced"]


def test_promotion_of_an_ami_region_map_in_another_key_order_passes():
    state = state_with(dev=[(AMI1, "deploy", True)])
    reordered = {"us-east-1": AMI1["us-east-1"], "eu-west-1": AMI1["eu-west-1"]}
    assert check_promotion(CHAIN, state, "web", "dev", "staging", reordered)["id"] == AMI1


def test_an_artifact_that_was_live_and_verified_before_still_passes():
    state = state_with(dev=[(A, "deploy", True), (B, "deploy", True)])
    assert check_promotion(CHAIN, state, "web", "dev", "staging", A)["id"] == A


@pytest.mark.parametrize(
    "state, from_env, to_env, artifact, kwargs, words",
    [
        # unknown environments name the chain
        (state_with(), None, "qa", A, {}, r"unknown environment 'qa': the chain is dev -> staging -> prod"),
        (state_with(), "qa", "staging", None, {}, r"unknown from_env environment 'qa': the chain is dev -> staging"),
        # from_env without a live artifact
        (state_with(), "dev", "staging", None, {}, r"from_env 'dev' has no live artifact for app 'web'"),
        (state_with(), "dev", "staging", A, {"force": True, "reason": "x"}, r"from_env 'dev' has no live artifact"),
        # skipping the chain
        (state_with(dev=[(A, "deploy", True)]), "dev", "prod", None, {}, r"skips the chain dev -> staging -> prod"),
        (state_with(), None, "prod", A, {}, r"'prod' is not the first environment .*\(set from_env: staging\)"),
        (state_with(staging=[(A, "deploy", True)]), "staging", "dev", None, {}, r"skips the chain"),
        (state_with(prod=[(A, "deploy", True)]), "prod", "staging", None, {}, r"last environment of the chain"),
        (state_with(dev=[(A, "deploy", True)]), "dev", "dev", None, {}, r"promotion from 'dev' to itself"),
        # artifact not live / verified in the predecessor
        (state_with(dev=[(A, "deploy", True)]), "dev", "staging", B, {}, r"was never live in 'dev' \(live there: "),
        (state_with(dev=[(A, "deploy", False)]), "dev", "staging", None, {}, r"verified=false"),
        (
            state_with(dev=[(A, "deploy", True), (B, "deploy", True), (A, "rollback", True)]),
            "dev",
            "staging",
            B,
            {},
            r"was rolled back in 'dev'",
        ),
        # force needs a reason
        (
            state_with(dev=[(A, "deploy", True)]),
            "dev",
            "prod",
            None,
            {"force": True},
            r"force needs a non-empty reason",
        ),
        (
            state_with(dev=[(A, "deploy", True)]),
            "dev",
            "prod",
            None,
            {"force": True, "reason": "  "},
            r"force needs a non-empty reason",
        ),
        # unknown to every record (even with force)
        (
            state_with(dev=[(A, "deploy", True)]),
            "dev",
            "staging",
            None,
            {"known_ids": [B, C]},
            r"unknown to every artifact record",
        ),
        (state_with(), None, "dev", A, {"known_ids": [], "force": True, "reason": "x"}, r"unknown to every artifact"),
        # not an immutable id, bad names
        (state_with(), None, "dev", "web:latest", {}, r"not immutable"),
        (state_with(), None, "dev", None, {}, r"needs artifact_id"),
    ],
)
def test_gate_refuses_bad_input_with_a_clear_message(state, from_env, to_env, artifact, kwargs, words):
    with pytest.raises(LedgerError, match=words):
        check_promotion(CHAIN, state, "web", from_env, to_env, artifact, **kwargs)


@pytest.mark.parametrize(
    "chain, app, words",
    [
        ([], "web", "chain is empty"),
        (["dev", "dev"], "web", "names environment 'dev' twice"),
        (["dev", "bad/env"], "web", "environment name 'bad/env' is not valid"),
        (CHAIN, "../web", "app name '../web' is not valid"),
    ],
)
def test_gate_refuses_bad_chain_and_names(chain, app, words):
    with pytest.raises(LedgerError, match=words):
        check_promotion(chain, {"schema": 1, "apps": {}}, app, None, "dev", A)


def test_force_with_a_reason_overrides_the_gate_and_says_what_it_overrode():
    state = state_with(dev=[(A, "deploy", True)])
    plan = check_promotion(CHAIN, state, "web", "dev", "prod", None, force=True, reason="hotfix CHG-1")
    assert plan["forced"] is True and "skips the chain" in plan["overridden"][0]
    plan = check_promotion(CHAIN, state, "web", None, "prod", B, force=True, reason="hotfix CHG-2")
    assert plan["forced"] is True and plan["action"] == "deploy"
    # force that is not needed is not recorded as forced
    plan = check_promotion(CHAIN, state, "web", "dev", "staging", None, force=True, reason="belt and braces")
    assert plan["forced"] is False and plan["overridden"] == []


def test_accepted_ids_follow_verification_and_rollbacks():
    state = state_with(dev=[(A, "deploy", True), (B, "deploy", False), (A, "rollback", True)])
    verdict = accepted_ids(state["apps"]["web"]["dev"])
    assert verdict == {canonical_id(A): "ok", canonical_id(B): "rolled back"}


def test_check_rollback():
    state = state_with(prod=[(A, "deploy", True), (B, "promote", True)])
    assert check_rollback(CHAIN, state, "web", "prod")["id"] == A
    with pytest.raises(LedgerError, match="was never live for app 'web' in 'prod'"):
        check_rollback(CHAIN, state, "web", "prod", C)
    with pytest.raises(LedgerError, match="nothing live in 'staging'"):
        check_rollback(CHAIN, state, "web", "staging")
    with pytest.raises(LedgerError, match="unknown environment 'qa'"):
        check_rollback(CHAIN, state, "web", "qa")
    only_one = state_with(prod=[(A, "deploy", True)])
    with pytest.raises(LedgerError, match="no previous artifact"):
        check_rollback(CHAIN, only_one, "web", "prod")
    # right after a rollback, "previous" is the bad artifact: a default rollback is a no-op, not a roll forward
    rolled = state_with(prod=[(A, "deploy", True), (B, "promote", True), (A, "rollback", True)])
    assert check_rollback(CHAIN, rolled, "web", "prod")["id"] == A


# --- FileLedger -----------------------------------------------------------------------------------------------


def deploy_params(tmp_path, **overrides):
    params = {
        "action": "deploy",
        "app": "web",
        "env": "dev",
        "chain": CHAIN,
        "artifact_id": A,
        "from_env": None,
        "record": "artifacts/web.json",
        "reason": None,
        "force": False,
        "verified": True,
        "known_ids": None,
        "by": "ci@runner",
    }
    params.update(overrides)
    return params


def test_file_ledger_round_trip_backup_and_idempotence(tmp_path):
    path = tmp_path / "sub" / "ledger.json"
    ledger = FileLedger(path)
    assert ledger.read() == {"schema": 1, "apps": {}} and ledger.entry("web", "dev") is None
    assert not path.exists(), "reading must not create the ledger"

    changed, entry = ledger.record("web", "dev", A, "deploy", "ci@runner", record="r1")
    assert changed and entry["live"] == A
    assert not (tmp_path / "sub" / "ledger.json.bak").exists(), "no previous version yet"
    first = path.read_bytes()
    assert json.loads(first)["apps"]["web"]["dev"]["history"][0]["by"] == "ci@runner"

    assert ledger.record("web", "dev", A, "deploy", "ci@runner") == (False, entry)
    assert path.read_bytes() == first, "an unchanged record must not rewrite the file"

    changed, entry = ledger.record("web", "dev", B, "deploy", "ci@runner")
    assert changed and entry["previous"] == A
    assert (tmp_path / "sub" / "ledger.json.bak").read_bytes() == first
    assert ledger.entry("web", "dev") == entry
    assert ledger.read("web") == {"schema": 1, "apps": {"web": {"dev": entry}}}
    assert ledger.read("other") == {"schema": 1, "apps": {}}
    assert sorted(os.listdir(tmp_path / "sub")) == ["ledger.json", "ledger.json.bak", "ledger.json.lock"]


def test_repair_records_the_live_id_each_time_and_refuses_another_id(tmp_path):
    ledger = FileLedger(tmp_path / "ledger.json")
    run_record(ledger, deploy_params(tmp_path), check_mode=False)
    run_record(ledger, deploy_params(tmp_path, artifact_id=B), check_mode=False)
    for _attempt in range(2):
        result = run_record(
            ledger, deploy_params(tmp_path, action="repair", artifact_id=None, reason="drift on h1"), check_mode=False
        )
        assert result["changed"] and result["artifact_id"] == B
    entry = ledger.entry("web", "dev")
    assert entry["live"] == B and entry["previous"] == A
    assert [item["action"] for item in entry["history"]] == ["deploy", "deploy", "repair", "repair"]
    assert entry["history"][-1]["reason"] == "drift on h1"
    with pytest.raises(LedgerError, match="a repair re-creates the ID live"):
        run_record(ledger, deploy_params(tmp_path, action="repair", artifact_id=A), check_mode=False)
    with pytest.raises(LedgerError, match="nothing to repair"):
        check_repair(CHAIN, {"schema": 1, "apps": {}}, "web", "prod")


def test_file_ledger_check_mode_writes_nothing(tmp_path):
    path = tmp_path / "ledger.json"
    result = run_record(FileLedger(path), deploy_params(tmp_path), check_mode=True)
    assert result["changed"] and result["after"]["live"] == A and result["before"] is None
    assert os.listdir(tmp_path) == []


def test_file_ledger_failed_write_leaves_the_old_version_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "ledger.json"
    ledger = FileLedger(path)
    ledger.record("web", "dev", A, "deploy", "u@h")
    before = path.read_bytes()
    real_replace = os.replace

    def crash_on_ledger(src, dst):
        if str(dst) == str(path):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(_file.os, "replace", crash_on_ledger)
    with pytest.raises(LedgerError, match="No space left on device; the previous version is unchanged"):
        ledger.record("web", "dev", B, "deploy", "u@h")
    assert path.read_bytes() == before
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


@pytest.mark.parametrize(
    "content, words",
    [
        (b'{"schema": 1, "apps": {\n  "web": {"dev": {"live": "x"\n', r"line 3: "),
        (b"", r"line 1: Expecting value"),
        (b'{"schema": 2, "apps": {}}', r"schema is 2, this collection reads schema 1"),
        (b'{"schema": 1, "apps": {"web": {"dev": {"live": "web:latest", "history": []}}}}', r"apps.web.dev live"),
        (b"\xff\xfe garbage", r"byte 0: not UTF-8"),
    ],
)
def test_corrupt_ledger_is_never_written(tmp_path, content, words):
    path = tmp_path / "ledger.json"
    path.write_bytes(content)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    ledger = FileLedger(path)
    for call in (
        lambda: ledger.record("other", "dev", A, "deploy", "u@h"),
        lambda: run_record(ledger, deploy_params(tmp_path), check_mode=False),
        ledger.read,
    ):
        with pytest.raises(LedgerError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"ledger {path} is corrupt (")
        assert f"nothing was written; restore it from {path}.bak" in message and "fix the JSON by hand" in message
        assert re.search(words, message), message
    assert path.read_bytes() == content
    assert os.stat(path).st_mtime == 1_000_000_000
    assert sorted(os.listdir(tmp_path)) == ["ledger.json", "ledger.json.lock"]


def test_file_ledger_lock_timeout_names_the_lock(tmp_path):
    path = tmp_path / "ledger.json"
    ledger = FileLedger(path, lock_timeout=0.3)
    with open(f"{path}.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LedgerError, match=r"locked by another writer for more than 0.3 s \(lock file .*\.lock\)"):
            ledger.record("web", "dev", A, "deploy", "u@h")
    assert not path.exists()


def _writer(path, app, count, start_event):
    start_event.wait()
    ledger = FileLedger(path)
    for index in range(count):
        ledger.record(app, "dev", digest(index, app), "deploy", f"{app}@test")


def test_concurrent_writers_lose_no_entry(tmp_path):
    path = str(tmp_path / "ledger.json")
    context = multiprocessing.get_context("fork")
    start = context.Event()
    apps = ["alpha", "beta"]
    procs = [context.Process(target=_writer, args=(path, app, 50, start)) for app in apps]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    state = FileLedger(path).read()
    for app in apps:
        entry = state["apps"][app]["dev"]
        assert [item["id"] for item in entry["history"]] == [digest(i, app) for i in range(50)]
        assert entry["live"] == digest(49, app) and entry["previous"] == digest(48, app)
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


# --- run_record (what the module does) ------------------------------------------------------------------------


def test_run_record_promotion_flow_and_forced_history(tmp_path):
    ledger = FileLedger(tmp_path / "ledger.json")
    assert run_record(ledger, deploy_params(tmp_path), False)["changed"]
    result = run_record(ledger, deploy_params(tmp_path, action="promote", env="staging", from_env="dev"), False)
    assert result["changed"] and result["artifact_id"] == A and result["after"]["history"][-1]["from_env"] == "dev"
    again = run_record(ledger, deploy_params(tmp_path, action="promote", env="staging", from_env="dev"), False)
    assert not again["changed"]
    forced = run_record(
        ledger, deploy_params(tmp_path, env="prod", artifact_id=B, force=True, reason="hotfix CHG-7"), False
    )
    last = forced["after"]["history"][-1]
    assert forced["forced"] and last["forced"] is True and last["reason"] == "hotfix CHG-7"
    assert run_record(ledger, deploy_params(tmp_path, artifact_id=B), False)["after"]["previous"] == A
    rollback = deploy_params(tmp_path, action="rollback", artifact_id=None, reason="5xx after switch")
    rolled = run_record(ledger, rollback, False)
    assert rolled["changed"] and rolled["artifact_id"] == A
    assert (rolled["after"]["live"], rolled["after"]["previous"]) == (A, B)
    assert rolled["after"]["history"][-1]["reason"] == "5xx after switch"
    assert not run_record(ledger, rollback, False)["changed"], "a second rollback must not roll forward to B"
    with pytest.raises(LedgerError, match="nothing live in 'staging'|no previous artifact"):
        run_record(ledger, deploy_params(tmp_path, action="rollback", env="staging", artifact_id=None), False)


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"action": "deploy", "from_env": "dev"}, "from_env is for action=promote"),
        ({"action": "promote", "from_env": None}, "action=promote needs from_env"),
        ({"env": "qa"}, "unknown environment 'qa'"),
    ],
)
def test_run_record_refuses_inconsistent_parameters_and_writes_nothing(tmp_path, overrides, words):
    ledger = FileLedger(tmp_path / "ledger.json")
    with pytest.raises(LedgerError, match=words):
        run_record(ledger, deploy_params(tmp_path, **overrides), False)
    assert not (tmp_path / "ledger.json").exists()


# --- SsmLedger encoding (pure part; the backend itself runs against moto_server in tests/integration) ---------


def test_ssm_entry_keeps_the_newest_records_and_archives_the_rest_in_4kb_parts():
    ledger = SsmLedger(client=None, prefix="/immutable-infra/ledger", max_history=20)
    entry = None
    for index in range(60):
        entry = plan_record(entry, {"eu-west-1": f"ami-{index:017x}"}, "deploy", "u@h", "2026-01-01T00:00:00Z")[1]
    value, tier, archived = ledger.encode(entry)
    stored = json.loads(value)
    assert tier is None and len(value.encode()) <= 4096
    assert 1 <= len(stored["history"]) <= 20 and stored["archived"] == archived == 60 - len(stored["history"])
    assert stored["history"] == entry["history"][archived:] and stored["live"] == entry["live"]
    parts = ledger.pack(entry["history"][:archived])
    assert all(len(part.encode()) <= 4096 for part in parts) and len(parts) > 1
    assert [record for part in parts for record in json.loads(part)] == entry["history"][:archived]
    # more records only extend the last part and add new ones: the earlier parts never change
    more = ledger.pack(entry["history"][: archived + 5])
    assert more[: len(parts) - 1] == parts[:-1] and more[len(parts) - 1].startswith(parts[-1][:-1])
    # what is archived stays archived, even if the entry could hold it again
    assert ledger.encode(entry, archived=archived + 2)[2] == archived + 2

    big = plan_record(None, AMI1, "deploy", "u@h", "t", reason="x" * 5000)[1]
    value, tier, archived = ledger.encode(big)  # the 5 KB record goes to a part of its own, in the Advanced tier
    assert (tier, archived) == (None, 1) and len(value.encode()) <= 4096
    (part,) = ledger.pack(big["history"])
    assert 4096 < len(part.encode()) <= 8192 and ledger._fit(part) == "Advanced"
    huge = plan_record(None, AMI1, "deploy", "u@h", "t", reason="x" * 9000)[1]
    with pytest.raises(LedgerError, match="does not fit in an SSM parameter"):
        ledger.pack(huge["history"])


@pytest.mark.parametrize("prefix", ["/aws/ledger", "ssm/x", "/bad prefix", "/"])
def test_ssm_prefix_is_validated(prefix):
    with pytest.raises(LedgerError, match="not a valid SSM parameter path"):
        SsmLedger(client=None, prefix=prefix)
