"""bg_swap docker backend against real Docker, the real registry (with auth) and a real nginx master per test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook

PLAYBOOKS = Path(__file__).parent / "playbooks"
APP_DIR = Path(__file__).parent / "files" / "bg_app"

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]


def sh(*cmd, env=None, input=None, check=True):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    return proc


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _unused in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def get(url: str):
    """GET without proxies: (status, headers, body); status None on connection errors."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, ""
    except OSError as exc:
        return None, {}, str(exc)


@pytest.fixture(scope="module")
def docker_config(registry):
    path = tempfile.mkdtemp(prefix="bgswap-docker-config-")
    sh(
        "docker",
        "--config",
        path,
        "login",
        registry["address"],
        "-u",
        registry["username"],
        "--password-stdin",
        input=registry["password"],
    )
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def pushed_web_images(registry, base_image, docker_config, prefix: str, variants: dict):
    """Build tests/integration/files/bg_app once per variant ({name: {build arg: value}}), push each to the local
    registry and give {name: digest reference, "repo": repository}; the local tags are removed afterwards."""
    repo = f"{registry['address']}/{prefix}-{os.urandom(4).hex()}/web"
    built, digests = [], {}
    try:
        for name, build_args in variants.items():
            tag = f"{repo}:{name}"
            args = [
                f"--build-arg={key}={value}"
                for key, value in {"BASE": base_image, "VERSION": name, **build_args}.items()
            ]
            sh("docker", "build", "--quiet", *args, "-t", tag, str(APP_DIR))
            built.append(tag)
            sh("docker", "--config", docker_config, "push", tag)
            ref = sh("docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag).stdout.strip()
            assert re.match(r".+@sha256:[0-9a-f]{64}$", ref), ref
            digests[name] = ref
        digests["repo"] = repo
        yield digests
    finally:
        for tag in built:
            sh("docker", "image", "rm", "--force", tag, check=False)


@pytest.fixture(scope="module")
def images(registry, base_image, docker_config):
    """Digest references of v1, v2 and a v3 whose /healthz answers 500, pushed to the local registry."""
    variants = {"v1": {"HEALTH": 200}, "v2": {"HEALTH": 200}, "bad": {"HEALTH": 500}}
    with pushed_web_images(registry, base_image, docker_config, "bgtest", variants) as digests:
        yield digests


class Router:
    def __init__(self, unique: str, tmp: Path, docker_config: str):
        self.app = f"bg{unique}"
        self.env = "test"
        self.dir = tmp / "router"
        self.router_port, self.blue_port, self.green_port = free_ports(3)
        self.url = f"http://127.0.0.1:{self.router_port}/"
        self.conf_dir = self.dir / "conf.d"
        self.docker_env = {"DOCKER_CONFIG": docker_config}
        self.results = tmp / "results"
        self.results.mkdir()
        self.runs = 0

    def setup(self):
        res = run_playbook(
            PLAYBOOKS / "bg_router.yml",
            {
                "router_app": self.app,
                "router_env": self.env,
                "router_listen": f"127.0.0.1:{self.router_port}",
                "router_blue_port": self.blue_port,
                "router_green_port": self.green_port,
                "router_self_contained_dir": str(self.dir),
            },
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res

    def args(self, **extra):
        args = {
            "app": self.app,
            "env": self.env,
            "blue_port": self.blue_port,
            "green_port": self.green_port,
            "router_url": self.url,
            "nginx_conf_dir": str(self.conf_dir),
            "nginx_conf": str(self.dir / "nginx.conf"),
            "nginx_prefix": str(self.dir) + "/",
            "health_interval": 0.3,
            "health_timeout": 15,
        }
        args.update(extra)
        return args

    def swap(self, *flags, **extra) -> dict:
        self.runs += 1
        out = self.results / f"r{self.runs}.json"
        res = run_playbook(
            PLAYBOOKS / "bg_swap.yml",
            {"bg_args": self.args(**extra), "bg_result_file": str(out)},
            *flags,
            env=self.docker_env,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return json.loads(out.read_text())

    def swap_async(self, **extra) -> subprocess.Popen:
        self.runs += 1
        out = self.results / f"r{self.runs}.json"
        cmd = [
            "ansible-playbook",
            str(PLAYBOOKS / "bg_swap.yml"),
            "-e",
            json.dumps({"bg_args": self.args(**extra), "bg_result_file": str(out)}),
        ]
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=ansible_env(self.docker_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        proc.result_file = out
        return proc

    def served(self):
        status, headers, body = get(self.url)
        return status, headers.get("x-colour"), body.strip()

    def state(self) -> dict:
        return json.loads((self.conf_dir / f"{self.app}-{self.env}.bg_state.json").read_text())

    def upstream(self) -> str:
        return (self.conf_dir / f"{self.app}-{self.env}.upstream.conf").read_text()

    def container(self, colour):
        res = sh("docker", "container", "inspect", f"{self.app}-{self.env}-{colour}", check=False)
        return json.loads(res.stdout)[0] if res.returncode == 0 else None

    def teardown(self):
        for colour in ("blue", "green"):
            sh("docker", "rm", "--force", f"{self.app}-{self.env}-{colour}", check=False)
        pid_file = self.dir / "nginx.pid"
        if pid_file.exists():
            try:
                pid = int(pid_file.read_text().strip())
                os.kill(pid, signal.SIGQUIT)
                for _unused in range(50):
                    os.kill(pid, 0)
                    time.sleep(0.1)
                os.kill(pid, signal.SIGKILL)
            except (ValueError, ProcessLookupError):
                pass


@pytest.fixture
def router(unique, tmp_path, docker_config):
    r = Router(unique, tmp_path, docker_config)
    try:
        r.setup()
        yield r
    finally:
        r.teardown()


def assert_serving(router, colour, version):
    status, served_by, body = router.served()
    assert (status, served_by, body) == (200, colour, version)


def failed(result: dict) -> bool:
    return bool(result.get("failed"))


# -- the router role -------------------------------------------------------------------------------------------------
def test_router_role_is_idempotent_and_keeps_the_upstream_file(router):
    upstream = router.upstream()
    assert "down" in upstream  # nothing deployed yet
    status, _unused, _unused = router.served()
    assert status == 502
    again = router.setup()
    assert "changed=0" in again.stdout, again.stdout
    assert router.upstream() == upstream


def test_the_router_option_sets_up_the_router_in_the_same_run(unique, tmp_path, docker_config, images):
    """What a fleet host runs (one module run per host): no role beforehand, bg_swap's `router` sets up the
    self-contained nginx, then swaps; run again, nothing changes; a new ID switches without touching the router."""
    fresh = Router(unique, tmp_path, docker_config)
    option = {"listen": f"127.0.0.1:{fresh.router_port}", "self_contained_dir": str(fresh.dir)}
    try:
        first = fresh.swap(artifact=images["v1"], router=option)
        assert not failed(first), first
        assert first["router"]["started"] and first["switched"] and "router" in first["timings"]
        assert_serving(fresh, "blue", "v1")
        again = fresh.swap(artifact=images["v1"], router=option)
        assert not failed(again), again
        assert not again["changed"] and not again["switched"] and not again["router"]["changed"]
        second = fresh.swap(artifact=images["v2"], router=option)
        assert second["switched"] and not second["router"]["changed"], second
        assert_serving(fresh, "green", "v2")
    finally:
        fresh.teardown()


# -- deploys ---------------------------------------------------------------------------------------------------------
def test_first_deploy_swap_noop_and_rollback(router, images):
    first = router.swap(artifact=images["v1"])
    assert not failed(first), first
    assert first["changed"] and first["live_colour"] == "blue" and first["previous_colour"] is None
    assert first["ports"] == {"blue": router.blue_port, "green": router.green_port}
    assert set(first["timings"]) >= {"deploy", "gate", "switch", "verify"}
    assert_serving(router, "blue", "v1")

    plan = router.swap("--check", artifact=images["v2"])
    assert plan["changed"] and plan["plan"]["deploy_to"] == "green" and plan["plan"]["artifact"] == images["v2"]
    assert router.container("green") is None  # check mode changed nothing
    assert_serving(router, "blue", "v1")

    second = router.swap(artifact=images["v2"])
    assert not failed(second), second
    assert (second["live_colour"], second["previous_colour"]) == ("green", "blue")
    assert (second["artifact"], second["previous_artifact"]) == (images["v2"], images["v1"])
    assert_serving(router, "green", "v2")
    assert router.container("blue")["State"]["Running"]  # old colour kept for rollback
    state = router.state()
    assert (state["live"], state["artifact"], state["previous"]) == ("green", images["v2"], "blue")

    noop = router.swap(artifact=images["v2"])
    assert not failed(noop) and noop["changed"] is False and noop["live_colour"] == "green"

    back = router.swap(state="rolled_back")
    assert not failed(back), back
    assert back["changed"] and back["live_colour"] == "blue" and back["artifact"] == images["v1"]
    assert_serving(router, "blue", "v1")
    again = router.swap(state="rolled_back")
    assert not failed(again) and again["changed"] is False


def test_engine_socket_inspect_matches_the_cli(router, images):
    """bg_swap (and the bake) inspect through the Engine API's socket: the answers must be the CLI's."""
    from ansible_collections.immutable.infra.plugins.module_utils.docker._api import EngineApi
    from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
    from ansible_collections.immutable.infra.plugins.module_utils.docker._socket import engine_socket

    def run_command(args, **_kwargs):
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
        return proc.returncode, proc.stdout, proc.stderr

    assert not failed(router.swap(artifact=images["v1"]))
    engine = engine_socket()
    assert engine is not None, "the local daemon's socket was not found: the fast path is not exercised"
    cli = DockerCli(run_command)
    fast = EngineApi(engine, cli)
    name = f"{router.app}-{router.env}-blue"
    via_socket, via_cli = fast.inspect(name, kind="container"), cli.inspect(name, kind="container")
    assert via_socket["Id"] == via_cli["Id"] and via_socket["State"]["Running"] is True
    assert via_socket["Config"]["Labels"] == via_cli["Config"]["Labels"]
    image_id = cli.image_id(images["v1"])
    assert image_id is not None and fast.image_id(images["v1"]) == image_id
    assert fast.inspect(f"{name}-absent", kind="container") is None
    assert fast.image_id(images["v1"].split("@")[0] + "@sha256:" + "0" * 64) is None


def test_weighted_steps_and_stop_old_then_rollback_starts_it(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    seen = set()
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            status, colour, _unused = router.served()
            if status == 200:
                seen.add(colour)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        result = router.swap(
            artifact=images["v2"], traffic_steps=[10, 50, 100], step_pause=1.5, old_colour_action="stop"
        )
    finally:
        stop.set()
        poller.join()
    assert not failed(result), result
    assert result["traffic_steps"] == [10, 50, 100]
    assert seen == {"blue", "green"}  # both colours served during the weighted steps
    assert_serving(router, "green", "v2")
    assert router.container("blue")["State"]["Running"] is False  # stopped, not removed

    back = router.swap(state="rolled_back")
    assert not failed(back), back
    assert back["live_colour"] == "blue"
    assert_serving(router, "blue", "v1")


def test_failing_health_rolls_back_with_blue_serving(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    result = router.swap(artifact=images["bad"], health_timeout=3, health_checks_required=3)
    assert failed(result)
    assert "health gate failed for green" in result["msg"] and "0 of 3" in result["msg"]
    assert "HTTP 500" in result["msg"] and "traffic stays on blue" in result["msg"]
    assert result["live_colour"] == "blue"
    assert_serving(router, "blue", "v1")
    assert router.state()["live"] == "blue"


def test_broken_nginx_config_fails_cleanly_and_restores_the_file(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    before = router.upstream()
    # A broken server config next to the upstream file makes every nginx -t fail.
    broken = router.conf_dir / "zz-broken.conf"
    broken.write_text("server { listen 127.0.0.1:1; this_is_not_a_directive; }\n")
    try:
        result = router.swap(artifact=images["v2"])
    finally:
        broken.unlink()
    assert failed(result)
    assert "nginx -t failed" in result["msg"] and "this_is_not_a_directive" in result["msg"]
    assert router.upstream() == before
    assert_serving(router, "blue", "v1")


def test_concurrent_deploys_one_is_locked(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    slow = router.swap_async(artifact=images["v2"], health_checks_required=40, health_interval=0.5, health_timeout=60)
    lock = router.conf_dir / f"{router.app}-{router.env}.bg.lock"
    for _unused in range(300):
        if lock.exists():
            break
        time.sleep(0.05)
    else:
        slow.kill()
        pytest.fail("the first deploy never took the lock")
    second = router.swap(artifact=images["v2"])
    slow.wait(timeout=120)
    first = json.loads(slow.result_file.read_text())
    assert failed(second)
    assert second["msg"].startswith(f"locked: deploy of {router.app}/{router.env} in progress by pid ")
    assert str(lock) in second["msg"]
    assert not failed(first) and first["live_colour"] == "green"
    assert not lock.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"artifact": "web:1.0"}, "pass the digest reference"),
        ({"artifact": "web:latest"}, "pass the digest reference"),
        ({"artifact": "web", "traffic_steps": [50, 10, 100]}, "pass the digest reference"),
        ({"traffic_steps": [50, 10, 100]}, "strictly increasing"),
        ({"traffic_steps": [10, 50]}, "must end at 100"),
        ({"traffic_steps": [0, 100]}, "outside 1..100"),
        (
            {"router": {"listen": "127.0.0.1:9", "self_contained_dir": "/tmp/no-router"}, "nginx_binary": "no-nginx"},
            "cannot find the nginx command 'no-nginx' for the router",
        ),
    ],
)
def test_bad_input_is_refused(router, images, extra, message):
    args = {"artifact": images["v1"]}
    args.update(extra)
    result = router.swap(**args)
    assert failed(result) and message in result["msg"]
    assert router.container("blue") is None


def test_missing_image_fails_and_nothing_switches(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    missing = images["repo"] + "@sha256:" + "0" * 64
    result = router.swap(artifact=missing)
    assert failed(result) and "could not be pulled" in result["msg"] and missing in result["msg"]
    assert_serving(router, "blue", "v1")


def test_registry_login_pulls_through_the_engine_api_and_a_wrong_one_changes_nothing(
    router, images, registry, base_image, docker_config
):
    """With registry_username/password bg_swap pulls through the local daemon's socket (the login only in the
    request's header); an image that is not there yet is pulled, a wrong password fails before anything changes."""
    assert not failed(router.swap(artifact=images["v1"]))
    version = "p" + os.urandom(4).hex()  # an image no other test has built: removed here, so it must be pulled
    with pushed_web_images(registry, base_image, docker_config, "bgpull", {version: {"HEALTH": 200}}) as pushed:
        fresh = pushed[version]
        sh("docker", "image", "rm", "--force", f"{pushed['repo']}:{version}")
        assert sh("docker", "image", "inspect", fresh, check=False).returncode != 0, "the image must be pulled"
        wrong = "wrong-" + os.urandom(6).hex()
        refused = router.swap(artifact=fresh, registry_username=registry["username"], registry_password=wrong)
        assert failed(refused) and "could not be pulled" in refused["msg"] and fresh in refused["msg"], refused
        assert wrong not in json.dumps(refused)
        assert router.container("green") is None
        assert_serving(router, "blue", "v1")
        login = {"registry_username": registry["username"], "registry_password": registry["password"]}
        pulled = router.swap(artifact=fresh, **login)
        assert not failed(pulled) and pulled["live_colour"] == "green", pulled
        assert registry["password"] not in json.dumps(pulled)
        assert_serving(router, "green", version)
        assert router.container("green")["Config"]["Labels"]["immutable.infra.artifact"] == fresh
        missing = pushed["repo"] + "@sha256:" + "0" * 64
        absent = router.swap(artifact=missing, **login)
        assert failed(absent) and "could not be pulled" in absent["msg"] and missing in absent["msg"], absent
        assert_serving(router, "green", version)


def test_port_collision_is_reported(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", router.green_port))
    squatter.listen(1)
    try:
        result = router.swap(artifact=images["v2"])
    finally:
        squatter.close()
    assert failed(result) and f"port 127.0.0.1:{router.green_port} for green" in result["msg"]
    assert_serving(router, "blue", "v1")


def test_unreachable_health_url_fails_the_gate(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    result = router.swap(artifact=images["v2"], container_port=9999, health_timeout=2)
    assert failed(result) and "health gate failed for green" in result["msg"]
    assert "GET http://127.0.0.1:" in result["msg"] and "HTTP" not in result["msg"].split("last check:")[1]
    assert_serving(router, "blue", "v1")


# -- under load --------------------------------------------------------------------------------------------------------
def run_wrk(url: str, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse_wrk(output: str) -> dict:
    requests = re.search(r"(\d+) requests in", output)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": int(requests.group(1)) if requests else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output)),
    }


def test_swap_and_rollback_under_load_lose_no_request(router, images):
    assert not failed(router.swap(artifact=images["v1"]))
    for action in (
        {"artifact": images["v2"], "traffic_steps": [10, 50, 100], "step_pause": 1},
        {"state": "rolled_back"},
    ):
        wrk = run_wrk(router.url, 10)
        time.sleep(1)
        result = router.swap(**action)
        out, _unused = wrk.communicate(timeout=60)
        assert not failed(result), result
        stats = parse_wrk(out)
        assert stats["requests"] > 100, out
        assert stats["non2xx"] == 0 and stats["socket_errors"] == 0, out
    assert_serving(router, "blue", "v1")
