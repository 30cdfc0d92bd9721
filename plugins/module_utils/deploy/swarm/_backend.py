# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Swarm backend of bg_swap: two services `<app>-<env>-blue|green` behind an nginx router service (docs/swarm.md).

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Everything goes through the docker CLI of a swarm manager (module_utils/docker's DockerCli), so bg_swap needs no
file on the host: the overlay network `<app>-<env>` (attachable), one service per colour pinned to the artifact's
digest with endpoint mode dnsrr (no IPVS needed), and the router service `<app>-<env>-router` (one task, on this
manager, port published in host mode) whose /etc/nginx/bg/router.conf each switch rewrites (nginx -t, graceful
reload). The state (live, previous, last action) is a label of the router service; the weights are read back from
the router's own file (a replaced router task gets them again from the label). The lock is a swarm config object
`<app>-<env>-bg-lock`: creating it is atomic across every manager and every controller.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from contextlib import contextmanager

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ARTIFACT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_COLOUR
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ENV
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_name
from ansible_collections.immutable.infra.plugins.module_utils.deploy import _analysis
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import DIGEST_REF
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import ColourStatus
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import HealthResult
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Live
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm import _router
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import TemporaryDockerConfig

STATE_LABEL = "io.immutable-infra.bg.state"  # on the router service: JSON of live/artifact/previous/...
WEIGHTS_LABEL = "io.immutable-infra.bg.weights"  # on the router service: JSON of the last weights switched to
ROLE_LABEL = "io.immutable-infra.bg.role"  # "colour" or "router"
# a task that cannot start for a reason no retry fixes: the gate stops at once
FATAL_TASK_ERRORS = ("no such image", "pull access denied", "manifest unknown", "unauthorized", "invalid reference")


def is_digest_ref(ref: str | None) -> bool:
    if not ref or not DIGEST_REF.match(ref):
        return False
    return ":" not in ref.split("@", 1)[0].rsplit("/", 1)[-1]


def digest_of(ref: str | None) -> str | None:
    return ref.split("@", 1)[1].lower() if ref and "@" in ref else None


class SwarmBackend:
    def __init__(
        self,
        run_command,
        app: str,
        env: str,
        router_image: str,
        router_port: int = 8000,
        replicas: int = 2,
        network: str | None = None,
        container_port: int = 8080,
        health_path: str = "/healthz",
        health_cmd: str | None = None,
        health_cmd_interval: str = "2s",
        update_parallelism: int = 1,
        update_order: str = "start-first",
        restart_condition: str = "any",
        container_env: dict | None = None,
        docker_binary: str = "docker",
        registry_auth: tuple | None = None,
        probe_timeout: float = 3.0,
        recreate: bool = False,
        owner: str | None = None,
        docker_host: str | None = None,
    ):
        self.app = app
        self.env = env
        self.router_image = router_image
        self.router_port = int(router_port)
        self.replicas = int(replicas)
        self.network = network or f"{app}-{env}"
        self.container_port = int(container_port)
        self.health_path = health_path if health_path.startswith("/") else "/" + health_path
        self.health_cmd = health_cmd
        self.health_cmd_interval = health_cmd_interval
        self.update_parallelism = int(update_parallelism)
        self.update_order = update_order
        self.restart_condition = restart_condition
        self.container_env = container_env or {}
        self.probe_timeout = probe_timeout
        self.recreate = recreate
        self.registry_auth = registry_auth
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        # docker_host: the manager's Docker Engine when it is not this host's (DOCKER_HOST: ssh://, tcp://, unix://)
        self.docker_env = {"DOCKER_HOST": docker_host} if docker_host else {}
        self.cli = DockerCli(run_command, docker_binary)
        for value in self.container_env.values():
            self.cli.add_secret(str(value))
        if registry_auth:
            self.cli.add_secret(registry_auth[1])
        self._node = None  # this manager's node ID, once read
        self._router_id = None  # the router service's ID, once read or created
        self._weights = None  # the weights last written to the router
        self._analysis_log = False  # whether the router writes its analysis log (only while a rollout is analysed)
        if self.replicas < 1:
            raise BlueGreenError(f"swarm.replicas must be at least 1, got {self.replicas}")

    # -- names and helpers ---------------------------------------------------------------------------------------
    def service(self, colour: str) -> str:
        return colour_name(self.app, self.env, colour)

    @property
    def router(self) -> str:
        return f"{self.app}-{self.env}-router"

    @property
    def lock_name(self) -> str:
        return f"{self.app}-{self.env}-bg-lock"

    def run_docker(self, args: list, check: bool = True, data: bytes | None = None, env: dict | None = None):
        try:
            return self.cli.run(args, data=data, env=dict(self.docker_env, **(env or {})) or None, check=check)
        except DockerError as exc:
            raise BlueGreenError(exc.message) from None

    def _run_with_auth(self, args: list, check: bool = True):
        """A command that makes nodes pull (service create/update --with-registry-auth): with registry_auth, through a
        temporary DOCKER_CONFIG holding only that login (removed right after); the swarm hands it to the nodes."""
        if not self.registry_auth:
            return self.run_docker(args, check=check)
        image = args[-1]
        registry = image.split("/", 1)[0] if "/" in image else "docker.io"
        with TemporaryDockerConfig(registry, *self.registry_auth) as config_dir:
            rc, out, err = self.run_docker(args, check=check, env={"DOCKER_CONFIG": config_dir})
        return rc, self.cli.mask(out), self.cli.mask(err)

    def inspect_service(self, name: str) -> dict | None:
        rc, out, err = self.run_docker(["service", "inspect", name], check=False)
        if rc != 0:
            if "no such service" in (err or "").lower():
                return None
            raise BlueGreenError(self.cli.error(["service", "inspect"], rc, err).message)
        data = json.loads(out or "[]")
        return data[0] if data else None

    def swarm_manager(self) -> str:
        """This engine's node ID; a clear error when the engine is not a manager of an active swarm."""
        if self._node:
            return self._node
        _rc, out, _err = self.run_docker(["info", "--format", "{{json .Swarm}}"])
        try:
            swarm = json.loads(out or "{}") or {}
        except ValueError:
            swarm = {}
        state = swarm.get("LocalNodeState") or "inactive"
        if state != "active":
            raise BlueGreenError(
                f"backend=swarm: this Docker Engine is not part of a swarm (state: {state}): run `docker swarm init` "
                "on it (or `docker swarm join` it to yours) or run bg_swap on a swarm manager; nothing was changed"
            )
        if not swarm.get("ControlAvailable"):
            raise BlueGreenError(
                "backend=swarm: this Docker Engine is a swarm worker: run bg_swap on a manager node "
                "(`docker node ls` there lists them); nothing was changed"
            )
        self._node = swarm.get("NodeID") or ""
        return self._node

    def preflight(self, artifact: str) -> None:
        self.swarm_manager()
        if not is_digest_ref(artifact):
            raise BlueGreenError(
                f"artifact {artifact!r} is not an immutable image reference: pass the digest reference "
                "'repository@sha256:<64 hex>' (push_image returns it), never a mutable tag; nothing was changed"
            )
        if not is_digest_ref(self.router_image):
            raise BlueGreenError(
                f"swarm.router_image {self.router_image!r} is not a digest reference: build extensions/swarm-router "
                "from the base image, push it (docs/swarm.md) and pass 'repository@sha256:<64 hex>'; nothing was "
                "changed"
            )

    def tasks(self, name: str) -> list:
        """The tasks swarm wants running for service `name`, inspected: [{state, image, error, addresses, id}]."""
        args = ["service", "ps", "--quiet", "--no-trunc", "--filter", "desired-state=running", name]
        _rc, out, _err = self.run_docker(args)
        ids = [line.strip() for line in out.splitlines() if line.strip()]
        if not ids:
            return []
        _rc, out, _err = self.run_docker(["inspect", "--type", "task"] + ids)
        tasks = []
        for task in json.loads(out or "[]"):
            status = task.get("Status") or {}
            spec = (task.get("Spec") or {}).get("ContainerSpec") or {}
            addresses = []
            for attachment in task.get("NetworksAttachments") or []:
                addresses += [a.split("/", 1)[0] for a in attachment.get("Addresses") or []]
            tasks.append(
                {
                    "id": task.get("ID"),
                    "state": status.get("State"),
                    "error": status.get("Err") or "",
                    "image": spec.get("Image"),
                    "node": task.get("NodeID"),
                    "container": (status.get("ContainerStatus") or {}).get("ContainerID"),
                    "addresses": addresses,
                }
            )
        return tasks

    def _task_errors(self, name: str, ended_only: bool = False) -> list:
        """The distinct errors of the tasks of service `name`, newest first: with ended_only those of shutdown, failed
        or rejected tasks only; else a pending task's reason (e.g. "host-mode port already in use") too."""
        ended = ["--filter", "desired-state=shutdown"] if ended_only else []
        _rc, out, _err = self.run_docker(
            ["service", "ps", "--no-trunc", *ended, "--format", "{{.Error}}", name], check=False
        )
        return list(dict.fromkeys(line.strip() for line in out.splitlines() if line.strip()))

    def _router_service_id(self) -> str | None:
        if not self._router_id:
            self._router_id = (self.inspect_service(self.router) or {}).get("ID")
        return self._router_id

    def _router_container(self) -> str | None:
        """The running container of this router service's task on this node. By service ID, not name: a router
        service removed moments ago under the same name may still have its container stopping here."""
        service_id = self._router_service_id()
        if not service_id:
            return None
        _rc, out, _err = self.run_docker(
            [
                "ps",
                "--quiet",
                "--filter",
                f"label=com.docker.swarm.service.id={service_id}",
                "--filter",
                "status=running",
            ]  # fmt: skip
        )
        ids = out.split()
        return ids[0] if ids else None

    def _router_exec(self, argv: list, data: bytes | None = None, wait: float = 30.0):
        """Run argv in the router's task on this node (started moments ago: wait for it)."""
        deadline = time.monotonic() + wait
        while True:
            container = self._router_container()
            if container:
                rc, out, err = self.run_docker(["exec", "-i", container] + argv, check=False, data=data)
                # 126/137 or "not running": the task was being replaced between `docker ps` and `docker exec`;
                # "unable to upgrade to tcp": the engine could not attach the exec yet (a task that just started)
                low = (err or "").lower()
                gone = rc in (126, 137) or any(
                    text in low for text in ("is not running", "no such container", "unable to upgrade to tcp")
                )
                if not gone or time.monotonic() >= deadline:
                    return rc, out, err
                time.sleep(0.2)
                continue
            if time.monotonic() >= deadline:
                errors = "; ".join(self._task_errors(self.router)[:3]) or "no error reported"
                raise BlueGreenError(
                    f"the router service {self.router} has no running task on this manager after {wait:g}s "
                    f"(task errors: {errors}): check swarm.router_image and that port {self.router_port} is free "
                    "on this node",
                    failed_check="router",
                )
            time.sleep(0.2)

    def labels(self, info: dict | None) -> dict:
        return ((info or {}).get("Spec") or {}).get("Labels") or {}

    # -- set-up: network and router --------------------------------------------------------------------------------
    def ensure_network(self) -> None:
        rc, out, err = self.run_docker(["network", "inspect", self.network], check=False)
        if rc != 0 and "not found" not in (err or "").lower():
            raise BlueGreenError(self.cli.error(["network", "inspect"], rc, err).message)
        info = (json.loads(out or "[]") or [None])[0] if rc == 0 else None
        if info is not None:
            if info.get("Driver") != "overlay" or not info.get("Attachable"):
                raise BlueGreenError(
                    f"network {self.network} exists but is not an attachable overlay network (driver "
                    f"{info.get('Driver')}): remove it or set swarm.network to another name",
                    failed_check="deploy",
                )
            return
        labels = ["--label", f"{DEPLOY_LABEL_APP}={self.app}", "--label", f"{DEPLOY_LABEL_ENV}={self.env}"]
        self.run_docker(["network", "create", "--driver", "overlay", "--attachable"] + labels + [self.network])

    def ensure_router(self) -> None:
        info = self.inspect_service(self.router)
        if info is not None:
            self._router_id = info.get("ID")
            return
        node = self.swarm_manager()
        args = [
            "service", "create", "--detach", "--quiet", "--with-registry-auth", "--no-resolve-image",
            "--name", self.router, "--replicas", "1", "--constraint", f"node.id=={node}",
            "--publish", f"mode=host,published={self.router_port},target={_router.ROUTER_PORT}",
            "--network", self.network, "--stop-signal", "SIGQUIT",
            "--restart-condition", "any",
            "--label", f"{DEPLOY_LABEL_APP}={self.app}", "--label", f"{DEPLOY_LABEL_ENV}={self.env}",
            "--label", f"{ROLE_LABEL}=router",
            self.router_image,
        ]  # fmt: skip
        rc, out, err = self._run_with_auth(args, check=False)
        if rc != 0:
            raise BlueGreenError(
                f"could not create the router service {self.router}: {(err or out).strip()}", failed_check="deploy"
            )
        self._router_id = out.strip().splitlines()[-1] if out.strip() else None

    # -- backend interface ---------------------------------------------------------------------------------------
    def describe(self) -> Live:
        self.swarm_manager()
        info = self.inspect_service(self.router)
        if info is None:
            return Live(colour=None, weights={})
        weights = self.router_weights(info)
        colour = max(weights, key=lambda c: weights[c]) if weights else None
        return Live(colour=colour, weights=weights)

    def router_weights(self, info: dict, heal: bool = True) -> dict:
        """The weights in the router's own file; a fresh router task (default file) gets the recorded ones again
        (heal; a drift check only reads)."""
        self._router_id = info.get("ID") or self._router_id
        rc, out, _err = self._router_exec(["cat", _router.CONF_PATH])
        weights = _router.parse_weights(out) if rc == 0 else None
        if weights is None:
            try:
                recorded = json.loads(self.labels(info).get(WEIGHTS_LABEL) or "{}")
            except ValueError:
                recorded = {}
            weights = {c: int(w) for c, w in recorded.items() if c in COLOURS and int(w) > 0}
            if weights and heal:
                self._write_router(weights)
        return weights

    def colour_status(self, colour: str) -> ColourStatus:
        info = self.inspect_service(self.service(colour))
        if info is None:
            return ColourStatus(exists=False)
        labels = self.labels(info)
        artifact = labels.get(DEPLOY_LABEL_ARTIFACT)
        replicas = (((info.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
        tasks = self.tasks(self.service(colour))
        want = digest_of(artifact)
        consistent = all(digest_of(t["image"]) == want for t in tasks) and digest_of(self.spec_image(info)) == want
        return ColourStatus(exists=True, running=bool(replicas), artifact=artifact, consistent=consistent)

    @staticmethod
    def spec_image(info: dict) -> str | None:
        return ((((info or {}).get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image")

    def prepare(self, colour: str, artifact: str) -> None:
        self.ensure_network()
        self.ensure_router()
        name = self.service(colour)
        current = self.inspect_service(name)
        if current is not None:
            status = self.colour_status(colour)
            if status.running and status.artifact == artifact and status.consistent and not self.recreate:
                return  # the idle colour already runs this artifact (after a rollback): the gate still checks it
            self.run_docker(["service", "rm", name])
        args = [
            "service", "create", "--detach", "--quiet", "--with-registry-auth", "--no-resolve-image",
            "--name", name, "--replicas", str(self.replicas), "--endpoint-mode", "dnsrr",
            "--network", self.network,
            "--update-parallelism", str(self.update_parallelism), "--update-order", self.update_order,
            "--update-failure-action", "rollback", "--restart-condition", self.restart_condition,
        ]  # fmt: skip
        for key, value in ((DEPLOY_LABEL_APP, self.app), (DEPLOY_LABEL_ENV, self.env), (DEPLOY_LABEL_COLOUR, colour),
                           (DEPLOY_LABEL_ARTIFACT, artifact), (ROLE_LABEL, "colour")):  # fmt: skip
            args += ["--label", f"{key}={value}", "--container-label", f"{key}={value}"]
        if self.health_cmd:
            args += ["--health-cmd", self.health_cmd, "--health-interval", self.health_cmd_interval,
                     "--health-retries", "3"]  # fmt: skip
        for key, value in sorted(self.container_env.items()):
            args += ["--env", f"{key}={value}"]
        rc, out, err = self._run_with_auth(args + [artifact], check=False)
        if rc != 0:
            raise BlueGreenError(
                f"docker service create of {artifact} as {name} failed: {(err or out).strip()}", failed_check="deploy"
            )

    def start(self, colour: str) -> None:
        self.run_docker(["service", "scale", "--detach", f"{self.service(colour)}={self.replicas}"])

    def stop(self, colour: str) -> None:
        self.run_docker(["service", "scale", "--detach", f"{self.service(colour)}=0"])

    def check_health(self, colour: str) -> HealthResult:
        """Every task of the colour's service runs (with a healthcheck: is healthy, swarm keeps it `starting`
        before) and answers 2xx at health_path, asked from the router over the overlay network."""
        name = self.service(colour)
        info = self.inspect_service(name)
        if info is None:
            return HealthResult(False, f"service {name} does not exist", fatal=True)
        tasks = self.tasks(name)
        running = [t for t in tasks if t["state"] == "running"]
        if len(running) < self.replicas:
            errors = self._task_errors(name, ended_only=True)
            fatal = next((e for e in errors if any(m in e.lower() for m in FATAL_TASK_ERRORS)), None)
            states = ", ".join(sorted(t["state"] or "?" for t in tasks)) or "none"
            detail = f"{len(running)} of {self.replicas} tasks of {name} running (tasks: {states})"
            if errors:
                detail += f"; last task error: {errors[0]}"
            return HealthResult(False, detail, fatal=fatal is not None)
        rc, out, err = self._router_exec(
            [
                "python3",
                "-c",
                _router.PROBE_SCRIPT,
                name,
                str(self.container_port),
                self.health_path,
                str(self.probe_timeout),
            ]  # fmt: skip
        )
        try:
            probe = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return HealthResult(False, f"probe from the router failed (rc={rc}): {(err or out).strip()[-300:]}")
        results = probe.get("results") or {}
        wanted = {a for t in running for a in t["addresses"]}
        missing = sorted(wanted - set(results))
        bad = {a: s for a, s in results.items() if not (isinstance(s, int) and 200 <= s < 300)}
        shown = ", ".join(f"{a}: {s}" for a, s in sorted(results.items())) or probe.get("dns_error", "no address")
        detail = f"GET {self.health_path} on every task of {name} from the router: {shown}"
        if missing:
            return HealthResult(False, f"{detail}; not yet in DNS: {', '.join(missing)}")
        return HealthResult(not bad and len(results) >= self.replicas, detail)

    def _write_router(self, weights: dict) -> None:
        services = {c: self.service(c) for c in COLOURS}
        text = _router.render(services, weights, self.container_port, analysis_log=self._analysis_log)
        script = (
            f"c={_router.CONF_PATH}; cp $c $c.previous && cat > $c.new && mv $c.new $c && "
            "if nginx -t 2>/tmp/nginx-t.log; then nginx -s reload; else mv $c.previous $c; cat /tmp/nginx-t.log >&2; "
            "exit 3; fi"
        )
        rc, out, err = self._router_exec(["sh", "-c", script], data=text.encode())
        if rc != 0:
            raise BlueGreenError(
                f"switching the router {self.router} failed (rc={rc}); its previous config was kept: "
                f"{(err or out).strip()[-500:]}",
                failed_check="switch",
            )
        self._weights = dict(weights)

    def set_traffic(self, weights: dict) -> None:
        weights = {c: int(w) for c, w in weights.items() if int(w) > 0}
        self._write_router(weights)
        self._label_router(WEIGHTS_LABEL, weights)

    def _label_router(self, key: str, value: dict) -> None:
        """A label of the router service (no task is restarted by a label change)."""
        label = f"{key}={json.dumps(value, sort_keys=True)}"
        args = ["service", "update", "--detach", "--quiet", "--no-resolve-image", "--label-add", label, self.router]
        self.run_docker(args)

    def verify(self, colour: str) -> HealthResult:
        url = f"http://127.0.0.1:{_router.ROUTER_PORT}/"
        argv = ["python3", "-c", _router.VERIFY_SCRIPT, str(_router.ROUTER_PORT), "/", str(self.probe_timeout)]
        _rc, out, err = self._router_exec(argv)
        try:
            got = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return HealthResult(False, f"GET {url} in the router failed: {(err or out).strip()[-300:]}")
        if got.get("status") is None:
            return HealthResult(False, f"GET {url} in the router: {got.get('error')}")
        status, served_by = got["status"], got.get("colour") or ""
        return HealthResult(
            200 <= status < 300 and served_by == colour,
            f"GET {url} in the router {self.router}: HTTP {status}, X-Colour {served_by or '(none)'}",
        )

    def read_state(self) -> dict:
        info = self.inspect_service(self.router)
        raw = self.labels(info).get(STATE_LABEL)
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise BlueGreenError(
                f"the state label {STATE_LABEL} of service {self.router} is not valid JSON: fix or remove it "
                f"(docker service update --label-rm {STATE_LABEL} {self.router})"
            ) from None

    def record(self, state: dict) -> None:
        state = dict(
            state,
            schema=1,
            app=self.app,
            env=self.env,
            backend="swarm",
            updated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._label_router(STATE_LABEL, state)

    @contextmanager
    def lock(self):
        """A swarm config object: `docker config create` fails when it exists, on every manager at once."""
        holder = json.dumps({"owner": self.owner, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        rc, out, err = self.run_docker(
            ["config", "create", "--label", f"{DEPLOY_LABEL_APP}={self.app}", "--label",
             f"{DEPLOY_LABEL_ENV}={self.env}", self.lock_name, "-"],
            check=False, data=holder.encode(),
        )  # fmt: skip
        if rc != 0:
            if "already exists" in (err or "").lower():
                raise BlueGreenError(
                    f"{self.app}/{self.env} is locked by another bg_swap run ({self._lock_holder()}): wait for it, or "
                    f"if that run is dead remove the lock with `docker config rm {self.lock_name}`",
                    failed_check="lock",
                )
            raise BlueGreenError(
                f"could not take the lock {self.lock_name}: {(err or out).strip()}", failed_check="lock"
            )
        try:
            yield self.lock_name
        finally:
            self.run_docker(["config", "rm", self.lock_name], check=False)

    def _lock_holder(self) -> str:
        rc, out, _err = self.run_docker(
            ["config", "inspect", "--format", "{{json .Spec.Data}}", self.lock_name], check=False
        )
        if rc != 0:
            return "holder unknown"
        try:
            data = json.loads(base64.b64decode(json.loads(out)).decode())
            return f"held by {data.get('owner')} since {data.get('at')}"
        except (ValueError, TypeError):
            return "holder unknown"

    # -- analysis (deploy/_analysis.py): the router task's own log, or Prometheus -------------------------------------
    def _prometheus(self, settings):
        from ansible_collections.immutable.infra.plugins.module_utils.deploy._prometheus import PrometheusSource

        return PrometheusSource(settings.prometheus, self.app, self.env, wall=time.time)

    def analysis_preflight(self, settings) -> None:
        """Before any change: Prometheus answers each query. The router's log needs nothing: bg_swap turns it on."""
        if settings.prometheus is None:
            return
        try:
            self._prometheus(settings).preflight(settings.latency_percentile, settings.window)
        except _analysis.AnalysisError as exc:
            raise BlueGreenError(f"{exc}; nothing was changed", failed_check="analysis") from None

    def _read_window(self, inode: str | None = None, offset: int | None = None) -> tuple:
        """(the router's clock, the log's inode, its size, the log's lines since offset; none without an offset)."""
        since = "" if offset is None else str(offset)
        argv = ["sh", "-c", _router.WINDOW_SCRIPT, "window", _router.ANALYSIS_LOG, inode or "none", since]
        rc, out, err = self._router_exec(argv)
        try:
            if rc != 0:
                raise ValueError(err or out)
            return _router.parse_window(out)
        except (ValueError, IndexError):
            raise _analysis.AnalysisError(
                f"cannot read the analysis log {_router.ANALYSIS_LOG} in the router {self.router} (rc={rc}):"
                f" {(err or out).strip()[-300:]}"
            ) from None

    def analysis_begin(self, colour: str, settings) -> dict:
        """The window starts: the router writes its analysis log from now on (turned on once per rollout: one more
        graceful reload with the same weights); the mark is the log's size on the router's own clock."""
        if settings.prometheus is not None:
            return {"colour": colour, "settings": settings, "started": time.time()}
        if self._weights is None:
            raise _analysis.AnalysisError("no weights were switched to in this run: nothing to analyse")
        if not self._analysis_log:
            self._analysis_log = True
            try:
                self._write_router(self._weights)
            except BlueGreenError as exc:
                self._analysis_log = False  # the rollback's config must not ask for the log again
                raise _analysis.AnalysisError(f"could not turn on the router's analysis log: {exc.msg}") from None
        started, inode, size, _data = self._read_window()
        return {"colour": colour, "settings": settings, "started": started, "inode": inode, "offset": size}

    def analysis_end(self, mark: dict) -> _analysis.Figures:
        settings = mark["settings"]
        if settings.prometheus is not None:
            return self._prometheus(settings).figures(mark["colour"], mark["started"], time.time(), settings)
        end, inode, _size, data = self._read_window(mark["inode"], mark["offset"])
        notes = []
        if mark["inode"] is not None and inode != mark["inode"]:
            notes.append("the router's task was replaced during the window: only the new task's lines were counted")
        figures = _analysis.parse_log(data, mark["colour"], mark["started"] - 1.0, end, settings.count_4xx)
        figures.notes = notes + figures.notes
        return figures

    def analysis_finish(self) -> None:
        """The rollout is over (passed or rolled back): the router stops writing its analysis log and the file goes,
        with the weights it has. Best effort: a router that cannot be rewritten now gets the config without the log
        at the next switch (a new bg_swap run starts with it off)."""
        if not self._analysis_log:
            return
        self._analysis_log = False
        try:
            if self._weights is not None:
                self._write_router(self._weights)
            self._router_exec(["rm", "-f", _router.ANALYSIS_LOG])
        except BlueGreenError:
            pass

    def details(self) -> dict:
        return {
            "services": {c: self.service(c) for c in COLOURS},
            "router_service": self.router,
            "router_port": self.router_port,
            "network": self.network,
            "replicas": self.replicas,
        }

    def plan_extra(self, idle: str) -> dict:
        return {"service": self.service(idle), "replicas": self.replicas, "network": self.network}
