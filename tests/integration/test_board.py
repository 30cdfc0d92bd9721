"""The promotion board through playbooks/board.yml after the quickstart's story, rendered by a real browser.

The story runs through the real playbooks on test_promotion.py's chain (real Docker Engine, registry with auth,
nginx routers): two bakes, deploy dev, promote twice, the second version the same way, roll back prod, then a
drift in prod that verify.yml finds. The page is checked on its HTML, then Debian's chromium renders it headless:
a screenshot (kept in tests/output/board/, the README's picture comes from it) and the DOM it built.
The SSM ledger (moto_server over HTTP) gives the same board, as JSON.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from conftest import REPO_ROOT
from moto_fixtures import FAKE_ENV
from test_promotion import CHAIN
from test_promotion import _keys
from test_promotion import artifacts  # noqa: F401  # pylint: disable=unused-import
from test_promotion import chain  # noqa: F401  # pylint: disable=unused-import
from test_promotion import moto_server  # noqa: F401  # pylint: disable=unused-import
from test_promotion import registry_env  # noqa: F401  # pylint: disable=unused-import
from test_promotion import sh
from test_promotion import show

from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

OUTPUT = REPO_ROOT / "tests" / "output" / "board"
CHROMIUM = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",  # the page's console (a script error would show as INFO:CONSOLE) goes to stderr
]
ARTICLE = re.compile(r"<article\b([^>]*)>(.*?)</article>", re.S)
ATTRIBUTE = re.compile(r'([a-z-]+)="([^"]*)"')


def columns(page: str) -> dict:
    """data-env -> (the column's attributes, its visible text, its history items' attributes)."""
    out = {}
    for attrs, inner in ARTICLE.findall(page):
        found = {key: html.unescape(value) for key, value in ATTRIBUTE.findall(attrs)}
        text = html.unescape(re.sub(r"<[^>]+>", " ", inner))
        items = [
            {key: html.unescape(value) for key, value in ATTRIBUTE.findall(item)}
            for item in re.findall(r"<li\b([^>]*data-action[^>]*)>", inner)
        ]
        out[found["data-env"]] = (found, " ".join(text.split()), items)
    return out


def browser(tmp_path, *args) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is missing: apt-get install chromium (scripts/test-all.sh installs it)"
    return subprocess.run(
        [binary, *CHROMIUM, f"--user-data-dir={tmp_path / 'chromium'}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_the_board_after_the_quickstart_story_in_a_real_browser(chain, artifacts, tmp_path):  # noqa: F811
    one, two = artifacts
    c = chain()

    # nothing deployed yet: the page says what to run first
    res = c.run("board.yml")
    assert res.returncode == 0, show(res)
    page_path = c.root / "artifacts" / "board.html"
    assert f"board written: {page_path}" in res.stdout, show(res)
    page = page_path.read_text()
    assert 'data-empty="true"' in page and "<article" not in page
    assert "ansible-playbook playbooks/bake.yml" in page and "ansible-playbook playbooks/deploy.yml -e env=dev" in page

    story = [
        ("deploy.yml", {"env": "dev"}),
        ("promote.yml", {"from": "dev", "to": "staging"}),
        ("promote.yml", {"from": "staging", "to": "prod"}),
        ("deploy.yml", {"env": "dev", "artifact": two["id"]}),
        ("promote.yml", {"from": "dev", "to": "staging"}),
        ("promote.yml", {"from": "staging", "to": "prod"}),
        ("rollback.yml", {"env": "prod", "reason": "5xx after <b>2</b>"}),
    ]
    for playbook, extra in story:
        res = c.run(playbook, **extra)
        assert res.returncode == 0, f"{playbook} {extra}\n{show(res)}"
    # drift in prod: a file changed inside its live container, found by verify.yml (which keeps its result)
    sh("docker", "exec", c.live_container("prod")["Name"].lstrip("/"), "touch", "/usr/bin/x")
    res = c.run("verify.yml")
    assert res.returncode != 0 and "/usr/bin/x" in res.stdout, show(res)

    res = c.run("board.yml")
    assert res.returncode == 0, show(res)
    page = page_path.read_text()
    found = columns(page)
    assert list(found) == CHAIN
    live = {env: attrs["data-live"] for env, (attrs, _text, _items) in found.items()}
    assert live == {"dev": two["id"], "staging": two["id"], "prod": one["id"]}
    prod_attrs, prod_text, prod_items = found["prod"]
    assert [item["data-action"] for item in prod_items] == ["rollback", "promote", "promote"]
    assert [item["data-id"] for item in prod_items] == [one["id"], two["id"], one["id"]]
    assert "5xx after <b>2</b>" in prod_text and "<b>2</b>" not in page  # the reason shows as text
    assert prod_attrs["data-drift"] == "true" and "/usr/bin/x" in prod_text
    assert found["dev"][0]["data-drift"] == "false" and found["staging"][0]["data-verified"] == "true"
    assert "rolled back" in prod_text  # two, live in prod before the rollback, is withdrawn there

    # the same board as text, for a terminal or a CI log
    res = c.run("board.yml", format="text")
    assert res.returncode == 0, show(res)
    text = res.stdout.split("msg: |-", 1)[1].split("PLAY RECAP", 1)[0].rstrip().splitlines()
    assert all(len(line) <= 100 for line in text), [line for line in text if len(line) > 100]
    rows = {}
    for line in text:  # the table's row of each environment (the history lines come after the table)
        if line.split() and line.split()[0] in CHAIN:
            rows.setdefault(line.split()[0], line)
    assert one["digest"][:19] in rows["prod"] and two["digest"][:19] in rows["dev"], text
    assert any("rollback" in line and one["digest"][:19] in line for line in text), text

    # a real browser renders the page: a screenshot at 1280x800 and the DOM it built (every column there and filled),
    # then a screenshot at a phone's width; both pictures are kept as test artifacts
    OUTPUT.mkdir(parents=True, exist_ok=True)
    wide, phone = OUTPUT / "board.png", OUTPUT / "board-phone.png"
    url = page_path.as_uri()
    for picture in (wide, phone):
        picture.unlink(missing_ok=True)
    runs = [
        browser(tmp_path, "--window-size=1280,800", f"--screenshot={wide}", "--dump-dom", url),
        browser(tmp_path, "--window-size=390,844", f"--screenshot={phone}", url),
    ]
    for run, picture in zip(runs, (wide, phone), strict=True):
        assert run.returncode == 0, run.stderr[-3000:]
        assert ":CONSOLE" not in run.stderr and "net::ERR" not in run.stderr, run.stderr[-3000:]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 10_000
    rendered = columns(runs[0].stdout)
    assert list(rendered) == CHAIN, runs[0].stdout[:3000]
    for env, (attrs, text_of_column, items) in rendered.items():
        assert attrs["data-live"] == live[env] and items, env
        assert env in text_of_column and "sha256:" in text_of_column, (env, text_of_column)


def test_the_board_of_an_ssm_ledger_as_json(chain, moto_server, unique):  # noqa: F811
    """The ledger the promotion playbooks keep in SSM Parameter Store (written here by the same SsmLedger over
    moto_server's HTTP API), read by board.yml through the inventory's promotion_ledger."""
    import boto3

    ami_1 = {"eu-west-1": "ami-0123456789abcdef0", "us-east-1": "ami-0fedcba9876543210"}
    record = {"schema": 1, "name": "api", "kind": "ami", "id": ami_1, "version": "3.1.0"}
    prefix = f"/board-test/{unique}"
    ledger = {"backend": "ssm", "prefix": prefix, "region": "eu-west-1", "endpoint_url": moto_server}
    c = chain(backend="none", ledger=ledger, env={**FAKE_ENV, "AWS_DEFAULT_REGION": "eu-west-1"})
    (c.root / "artifacts" / c.app / "records" / "00.json").write_text(json.dumps(record))
    ssm = boto3.client("ssm", endpoint_url=moto_server, region_name="eu-west-1", **_keys(FAKE_ENV))
    store = SsmLedger(ssm, prefix)
    store.record(c.app, "dev", ami_1, "deploy", "ci@build")
    store.record(c.app, "staging", ami_1, "promote", "ci@build", from_env="dev", verified=False)

    res = c.run("board.yml", format="json")
    assert res.returncode == 0, show(res)
    board = json.loads((c.root / "artifacts" / "board.json").read_text())
    assert board["location"] == prefix and board["chain"] == CHAIN and not board["empty"]
    (app,) = board["apps"]
    envs = {env["name"]: env for env in app["environments"]}
    assert app["name"] == c.app and envs["staging"]["live"]["id"] == ami_1 and envs["prod"]["live"] is None
    assert envs["staging"]["live"]["short"] == "eu-west-1:ami-0123456789abcdef0 us-east-1:ami-0fedcba9876543210"
    assert envs["staging"]["live"]["version"] == "3.1.0" and envs["staging"]["from_env"] == "dev"
    # staging has not vouched for it: prod would refuse it, with the gate's reason
    assert envs["staging"]["verified"] is False and envs["prod"]["incoming"]["state"] == "refused"
    assert "verified=false" in envs["prod"]["incoming"]["why"]
