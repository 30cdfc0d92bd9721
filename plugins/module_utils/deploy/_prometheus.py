# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional Prometheus source of the analysis between weighted steps (analysis.prometheus).

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Where a team already has Prometheus, the window's figures of the new colour come from its HTTP API instead of the
router's log: three PromQL queries of the team's (requests, error_rate and optionally latency_ms), with the
placeholders {colour}, {app}, {env}, {window} (the measured window as a Prometheus duration, e.g. 30s or 2004ms) and
{quantile} (latency_percentile / 100, e.g. 0.95) replaced, each evaluated once at the window's end
(GET <url>/api/v1/query?query=...&time=<end>). The figures then go through the same verdict() as the log's.

A query that returns no sample, more than one, NaN, an HTTP error or no answer within `timeout` gives Figures with
`unavailable` set: the verdict is inconclusive, which aborts and rolls back like an idle window. Before any change,
preflight() runs each query once, so an unreachable Prometheus, a rejected header or a PromQL typo fails early.

Header values are secrets (an Authorization token): they are sent, never put in a message or a result. The URL may
not carry credentials or a query string, so it can be named in messages as it is.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
from dataclasses import dataclass
from dataclasses import field
from urllib.error import HTTPError

from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import Figures
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import given_keys

KEYS = ("url", "requests", "error_rate", "latency_ms", "headers", "timeout")
QUERIES = ("requests", "error_rate", "latency_ms")
PLACEHOLDERS = ("colour", "app", "env", "window", "quantile")
# {word} with no operator inside is never a PromQL label matcher: a placeholder, or a typo of one
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
EXAMPLE = (
    "{url: http://prometheus:9090, requests: 'sum(increase(http_requests_total{colour=\"{colour}\"}[{window}]))',"
    ' error_rate: \'sum(increase(http_requests_total{colour="{colour}",code=~"5.."}[{window}])) /'
    ' sum(increase(http_requests_total{colour="{colour}"}[{window}]))\'}'
)


@dataclass
class PrometheusSettings:
    url: str
    requests: str
    error_rate: str
    latency_ms: str | None = None
    headers: dict = field(default_factory=dict)
    timeout: float = 10.0


