"""The swarm router's config (pure): what nginx gets for each set of weights, and the weights read back from it.
nginx itself checks the rendered files in tests/integration/test_bg_swap_swarm.py (nginx -t at every switch)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
