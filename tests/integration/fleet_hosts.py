"""Fleet test hosts: several real Docker Engines, each in its own container, on one internal network.

The session fixture `fleet` (imported by tests/conftest.py) starts N hosts (default 6: dev 1 + staging 2 + prod 3)
from the image immutable-infra/fleet-host:bookworm (tests/fleet/Dockerfile, built here from the base image when
missing or when its inputs changed). Each host runs its own dockerd (containers under its own cgroup parent,
overlay2 on its own named volume), a relay from its 127.0.0.1:<registry port> to the fleet's registry container
(the controller registry's storage and htpasswd, read-only) and front-door relays. The hosts sit on a network made
with `--internal`: they reach nothing outside the machine. A front-door container publishes each host's port range
(18000-18004 by default) on random 127.0.0.1 ports: `host.url(18000)`. Ansible reaches the hosts through the
community.docker.docker connection: `fleet.inventory(groups=...)`. docs/testing-fleet.md has the whole picture.

Also a command line for by-hand use: `python tests/integration/fleet_hosts.py build|up|sweep`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
FLEET_DIR = REPO_ROOT / "tests" / "fleet"
STATE_DIR = Path(os.environ.get("IMMUTABLE_STATE_DIR", REPO_ROOT / ".local"))

IMAGE = os.environ.get("IMMUTABLE_FLEET_IMAGE", "immutable-infra/fleet-host:bookworm")
BASE_IMAGE = os.environ.get("IMMUTABLE_BASE_IMAGE", "immutable-infra/base:bookworm")
# what the image is made of: a change to any of these (or a new base image) rebuilds it
IMAGE_INPUTS = ("Dockerfile", "fleet-host.sh", "fleet-frontdoor.sh", "registry.yml")
INPUTS_LABEL = "immutable-infra.fleet.inputs"

# every container, volume and network of a fleet carries these labels; the sweep reads them
SESSION_LABEL = "immutable-infra.fleet"
OWNER_LABEL = "immutable-infra.fleet.owner"  # <hostname>:<pid> of the pytest process that made it
NAME_PREFIX = "iif-fleet"

DEFAULT_HOSTS = 6
# Front door: every host's ports FRONT_FIRST..FRONT_FIRST+n-1 are published on random 127.0.0.1 ports. Inside a host
# a relay listens on port + FRONT_OFFSET (all addresses) and forwards to 127.0.0.1:port; the front-door container
# listens on FRONT_DOOR_BASE + index * n + k and forwards to host <index>, port + FRONT_OFFSET.
FRONT_FIRST = 18000
DEFAULT_FRONT_PORTS = 5  # 18000-18004: each published port costs a docker-proxy (~0.1 s to start and stop)
FRONT_OFFSET = 10000
FRONT_DOOR_BASE = 20000
REGISTRY_ALIAS = "registry.test"
CGROUP_ROOT = Path("/sys/fs/cgroup")

# what a host container needs to run its own dockerd without --privileged (docs/testing-fleet.md)
HOST_RUN_OPTIONS = (
    "--init",
    "--cap-add",
    "ALL",
    "--cap-drop",
    "SYS_RESOURCE",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--security-opt",
    "systempaths=unconfined",
    "--device-cgroup-rule",
    "a *:* rwm",
    "--tmpfs",
    "/run",
    "-v",
    "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--cgroupns",
    "host",
    # names outside the fleet never resolve on an internal network: fail in 2 s rather than glibc's 10 s
    "--dns-opt",
    "timeout:1",
    "--dns-opt",
    "attempts:2",
)


class FleetError(RuntimeError):
    pass


def docker(
    *args: str, check: bool = True, timeout: float = 300, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run the controller's docker CLI; a failure raises FleetError naming the command and its stderr."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and proc.returncode != 0:
        raise FleetError(f"docker {' '.join(args[:6])}... failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def _log(message: str) -> None:
    print(f"[fleet] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# the image


def image_inputs_hash(base_image: str = BASE_IMAGE) -> str:
    """sha256 over the image's input files and the base image ID."""
    digest = hashlib.sha256()
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()
    digest.update(f"base {base_image} {base_id}\n".encode())
    for name in IMAGE_INPUTS:
        data = (FLEET_DIR / name).read_bytes()
        digest.update(f"file {name} {len(data)} {(FLEET_DIR / name).stat().st_mode & 0o111:o}\n".encode())
        digest.update(data)
    return digest.hexdigest()


