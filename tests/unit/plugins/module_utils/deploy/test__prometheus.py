"""The analysis' Prometheus source: its settings, the placeholders, and how each kind of answer of the HTTP API
becomes figures or an inconclusive window. The answers come from a small HTTP server on loopback speaking the API's
JSON (the real Prometheus runs in tests/integration/test_analysis_prometheus.py)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import verdict
from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import PrometheusSource
from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import duration
from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import render
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import _analysis_for
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import analysis_secrets
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import fleet_analysis_problem

TOKEN = "Bearer s3cr3t-token"
QUERIES = {
    "requests": 'sum(increase(http_requests_total{colour="{colour}",app="{app}"}[{window}]))',
    "error_rate": (
        'sum(increase(http_requests_total{colour="{colour}",code=~"5.."}[{window}]))'
        ' / sum(increase(http_requests_total{colour="{colour}"}[{window}]))'
    ),
    "latency_ms": '1000 * histogram_quantile({quantile}, sum by (le) (rate(d_bucket{env="{env}"}[{window}])))',
}


def prom(url="http://prometheus.example.com:9090", **extra):
    return {"window": 5, "min_requests": 10, "prometheus": dict(QUERIES, url=url, **extra)}


# -- settings ------------------------------------------------------------------------------------------------------
def test_settings_are_checked_and_the_source_is_explicit():
    assert validate({"window": 5}).prometheus is None  # the router's log by default
    settings = validate(prom(headers={"Authorization": TOKEN}, timeout="2"))
    assert settings.prometheus.url == "http://prometheus.example.com:9090" and settings.prometheus.timeout == 2.0
    # backend=aws takes the request thresholds when Prometheus measures them
    aws = validate(dict(prom(), max_error_rate=0.01, cloudwatch_alarms=["web-5xx"]), "aws")
    assert aws.max_error_rate == 0.01 and aws.prometheus.requests == QUERIES["requests"]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"requests": None}, ["analysis.prometheus needs requests"]),
        ({"url": "prometheus:9090"}, ["analysis.prometheus.url", "not an http(s) URL"]),
        ({"url": "http://u:pw@prom:9090"}, ["must not carry credentials", "analysis.prometheus.headers"]),
        ({"url": "http://prom:9090/?token=x"}, ["must not carry credentials, a query string"]),
        ({"requests": 'sum(x{colour="{color}"})'}, ["analysis.prometheus.requests: unknown placeholder(s) {color}"]),
        ({"timeout": 0}, ["analysis.prometheus.timeout", "0.1..300"]),
        ({"step": 5}, ["analysis.prometheus: unknown key(s) ['step']"]),
    ],
)
def test_bad_prometheus_settings_name_the_key_and_the_fix(change, words):
    raw = prom()
    raw["prometheus"].update(change)
    raw["prometheus"] = {k: v for k, v in raw["prometheus"].items() if v is not None}
    with pytest.raises(AnalysisError) as err:
        validate(raw)
    for word in words:
        assert word in str(err.value)


def test_log_keys_and_an_unmeasured_latency_threshold_are_refused_with_prometheus():
    with pytest.raises(AnalysisError, match="count_4xx apply to the router's log, not to analysis.prometheus"):
        validate(dict(prom(), count_4xx=True))
    raw = prom()
    del raw["prometheus"]["latency_ms"]
    with pytest.raises(AnalysisError, match="max_latency_ms needs analysis.prometheus.latency_ms"):
        validate(dict(raw, max_latency_ms=300))


def test_a_header_value_is_never_in_a_message():
    with pytest.raises(AnalysisError) as err:
        validate(prom(headers={"Authorization": TOKEN, "X-Retries": 3}))
    assert "names given: ['Authorization', 'X-Retries']" in str(err.value) and TOKEN not in str(err.value)


def test_placeholders_are_replaced_and_label_matchers_left_alone():
    query = render(QUERIES["requests"] + " + " + QUERIES["latency_ms"], "green", "web", "prod", 30.0, 95)
    assert query == (
        'sum(increase(http_requests_total{colour="green",app="web"}[30s])) + '
        '1000 * histogram_quantile(0.95, sum by (le) (rate(d_bucket{env="prod"}[30s])))'
    )
    assert (duration(2.0041), duration(0.0001), duration(60)) == ("2004ms", "1ms", "60s")


# -- answers of the HTTP API -----------------------------------------------------------------------------------------
class Api:
    """A loopback HTTP server answering /api/v1/query from `answers` ({text in the query: (status, body)}, the
    first that matches)."""

    def __init__(self):
        self.answers, self.seen = {}, []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                api.seen.append({"query": query, "authorization": self.headers.get("Authorization")})
                found = [answer for text, answer in api.answers.items() if text in query["query"][0]]
                status, body = found[0] if found else (200, vector())
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def vector(*values):
    return {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [1, v]} for v in values]},
    }


@pytest.fixture
def api():
    server = Api()
    yield server
    server.server.shutdown()
    server.server.server_close()


def source(url, **extra):
    settings = validate(prom(url, headers={"Authorization": TOKEN}, **extra))
    return PrometheusSource(settings.prometheus, "web", "prod"), settings


def test_the_figures_come_from_the_three_queries_at_the_windows_end(api):
    api.answers = {
        "code=~": (200, vector("0.2")),
        "histogram_quantile": (200, vector("12.5")),
        "http_requests_total": (200, vector("59.4")),
    }
    prometheus, settings = source(api.url)
    figures = prometheus.figures("green", 1000.0, 1030.0, settings)
    assert (figures.requests, figures.errors, figures.error_rate, figures.latency_value_ms) == (59, 12, 0.2, 12.5)
    assert [seen["query"]["time"] for seen in api.seen] == [["1030.000"]] * 3
    assert 'colour="green"' in api.seen[0]["query"]["query"][0] and "[30s]" in api.seen[0]["query"]["query"][0]
    assert {seen["authorization"] for seen in api.seen} == {TOKEN}
    item = verdict(20, "green", figures, settings, 30.0)
    assert item["verdict"] == "failed" and item["latency_ms"] == {"p": 95, "value": 12.5}
    assert "error rate 20.0% (about 12 of 59 requests to green were errors, by the error_rate query)" in item["detail"]
    assert f"figures from Prometheus {api.url} over 30s" in item["detail"]


@pytest.mark.parametrize(
    "answer, words",
    [
        ((200, vector()), ["the requests query returned no sample for green"]),
        ((200, vector("1", "2")), ["the requests query returned 2 series, not one: aggregate them"]),
        ((200, vector("NaN")), ["the requests query returned nan for green"]),
        (
            (400, {"status": "error", "errorType": "bad_data", "error": "parse error: unexpected <EOF>"}),
            ["answered HTTP 400 to the requests query: bad_data: parse error: unexpected <EOF>"],
        ),
        ((200, {"data": "?"}), ["is not its API's JSON"]),
    ],
)
def test_an_answer_without_a_usable_figure_makes_the_window_inconclusive(api, answer, words):
    api.answers["http_requests_total"] = answer
    prometheus, settings = source(api.url)
    item = verdict(20, "green", prometheus.figures("green", 1000.0, 1030.0, settings), settings, 30.0)
    assert item["verdict"] == "inconclusive" and item["requests"] is None, item
    for word in words:
        assert word in item["detail"]
    assert TOKEN not in json.dumps(item)


def test_an_idle_window_stops_at_the_request_count_and_is_inconclusive(api):
    api.answers["http_requests_total"] = (200, vector("3"))
    prometheus, settings = source(api.url)
    item = verdict(20, "green", prometheus.figures("green", 1000.0, 1030.0, settings), settings, 30.0)
    assert item["verdict"] == "inconclusive" and item["requests"] == 3 and len(api.seen) == 1
    assert item["detail"].startswith("only 3 requests to green in 30.0 s, at least 10 needed: idle window")


def test_an_unreachable_prometheus_is_named_in_the_preflight_and_in_a_window():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    prometheus, settings = source(closed, timeout=2)
    with pytest.raises(AnalysisError, match=f"analysis.prometheus: Prometheus {closed} could not be reached"):
        prometheus.preflight(95, 5)
    item = verdict(20, "green", prometheus.figures("green", 1000.0, 1030.0, settings), settings, 30.0)
    assert (
        item["verdict"] == "inconclusive" and f"no figures: Prometheus {closed} could not be reached" in item["detail"]
    )


# -- the promotion's settings ----------------------------------------------------------------------------------------
def test_the_promotion_hides_the_header_values_and_gives_aws_the_thresholds():
    shared = prom(headers={"Authorization": TOKEN})
    settings = {"analysis": shared, "environments": {"prod": {"analysis": prom(headers={"X-Key": "k2"})}, "dev": {}}}
    assert analysis_secrets(settings) == {TOKEN, "k2"} and analysis_secrets({"analysis": {"window": 5}}) == set()
    assert _analysis_for(dict(shared, cloudwatch_alarms=["a"]), "aws")["min_requests"] == 10
    assert "min_requests" not in _analysis_for({"window": 5, "min_requests": 10}, "aws")
    # a fleet's hosts get the analysis from the plan (a result, secrets hidden): headers are refused there
    resolved = {"analysis": shared, "environments": {"prod": {}, "dev": {"analysis": prom()}}}
    assert "the analysis of prod (a fleet" in fleet_analysis_problem(resolved, "prod")
    assert TOKEN not in fleet_analysis_problem(resolved, "prod") and fleet_analysis_problem(resolved, "dev") is None
