"""The promotion board: its data from a real file ledger and records, the HTML page and the text board.

The ledger is written by the real FileLedger (the planner deploy.yml/promote.yml/rollback.yml use), the records are
read from a real directory, and the module runs in process as board.yml runs it.
"""

from __future__ import annotations

import calendar
import json
import re
from html.parser import HTMLParser

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.board._html import render_html
from ansible_collections.immutable.infra.plugins.module_utils.board._model import build_board
from ansible_collections.immutable.infra.plugins.module_utils.board._model import short_id
from ansible_collections.immutable.infra.plugins.module_utils.board._read import read_records
from ansible_collections.immutable.infra.plugins.module_utils.board._text import WIDTH
from ansible_collections.immutable.infra.plugins.module_utils.board._text import render_text
from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import empty_state
from ansible_collections.immutable.infra.plugins.modules import board as board_module
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModule
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import ModuleDone
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import validate_args

CHAIN = ["dev", "staging", "prod"]
A = "127.0.0.1:5000/web@sha256:" + "a" * 64
B = "127.0.0.1:5000/web@sha256:" + "b" * 64
NOW = float(calendar.timegm((2026, 11, 30, 19, 0, 0)))  # a day after the rollback


def record(artifact_id, version, created):
    return {"schema": 1, "name": "web", "kind": "container", "id": artifact_id, "version": version,
            "created": created, "bake_id": f"bake-{version[:8] or 'none'}"}  # fmt: skip


def story(tmp_path, second_version="1.1.0"):
    """The quickstart's story on a real file ledger: two bakes, deploy, promote twice, again, roll back prod."""
    ledger = FileLedger(str(tmp_path / "ledger" / "ledger.json"))
    records_dir = tmp_path / "artifacts" / "web" / "records"
    records_dir.mkdir(parents=True)
    (records_dir / "01.json").write_text(json.dumps(record(A, "1.0.0", "2026-11-29T10:00:00Z")))
    (records_dir / "02.json").write_text(json.dumps(record(B, second_version, "2026-11-29T11:00:00Z")))
    at = iter(f"2026-11-29T{hour:02d}:00:00Z" for hour in range(12, 24))
    for artifact_id in (A, B):
        ledger.record("web", "dev", artifact_id, "deploy", "ci@build", at=next(at))
        ledger.record("web", "staging", artifact_id, "promote", "ci@build", from_env="dev", at=next(at))
        ledger.record("web", "prod", artifact_id, "promote", "alice@ops", from_env="staging", at=next(at))
    ledger.record("web", "prod", None, "rollback", "bob@ops", at=next(at))
    return ledger


def make(tmp_path, verify=None, **kwargs):
    ledger = story(tmp_path, **kwargs)
    problems = []
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", problems)}
    assert problems == []
    return build_board(ledger.read(), CHAIN, None, records, {"web": verify}, ledger.location, now=NOW)


def columns(board):
    return {env["name"]: env for env in board["apps"][0]["environments"]}