def validate(raw) -> PrometheusSettings:
    """analysis.prometheus checked before anything changes (AnalysisError names the key and the fix)."""
    if not isinstance(raw, dict):
        raise AnalysisError(f"analysis.prometheus must be a mapping such as {EXAMPLE}")
    given = given_keys(raw, KEYS, "analysis.prometheus")
    missing = [key for key in ("url", "requests", "error_rate") if not given.get(key)]
    if missing:
        raise AnalysisError(
            f"analysis.prometheus needs {', '.join(missing)}: the Prometheus server's URL and the PromQL queries"
            f" giving the new colour's request count and error share in the window, e.g. {EXAMPLE}"
        )
    url = given["url"]
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise AnalysisError(
            f"analysis.prometheus.url: {url!r} is not an http(s) URL such as http://prometheus.example.com:9090"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise AnalysisError(
            "analysis.prometheus.url must not carry credentials, a query string or a fragment (they would show in"
            " messages): give the server's base URL and put an Authorization header in analysis.prometheus.headers"
        )
    for key in QUERIES:
        query = given.get(key)
        if query is None:
            continue
        if not isinstance(query, str) or not query.strip():
            raise AnalysisError(f"analysis.prometheus.{key}: {query!r} must be a PromQL query (a string)")
        wrong = sorted({name for name in _PLACEHOLDER.findall(query) if name not in PLACEHOLDERS})
        if wrong:
            raise AnalysisError(
                f"analysis.prometheus.{key}: unknown placeholder(s) {', '.join('{' + w + '}' for w in wrong)}; the"
                f" placeholders are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
    headers = given.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        # the values are secrets: name the header names only
        names = sorted(str(k) for k in headers) if isinstance(headers, dict) else []
        raise AnalysisError(
            f"analysis.prometheus.headers must map header names to string values (names given: {names or 'none'})"
        )
    timeout = given.get("timeout", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
        raise AnalysisError(f"analysis.prometheus.timeout: {timeout!r} is not a number of seconds")
    try:
        timeout = float(timeout)
    except ValueError:
        raise AnalysisError(f"analysis.prometheus.timeout: {timeout!r} is not a number of seconds") from None
    if not 0.1 <= timeout <= 300:
        raise AnalysisError(f"analysis.prometheus.timeout: {timeout!r} must be 0.1..300 seconds")
    return PrometheusSettings(
        url=url.rstrip("/"),
        requests=given["requests"],
        error_rate=given["error_rate"],
        latency_ms=given.get("latency_ms"),
        headers=dict(headers),
        timeout=timeout,
    )


def duration(seconds: float) -> str:
    """A Prometheus duration for {window}: whole seconds as `30s`, otherwise milliseconds (`2004ms`)."""
    millis = max(1, int(round(seconds * 1000)))
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render(query: str, colour: str, app: str, env: str, window_s: float, percentile: float) -> str:
    values = {
        "colour": colour,
        "app": app,
        "env": env,
        "window": duration(window_s),
        "quantile": f"{percentile / 100.0:g}",
    }
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), query)


class Unavailable(Exception):
    """Prometheus gave no usable figure (no answer, an error, no sample, NaN): the verdict is inconclusive."""


class PrometheusSource:
    """Evaluates the configured queries against one Prometheus server (its HTTP API, /api/v1/query)."""

    def __init__(self, settings: PrometheusSettings, app: str, env: str, opener=open_url, wall=time.time):
        self.settings = settings
        self.app = app
        self.env = env
        self.opener = opener
        self.wall = wall

    def query(self, key: str, promql: str, at: float) -> float | None:
        """The value of the query's single sample at `at` (unix time); None when it returned no sample."""
        url = f"{self.settings.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        where = f"Prometheus {self.settings.url}"
        try:
            response = self.opener(
                url,
                headers=dict(self.settings.headers, Accept="application/json"),
                method="GET",
                timeout=self.settings.timeout,
                follow_redirects="none",
            )
            body = response.read()
        except HTTPError as exc:
            raise Unavailable(f"{where} answered HTTP {exc.code} to the {key} query: {_api_error(exc)}") from None
        except (OSError, ValueError) as exc:  # refused, reset, timed out, DNS: no answer
            reason = getattr(exc, "reason", None) or exc
            if isinstance(reason, TimeoutError):
                raise Unavailable(
                    f"{where} did not answer the {key} query within {self.settings.timeout:g} s (timeout)"
                ) from None
            raise Unavailable(
                f"{where} could not be reached for the {key} query: {type(reason).__name__}: {reason}"
            ) from None
        try:
            answer = json.loads(body)
            data = answer["data"]
            kind, result = data["resultType"], data["result"]
        except (ValueError, KeyError, TypeError):
            raise Unavailable(f"{where} gave an answer to the {key} query that is not its API's JSON") from None
        if kind == "scalar":
            samples = [result]
        elif kind == "vector":
            samples = [item.get("value") for item in result]
        else:
            raise Unavailable(
                f"the {key} query gives a {kind}, not one number: use an instant query such as sum(increase(...))"
            )
        if not samples:
            return None
        if len(samples) > 1:
            raise Unavailable(f"the {key} query returned {len(samples)} series, not one: aggregate them, e.g. sum(...)")
        try:
            value = float(samples[0][1])
        except (TypeError, ValueError, IndexError):
            raise Unavailable(f"the {key} query's sample is not a number: {samples[0]!r}") from None
        return value

    def preflight(self, percentile: float, window: float) -> None:
        """Each query once, now: Prometheus answers, accepts the headers and parses the PromQL (the results do not
        matter: the new colour may have no series yet). AnalysisError before any change otherwise."""
        now = self.wall()
        for key in QUERIES:
            promql = getattr(self.settings, key)
            if not promql:
                continue
            try:
                self.query(key, render(promql, "blue", self.app, self.env, window, percentile), now)
            except Unavailable as exc:
                raise AnalysisError(f"analysis.prometheus: {exc}") from None

    def figures(self, colour: str, start: float, end: float, settings) -> Figures:
        """The window's figures of `colour` (start and end: unix times), for verdict(). Unavailable -> inconclusive."""
        window_s = max(end - start, 0.001)
        note = f"figures from Prometheus {self.settings.url} over {duration(window_s)}"

        def value(key: str) -> float | None:
            promql = getattr(self.settings, key)
            if not promql:
                return None
            result = self.query(
                key, render(promql, colour, self.app, self.env, window_s, settings.latency_percentile), end
            )
            if result is None:
                raise Unavailable(
                    f"the {key} query returned no sample for {colour}: check that the metric exists with the labels"
                    " the query selects (and that Prometheus scrapes the new colour)"
                )
            if math.isnan(result) or math.isinf(result):
                raise Unavailable(f"the {key} query returned {result} for {colour}")
            return result

        try:
            requests = int(round(value("requests")))
            if requests < settings.min_requests:
                return Figures(requests=requests, source="prometheus", notes=[note])
            error_rate = value("error_rate")
            if not 0.0 <= error_rate <= 1.0:
                raise Unavailable(f"the error_rate query returned {error_rate:g}, not a share of 0..1")
            latency = value("latency_ms")
        except Unavailable as exc:
            return Figures(unavailable=str(exc), source="prometheus", notes=[note])
        return Figures(
            requests=requests,
            errors=int(round(error_rate * requests)),
            error_rate=error_rate,
            latency_value_ms=latency,
            source="prometheus",
            notes=[note],
        )


def _api_error(exc: HTTPError) -> str:
    """Prometheus's own error text (e.g. a PromQL parse error) from an error answer, shortened."""
    try:
        answer = json.loads(exc.read() or b"{}")
        text = f"{answer.get('errorType', '')}: {answer.get('error', '')}".strip(": ")
    except (ValueError, AttributeError, OSError):
        text = ""
    if not text and exc.code in (401, 403):
        text = "check the credentials in analysis.prometheus.headers"
    return (text or str(exc.reason))[:300]
