"""Tiny test app for bg_swap: / answers the version, /healthz answers APP_HEALTH (default 200).

With APP_FAIL_EVERY=N (N > 0) every Nth request other than /healthz answers 500 (a "flaky" release: 20 % for N=5)."""

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "unknown").encode()
HEALTH = int(os.environ.get("APP_HEALTH", "200"))
FAIL_EVERY = int(os.environ.get("APP_FAIL_EVERY", "0") or 0)
COUNT = [0]
LOCK = threading.Lock()


def next_fails() -> bool:
    if FAIL_EVERY <= 0:
        return False
    with LOCK:
        COUNT[0] += 1
        return COUNT[0] % FAIL_EVERY == 0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/healthz"):
            status, body = HEALTH, b"ok\n"
        elif next_fails():
            status, body = 500, b"flaky\n"
        else:
            status, body = 200, VERSION + b"\n"
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