class Page(HTMLParser):
    """Each element's attributes and its text, and the text of every environment column."""

    def __init__(self):
        super().__init__()
        self.elements, self.stack, self.env_text = [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag not in ("br", "meta"):
            self.stack.append(attrs.get("data-env") if tag == "article" else None)

    def handle_endtag(self, tag):
        if tag not in ("br", "meta") and self.stack:
            self.stack.pop()

    def handle_data(self, data):
        env = next((item for item in reversed(self.stack) if item), None)
        if env:
            self.env_text[env] = self.env_text.get(env, "") + data

    def find(self, tag, **attrs):
        return [a for t, a in self.elements if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(html):
    page = Page()
    page.feed(html)
    return page


def test_the_story_shows_the_live_artifact_per_environment_and_the_rollback_in_prod(tmp_path):
    board = make(tmp_path)
    envs = columns(board)
    assert list(envs) == CHAIN and board["empty"] is False
    assert envs["dev"]["live"]["id"] == B and envs["staging"]["live"]["id"] == B
    assert envs["prod"]["live"]["id"] == A and envs["prod"]["previous"]["id"] == B
    assert envs["prod"]["live"]["version"] == "1.0.0" and envs["dev"]["live"]["version"] == "1.1.0"
    assert envs["prod"]["live"]["short"] == "sha256:" + "a" * 12
    prod_history = envs["prod"]["history"]
    assert [item["action"] for item in prod_history] == ["rollback", "promote", "promote"]
    assert prod_history[0]["by"] == "bob@ops" and prod_history[1]["artifact"]["id"] == B
    assert envs["prod"]["action"] == "rollback" and envs["prod"]["by"] == "bob@ops"
    assert envs["prod"]["age"] == "1d" and envs["prod"]["since"] == "2026-11-29T18:00:00Z"
    # prod rolled B back; staging still vouches for it, so the gate would let it through again
    assert envs["prod"]["incoming"]["artifact"]["id"] == B and envs["prod"]["incoming"]["from_env"] == "staging"
    assert envs["prod"]["incoming"]["state"] == "waiting" and "rolled back in prod" in envs["prod"]["incoming"]["why"]
    assert envs["staging"]["incoming"]["state"] == "current"

    page = parse(render_html(board))
    articles = page.find("article")
    assert [a["data-env"] for a in articles] == CHAIN
    assert {a["data-env"]: a["data-live"] for a in articles} == {"dev": B, "staging": B, "prod": A}
    prod_items = [a for t, a in page.elements if t == "li" and a.get("data-action")]
    assert prod_items[-3]["data-action"] == "rollback" and prod_items[-3]["data-id"] == A
    assert "1.0.0" in page.env_text["prod"] and "bob@ops" in page.env_text["prod"]


def test_the_page_is_self_contained_and_needs_no_script(tmp_path):
    html = render_html(make(tmp_path))
    assert "<script" not in html.lower()
    assert not re.search(r"""(?:src|href)\s*=|url\(|@import""", html), "the page must not load anything"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_markup_in_a_release_name_and_in_the_history_shows_as_text(tmp_path):
    evil = '<script>alert("x")</script>'
    ledger = story(tmp_path, second_version=evil)
    ledger.record("web", "dev", A, "deploy", '"><img src=x onerror=alert(1)>', at="2026-11-29T23:30:00Z",
                  reason="<b>hotfix</b>", forced=True)  # fmt: skip
    problems = []
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", problems)}
    board = build_board(ledger.read(), CHAIN, ["web"], records, None, ledger.location, now=NOW)
    html = render_html(board)
    assert "<script" not in html and "<img" not in html and "<b>hotfix" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;hotfix&lt;/b&gt;" in html
    page = parse(html)
    assert not page.find("img") and not page.find("script")
    assert evil in page.env_text["staging"]  # the browser shows the name as it is
    assert '"><img src=x onerror=alert(1)>' in page.env_text["dev"]


def test_an_empty_ledger_says_what_to_run_first(tmp_path):
    board = build_board(empty_state(), CHAIN, ["web"], {}, {}, str(tmp_path / "ledger.json"), now=NOW)
    assert board["empty"] is True
    assert "ansible-playbook playbooks/bake.yml" in board["hint"]
    assert "ansible-playbook playbooks/deploy.yml -e env=dev" in board["hint"]
    page = parse(render_html(board))
    assert page.find("section", **{"data-empty": "true"})
    assert not page.find("article")
    text = render_text(board)
    assert "playbooks/bake.yml" in text and "playbooks/deploy.yml -e env=dev" in text
    assert all(len(line) <= WIDTH for line in text.splitlines())


def test_the_text_board_has_aligned_columns_within_100_characters(tmp_path):
    ledger = story(tmp_path, second_version="2.0.0-rc.1+build.20261129.with.a.very.long.name")
    ledger.record("web", "prod", B, "promote", "someone-with-a-long-name@a-very-long-host-name.example",
                  from_env="staging", at="2026-11-29T23:00:00Z", forced=True,
                  reason="CHG-42 " + "because the release manager said so " * 5)  # fmt: skip
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", [])}
    text = render_text(build_board(ledger.read(), CHAIN, None, records, None, ledger.location, now=NOW))
    lines = text.splitlines()
    assert all(len(line) <= WIDTH for line in lines), [line for line in lines if len(line) > WIDTH]
    header = next(index for index, line in enumerate(lines) if line.startswith("ENV "))
    table = lines[header : header + 4]
    assert [line.split()[0] for line in table] == ["ENV", *CHAIN]
    for title in ("LIVE", "VERSION", "AGE", "VERIFIED", "DRIFT", "BY"):
        column = table[0].index(title)
        assert all(line[column - 2 : column] == "  " and line[column] != " " for line in table[1:]), title
    assert "sha256:aaaaaaaaaaaa" in table[1 + CHAIN.index("dev")] or "sha256:bbbbbbbbbbbb" in table[1]
    assert "FORCED" in text and "History, newest first:" in text


def test_drift_of_the_last_verify_and_what_the_next_environment_would_accept(tmp_path):
    verify = {
        "at": "2026-11-30T18:00:00Z",
        "environments": {
            "dev": {"checked": True, "drift": False, "mismatches": []},
            "prod": {"checked": True, "drift": True, "mismatches": ["prod: container web-prod-byhand is not ours"]},
        },
    }
    ledger = story(tmp_path)
    ledger.record("web", "dev", A, "deploy", "ci@build", at="2026-11-29T23:30:00Z", verified=False)
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", [])}
    board = build_board(ledger.read(), CHAIN, None, records, {"web": verify}, ledger.location, now=NOW)
    envs = columns(board)
    assert envs["prod"]["drift"]["drift"] is True and envs["dev"]["drift"]["drift"] is False
    assert envs["staging"]["drift"] is None
    # dev runs A unverified: staging would refuse it, and the reason is the gate's own message
    assert envs["dev"]["verified"] is False and envs["dev"]["verdict"] == "not verified"
    assert envs["staging"]["incoming"]["state"] == "refused" and "dev" in envs["staging"]["incoming"]["why"]
    page = parse(render_html(board))
    assert {a["data-env"]: a["data-drift"] for a in page.find("article")} == {
        "dev": "false",
        "staging": "unknown",
        "prod": "true",
    }
    assert "web-prod-byhand is not ours" in page.env_text["prod"]
    text = render_text(board)
    assert "DRIFT prod: container web-prod-byhand is not ours" in text


def test_short_ids_of_each_kind():
    assert short_id(A) == "sha256:aaaaaaaaaaaa"
    assert short_id("ami-0123456789abcdef0") == "ami-0123456789abcdef0"
    assert short_id({"us-east-1": "ami-12345678", "eu-west-1": "ami-9abcdef0"}) == (
        "eu-west-1:ami-9abcdef0 us-east-1:ami-12345678"
    )


def run(args, check_mode=False):
    params, _no_log, failed = validate_args("immutable.infra.board", board_module, args)
    if failed:
        return failed
    with pytest.raises(ModuleDone) as done:
        board_module.run_module(InProcessModule(params, check_mode=check_mode))
    return done.value.result


def test_the_module_writes_each_format_and_returns_the_data(tmp_path):
    story(tmp_path)
    args = {"path": str(tmp_path / "ledger" / "ledger.json"), "chain": CHAIN}
    args["artifacts_dir"] = str(tmp_path / "artifacts")
    dest = tmp_path / "out" / "board.html"
    assert run(dict(args, dest=str(dest)), check_mode=True)["changed"] is True and not dest.exists()
    result = run(dict(args, dest=str(dest)))
    assert result["changed"] is True and result["dest"] == str(dest)
    assert parse(dest.read_text()).find("article", **{"data-env": "prod", "data-live": A})
    assert result["board"]["apps"][0]["environments"][2]["live"]["version"] == "1.0.0"
    text = tmp_path / "out" / "board.txt"
    assert run(dict(args, dest=str(text), format="text"))["text"] == text.read_text()
    data = tmp_path / "out" / "board.json"
    run(dict(args, dest=str(data), format="json"))
    assert json.loads(data.read_text())["chain"] == CHAIN


def test_bad_input_fails_naming_the_fix_and_writes_nothing(tmp_path):
    dest = tmp_path / "board.html"
    result = run({"path": str(tmp_path / "ledger.json"), "chain": ["dev", "dev"], "dest": str(dest)})
    assert result["failed"] and "names environment 'dev' twice" in result["msg"]
    result = run({"path": str(tmp_path / "ledger.json"), "chain": CHAIN, "app": "<web>", "dest": str(dest)})
    assert result["failed"] and "app name '<web>' is not valid" in result["msg"]
    (tmp_path / "ledger.json").write_text("{not json")
    result = run({"path": str(tmp_path / "ledger.json"), "chain": CHAIN, "dest": str(dest)})
    assert result["failed"] and "ledger.json" in result["msg"]
    assert not dest.exists()


def test_an_abort_shows_as_aborted_with_its_host_and_figures_not_as_raw_evidence(tmp_path):
    ledger = story(tmp_path)
    detail = "error rate 19.4% (7 of 36 requests to green answered 5xx) above max_error_rate 5.0%"
    verdict = {"step": 20, "verdict": "failed", "requests": 36, "errors": 7, "error_rate": 0.194, "host": "h4",
               "latency_ms": {"p": 95, "value": 12.0}, "window_s": 10.0, "detail": detail}  # fmt: skip
    evidence = {"analysis": [verdict], "hooks": []}
    ledger.record("web", "staging", A, "abort", "ci@build", at="2026-11-30T10:00:00Z", verified=False,
                  reason="aborted by its analysis on h4: ...", evidence=evidence)  # fmt: skip
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", [])}
    board = build_board(ledger.read(), CHAIN, None, records, None, ledger.location, now=NOW)
    aborted = columns(board)["staging"]["history"][0]
    assert (aborted["action"], aborted["label"]) == ("abort", "aborted")
    assert aborted["evidence"].startswith("analysis failed at 20% on h4: error rate 19.4%")
    assert "evidence" not in aborted["extra"]
    text = render_text(board)
    lines = text.splitlines()
    at = next(index for index, line in enumerate(lines) if " aborted " in line)
    assert "NOT-VERIFIED" not in lines[at]
    assert lines[at + 1].strip().startswith("evidence: analysis failed at 20% on h4: error rate 19.4%")
    assert "{" not in lines[at] + lines[at + 1]  # no raw dict
    assert max(len(line) for line in lines) <= 92
    page = parse(render_html(board))
    assert page.find("li", **{"data-action": "abort"})
    assert "aborted" in page.env_text["staging"] and "'requests'" not in page.env_text["staging"]


def test_next_in_says_when_the_artifact_still_soaks_upstream_or_needs_an_approval(tmp_path):
    ledger = story(tmp_path)
    # B went live in staging at 16:00 on the 29th (the story), 27 h before NOW; prod runs A after its rollback
    records = {"web": read_records(str(tmp_path / "artifacts"), "web", [])}
    policies = {"prod": {"soak_minutes": 28 * 60, "router_port": 8080}, "staging": {}}
    board = build_board(ledger.read(), CHAIN, None, records, None, ledger.location, now=NOW, policies=policies)
    incoming = columns(board)["prod"]["incoming"]
    assert incoming["state"] == "soaking", incoming
    assert "60 min left" in incoming["why"] and "staging has run" in incoming["why"]
    # after the soak: prod needs an approval, and the board names who may give it and how
    approval = {"required": True, "approvers": ["alice"]}
    later = NOW + 6 * 3600
    policies = {"prod": {"soak_minutes": 60, "approval": approval}}
    board = build_board(ledger.read(), CHAIN, None, records, None, ledger.location, now=later, policies=policies)
    incoming = columns(board)["prod"]["incoming"]
    assert incoming["state"] == "needs approval" and "playbooks/approve.yml -e env=prod" in incoming["why"]
    assert "prod needs approval: sha256:bbbbbbbbbbbb - prod requires an approval" in render_text(board)
    assert "needs approval" in parse(render_html(board)).env_text["prod"]
    # without a policy the same promotion simply waits, as before
    board = build_board(ledger.read(), CHAIN, None, records, None, ledger.location, now=later)
    assert columns(board)["prod"]["incoming"]["state"] == "waiting"
