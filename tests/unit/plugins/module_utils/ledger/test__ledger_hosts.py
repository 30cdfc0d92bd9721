"""The ledger's optional `hosts` in a history record (an environment that is a fleet of hosts, docs/fleet.md)."""

from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import plan_record
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record

A = "127.0.0.1:5000/web@sha256:" + "a" * 64


def test_plan_record_without_hosts_has_no_hosts_field():
    _changed, entry = plan_record(None, A, "deploy", "u@h", "t1")
    assert "hosts" not in entry["history"][-1]


def test_plan_record_stores_hosts_and_a_new_host_list_is_a_new_record():
    changed, entry = plan_record(None, A, "deploy", "u@h", "t1", hosts=["h1", "h2"])
    assert changed and entry["history"][-1]["hosts"] == ["h1", "h2"]
    changed, same = plan_record(entry, A, "deploy", "u@h", "t2", hosts=["h2", "h1"])
    assert not changed and same == entry
    changed, grown = plan_record(entry, A, "deploy", "u@h", "t3", hosts=["h1", "h2", "h3"])
    assert changed and grown["history"][-1]["hosts"] == ["h1", "h2", "h3"] and len(grown["history"]) == 2


def test_run_record_writes_hosts_to_the_file_ledger(tmp_path):
    path = tmp_path / "ledger.json"
    params = {
        "action": "deploy",
        "app": "web",
        "env": "dev",
        "chain": ["dev", "prod"],
        "artifact_id": A,
        "hosts": ["h0"],
    }
    result = run_record(FileLedger(str(path)), params, check_mode=False)
    assert result["changed"]
    stored = json.loads(path.read_text())["apps"]["web"]["dev"]
    assert stored["live"] == A and stored["history"][-1]["hosts"] == ["h0"]
