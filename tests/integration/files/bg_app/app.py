"""Tiny test app for bg_swap: / answers the version, /healthz answers APP_HEALTH (default 200)."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

VERSION = os.environ.get("APP_VERSION", "unknown").encode()
HEALTH = int(os.environ.get("APP_HEALTH", "200"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        status, body = (HEALTH, b"ok\n") if self.path.startswith("/healthz") else (200, VERSION + b"\n")
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
