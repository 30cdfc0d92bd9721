"""The swarm router's config (pure): what nginx gets for each set of weights, and the weights read back from it.
nginx itself checks the rendered files in tests/integration/test_bg_swap_swarm.py (nginx -t at every switch)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import parse_log
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm import _router
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import is_digest_ref

ROUTER_DIR = Path(__file__).resolve().parents[6] / "extensions" / "swarm-router"
SERVICES = {"blue": "web-prod-blue", "green": "web-prod-green"}


@pytest.mark.parametrize(
    "weights", [{"blue": 100}, {"green": 100}, {"blue": 90, "green": 10}, {"blue": 50, "green": 50}, {}]
)
def test_the_weights_read_back_are_the_ones_rendered(weights):
    text = _router.render(SERVICES, weights, 8080)
    assert _router.parse_weights(text) == weights


def test_a_step_splits_requests_and_names_each_colours_service():
    text = _router.render(SERVICES, {"green": 10, "blue": 90}, 8080)
    assert "90.00% blue;" in text and "* green;" in text
    assert "blue web-prod-blue;" in text and "green web-prod-green;" in text
    assert "proxy_pass http://$bg_service:8080;" in text and "resolver 127.0.0.11" in text
    assert "add_header X-Colour $bg_colour always;" in text and "proxy_next_upstream off;" in text


def test_all_traffic_on_one_colour_has_no_percentage():
    text = _router.render(SERVICES, {"green": 100, "blue": 0}, 8080)
    assert "%" not in text.split("split_clients", 1)[1].split("}", 1)[0]
    assert _router.parse_weights(text) == {"green": 100}


def test_no_colour_answers_503_and_a_file_bg_swap_did_not_write_has_no_weights():
    assert "return 503;" in _router.render(SERVICES, {}, 8080)
    assert _router.parse_weights((ROUTER_DIR / "router.conf").read_text()) is None  # the image's default
    assert _router.parse_weights(None) is None


@pytest.mark.parametrize(
    "ref, ok",
    [
        ("127.0.0.1:5000/web@sha256:" + "a" * 64, True),
        ("registry.example.com/team/web@sha256:" + "0" * 64, True),
        ("127.0.0.1:5000/web:1.0", False),
        ("127.0.0.1:5000/web:1.0@sha256:" + "a" * 64, False),
        ("web@sha256:abc", False),
        (None, False),
    ],
)
def test_only_a_digest_reference_is_accepted(ref, ok):
    assert is_digest_ref(ref) is ok


def test_the_analysis_log_is_written_only_when_asked_in_the_docker_routers_format():
    plain = _router.render(SERVICES, {"blue": 80, "green": 20}, 8080)
    assert "access_log" not in plain and "log_format" not in plain
    logged = _router.render(SERVICES, {"blue": 80, "green": 20}, 8080, analysis_log=True)
    assert "log_format bg_analysis '$bg_colour\\t$msec\\t$status\\t$request_time\\t$upstream_addr';" in logged
    assert f"access_log {_router.ANALYSIS_LOG} bg_analysis;" in logged
    assert _router.parse_weights(logged) == {"blue": 80, "green": 20}
    # no colour live: nothing to measure, no log
    assert "access_log" not in _router.render(SERVICES, {}, 8080, analysis_log=True)


def window(log: Path, inode=None, offset=None) -> tuple:
    """WINDOW_SCRIPT run by a real sh (as in the router task), its answer parsed."""
    argv = [
        "sh",
        "-c",
        _router.WINDOW_SCRIPT,
        "window",
        str(log),
        inode or "none",
        "" if offset is None else str(offset),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return _router.parse_window(out)


def test_the_window_script_gives_the_clock_the_mark_and_only_the_lines_written_since(tmp_path):
    log = tmp_path / "bg-analysis.log"
    before = time.time()
    clock, inode, size, data = window(log)  # no log yet (turned on a moment ago): no inode, size 0
    assert before - 1 <= clock <= time.time() + 1 and (inode, size, data) == (None, 0, b"")
    log.write_bytes(b"blue\t1764900000.000\t200\t0.001\t10.0.0.5:8080\n")
    _clock, inode, size, data = window(log)
    assert inode == str(log.stat().st_ino) and size == log.stat().st_size and data == b""  # a mark reads no lines
    with log.open("ab") as handle:
        handle.write(b"green\t1764900001.000\t500\t0.002\t10.0.0.7:8080\n")
    _clock, _inode, _size, data = window(log, inode, size)
    assert data == b"green\t1764900001.000\t500\t0.002\t10.0.0.7:8080\n"
    figures = parse_log(data, "green", 1764900000.5, 1764900002.0)
    assert (figures.requests, figures.errors) == (1, 1)
    # the log made during the window (no inode at the mark), truncated, or another file: all of it is read
    assert window(log, None, 0)[3].count(b"\n") == 2
    log.write_bytes(b"green\t1764900003.000\t200\t0.002\t10.0.0.7:8080\n")
    assert window(log, inode, size)[3].count(b"\n") == 1
