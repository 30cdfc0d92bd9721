"""Integration tests for the promotion ledger: the modules and the lookup through ansible-playbook, with the file
backend on a real file and the SSM backend against a real moto_server on 127.0.0.1:5057 started here.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import subprocess
from pathlib import Path

import pytest
from moto_fixtures import FAKE_ENV
from moto_fixtures import FAKE_KEYS
from moto_fixtures import start_moto
from moto_fixtures import stop_moto

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

HERE = Path(__file__).resolve().parent
PLAYBOOKS = HERE / "playbooks"
MOTO_PORT = 5057
FAKE_AWS = {
    **FAKE_ENV,
    "AWS_DEFAULT_REGION": "eu-west-1",
}
AMI_1 = {"eu-west-1": "ami-0123456789abcdef0", "us-east-1": "ami-0fedcba9876543210"}
AMI_2 = {"eu-west-1": "ami-0aaaaaaaaaaaaaaaa", "us-east-1": "ami-0bbbbbbbbbbbbbbbb"}


def digest(n: int) -> str:
    return f"127.0.0.1:5000/web@sha256:{n:064x}"


def show(result: subprocess.CompletedProcess) -> str:
    return f"rc={result.returncode}\nSTDOUT:\n{result.stdout[-6000:]}\nSTDERR:\n{result.stderr[-3000:]}"


# --- file backend ---------------------------------------------------------------------------------------------


def test_file_backend_through_playbook(tmp_path, playbook):
    ledger_path = tmp_path / "ledger" / "ledger.json"
    corrupt_path = tmp_path / "corrupt.json"
    corrupt = b'{"schema": 1,\n  "apps": {oops}}\n'
    corrupt_path.write_bytes(corrupt)
    extra = {
        "ledger_path": str(ledger_path),
        "corrupt_path": str(corrupt_path),
        "id_a": digest(1),
        "id_b": digest(2),
        "id_c": digest(3),
    }
    result = playbook(PLAYBOOKS / "ledger_file.yml", extra)
    assert result.returncode == 0, show(result)
    assert corrupt_path.read_bytes() == corrupt, "a corrupt ledger must never be written"
    assert not Path(f"{corrupt_path}.bak").exists()

    # The file on disk is the documented schema.
    state = json.loads(ledger_path.read_text())
    assert state["schema"] == 1 and sorted(state["apps"]["web"]) == ["dev", "prod", "staging"]
    prod = state["apps"]["web"]["prod"]
    assert (prod["live"], prod["previous"]) == (digest(3), digest(1))
    for item in prod["history"]:
        assert set(item) == {"id", "at", "by", "action", "from_env", "record", "reason", "forced", "verified"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", item["at"])
        assert re.fullmatch(r"[^@\s]+@[^@\s]+", item["by"])
    assert [item["forced"] for item in prod["history"]] == [False, False, False, True]
    assert state["apps"]["web"]["staging"]["history"][0]["record"] == "artifacts/web/a.json"
    # .bak holds the version before the last write
    backup = json.loads(Path(f"{ledger_path}.bak").read_text())
    assert backup["apps"]["web"]["prod"]["live"] == digest(1)


# --- SSM backend on moto_server -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server():
    try:
        process, endpoint = start_moto(MOTO_PORT)
    except RuntimeError as exc:
        pytest.fail(f"the ledger tests start their own moto_server: {exc}")
    yield endpoint
    stop_moto(process)


@pytest.fixture(scope="module")
def ssm(moto_server):
    import boto3

    return boto3.client(
        "ssm",
        endpoint_url=moto_server,
        region_name="eu-west-1",
        **FAKE_KEYS,
    )


def test_ssm_backend_through_playbook(moto_server, ssm, unique, playbook):
    prefix = f"/immutable-infra-test/{unique}/ledger"
    extra = {
        "ssm_endpoint": moto_server,
        "ssm_prefix": prefix,
        "ami_1": AMI_1,
        "ami_1_reordered": dict(reversed(list(AMI_1.items()))),
        "ami_2": AMI_2,
    }
    result = playbook(PLAYBOOKS / "ledger_ssm.yml", extra, env=FAKE_AWS)
    assert result.returncode == 0, show(result)

    # One String parameter per app/env holding the entry, and no lock left behind.
    names = sorted(param["Name"] for param in ssm.get_parameters_by_path(Path=prefix, Recursive=True)["Parameters"])
    assert names == [f"{prefix}/api/dev", f"{prefix}/api/prod", f"{prefix}/api/staging"]
    prod = ssm.get_parameter(Name=f"{prefix}/api/prod")["Parameter"]
    assert prod["Type"] == "String"
    value = json.loads(prod["Value"])
    assert value["schema"] == 1 and value["live"] == AMI_1 and value["previous"] == AMI_2
    assert [item["action"] for item in value["history"]] == ["promote", "promote", "rollback"]


def test_ssm_corrupt_parameter_is_refused_and_left_alone(ssm, unique):
    prefix = f"/immutable-infra-test/{unique}/ledger"
    name = f"{prefix}/web/dev"
    ssm.put_parameter(Name=name, Value="{not json", Type="String")
    ledger = SsmLedger(ssm, prefix)
    with pytest.raises(LedgerError) as info:
        ledger.record("web", "dev", digest(1), "deploy", "t@h")
    message = str(info.value)
    assert message.startswith(f"ledger parameter {name} is corrupt (not JSON")
    assert f"aws ssm get-parameter-history --name {name}" in message
    param = ssm.get_parameter(Name=name)["Parameter"]
    assert (param["Value"], param["Version"]) == ("{not json", 1)
    with pytest.raises(Exception, match="ParameterNotFound"):
        ssm.get_parameter(Name=f"{name}.lock")


def test_ssm_held_lock_times_out_with_the_way_out(ssm, unique):
    prefix = f"/immutable-infra-test/{unique}/ledger"
    lock = f"{prefix}/web/dev.lock"
    ssm.put_parameter(Name=lock, Value='{"by": "someone@else"}', Type="String")
    ledger = SsmLedger(ssm, prefix, lock_timeout=1)
    with pytest.raises(LedgerError, match=rf"locked .*someone@else.*`aws ssm delete-parameter --name {lock}`"):
        ledger.record("web", "dev", digest(1), "deploy", "t@h")
    with pytest.raises(Exception, match="ParameterNotFound"):
        ssm.get_parameter(Name=f"{prefix}/web/dev")
    ssm.delete_parameter(Name=lock)
    assert ledger.record("web", "dev", digest(1), "deploy", "t@h")[0] is True


def _ssm_writer(endpoint, prefix, tag, count, start):
    import boto3

    client = boto3.client(
        "ssm", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    ledger = SsmLedger(client, prefix, lock_timeout=60)
    start.wait()
    for index in range(count):
        ledger.record("web", "dev", f"ami-{tag}{index:016x}", "deploy", f"{tag}@test")


def test_ssm_concurrent_writers_to_one_parameter_lose_nothing(moto_server, ssm, unique):
    """Two processes write the same app/env: every version must extend the one before by exactly one record."""
    prefix = f"/immutable-infra-test/{unique}/ledger"
    context = multiprocessing.get_context("fork")
    start = context.Event()
    procs = [context.Process(target=_ssm_writer, args=(moto_server, prefix, tag, 6, start)) for tag in "ab"]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(180)
    assert [proc.exitcode for proc in procs] == [0, 0]
    versions = ssm.get_parameter_history(Name=f"{prefix}/web/dev")["Parameters"]
    histories = [json.loads(version["Value"])["history"] for version in versions]
    assert len(histories) == 12
    for older, newer in zip(histories, histories[1:], strict=False):
        assert newer[:-1] == older, "a concurrent write was lost"
    ids = [item["id"] for item in histories[-1]]
    assert sorted(ids) == sorted(f"ami-{tag}{index:016x}" for tag in "ab" for index in range(6))


# --- both backends decide the same for the same history -------------------------------------------------------

CHAIN = ["dev", "staging", "prod"]
A, B, C = digest(0xA), digest(0xB), digest(0xC)
# More records than the SSM entry parameter holds: a small max_history keeps the table fast (the default, 20 and
# 4 KB, is in test_ssm_archives_old_history_in_4kb_parameters_and_reads_it_back); older records are archived.
FILLER = 5
MAX_HISTORY = 2


T0 = "2026-12-01T00:00:00Z"


def at(minutes: float) -> str:
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import format_utc
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc

    return format_utc(parse_utc(T0) + minutes * 60)


def fillers(env: str, minutes: float = 0) -> list:
    return [(env, digest(0x100 + n), "deploy", True, minutes) for n in range(FILLER)]


# (case, history as (env, id, action, verified) records written in order, the question, what both must answer:
#  the target ID, or the refusal's words)
DECISIONS = [
    (
        "promote an ID verified long ago",
        [("dev", A, "deploy", True), *fillers("dev")],
        {"action": "promote", "from_env": "dev", "env": "staging", "artifact_id": A},
        A,
    ),
    (
        "promote an ID rolled back long ago",
        [("dev", A, "deploy", True), ("dev", B, "deploy", True), ("dev", A, "rollback", True), *fillers("dev")],
        {"action": "promote", "from_env": "dev", "env": "staging", "artifact_id": B},
        f"artifact {B} was rolled back in 'dev'",
    ),
    (
        "promote an ID recorded unverified long ago",
        [("dev", A, "deploy", False), *fillers("dev")],
        {"action": "promote", "from_env": "dev", "env": "staging", "artifact_id": A},
        "its last record there says verified=false",
    ),
    (
        "promote an ID never live",
        fillers("dev"),
        {"action": "promote", "from_env": "dev", "env": "staging", "artifact_id": C},
        f"artifact {C} was never live in 'dev'",
    ),
    (
        "roll back to an ID live long ago",
        [("prod", A, "promote", True), *fillers("prod")],
        {"action": "rollback", "env": "prod", "artifact_id": A},
        A,
    ),
    (
        "roll back to an ID never live",
        [("prod", B, "promote", True), *fillers("prod")],
        {"action": "rollback", "env": "prod", "artifact_id": A},
        f"artifact {A} was never live for app 'web' in 'prod'",
    ),
    (
        "roll back again after a rollback",
        [("prod", A, "promote", True), ("prod", B, "promote", True), ("prod", A, "rollback", True)],
        {"action": "rollback", "env": "prod"},
        A,
    ),
    (
        "promote an ID whose rollout was aborted long ago",
        [("dev", A, "deploy", True), ("dev", B, "abort", False), *fillers("dev")[:1]],
        {"action": "promote", "from_env": "dev", "env": "staging", "artifact_id": B},
        f"artifact {B} was aborted in 'dev' by its analysis",
    ),
    # soak time (soak_minutes) and approvals (docs/ledger.md), with the history archived in SSM parts
    (
        "soak not elapsed: refused with the time left",
        [*fillers("staging"), ("staging", A, "promote", True, 0)],
        {"action": "promote", "from_env": "staging", "env": "prod", "soak_minutes": 30, "minutes": 12.5},
        f"staging has run {A} for 12 min of the 30 min soak prod requires: 18 min left",
    ),
    (
        "soak elapsed, re-records of the live ID long after never reset it",
        [("staging", A, "promote", True, 0), ("staging", A, "deploy", False, 20), ("staging", A, "deploy", True, 25)],
        {"action": "promote", "from_env": "staging", "env": "prod", "soak_minutes": 30, "minutes": 30},
        A,
    ),
    (
        "a rollback away from it in staging resets its verification",
        [("staging", A, "promote", True, 0), ("staging", B, "promote", True, 1), ("staging", A, "rollback", True, 40)],
        {"action": "promote", "from_env": "staging", "env": "prod", "artifact_id": B, "soak_minutes": 30},
        f"artifact {B} was rolled back in 'staging'",
    ),
    (
        "approval missing: refused with the command",
        [("staging", A, "promote", True)],
        {"action": "promote", "from_env": "staging", "env": "prod", "approval": {"required": True}},
        f"ansible-playbook playbooks/approve.yml -e env=prod -e artifact={A} -e by=<name>",
    ),
    (
        "approved long ago, before many records",
        [("staging", A, "promote", True), ("prod", A, "approve", "alice"), *fillers("staging")],
        {"action": "promote", "from_env": "staging", "env": "prod", "artifact_id": A, "approval": {"required": True}},
        A,
    ),
    (
        "an approval of another artifact does not count",
        [("staging", A, "promote", True), ("prod", B, "approve", "alice")],
        {"action": "promote", "from_env": "staging", "env": "prod", "approval": {"required": True}},
        f"prod requires an approval of {A}",
    ),
    (
        "an approval expires once another artifact goes live",
        [("staging", A, "promote", True), ("prod", A, "approve", "alice"), ("prod", C, "deploy", True)],
        {"action": "promote", "from_env": "staging", "env": "prod", "approval": {"required": True}},
        f"prod requires an approval of {A}",
    ),
]


def decide(ledger, history: list, question: dict, monkeypatch) -> str:
    """Write the history (a record's time: T0 + its 5th item in minutes, default 0; action "approve": an approval
    by its 4th item), then ask the question at T0 + question["minutes"] on the ledger's clock (IMMUTABLE_NOW)."""
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record

    for env, artifact_id, action, verified, *minutes in history:
        when = at(minutes[0] if minutes else 0)
        if action == "approve":
            ledger.approve("web", env, artifact_id, verified, at=when)
        else:
            ledger.record("web", env, artifact_id, action, "ci@runner", verified=verified, at=when)
    question = dict(question)
    monkeypatch.setenv("IMMUTABLE_NOW", at(question.pop("minutes", 0)))
    params = {"app": "web", "chain": CHAIN, "by": "ci@runner", **question}
    try:
        return run_record(ledger, params, check_mode=True)["artifact_id"]
    except LedgerError as exc:
        return str(exc)


