"""Unit tests for the ledger and ledger_info modules: argument handling, check mode, results, failures.

The modules run in-process through ansible's patch_module_args; the file backend uses a real temporary file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.modules import ledger as ledger_module
from ansible_collections.immutable.infra.plugins.modules import ledger_info as ledger_info_module

CHAIN = ["dev", "staging", "prod"]
A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64


def run(module, args, capsys, check_mode=False):
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        module.main()
    out = json.loads(capsys.readouterr().out)
    out["rc"] = info.value.code
    return out


def test_deploy_check_mode_then_real_then_idempotent(tmp_path, capsys):
    path = tmp_path / "ledger.json"
    args = {"path": str(path), "chain": CHAIN, "app": "web", "env": "dev", "artifact_id": A, "by": "ci@runner"}

    checked = run(ledger_module, args, capsys, check_mode=True)
    assert checked["rc"] == 0 and checked["changed"] is True and checked["after"]["live"] == A
    assert not path.exists(), "check mode must not write"

    done = run(ledger_module, args, capsys)
    assert done["changed"] is True and done["before"] is None and done["location"] == str(path)
    assert done["after"]["history"][0]["by"] == "ci@runner" and done["after"]["history"][0]["action"] == "deploy"
    assert json.loads(path.read_text())["apps"]["web"]["dev"] == done["after"]

    again = run(ledger_module, args, capsys)
    assert again["changed"] is False and again["before"] == again["after"] == done["after"]


def test_promote_uses_the_live_id_and_info_reads_it_back(tmp_path, capsys):
    path = str(tmp_path / "ledger.json")
    base = {"path": path, "chain": CHAIN, "app": "web"}
    run(ledger_module, dict(base, env="dev", artifact_id=A), capsys)
    promoted = run(ledger_module, dict(base, env="staging", action="promote", from_env="dev"), capsys)
    assert (
        promoted["changed"] and promoted["artifact_id"] == A and promoted["after"]["history"][-1]["from_env"] == "dev"
    )

    info = run(ledger_info_module, {"path": path, "app": "web", "env": "staging"}, capsys, check_mode=True)
    assert info["changed"] is False and info["entry"] == promoted["after"]
    assert list(info["ledger"]["apps"]["web"]) == ["staging"]
    whole = run(ledger_info_module, {"path": path}, capsys)
    assert sorted(whole["ledger"]["apps"]["web"]) == ["dev", "staging"] and "entry" not in whole


@pytest.mark.parametrize(
    "args, words",
    [
        ({"env": "prod", "artifact_id": B}, "'prod' is not the first environment"),
        ({"env": "qa", "artifact_id": B}, "unknown environment 'qa': the chain is dev -> staging -> prod"),
        ({"env": "prod", "action": "promote", "from_env": "staging"}, "from_env 'staging' has no live artifact"),
        ({"env": "staging", "action": "promote", "from_env": "dev", "artifact_id": B}, "was never live in 'dev'"),
        ({"env": "dev", "artifact_id": "web:1.0"}, "is not immutable"),
        ({"env": "dev", "artifact_id": B, "known_ids": [A]}, "unknown to every artifact record"),
        ({"env": "prod", "artifact_id": B, "force": True}, "force needs a non-empty reason"),
        ({"env": "dev"}, "action is deploy but all of the following are missing: artifact_id"),
        ({"env": "staging", "action": "promote"}, "action=promote needs from_env"),
    ],
)
def test_bad_input_fails_with_a_clear_message_and_writes_nothing(tmp_path, capsys, args, words):
    path = tmp_path / "ledger.json"
    run(ledger_module, {"path": str(path), "chain": CHAIN, "app": "web", "env": "dev", "artifact_id": A}, capsys)
    before = path.read_bytes()
    failed = run(ledger_module, dict({"path": str(path), "chain": CHAIN, "app": "web"}, **args), capsys)
    assert failed["rc"] == 1 and failed.get("failed") is True
    assert words in failed["msg"], failed["msg"]
    assert path.read_bytes() == before


def test_file_backend_needs_a_path_and_corrupt_ledger_fails(tmp_path, capsys):
    failed = run(ledger_module, {"chain": CHAIN, "app": "web", "env": "dev", "artifact_id": A}, capsys)
    assert "backend is file but all of the following are missing: path" in failed["msg"]
    path = tmp_path / "ledger.json"
    path.write_text("{oops")
    for module, args in (
        (ledger_module, {"path": str(path), "chain": CHAIN, "app": "web", "env": "dev", "artifact_id": A}),
        (ledger_info_module, {"path": str(path)}),
    ):
        failed = run(module, args, capsys)
        assert failed["msg"].startswith(f"ledger {path} is corrupt (line 1: ")
        assert f"restore it from {path}.bak" in failed["msg"]
    assert path.read_text() == "{oops"


def test_file_backend_runs_without_boto3_and_ssm_says_what_is_missing(tmp_path):
    """A host without boto3: the file backend works, the ssm backend fails naming boto3 (not a traceback)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {str(ledger_module.__file__).rsplit("/ansible_collections/", 1)[0]!r})

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("boto3", "botocore"):
                    raise ImportError("blocked for the test: " + name)

        sys.meta_path.insert(0, Block())
        from ansible.module_utils.testing import patch_module_args
        from ansible_collections.immutable.infra.plugins.modules import ledger
        args = json.loads(sys.argv[1])
        with patch_module_args(args):
            ledger.main()
        """
    )
    common = {"chain": CHAIN, "app": "web", "env": "dev", "artifact_id": A}
    file_run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(dict(common, path=str(tmp_path / "l.json")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert file_run.returncode == 0, file_run.stdout + file_run.stderr
    assert json.loads(file_run.stdout)["after"]["live"] == A
    ssm_run = subprocess.run(
        [sys.executable, "-c", script, json.dumps(dict(common, backend="ssm", prefix="/x/ledger"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ssm_run.returncode == 1
    assert "backend=ssm needs boto3 and botocore" in json.loads(ssm_run.stdout)["msg"]


def test_approve_then_promote_with_the_rules_and_info_returns_the_evidence(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "ledger.json")
    base = {"path": path, "chain": CHAIN, "app": "web"}
    rule = {"required": True, "approvers": ["alice"]}
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T10:00:00Z")
    run(ledger_module, dict(base, env="dev", artifact_id=A), capsys)
    promote = dict(base, env="staging", action="promote", from_env="dev", soak_minutes=30, approval=rule)
    refused = run(ledger_module, promote, capsys)
    assert refused["rc"] == 1 and "dev has run" in refused["msg"] and "30 min left" in refused["msg"]
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T10:45:00Z")
    refused = run(ledger_module, promote, capsys)
    assert refused["rc"] == 1 and "-e env=staging -e artifact=" in refused["msg"] and "-e by=alice" in refused["msg"]

    approve = dict(base, env="staging", action="approve", artifact_id=A, approval=rule)
    missing = run(ledger_module, approve, capsys)
    assert missing["rc"] == 1 and missing["msg"].startswith("an approval needs by: ansible-playbook playbooks/approve")
    outsider = run(ledger_module, dict(approve, by="mallory"), capsys)
    assert outsider["rc"] == 1 and "mallory is not an approver" in outsider["msg"]
    checked = run(ledger_module, dict(approve, by="alice"), capsys, check_mode=True)
    stored = json.loads((tmp_path / "ledger.json").read_text())["apps"]["web"]
    assert checked["changed"] and "staging" not in stored, "check mode writes nothing"
    approved = run(ledger_module, dict(approve, by="alice"), capsys)
    assert approved["changed"] and approved["evidence"]["approval"]["at"] == "2026-12-04T10:45:00Z"
    assert run(ledger_module, dict(approve, by="alice"), capsys)["changed"] is False

    hooks = [{"hook": "pre", "kind": "webhook", "ok": True, "detail": "HTTP 200"}]
    done = run(ledger_module, dict(promote, evidence={"hooks": hooks}), capsys)
    assert done["rc"] == 0 and done["changed"] and done["evidence"]["soak"]["minutes"] == 45
    info = run(ledger_info_module, {"path": path, "app": "web", "env": "staging"}, capsys)
    assert info["evidence"]["action"] == "promote" and info["evidence"]["evidence"]["hooks"] == hooks
    assert info["evidence"]["evidence"]["approval"] == {"by": "alice", "at": "2026-12-04T10:45:00Z"}

    bad = run(ledger_module, dict(promote, approval={"required": "maybe"}), capsys)
    assert bad["rc"] == 1 and "required" in bad["msg"]
