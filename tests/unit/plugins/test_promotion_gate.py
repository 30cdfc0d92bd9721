"""The promotion step's gate plumbing (plugin_utils/_promotion.py, action/promotion.py): the environment's soak
time and approval rule passed to the ledger, the run's evidence for the ledger record, the summary lines."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.action.promotion import run_evidence
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import evidence_lines
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ledger_args
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings

ENV = {"router_port": 8080, "blue_port": 18081, "green_port": 18082, "router_dir": "/srv/r/prod"}
RULES = {"soak_minutes": 30, "approval": {"required": True, "approvers": ["alice"]}}


def settings(**prod):
    raw = {
        "chain": ["dev", "prod"],
        "artifacts_dir": "/a",
        "environments": {"dev": dict(ENV), "prod": dict(ENV, **prod)},
    }
    return resolve_settings(raw, "/work")


def test_the_environments_rules_go_to_the_ledger_for_a_deploy_or_promotion_only():
    args = ledger_args(settings(**RULES), "promote", "prod", "dev", None, False, None)
    assert args["soak_minutes"] == 30 and args["approval"] == {"required": True, "approvers": ["alice"]}
    deploy = ledger_args(settings(**RULES), "deploy", "prod", "", "ami-0123456789abcdef0", True, "hotfix")
    assert deploy["approval"]["required"] and deploy["soak_minutes"] == 30
    rollback = ledger_args(settings(**RULES), "rollback", "prod", "", None, False, "bad")
    assert "soak_minutes" not in rollback and "approval" not in rollback, "a rollback is never held back"
    plain = ledger_args(settings(), "promote", "prod", "dev", None, False, None)
    assert "soak_minutes" not in plain and "approval" not in plain


@pytest.mark.parametrize(
    ("rules", "words"),
    [
        ({"soak_minutes": "soon"}, "invalid settings: promotion_environments.prod.soak_minutes 'soon' is not a number"),
        ({"approval": ["alice"]}, "invalid settings: promotion_environments.prod.approval must be a mapping"),
    ],
)
def test_bad_rules_are_refused_before_anything_naming_the_setting(rules, words):
    with pytest.raises(PromotionError, match=words):
        ledger_args(settings(**rules), "promote", "prod", "dev", None, False, None)


def test_the_run_evidence_keeps_the_analysis_per_host_and_the_hooks():
    step = {"step": 50, "verdict": "passed", "requests": 40, "errors": 0}
    assert run_evidence({"": {"analysis": [step]}}, []) == {"analysis": [step], "hooks": []}
    assert run_evidence({"": {}}, None) == {"analysis": [], "hooks": []}, "bg_swap without analysis"
    fleet = run_evidence({"h1": {"analysis": [step]}, "h2": {"analysis": [dict(step, verdict="failed")]}}, [])
    assert [(item["host"], item["verdict"]) for item in fleet["analysis"]] == [("h1", "passed"), ("h2", "failed")]
    hooks = [{"hook": "pre", "kind": "webhook", "ok": True, "detail": "HTTP 200"}]
    assert run_evidence({}, hooks)["hooks"] == hooks


def test_the_summary_shows_the_soak_and_the_approval():
    soak = {
        "from_env": "staging",
        "required_min": 30.0,
        "minutes": 31,
        "live_since": "2026-12-04T10:00:00Z",
        "ok": True,
    }
    lines = evidence_lines({"soak": soak, "approval": {"by": "alice", "at": "2026-12-04T10:20:00Z"}})
    assert lines == [
        "soak: staging ran it 31 min of 30 (live there since 2026-12-04T10:00:00Z)",
        "approved by alice at 2026-12-04T10:20:00Z",
    ]
    forced = evidence_lines({"soak": dict(soak, minutes=5, ok=False), "approval": None})
    assert forced == [
        "soak: staging ran it 5 min of 30 (live there since 2026-12-04T10:00:00Z) - not enough, overridden by force"
    ]
    assert evidence_lines({}) == []