@pytest.mark.parametrize(("case", "history", "question", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_file_and_ssm_backends_decide_the_same_for_the_same_history(
    ssm, unique, tmp_path, monkeypatch, case, history, question, expected
):
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger

    file_ledger = FileLedger(tmp_path / "ledger.json")
    ssm_ledger = SsmLedger(ssm, f"/immutable-infra-test/{unique}/ledger", max_history=MAX_HISTORY)
    on_file = decide(file_ledger, history, question, monkeypatch)
    on_ssm = decide(ssm_ledger, history, question, monkeypatch)
    assert on_file == on_ssm, case
    assert expected in on_file if expected not in (A, B, C) else on_file == expected, on_file
    # both hold the whole history, in order
    for env in {env for env, *_rest in history}:
        assert ssm_ledger.entry("web", env) == file_ledger.entry("web", env)
        assert ssm_ledger.read("web")["apps"]["web"][env] == file_ledger.read("web")["apps"]["web"][env]


def test_ssm_archives_old_history_in_4kb_parameters_and_reads_it_back(ssm, unique):
    prefix = f"/immutable-infra-test/{unique}/ledger"
    ledger = SsmLedger(ssm, prefix)
    history = [("dev", A, "deploy", True)] + [("dev", digest(0x100 + n), "deploy", True) for n in range(24)]
    for env, artifact_id, action, verified in history:
        ledger.record("web", env, artifact_id, action, "ci@runner", verified=verified, reason="x" * 100)
    name = f"{prefix}/web/dev"
    entry = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    parts = ssm.get_parameters_by_path(Path=f"{name}/history", Recursive=True)["Parameters"]
    assert entry["archived"] == len(history) - len(entry["history"]) and len(entry["history"]) <= 20
    assert len(ssm.get_parameter(Name=name)["Parameter"]["Value"].encode()) <= 4096 and len(parts) >= 2
    assert [p["Name"] for p in parts] == [f"{name}/history/{n:04d}" for n in range(1, len(parts) + 1)]
    assert all(len(p["Value"].encode()) <= 4096 and p["Type"] == "String" for p in parts)
    archived = [record["id"] for p in parts for record in json.loads(p["Value"])][: entry["archived"]]
    assert archived + [r["id"] for r in entry["history"]] == [artifact_id for _env, artifact_id, *_rest in history]
    # a history part that goes missing is reported, never silently read as a shorter history
    ssm.delete_parameter(Name=parts[0]["Name"])
    with pytest.raises(LedgerError, match=r"counts \d+ archived history records but .* a history parameter was"):
        ledger.entry("web", "dev")


def test_ssm_stores_revocations_one_parameter_each_beside_the_entries(ssm, unique):
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record

    prefix = f"/immutable-infra-test/{unique}/ledger"
    ledger = SsmLedger(ssm, prefix)
    ledger.record("web", "dev", digest(1), "deploy", "ci@runner")
    base = "sha256:" + "c" * 64
    revoke = {"app": "web", "chain": ["dev", "prod"], "action": "revoke", "reason": "CVE-1", "by": "alice"}
    planned = run_record(ledger, dict(revoke, artifact_id=digest(1)), True)
    assert planned["changed"] is True and ledger.revocations("web") == []  # check mode writes nothing
    done = run_record(ledger, dict(revoke, artifact_id=digest(1)), False)
    run_record(ledger, dict(revoke, artifact_id=base, revocation={"kind": "base", "artifacts": [digest(1)]}), False)
    stored = ssm.get_parameters_by_path(Path=f"{prefix}/web.revocations", Recursive=True)["Parameters"]
    assert len(stored) == 2 and all(p["Type"] == "String" for p in stored)
    assert [(r["id"], r["kind"]) for r in ledger.revocations("web")] == [(digest(1), "artifact"), (base, "base")]
    assert ledger.revocations("web")[0] == done["revocation"]
    # the same ID again: nothing written, the first stands
    again = run_record(ledger, dict(revoke, artifact_id=digest(1), reason="other", by="bob"), False)
    assert again["changed"] is False and again["revocation"]["reason"] == "CVE-1"
    assert len(ssm.get_parameters_by_path(Path=f"{prefix}/web.revocations")["Parameters"]) == 2
    # the entries read as before (the revocations are not an environment), and the gate returns the revocations
    assert set(ledger.read()["apps"]["web"]) == {"dev"} and ledger.entry("web", "dev")["live"] == digest(1)
    gate = run_record(
        ledger,
        {"app": "web", "env": "dev", "chain": ["dev", "prod"], "action": "deploy", "artifact_id": digest(2)},
        True,
    )
    assert [r["id"] for r in gate["revocations"]] == [digest(1), base]
