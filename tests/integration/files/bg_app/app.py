"""Tiny test app for bg_swap: / answers the version, /healthz answers APP_HEALTH (default 200).

With APP_FAIL_EVERY=N (N > 0) every Nth request other than /healthz answers 500 (a "flaky" release: 20 % for N=5).
/metrics answers its own figures in Prometheus's text format (what a team's app would expose, for the analysis'
Prometheus source): http_requests_total{handler, code} and the histogram http_request_duration_seconds of the
requests other than /healthz. /metrics itself is not counted."""

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "unknown").encode()
HEALTH = int(os.environ.get("APP_HEALTH", "200"))
FAIL_EVERY = int(os.environ.get("APP_FAIL_EVERY", "0") or 0)
COUNT = [0]
LOCK = threading.Lock()
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# every series exists from the start (at 0), so Prometheus' increase() sees the first requests too
REQUESTS = {("/", "200"): 0, ("/", "500"): 0, ("/healthz", str(HEALTH)): 0}
DURATIONS = {"buckets": [0] * len(BUCKETS), "sum": 0.0, "count": 0}


def observe(handler: str, code: int, seconds: float) -> None:
    with LOCK:
        key = (handler, str(code))
        REQUESTS[key] = REQUESTS.get(key, 0) + 1
        if handler == "/":
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    DURATIONS["buckets"][index] += 1
            DURATIONS["sum"] += seconds
            DURATIONS["count"] += 1


def metrics() -> bytes:
    with LOCK:
        lines = ["# TYPE http_requests_total counter"]
        for (handler, code), value in sorted(REQUESTS.items()):
            lines.append(f'http_requests_total{{handler="{handler}",code="{code}"}} {value}')
        lines.append("# TYPE http_request_duration_seconds histogram")
        for index, bound in enumerate(BUCKETS):
            lines.append(f'http_request_duration_seconds_bucket{{le="{bound}"}} {DURATIONS["buckets"][index]}')
        lines.append(f'http_request_duration_seconds_bucket{{le="+Inf"}} {DURATIONS["count"]}')
        lines.append(f"http_request_duration_seconds_sum {DURATIONS['sum']}")
        lines.append(f"http_request_duration_seconds_count {DURATIONS['count']}")
    return ("\n".join(lines) + "\n").encode()


def next_fails() -> bool:
    if FAIL_EVERY <= 0:
        return False
    with LOCK:
        COUNT[0] += 1
        return COUNT[0] % FAIL_EVERY == 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        started = time.monotonic()
        handler = "/"
        if self.path.startswith("/metrics"):
            handler, status, body = None, 200, metrics()
        elif self.path.startswith("/healthz"):
            handler, status, body = "/healthz", HEALTH, b"ok\n"
        elif next_fails():
            status, body = 500, b"flaky\n"
        else:
            status, body = 200, VERSION + b"\n"
        if handler:
            observe(handler, status, time.monotonic() - started)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
