"""Upstream rendering/parsing and the restore-on-failure path of the nginx switch."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import NginxSwitch
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import SwitchError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import parse_upstream
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import render_upstream

PORTS = {"blue": 8101, "green": 8102}


def test_render_and_parse_round_trip():
    text = render_upstream("web-x", "prod", {"blue": 90, "green": 10}, PORTS)
    assert "upstream web_x_prod {" in text and "$bg_colour_web_x_prod" in text
    assert parse_upstream(text) == ({"blue": 90, "green": 10}, PORTS)
    single = render_upstream("web", "prod", {"green": 100}, PORTS)
    assert parse_upstream(single)[0] == {"green": 100}
    assert "127.0.0.1:8101" in single  # blue stays in the colour map


def test_empty_upstream_has_no_live_colour():
    text = render_upstream("web", "prod", {}, PORTS)
    assert "down" in text and parse_upstream(text)[0] == {}


def make(tmp_path, rc_test=0):
    calls = []

    def run(cmd):
        calls.append(cmd)
        if "-t" in cmd:
            return rc_test, "", "nginx: [emerg] unknown directive" if rc_test else "ok"
        return 0, "", ""

    switch = NginxSwitch(run, "web", "prod", str(tmp_path), conf="/x/nginx.conf", prefix="/x/")
    (tmp_path / "web-prod.upstream.conf").write_text(render_upstream("web", "prod", {"blue": 100}, PORTS))
    return switch, calls


def test_switch_tests_then_reloads_with_conf_and_prefix(tmp_path):
    switch, calls = make(tmp_path)
    switch.switch({"green": 100}, PORTS)
    assert calls == [
        ["nginx", "-c", "/x/nginx.conf", "-p", "/x/", "-t"],
        ["nginx", "-c", "/x/nginx.conf", "-p", "/x/", "-s", "reload"],
    ]
    assert switch.read()[0] == {"green": 100}
    assert [p.name for p in tmp_path.iterdir()] == ["web-prod.upstream.conf"]  # no temp file left


def test_failed_nginx_test_restores_old_file(tmp_path):
    switch, calls = make(tmp_path, rc_test=1)
    before = (tmp_path / "web-prod.upstream.conf").read_text()
    with pytest.raises(SwitchError, match="unknown directive"):
        switch.switch({"green": 100}, PORTS)
    assert (tmp_path / "web-prod.upstream.conf").read_text() == before
    assert not any("reload" in c for c in calls)


def test_missing_upstream_file_says_how_to_fix(tmp_path):
    switch = NginxSwitch(lambda cmd: (0, "", ""), "web", "prod", str(tmp_path))
    with pytest.raises(SwitchError, match="immutable.infra.router"):
        switch.read()
