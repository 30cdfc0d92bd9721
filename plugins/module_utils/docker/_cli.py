# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A small runner around the docker CLI, shared by the collection's docker-facing modules.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The runner is injected (AnsibleModule.run_command, or any callable with the same shape) so the code is testable
without Docker. Errors become DockerCliError with the CLI's stderr summarised; registered secrets are masked.

Inspecting can skip the CLI: given an EngineSocket (engine_socket() finds one only where the CLI itself would talk
to the local daemon's unix socket), inspect() asks the Engine API directly. A `docker inspect` costs 30-40 ms of CLI
start-up on a small machine, the API answer 1-3 ms; bg_swap's health gate and the bake's cache look-ups inspect many
times. Anything but a clear answer (200 or 404) goes to the CLI, so errors read the same either way.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from urllib.parse import quote

MISSING_MARKERS = ("no such object", "no such image", "no such container", "no such network")


class DockerCliError(Exception):
    """A docker CLI call failed; message is for the user (summarised stderr, secrets masked)."""

    def __init__(self, message, rc=None, stderr=None):
        super().__init__(message)
        self.message = message
        self.rc = rc
        self.stderr = stderr


def summarise(text, limit=400):
    """The useful part of docker's stderr: non-empty lines, without the 'Error response from daemon:' prefix."""
    lines = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        for prefix in ("Error response from daemon: ", "Error: ", "error: "):
            if line.startswith(prefix):
                line = line[len(prefix) :]
        if line not in lines:
            lines.append(line)
    summary = "; ".join(lines[-3:])
    if len(summary) > limit:
        summary = summary[: limit - 3] + "..."
    return summary or "no error output"


def is_missing(stderr):
    low = (stderr or "").lower()
    return any(marker in low for marker in MISSING_MARKERS)


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
    """GET requests to the Docker Engine API on a unix socket: (status, parsed JSON or None), or None when the
    socket does not answer (the caller then uses the CLI)."""

    def __init__(self, path, timeout=10.0):
        self.path = path
        self.timeout = timeout

    def get_json(self, url_path):
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request("GET", url_path)
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


class DockerCli:
    """docker CLI runner: run(args) -> (rc, out, err) plus a few inspect helpers (through `engine` when given)."""

    def __init__(self, run_command, docker_bin="docker", secrets=None, engine=None):
        self._run_command = run_command
        self.docker_bin = docker_bin
        self._secrets = [s for s in (secrets or []) if s]
        self.engine = engine

    def add_secret(self, value):
        if value:
            self._secrets.append(value)

    def mask(self, text):
        text = "" if text is None else str(text)
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def run(self, args, data=None, env=None, check=True):
        """Run `docker <args>`; with check, a non-zero exit raises DockerCliError naming the command."""
        cmd = [self.docker_bin] + [str(a) for a in args]
        kwargs = {}
        if data is not None:
            kwargs["data"] = data
            kwargs["binary_data"] = True
        if env:
            kwargs["environ_update"] = env
        try:
            rc, out, err = self._run_command(cmd, **kwargs)
        except OSError as exc:
            raise DockerCliError(
                f"cannot run '{self.docker_bin}': {exc}: install the docker CLI or put it on PATH"
            ) from None
        if check and rc != 0:
            raise DockerCliError(self._error_message(args, rc, err), rc=rc, stderr=self.mask(err))
        return rc, out, err

    def _error_message(self, args, rc, err):
        summary = self.mask(summarise(err))
        low = (err or "").lower()
        what = " ".join(str(a) for a in args[:2])
        if rc == 127 or "executable file not found" in low or "command not found" in low:
            hint = "install the docker CLI or put it on PATH"
        elif "cannot connect to the docker daemon" in low or "is the docker daemon running" in low:
            hint = "start the Docker Engine or set DOCKER_HOST"
        elif "permission denied" in low and "docker.sock" in low:
            hint = "run as a user in the docker group (or become root)"
        elif "unauthorized" in low or "authentication required" in low or "no basic auth credentials" in low:
            hint = "check the registry credentials"
        elif "connection refused" in low or "no such host" in low or "i/o timeout" in low:
            hint = "start the registry or check its address"
        elif "server gave http response to https client" in low:
            hint = "add the registry to the daemon's insecure-registries or serve it over TLS"
        else:
            hint = None
        message = f"docker {what} failed (rc={rc}): {summary}"
        return f"{message}: {hint}" if hint else message

    # -- helpers ------------------------------------------------------------------------------------------

    def inspect(self, obj, kind=None):
        """Parsed `docker inspect` of one object (dict), or None when it does not exist."""
        if self.engine is not None and kind in ("container", "image"):
            answer = self.engine.get_json(f"/{kind}s/{quote(str(obj), safe='/:@')}/json")
            if answer is not None and answer[0] == 404:
                return None
            if answer is not None and answer[0] == 200 and isinstance(answer[1], dict):
                return answer[1]
        args = [kind, "inspect", obj] if kind else ["inspect", obj]
        rc, out, err = self.run(args, check=False)
        if rc != 0:
            if is_missing(err):
                return None
            raise DockerCliError(self._error_message(args, rc, err), rc=rc, stderr=self.mask(err))
        try:
            data = json.loads(out)
        except ValueError:
            raise DockerCliError(f"docker {' '.join(args[:2])} returned output that is not JSON") from None
        return data[0] if isinstance(data, list) and data else None

    def image_id(self, ref):
        """The image ID (sha256:...) of a local image reference, or None when there is no such image."""
        data = self.inspect(ref, kind="image")
        return data.get("Id") if data else None

    def container_exists(self, name):
        return self.inspect(name, kind="container") is not None

    def commit(self, container, changes=(), message=None, pause=True):
        """docker commit with --change instructions; returns the new image ID."""
        args = ["commit"]
        for change in changes:
            args += ["--change", change]
        if message:
            args += ["--message", message]
        if not pause:
            args.append("--pause=false")
        args.append(container)
        _rc, out, _err = self.run(args)
        return out.strip()

    def create(self, image, name=None, labels=None):
        args = ["create"]
        if name:
            args += ["--name", name]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        args.append(image)
        _rc, out, _err = self.run(args)
        return out.strip()

    def remove_container(self, name, force=True):
        args = ["rm", "-f", name] if force else ["rm", name]
        rc, _out, err = self.run(args, check=False)
        if rc != 0 and not is_missing(err):
            raise DockerCliError(self._error_message(args, rc, err), rc=rc, stderr=self.mask(err))

    def tag(self, source, target):
        self.run(["tag", source, target])

    def remove_image(self, ref, force=False):
        args = ["image", "rm"] + (["--force"] if force else []) + [ref]
        rc, _out, err = self.run(args, check=False)
        if rc != 0 and not is_missing(err):
            raise DockerCliError(self._error_message(args, rc, err), rc=rc, stderr=self.mask(err))

    def pipe(self, producer, consumer, data=b""):
        """`docker <producer> | docker <consumer>`, streamed (binary, never held in memory), with `data` on the
        producer's stdin; a failure of either raises DockerCliError naming it."""
        first = subprocess.Popen(
            [self.docker_bin] + producer, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        second = subprocess.Popen(
            [self.docker_bin] + consumer, stdin=first.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        first.stdout.close()  # the consumer holds the only reader: the producer sees EPIPE if it stops
        first.stdin.write(data)
        first.stdin.close()
        _out, second_err = second.communicate()
        first_err = first.stderr.read()
        first.wait()
        for args, proc, err in ((producer, first, first_err), (consumer, second, second_err)):
            if proc.returncode != 0:
                text = err.decode("utf-8", "replace")
                raise DockerCliError(self._error_message(args, proc.returncode, text), rc=proc.returncode)

    def push(self, ref, env=None):
        """docker push; returns the digest the CLI printed (or None)."""
        _rc, out, _err = self.run(["push", ref], env=env)
        for line in out.splitlines():
            if "digest: " in line:
                return line.split("digest: ", 1)[1].split()[0]
        return None