def _image_label(image: str) -> str | None:
    proc = docker("image", "inspect", "--format", f'{{{{index .Config.Labels "{INPUTS_LABEL}"}}}}', image, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_image(image: str = IMAGE, base_image: str = BASE_IMAGE) -> float | None:
    """Build the fleet-host image unless one with the same inputs hash exists; the build time, or None if reused."""
    if docker("image", "inspect", base_image, check=False).returncode != 0:
        raise FleetError(f"base image {base_image} missing: run scripts/setup.sh first")
    want = image_inputs_hash(base_image)
    if _image_label(image) == want:
        return None
    with _flock(STATE_DIR / "fleet-image.lock"):  # one build at a time, the others then reuse it
        if _image_label(image) == want:
            return None
        old = docker("image", "inspect", "--format", "{{.Id}}", image, check=False).stdout.strip()
        _log(f"building {image} from {base_image} (inputs {want[:12]}; cold: 1-2 minutes)")
        start = time.monotonic()
        proc = subprocess.run(
            [
                "docker",
                "build",
                "--pull=false",
                "--build-arg",
                f"BASE_IMAGE={base_image}",
                "--label",
                f"{INPUTS_LABEL}={want}",
                "-t",
                image,
                str(FLEET_DIR),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx needed, the base stays local
            timeout=1800,
            check=False,
        )
        took = time.monotonic() - start
        if proc.returncode != 0:
            raise FleetError(f"building {image} failed after {took:.0f} s:\n{(proc.stdout + proc.stderr)[-4000:]}")
        new = docker("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
        if old and old != new:
            docker("image", "rm", old, check=False)  # the outdated build, unless something still uses it
        _log(f"built {image} in {took:.1f} s")
        return took


# ---------------------------------------------------------------------------------------------------------------
# leftovers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_dead(owner: str) -> bool:
    """Only owners on this machine (same host name) with no live process are dead; others are left alone."""
    host, _sep, pid = owner.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid))


def _labelled(kind: str) -> dict[str, tuple[str, str]]:
    """name -> (session, owner) of the containers, volumes or networks of any fleet."""
    fmt = f'{{{{.Names}}}}\t{{{{.Label "{SESSION_LABEL}"}}}}\t{{{{.Label "{OWNER_LABEL}"}}}}'
    if kind == "container":
        cmd = ["ps", "-a", "--filter", f"label={SESSION_LABEL}", "--format", fmt]
    else:
        cmd = [kind, "ls", "--filter", f"label={SESSION_LABEL}", "--format", fmt.replace(".Names", ".Name")]
    found = {}
    for line in docker(*cmd).stdout.splitlines():
        name, session, owner = (line.split("\t") + ["", ""])[:3]
        found[name] = (session, owner)
    return found


def _cgroup_dirs(name: str) -> list[Path]:
    """The cgroup directories of one cgroup parent name: /sys/fs/cgroup/<name> (v2) and /sys/fs/cgroup/*/<name> (v1)."""
    dirs = [CGROUP_ROOT / name] if (CGROUP_ROOT / name).is_dir() else []
    with contextlib.suppress(OSError):
        for hierarchy in sorted(CGROUP_ROOT.iterdir()):
            if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / name).is_dir():
                dirs.append(hierarchy / name)
    return dirs


def remove_cgroups(names: Iterable[str], wait: float = 15.0) -> list[str]:
    """rmdir the cgroup trees of these names (deepest first), retrying while their last processes exit; what stays."""
    names = list(names)
    deadline = time.monotonic() + wait
    while True:
        left = []
        for name in names:
            for top in _cgroup_dirs(name):
                for current, _dirs, _files in os.walk(top, topdown=False):
                    try:
                        os.rmdir(current)
                    except FileNotFoundError:
                        pass
                    except PermissionError:
                        _remove_cgroups_in_container([name])
                        break
                    except OSError:
                        left.append(current)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def _remove_cgroups_in_container(names: list[str]) -> None:
    """For a controller without root: the same rmdir from a helper container that mounts the cgroup tree."""
    script = "for n in " + " ".join(names) + "; do for d in /sys/fs/cgroup/$n /sys/fs/cgroup/*/$n; do "
    script += '[ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + ; done; done; true'
    docker(
        "run", "--rm", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--entrypoint", "sh", IMAGE, "-c", script, check=False
    )


