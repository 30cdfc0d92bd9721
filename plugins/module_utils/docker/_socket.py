# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""HTTP requests to the Docker Engine API on the local daemon's unix socket, and where that socket is.

PRIVATE to the collection: do not import it from other collections, it may change without notice.
"""

from __future__ import annotations

import http.client
import json
import os
import socket


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class EngineSocket:
    """GET and HEAD requests to the Docker Engine API on a unix socket: (status, parsed JSON or None), or None when
    the socket does not answer (the caller then uses the CLI)."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout

    def request(self, method, url_path):
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, url_path)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()
        try:
            return response.status, json.loads(body) if body else None
        except ValueError:
            return response.status, None

    def get_json(self, url_path):
        return self.request("GET", url_path)

    def head(self, url_path):
        return self.request("HEAD", url_path)


def _current_context(environ):
    config_dir = environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    try:
        with open(os.path.join(config_dir, "config.json"), encoding="utf-8") as handle:
            return (json.load(handle) or {}).get("currentContext") or "default"
    except (OSError, ValueError, AttributeError):
        return "default"


def engine_socket(docker_bin="docker", environ=None):
    """The local daemon's unix socket as an EngineSocket, only where the docker CLI would use that same socket:
    the CLI is `docker`, no DOCKER_HOST other than unix://, the default context. Otherwise None (CLI only)."""
    environ = os.environ if environ is None else environ
    if os.path.basename(str(docker_bin)) != "docker":
        return None
    if environ.get("DOCKER_CONTEXT", "default") != "default" or _current_context(environ) != "default":
        return None
    host = environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if not host.startswith("unix://"):
        return None
    path = host[len("unix://") :]
    return EngineSocket(path) if os.path.exists(path) else None
