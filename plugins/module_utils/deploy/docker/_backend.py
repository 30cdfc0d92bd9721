# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Docker backend of bg_swap: two containers `<app>-<env>-blue|green` on 127.0.0.1 ports behind nginx.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Docker is reached through the collection's Docker engine interface (module_utils/docker): bg_swap passes the one
docker_engine() picks (the Engine API's unix socket for reads, the docker CLI otherwise); never the Docker SDK.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
from contextlib import contextmanager
from urllib.parse import quote
from urllib.parse import urlencode

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ARTIFACT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_COLOUR
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ENV
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_name
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import FileLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.deploy import _analysis
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import ColourStatus
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import HealthResult
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Live
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import SwitchError
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.docker._socket import _UnixConnection


def http_get(url: str, timeout: float = 5.0):
    """GET url without proxies; return (status or None, headers dict, error or None)."""
    from urllib.error import HTTPError

    from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url

    try:
        response = open_url(url, method="GET", timeout=timeout, follow_redirects="none", use_proxy=False)
        response.read()
        return response.status, {k.lower(): v for k, v in response.headers.items()}, None
    except HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, None
    except Exception as exc:  # connection refused, reset, timeout: reported in the failure message
        return None, {}, f"{type(exc).__name__}: {exc}"


def port_in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port (a bind test, with SO_REUSEADDR as docker-proxy binds).

    Without SO_REUSEADDR, the connections a removed container served (TIME_WAIT for a minute) would count as "in
    use" and refuse a colour that docker could start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return True
    finally:
        sock.close()
    return False


def split_reference(artifact: str) -> tuple[str, str]:
    """(name, tag or digest) of an image reference, as the Engine API's fromImage and tag: `repo@sha256:...` gives
    the digest, `repo:tag` the tag, a bare name `latest`."""
    if "@" in artifact:
        name, digest = artifact.split("@", 1)
        return name, digest
    name, sep, tag = artifact.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return artifact, "latest"


def socket_request(socket_path: str, method: str, url_path: str, body=None, headers=None, timeout=None):
    """One request to the Engine API on the local daemon's unix socket: (status, response text), or None when the
    socket does not answer (the caller then uses the CLI). body: sent as JSON. No timeout by default, as the CLI."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request(method, url_path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def daemon_message(text: str) -> str:
    """The daemon's error message in an Engine API answer ({"message": ...}), else the answer itself."""
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return f"Error response from daemon: {message or text.strip()}"


def pull_through_socket(socket_path: str, artifact: str, registry: str, username: str, password: str):
    """Pull artifact through the Engine API on the local daemon's unix socket, the credentials only in the request's
    X-Registry-Auth header: no docker CLI process, no DOCKER_CONFIG written to disk. (rc, out, err) like the CLI's
    `docker pull` (err: the daemon's message), or None when the socket does not answer (the caller then uses the CLI).
    """
    name, tag = split_reference(artifact)
    auth = json.dumps({"username": username, "password": password, "serveraddress": registry})
    headers = {"X-Registry-Auth": base64.urlsafe_b64encode(auth.encode()).decode("ascii")}
    answer = socket_request(
        socket_path, "POST", f"/images/create?{urlencode({'fromImage': name, 'tag': tag})}", headers=headers
    )
    if answer is None:
        return None
    status, text = answer
    if status != 200:
        return 1, "", daemon_message(text)
    # a streamed answer: one JSON object per line; a failed pull ends with an error object, still with status 200
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("error"):
            return 1, "", str((message.get("errorDetail") or {}).get("message") or message["error"])
    return 0, "", ""


class DockerBackend:
    def __init__(
        self,
        run_command,
        switch,
        app: str,
        env: str,
        ports: dict,
        container_port: int = 8080,
        health_path: str = "/healthz",
        router_url: str = "http://127.0.0.1:8000/",
        container_env: dict | None = None,
        docker_binary: str = "docker",
        http=http_get,
        port_check=port_in_use,
        probe_timeout: float = 3.0,
        engine=None,
        recreate: bool = False,
        registry_auth: tuple | None = None,
        analysis_log: str | None = None,
        wall=time.time,
    ):
        self.run_command = run_command
        # the router's analysis log (written by nginx, read by the analysis between weighted steps)
        self.analysis_log = analysis_log
        self.wall = wall
        # a fresh container for the idle colour even when it already runs the artifact (bg_swap recreate)
        self.recreate = recreate
        self.switch = switch
        self.app = app
        self.env = env
        self.ports = {c: int(ports[c]) for c in COLOURS}
        self.container_port = container_port
        self.health_path = health_path if health_path.startswith("/") else "/" + health_path
        self.router_url = router_url
        self.container_env = container_env or {}
        self.docker_binary = docker_binary
        # engine: the Docker engine interface bg_swap picked (docker_engine()); the plain CLI when none is given.
        # container_env values are no_log: masked in any docker error message
        self.cli = engine or DockerCli(run_command, docker_binary)
        for value in self.container_env.values():
            self.cli.add_secret(str(value))
        self.http = http
        self.port_check = port_check
        self.probe_timeout = probe_timeout
        # (username, password) for pulling the artifact: a temporary DOCKER_CONFIG per pull, nothing left on the host
        self.registry_auth = registry_auth
        if registry_auth:
            self.cli.add_secret(registry_auth[1])
        if self.ports["blue"] == self.ports["green"]:
            raise BlueGreenError(
                f"blue_port and green_port are both {self.ports['blue']}: give each colour its own port"
            )

    # -- helpers -------------------------------------------------------------------------------------------------
    def _run(self, args: list, check: bool = True) -> tuple[int, str, str]:
        try:
            return self.cli.run(args, check=check)
        except DockerError as exc:
            raise BlueGreenError(exc.message) from None

    def _pull(self, artifact: str) -> tuple[int, str, str]:
        """docker pull; with registry_auth, through the Engine API on the local daemon's socket with the login in the
        request's header only, else (the CLI engine, or the socket did not answer) through a temporary DOCKER_CONFIG
        holding only that registry's login (removed right after, as push_image does): no credentials stay on the
        host either way."""
        if not self.registry_auth:
            return self._run(["pull", "--quiet", artifact], check=False)
        registry = artifact.split("/", 1)[0] if "/" in artifact else "docker.io"
        username, password = self.registry_auth
        engine_socket = getattr(self.cli, "socket", None)  # EngineApi: the local daemon's socket
        if engine_socket is not None:
            answer = pull_through_socket(engine_socket.path, artifact, registry, username, password)
            if answer is not None:
                rc, out, err = answer
                return rc, self.cli.mask(out), self.cli.mask(err)
        # imported here: only this fallback needs it (bg_swap's payload imports less on every host)
        from ansible_collections.immutable.infra.plugins.module_utils.registry._push import TemporaryDockerConfig

        with TemporaryDockerConfig(registry, username, password) as config_dir:
            try:
                rc, out, err = self.cli.run(
                    ["pull", "--quiet", artifact], env={"DOCKER_CONFIG": config_dir}, check=False
                )
            except DockerError as exc:
                raise BlueGreenError(exc.message) from None
        return rc, self.cli.mask(out), self.cli.mask(err)

    def _remove(self, name: str) -> None:
        """docker rm --force name: through the Engine API on the local daemon's socket (no docker CLI process), the
        CLI when there is no socket or it answers anything but removed (204) or already gone (404)."""
        engine_socket = getattr(self.cli, "socket", None)
        if engine_socket is not None:
            answer = engine_socket.request("DELETE", f"/containers/{quote(name, safe='')}?force=1")
            if answer is not None and answer[0] in (204, 404):
                return
        self._run(["rm", "--force", name])

    def name(self, colour: str) -> str:
        return colour_name(self.app, self.env, colour)

    def _inspect(self, colour: str) -> dict | None:
        try:
            return self.cli.inspect(self.name(colour), kind="container")
        except DockerError as exc:
            raise BlueGreenError(exc.message) from None

    # -- backend interface ---------------------------------------------------------------------------------------
    def describe(self) -> Live:
        try:
            weights, _ports = self.switch.read()
        except SwitchError as exc:
            raise BlueGreenError(str(exc)) from None
        weights = {c: w for c, w in weights.items() if w > 0}
        colour = max(weights, key=lambda c: weights[c]) if weights else None
        return Live(colour=colour, weights=weights)

    def colour_status(self, colour: str) -> ColourStatus:
        info = self._inspect(colour)
        if info is None:
            return ColourStatus(exists=False)
        labels = (info.get("Config") or {}).get("Labels") or {}
        return ColourStatus(
            exists=True,
            running=bool((info.get("State") or {}).get("Running")),
            artifact=labels.get(DEPLOY_LABEL_ARTIFACT),
        )

    def prepare(self, colour: str, artifact: str) -> None:
        try:
            present = self.cli.inspect(artifact, kind="image") is not None
        except DockerError:
            present = False  # the pull below reports what is wrong
        if not present:
            rc, out, err = self._pull(artifact)
            if rc != 0:
                raise BlueGreenError(
                    f"image {artifact} is not present locally and could not be pulled: {(err or out).strip()}; "
                    "push it first (immutable.infra.push_image) and make sure docker is logged in to its registry",
                    failed_check="deploy",
                )
        name = self.name(colour)
        current = self.colour_status(colour)
        if current.running and current.artifact == artifact and not self.recreate:
            return  # the idle colour already runs this artifact (e.g. after a rollback): the gate still checks it
        port = self.ports[colour]
        if current.exists:
            self._remove(name)
            # docker-proxy releases the published port shortly after the container is gone
            for _attempt in range(50):
                if not self.port_check(port):
                    break
                time.sleep(0.1)
        if self.port_check(port):
            raise BlueGreenError(
                f"port 127.0.0.1:{port} for {colour} ({name}) is already in use by another process; "
                f"free it or choose another {colour}_port",
                failed_check="deploy",
            )
        rc, out, err = self._run_container(name, colour, artifact, port)
        if rc != 0:
            self._run(["rm", "--force", name], check=False)
            raise BlueGreenError(
                f"docker run of {artifact} as {name} failed: {(err or out).strip()}", failed_check="deploy"
            )

    def _labels(self, colour: str, artifact: str) -> dict:
        return {
            DEPLOY_LABEL_APP: self.app,
            DEPLOY_LABEL_ENV: self.env,
            DEPLOY_LABEL_COLOUR: colour,
            DEPLOY_LABEL_ARTIFACT: artifact,
        }

    def _run_container(self, name: str, colour: str, artifact: str, port: int) -> tuple[int, str, str]:
        """docker run --detach of the colour: through the Engine API on the local daemon's socket (create and start,
        no docker CLI process), the CLI when there is no socket or it does not answer. (rc, out, err)."""
        engine_socket = getattr(self.cli, "socket", None)
        if engine_socket is not None:
            answer = self._run_through_socket(engine_socket.path, name, colour, artifact, port)
            if answer is not None:
                return answer
        args = [
            "run",
            "--detach",
            "--name",
            name,
            "--restart",
            "unless-stopped",
            "--publish",
            f"127.0.0.1:{port}:{self.container_port}",
        ]
        for key, value in self._labels(colour, artifact).items():
            args += ["--label", f"{key}={value}"]
        for key, value in sorted(self.container_env.items()):
            args += ["--env", f"{key}={value}"]
        return self._run(args + [artifact], check=False)

    def _run_through_socket(self, socket_path: str, name: str, colour: str, artifact: str, port: int):
        """The CLI's `docker run --detach --restart unless-stopped --publish 127.0.0.1:<port>:<container_port>
        --label ... --env ...` as the Engine API's create and start; None when the socket does not answer."""
        target = f"{self.container_port}/tcp"
        body = {
            "Image": artifact,
            "Labels": self._labels(colour, artifact),
            "Env": [f"{key}={value}" for key, value in sorted(self.container_env.items())],
            "ExposedPorts": {target: {}},
            "HostConfig": {
                "RestartPolicy": {"Name": "unless-stopped"},
                "PortBindings": {target: [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
            },
        }
        answer = socket_request(socket_path, "POST", f"/containers/create?{urlencode({'name': name})}", body=body)
        if answer is None:
            return None
        if answer[0] != 201:
            return 1, "", self.cli.mask(daemon_message(answer[1]))
        answer = socket_request(socket_path, "POST", f"/containers/{quote(name, safe='')}/start")
        if answer is None:
            return self._run(["start", name], check=False)
        if answer[0] not in (204, 304):
            return 1, "", self.cli.mask(daemon_message(answer[1]))
        return 0, "", ""

    def start(self, colour: str) -> None:
        port = self.ports[colour]
        rc, out, err = self._run(["start", self.name(colour)], check=False)
        if rc != 0:
            raise BlueGreenError(f"could not start {self.name(colour)} on port {port}: {(err or out).strip()}")

    def stop(self, colour: str) -> None:
        self._run(["stop", "--time", "10", self.name(colour)])

    def check_health(self, colour: str) -> HealthResult:
        info = self._inspect(colour)
        if info is None or not (info.get("State") or {}).get("Running"):
            _rc, out, err = self._run(["logs", "--tail", "5", self.name(colour)], check=False)
            tail = " | ".join((out + err).strip().splitlines()[-5:])
            state = "missing" if info is None else (info.get("State") or {}).get("Status")
            return HealthResult(False, f"container {self.name(colour)} is {state}; last log lines: {tail}", fatal=True)
        url = f"http://127.0.0.1:{self.ports[colour]}{self.health_path}"
        status, _headers, error = self.http(url, self.probe_timeout)
        if status is None:
            return HealthResult(False, f"GET {url}: {error}")
        return HealthResult(200 <= status < 300, f"GET {url}: HTTP {status}")

    def set_traffic(self, weights: dict) -> None:
        try:
            self.switch.switch(weights, self.ports)
        except SwitchError as exc:
            raise BlueGreenError(str(exc), failed_check="switch") from None

    def verify(self, colour: str) -> HealthResult:
        status, headers, error = self.http(self.router_url, self.probe_timeout)
        if status is None:
            return HealthResult(False, f"GET {self.router_url} through nginx: {error}")
        served_by = headers.get("x-colour", "")
        ok = 200 <= status < 300 and served_by == colour
        return HealthResult(ok, f"GET {self.router_url} through nginx: HTTP {status}, X-Colour {served_by or '(none)'}")

    def read_state(self) -> dict:
        try:
            return self.switch.read_state()
        except SwitchError as exc:
            raise BlueGreenError(str(exc)) from None

    def record(self, state: dict) -> None:
        state = dict(
            state,
            schema=1,
            app=self.app,
            env=self.env,
            backend="docker",
            ports=self.ports,
            updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.switch.write_state(state)

    @contextmanager
    def lock(self):
        lock = FileLock(self.switch.lock_path, f"{self.app}/{self.env}")
        try:
            lock.acquire()
        except LockedError as exc:
            raise BlueGreenError(str(exc), failed_check="lock") from None
        try:
            yield lock
        finally:
            lock.release()

    # -- analysis (deploy/_analysis.py) ----------------------------------------------------------------------------
    def _prometheus(self, settings):
        from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import PrometheusSource

        return PrometheusSource(settings.prometheus, self.app, self.env, wall=self.wall)

    def analysis_preflight(self, settings, wait: float = 3.0) -> str | None:
        """The analysis log to read; fail before any change when nginx does not write it. A router set up in the same
        run was just reloaded: its master opens the new log within moments, so wait for it a little. With
        analysis.prometheus: Prometheus answers each query (no log is read)."""
        if settings.prometheus is not None:
            try:
                self._prometheus(settings).preflight(settings.latency_percentile, settings.window)
            except _analysis.AnalysisError as exc:
                raise BlueGreenError(f"{exc}; nothing was changed", failed_check="analysis") from None
            return None
        path = settings.access_log or self.analysis_log
        deadline = time.monotonic() + wait
        while not os.path.isfile(path):
            if time.monotonic() >= deadline:
                raise BlueGreenError(
                    f"analysis: the router's analysis log {path} does not exist, so nothing could be measured: set up"
                    " the router with this collection version (role immutable.infra.router, or bg_swap's router"
                    " option) so nginx writes it, or point analysis.access_log at it; nothing was changed",
                    failed_check="analysis",
                )
            time.sleep(0.05)
        if not os.access(path, os.R_OK):
            raise BlueGreenError(
                f"analysis: cannot read the router's analysis log {path}: run bg_swap as a user that may read it"
                " (become: true) or make it readable; nothing was changed",
                failed_check="analysis",
            )
        return path

    def analysis_begin(self, colour: str, settings):
        if settings.prometheus is not None:
            return {"colour": colour, "settings": settings, "started": self.wall()}
        path = settings.access_log or self.analysis_log
        return {"colour": colour, "settings": settings, "mark": _analysis.mark_log(path, self.wall())}

    def analysis_end(self, mark) -> _analysis.Figures:
        settings = mark["settings"]
        if settings.prometheus is not None:
            return self._prometheus(settings).figures(mark["colour"], mark["started"], self.wall(), settings)
        return _analysis.read_window(mark["mark"], mark["colour"], self.wall(), settings.count_4xx)

    def details(self) -> dict:
        return {
            "ports": dict(self.ports),
            "containers": {c: self.name(c) for c in COLOURS},
            "upstream_file": self.switch.upstream_path,
            "state_file": self.switch.state_path,
        }