def _cgroup_names_on_machine() -> set[str]:
    names = set()
    with contextlib.suppress(OSError):
        candidates = [CGROUP_ROOT] + [p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]
        for hierarchy in candidates:
            with contextlib.suppress(OSError):
                names.update(p.name for p in hierarchy.iterdir() if p.name.startswith(NAME_PREFIX + "-"))
    return names


def remove_session(
    session: str, containers: Iterable[str], volumes: Iterable[str], networks: Iterable[str]
) -> dict[str, float]:
    """Remove a fleet: its containers (in parallel), their volumes, its networks, then its hosts' cgroup trees; the
    seconds each step took."""
    containers, volumes, networks = list(containers), list(volumes), list(networks)
    took, start = {}, time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(len(containers), len(volumes), 1)) as pool:
        list(pool.map(lambda name: docker("rm", "-f", "-v", name, check=False, timeout=300), containers))
        took["containers"] = time.monotonic() - start
        list(pool.map(lambda name: docker("volume", "rm", "-f", name, check=False, timeout=300), volumes))
        took["volumes"] = time.monotonic() - start - took["containers"]
    for network in networks:
        docker("network", "rm", network, check=False)
    mark = time.monotonic()
    left = remove_cgroups(sorted(n for n in _cgroup_names_on_machine() if n.startswith(f"{NAME_PREFIX}-{session}-")))
    took["cgroups"] = time.monotonic() - mark
    if left:
        _log(f"cgroup directories still busy, left in place: {left[:5]}")
    return took


def sweep(everything: bool = False) -> list[str]:
    """Remove the fleets of killed sessions on this machine (all fleets with everything=True); their session ids."""
    containers, volumes, networks = _labelled("container"), _labelled("volume"), _labelled("network")
    owners: dict[str, str] = {}
    for found in (containers, volumes, networks):
        for session, owner in found.values():
            owners.setdefault(session, owner)
    # cgroup parents named iif-fleet-<session>-h<i>, sessions being <pid>-<hex>, outlive a container removed by hand
    for name in _cgroup_names_on_machine():
        session = name[len(NAME_PREFIX) + 1 :].rsplit("-", 1)[0]
        pid = session.split("-", 1)[0]
        if session not in owners and pid.isdigit():
            owners[session] = f"{socket.gethostname()}:{pid}"
    dead = sorted(s for s, owner in owners.items() if s and (everything or _owner_dead(owner)))
    for session in dead:
        _log(f"sweeping the leftovers of fleet session {session}")
        remove_session(
            session,
            [n for n, (s, _o) in containers.items() if s == session],
            [n for n, (s, _o) in volumes.items() if s == session],
            [n for n, (s, _o) in networks.items() if s == session],
        )
    return dead


# ---------------------------------------------------------------------------------------------------------------
# hosts and the fleet


class FleetHost:
    """One fleet host: a container with its own Docker Engine, reached by `docker exec` (and Ansible's docker
    connection). `name` is its inventory name (h0, h1, ...), `container` the container name (ansible_host)."""

    def __init__(self, fleet: Fleet, index: int):
        self.fleet = fleet
        self.index = index
        self.name = f"h{index}"
        self.container = f"{fleet.prefix}-h{index}"
        self.volume = f"{self.container}-docker"
        self.cgroup_parent = self.container
        self.id = ""
        self.ip = ""
        self.engine_id = ""
        self.published: dict[int, int] = {}  # host port (18000...) -> 127.0.0.1 port on the controller
        self.start_seconds = 0.0  # from the fleet's start until this host's engine answered

    def __repr__(self) -> str:
        return f"FleetHost({self.name}, {self.container}, {self.ip})"

    def exec(
        self, *cmd: str, check: bool = True, input: str | None = None, timeout: float = 300, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        """Run a command inside the host (as root); text output. A failure raises FleetError (check=True)."""
        args = ["exec"]
        if input is not None:
            args.append("-i")
        for key, value in (env or {}).items():
            args += ["-e", f"{key}={value}"]
        proc = docker(*args, self.container, *cmd, check=False, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise FleetError(
                f"{self.name}: {' '.join(cmd)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.exec("sh", "-c", script, **kwargs)

    def docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """The host's own docker CLI against the host's own Docker Engine."""
        return self.exec("docker", *args, **kwargs)

    def login(self, timeout: float = 60) -> None:
        """docker login to the registry relay (127.0.0.1:<port> inside the host) with the controller's credentials."""
        reg = self.fleet.registry
        self.exec(
            "docker", "login", reg["address"], "-u", reg["username"], "--password-stdin",
            input=reg["password"], timeout=timeout,
        )  # fmt: skip

    def url(self, port: int, path: str = "/") -> str:
        """The controller's loopback URL of the host's port (one of fleet.front_ports), through the front door."""
        if port not in self.published:
            raise FleetError(f"{self.name}: port {port} is not published (front-door ports: {self.fleet.front_ports})")
        return f"http://127.0.0.1:{self.published[port]}{path}"

    def internal_url(self, port: int, path: str = "/") -> str:
        """The URL on the fleet's internal network (host to host, or controller to a service bound to 0.0.0.0)."""
        return f"http://{self.ip}:{port}{path}"

    def remove_containers(self) -> None:
        """Remove every container of the host's engine (a clean slate between tests sharing the fleet)."""
        self.sh('ids=$(docker ps -aq); [ -z "$ids" ] || docker rm -f -v $ids >/dev/null')

    def logs(self, tail: int = 50) -> str:
        proc = docker("logs", "--tail", str(tail), self.container, check=False)
        return proc.stdout + proc.stderr


class Fleet:
    """N fleet hosts, their internal network, the registry container serving the controller registry's storage and
    the front door. start() then stop(); usable as a context manager."""

    def __init__(
        self,
        registry: dict[str, str],
        hosts: int = DEFAULT_HOSTS,
        front_ports: int = DEFAULT_FRONT_PORTS,
        image: str = IMAGE,
        workdir: Path | None = None,
    ):
        self.registry = registry
        self.image = image
        self.session = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.prefix = f"{NAME_PREFIX}-{self.session}"
        self.network = self.prefix
        self.registry_container = f"{self.prefix}-registry"
        self.front_container = f"{self.prefix}-front"
        self.front_ports = list(range(FRONT_FIRST, FRONT_FIRST + front_ports))
        self.hosts = [FleetHost(self, i) for i in range(hosts)]
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.timings: dict[str, float] = {}
        self.stop_timings: dict[str, float] = {}
        self._labels = ["--label", f"{SESSION_LABEL}={self.session}", "--label", f"{OWNER_LABEL}={_owner()}"]
        self._started = False

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __getitem__(self, key: int | str) -> FleetHost:
        return self.host(key)

    def host(self, key: int | str | FleetHost) -> FleetHost:
        """A host by index, inventory name (h0) or container name."""
        if isinstance(key, FleetHost):
            return key
        if isinstance(key, int):
            return self.hosts[key]
        for host in self.hosts:
            if key in (host.name, host.container):
                return host
        raise KeyError(f"no fleet host {key!r}: {[h.name for h in self.hosts]}")

    # -- start and stop

    def _registry_storage(self) -> tuple[Path, Path]:
        """The controller registry's storage directory and htpasswd file, from its config (scripts/setup.sh)."""
        config_file = Path(os.environ.get("IMMUTABLE_REGISTRY_CONFIG", STATE_DIR / "registry" / "config.yml"))
        if not config_file.exists():
            raise FleetError(f"registry config missing at {config_file}: run scripts/setup.sh first")
        config = yaml.safe_load(config_file.read_text())
        data = Path(config["storage"]["filesystem"]["rootdirectory"])
        htpasswd = Path(config["auth"]["htpasswd"]["path"])
        return data, htpasswd

    def start(self, timeout: float = 120) -> Fleet:
        start = time.monotonic()
        self._started = True
        data, htpasswd = self._registry_storage()
        registry_port = self.registry["address"].rsplit(":", 1)[1]
        docker("network", "create", "--internal", *self._labels, self.network)
        docker(
            "run", "-d", "--init", "--name", self.registry_container, *self._labels,
            "--network", self.network, "--network-alias", REGISTRY_ALIAS,
            "-v", f"{data}:/var/lib/registry:ro", "-v", f"{htpasswd}:/etc/fleet/htpasswd:ro",
            self.image, "docker-registry", "serve", "/etc/fleet/registry.yml",
        )  # fmt: skip
        env = {
            "FLEET_REGISTRY_PORT": registry_port,
            "FLEET_REGISTRY_TARGET": f"{REGISTRY_ALIAS}:5000",
            "FLEET_FRONT_PORTS": f"{self.front_ports[0]}-{self.front_ports[-1]}" if self.front_ports else "none",
            "FLEET_FRONT_OFFSET": str(FRONT_OFFSET),
        }

        def run_host(host: FleetHost) -> None:
            docker("volume", "create", *self._labels, host.volume)
            envs = [f"--env={k}={v}" for k, v in {**env, "FLEET_CGROUP_PARENT": host.cgroup_parent}.items()]
            host.id = docker(
                "run", "-d", "--name", host.container, "--hostname", host.name, *self._labels,
                *HOST_RUN_OPTIONS, "-v", f"{host.volume}:/var/lib/docker", "--network", self.network, *envs,
                self.image,
            ).stdout.strip()  # fmt: skip
            host.ip = docker(
                "inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}', host.id
            ).stdout.strip()

        def wait_host(host: FleetHost) -> None:
            deadline = time.monotonic() + timeout
            while True:
                proc = host.exec("docker", "info", "--format", "{{.ID}}", check=False, timeout=30)
                if proc.returncode == 0 and proc.stdout.strip():
                    host.engine_id = proc.stdout.strip()
                    break
                running = docker("inspect", "--format", "{{.State.Running}}", host.container, check=False)
                if running.stdout.strip() != "true" or time.monotonic() > deadline:
                    raise FleetError(f"{host.name}: dockerd did not answer within {timeout:.0f} s:\n{host.logs()}")
                time.sleep(0.3)
            host.start_seconds = time.monotonic() - start

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.hosts) or 1) as pool:
            for future in [pool.submit(run_host, host) for host in self.hosts]:
                future.result()
            self.timings["containers"] = time.monotonic() - start
            waits = [pool.submit(wait_host, host) for host in self.hosts]
            self._start_front_door()
            for future in waits:
                future.result()
        self.timings["start"] = time.monotonic() - start
        return self

    def _start_front_door(self) -> None:
        n = len(self.front_ports)
        pairs, listen = [], []
        for host in self.hosts:
            for k, port in enumerate(self.front_ports):
                front = FRONT_DOOR_BASE + host.index * n + k
                listen.append((host, port, front))
                pairs.append(f"{front}={host.ip}:{port + FRONT_OFFSET}")
        if not pairs:
            return
        last = FRONT_DOOR_BASE + len(pairs) - 1
        # created on the default bridge (published ports need a network with a gateway; an internal network
        # publishes nothing), then joined to the fleet network; it forwards to the hosts' internal addresses only
        docker(
            "create", "--init", "--name", self.front_container, *self._labels,
            "-p", f"127.0.0.1::{FRONT_DOOR_BASE}-{last}", "-e", f"FLEET_FRONT_MAP={' '.join(pairs)}",
            self.image, "/usr/local/sbin/fleet-frontdoor",
        )  # fmt: skip
        docker("network", "connect", self.network, self.front_container)
        docker("start", self.front_container)
        ports = json.loads(
            docker("inspect", "--format", "{{json .NetworkSettings.Ports}}", self.front_container).stdout
        )
        for host, port, front in listen:
            bindings = ports.get(f"{front}/tcp") or []
            if not bindings:
                raise FleetError(f"front door port {front} was not published: {ports}")
            host.published[port] = int(bindings[0]["HostPort"])

    def stop(self) -> None:
        if not self._started:
            return
        start = time.monotonic()
        self.stop_timings = remove_session(
            self.session,
            [self.front_container, *(h.container for h in self.hosts), self.registry_container],
            [h.volume for h in self.hosts],
            [self.network],
        )
        self._started = False
        self.timings["stop"] = time.monotonic() - start

    # -- helpers for tests

    def parallel(self, func, hosts: Iterable[FleetHost | int | str] | None = None) -> list:
        """func(host) on every host (or the given ones) at once; the results in host order."""
        chosen = [self.host(h) for h in (self.hosts if hosts is None else hosts)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
            return list(pool.map(func, chosen))

    def login(self, hosts: Iterable[FleetHost | int | str] | None = None) -> None:
        """docker login of every host (or the given ones) to the registry relay with the controller's credentials."""
        self.parallel(lambda host: host.login(), hosts)

    def inventory(
        self,
        groups: dict[str, Iterable[FleetHost | int | str]] | None = None,
        vars: dict | None = None,
        host_vars: dict[str, dict] | None = None,
        path: Path | str | None = None,
    ) -> Path:
        """Write a YAML inventory of the fleet; its path. Every host is in `all` (inventory names h0...,
        ansible_host = its container, the community.docker.docker connection); groups name hosts by object, index,
        inventory name or container name; vars go to `all`, host_vars by inventory name."""
        hosts = {
            host.name: {"ansible_host": host.container, **(host_vars or {}).get(host.name, {})} for host in self.hosts
        }
        children = {
            group: {"hosts": {self.host(member).name: {} for member in members}}
            for group, members in (groups or {}).items()
        }
        inventory = {
            "all": {
                "vars": {
                    "ansible_connection": "community.docker.docker",
                    "ansible_python_interpreter": "/usr/bin/python3",
                    **(vars or {}),
                },
                "hosts": hosts,
                "children": children,
            }
        }
        if path is None:
            path = Path(tempfile.mkstemp(prefix="inventory-", suffix=".yml", dir=self.workdir)[1])
        path = Path(path)
        path.write_text(yaml.safe_dump(inventory, sort_keys=False))
        return path

    def summary(self) -> str:
        hosts = ", ".join(f"{h.name}={h.ip}" for h in self.hosts)
        return (
            f"fleet {self.session}: {len(self.hosts)} hosts up in {self.timings.get('start', 0):.1f} s "
            f"(containers {self.timings.get('containers', 0):.1f} s); {hosts}; network {self.network}"
        )


# ---------------------------------------------------------------------------------------------------------------
# the pytest fixture


def _report(config: pytest.Config, line: str) -> None:
    """A line on the terminal at once, whatever the capture mode (as pytest's own plugins do)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        _log(line)
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(f"[fleet] {line}")


@pytest.fixture(scope="session")
def fleet(request: pytest.FixtureRequest, registry: dict[str, str], tmp_path_factory) -> Iterator[Fleet]:
    """N real Docker hosts for the whole session (IMMUTABLE_FLEET_HOSTS, default 6; docs/testing-fleet.md)."""
    swept = sweep()
    if swept:
        _report(request.config, f"swept leftovers of killed fleet sessions: {', '.join(swept)}")
    built = ensure_image()
    if built is not None:
        _report(request.config, f"built {IMAGE} in {built:.1f} s")
    fleet = Fleet(
        registry,
        hosts=int(os.environ.get("IMMUTABLE_FLEET_HOSTS", DEFAULT_HOSTS)),
        front_ports=int(os.environ.get("IMMUTABLE_FLEET_FRONT_PORTS", DEFAULT_FRONT_PORTS)),
        workdir=tmp_path_factory.mktemp("fleet"),
    )
    fleet.timings["image_build"] = built or 0.0
    try:
        fleet.start()
        _report(request.config, fleet.summary())
        yield fleet
    finally:
        fleet.stop()
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in fleet.stop_timings.items())
        _report(request.config, f"fleet {fleet.session} removed in {fleet.timings.get('stop', 0):.1f} s ({steps})")


# ---------------------------------------------------------------------------------------------------------------
# by hand


def _main(argv: list[str]) -> int:
    """build: the image (prints the time); sweep [--all]: leftovers; up: a fleet until Enter, then removed."""
    command = argv[0] if argv else "up"
    if command == "build":
        took = ensure_image()
        print(f"{IMAGE}: " + ("up to date" if took is None else f"built in {took:.1f} s"))
    elif command == "sweep":
        print("swept:", " ".join(sweep(everything="--all" in argv)) or "nothing")
    elif command == "up":
        creds = dict(
            line.split("=", 1)
            for line in (STATE_DIR / "registry" / "credentials.env").read_text().splitlines()
            if "=" in line
        )
        port = os.environ.get("IMMUTABLE_REGISTRY_PORT", "5000")
        registry = {
            "address": f"127.0.0.1:{port}",
            "username": creds["IMMUTABLE_REGISTRY_USER"],
            "password": creds["IMMUTABLE_REGISTRY_PASSWORD"],
        }
        sweep()
        ensure_image()
        with Fleet(registry, hosts=int(argv[1]) if len(argv) > 1 else DEFAULT_HOSTS) as fleet:
            print(fleet.summary())
            print("inventory:", fleet.inventory())
            for host in fleet.hosts:
                print(f"  {host.name} {host.container} {host.ip} 18000 -> {host.url(FRONT_FIRST)}")
            input("Enter removes the fleet> ")
    else:
        print(_main.__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
