"""bg_swap backend=swarm, live (docs/swarm.md): a 3-node Docker Swarm on three of the session fleet's hosts.

The swarm is made by this module (init on one host, the other two join as workers) and left at its end, so the main
engine and the other tests' hosts are untouched. The controller drives the manager's engine through DOCKER_HOST (a
socat relay inside the manager, published by the fleet's front door); the nodes pull the artifacts by digest through
their registry relays with the credentials bg_swap hands to the swarm. The router image is built here from
extensions/swarm-router on the base image and pushed like any artifact.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook
from fleet_hosts import Fleet

ROUTER_DIR = REPO_ROOT / "extensions" / "swarm-router"
APP_DIR = REPO_ROOT / "tests" / "integration" / "files" / "bg_app"
PLAYBOOKS = REPO_ROOT / "playbooks"
DOCKER_PORT = 18003  # the manager's engine, relayed by socat inside the manager (front-door port)
# router services, published in host mode on the manager (front-door ports): bg_swap's tests, the promotion's
ROUTER_PORTS = {"dev": 18002}
PROMOTION_PORTS = {"dev": 18000, "staging": 18001}
APP = "swarmweb"


def show(res) -> str:
    return f"rc={res.returncode}\nSTDOUT:\n{res.stdout[-6000:]}\nSTDERR:\n{res.stderr[-3000:]}"


def sh(*cmd, input_text=None, check=True, env=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input_text, check=False, env=env)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    return proc


def inputs_hash(directory: Path, base_image: str) -> str:
    digest = hashlib.sha256(base_image.encode())
    for path in sorted(directory.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def images(registry, base_image):
    """Digest references pushed to the local registry: the router, and the test app's v1, v2, `sick` (its
    /healthz answers 500) and `flaky` (healthy, but every 5th request answers 500)."""
    config = tempfile.mkdtemp(prefix="swarm-docker-config-")
    sh("docker", "--config", config, "login", registry["address"], "-u", registry["username"], "--password-stdin",
       input_text=registry["password"])  # fmt: skip
    refs, built = {}, []
    try:
        router_tag = f"{registry['address']}/immutable-infra/swarm-router:{inputs_hash(ROUTER_DIR, base_image)}"
        if sh("docker", "image", "inspect", router_tag, check=False).returncode != 0:
            sh("docker", "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}", "-t", router_tag,
               str(ROUTER_DIR))  # fmt: skip
        repo = f"{registry['address']}/swarmtest-{time.time_ns() % 10**8}/web"
        for name, health, fail_every in (("v1", 200, 0), ("v2", 200, 0), ("sick", 500, 0), ("flaky", 200, 5)):
            tag = f"{repo}:{name}"
            sh("docker", "build", "--quiet", "--build-arg", f"BASE={base_image}", "--build-arg", f"VERSION={name}",
               "--build-arg", f"HEALTH={health}", "--build-arg", f"FAIL_EVERY={fail_every}", "-t", tag,
               str(APP_DIR))  # fmt: skip
            built.append(tag)
        for tag in [router_tag] + built:
            sh("docker", "--config", config, "push", "--quiet", tag)
            ref = sh("docker", "image", "inspect", "--format", "{{index .RepoDigests 0}}", tag).stdout.strip()
            assert re.match(r".+@sha256:[0-9a-f]{64}$", ref), ref
            refs[tag.rsplit(":", 1)[1] if tag != router_tag else "router"] = ref
        refs["tag_v1"] = f"{repo}:v1"
        yield refs
    finally:
        for tag in built:
            sh("docker", "image", "rm", "--force", tag, check=False)
        shutil.rmtree(config, ignore_errors=True)


@pytest.fixture(scope="module")
def swarm(fleet: Fleet, images):
    """Three fleet hosts as one swarm (manager + 2 workers); DOCKER_HOST of the manager for the controller."""
    if len(fleet.hosts) < 3:
        pytest.skip("the swarm tests need 3 fleet hosts")
    manager, workers = fleet.hosts[-3], fleet.hosts[-2:]
    hosts = [manager, *workers]
    try:
        manager.docker("swarm", "init", "--advertise-addr", manager.ip)
        token = manager.docker("swarm", "join-token", "--quiet", "worker").stdout.strip()
        fleet.parallel(lambda host: host.docker("swarm", "join", "--token", token, f"{manager.ip}:2377"), workers)
        manager.sh(
            f"nohup socat TCP-LISTEN:{DOCKER_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/var/run/docker.sock"
            " >/dev/null 2>&1 &"
        )
        docker_host = "tcp://" + manager.url(DOCKER_PORT).split("//", 1)[1].rstrip("/")
        for _attempt in range(50):
            if (
                sh("docker", "-H", docker_host, "info", "--format", "{{.Swarm.Nodes}}", check=False).stdout.strip()
                == "3"
            ):
                break
            time.sleep(0.2)
        yield {"manager": manager, "workers": workers, "docker_host": docker_host, "hosts": hosts}
    finally:
        for host in reversed(hosts):  # workers first, then the manager: the swarm is gone, its services with it
            host.docker("swarm", "leave", "--force", check=False)
        manager.sh(f"pkill -f 'TCP-LISTEN:{DOCKER_PORT}' || true", check=False)
        fleet.parallel(
            lambda host: host.sh("docker network rm docker_gwbridge >/dev/null 2>&1; true", check=False), hosts
        )


def mdocker(swarm, *args, check=True) -> subprocess.CompletedProcess:
    """The manager's docker CLI, from the controller."""
    return sh("docker", "-H", swarm["docker_host"], *args, check=check)


def remove_environment(swarm, env: str, wait: float = 120) -> None:
    """Remove the environment's services and wait until their containers are gone from every node: until the old
    router's container has stopped, a router created under the same name is held pending by the scheduler ("host-mode
    port already in use") and the next test's first deploy would wait on it."""
    names = {f"{APP}-{env}-{name}" for name in ("blue", "green", "router")}
    mdocker(swarm, "service", "rm", *sorted(names), check=False)
    started, deadline = time.monotonic(), time.monotonic() + wait
    for host in swarm["hosts"]:
        while True:
            listed = host.docker("ps", "-a", "--format", '{{.Label "com.docker.swarm.service.name"}}', check=False)
            left = names & set(listed.stdout.split())
            if not left:
                break
            assert time.monotonic() < deadline, f"containers of {sorted(left)} still on {host.name} after {wait:g}s"
            time.sleep(0.3)
    print(f"services of {APP}/{env} removed, their containers gone in {time.monotonic() - started:.1f} s")


def router_get(swarm, env: str) -> tuple[int, str, str]:
    url = swarm["manager"].url(ROUTER_PORTS[env])
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("X-Colour", ""), resp.read().decode().strip()


@contextmanager
def router_load(swarm, env: str, seconds: int):
    """wrk through the environment's router (on the manager's front-door port) while the block runs; its report in
    the yielded dict's "output" afterwards."""
    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c4", f"-d{seconds}s", "--timeout", "5s", swarm["manager"].url(ROUTER_PORTS[env])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    report = {}
    try:
        time.sleep(1)
        yield report
    finally:
        wrk.send_signal(signal.SIGINT)
        report["output"] = wrk.communicate(timeout=30)[0]


def task_images(swarm, service: str) -> dict:
    """task ID -> image of the running tasks of service."""
    ids = mdocker(swarm, "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", service)
    ids = ids.stdout.split()
    tasks = json.loads(mdocker(swarm, "inspect", "--type", "task", *ids).stdout) if ids else []
    return {t["ID"]: t["Spec"]["ContainerSpec"]["Image"] for t in tasks if t["Status"]["State"] == "running"}


def bg_swap_play(tmp_path: Path, swarm, registry, images, tasks: list) -> subprocess.CompletedProcess:
    """A play on localhost with one bg_swap task per item (swarm defaults filled in), or a drift_info task for an item
    {"drift": expected, "known": [...]}; every result, in order, as res.results. One ansible-playbook run (~5 s)."""
    defaults = {
        "backend": "swarm",
        "app": APP,
        "registry_username": registry["username"],
        "registry_password": registry["password"],
        "health_interval": 0.3,
        "health_checks_required": 2,
        "health_timeout": 40,
    }
    play_tasks = []
    for index, task in enumerate(tasks):
        if "drift" in task:
            env = {"name": "dev", "backend": "swarm", "expected": task["drift"], "known_ids": task["known"],
                   "docker_host": swarm["docker_host"]}  # fmt: skip
            drift = {"immutable.infra.drift_info": {"app": APP, "environments": [env]}, "register": f"r{index}"}
            play_tasks.append(drift)
            continue
        args = dict(defaults, **task)
        args["swarm"] = dict(
            {"router_image": images["router"], "docker_host": swarm["docker_host"],
             "router_port": ROUTER_PORTS[args["env"]]},
            **task.get("swarm", {}),
        )  # fmt: skip
        play_tasks.append(
            {
                "name": f"bg_swap {index}",
                "immutable.infra.bg_swap": args,
                "register": f"r{index}",
                "ignore_errors": True,
            }
        )
    out = tmp_path / "results.json"
    results = "{{ [" + ", ".join(f"r{i}" for i in range(len(tasks))) + "] | to_json }}"
    play_tasks.append({"name": "results", "ansible.builtin.copy": {"content": results, "dest": str(out)}})
    playbook = tmp_path / "swarm.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": play_tasks}]))
    started = time.monotonic()
    res = run_playbook(playbook, None, "-i", str(REPO_ROOT / "inventories" / "local" / "hosts.yml"))
    res.seconds = round(time.monotonic() - started, 1)
    assert out.exists(), show(res)
    res.results = json.loads(out.read_text())
    print(f"play of {len(tasks)} tasks in {res.seconds} s:", [r.get("timings") for r in res.results])
    return res


def test_bad_input_is_refused_before_anything_changes(fleet: Fleet, swarm, registry, images, tmp_path):
    """A mutable tag, a router image without digest, an engine outside any swarm, a worker, nothing to roll back to,
    the lock held by another run: clear messages, nothing made."""
    outside, worker = fleet.hosts[0], swarm["workers"][0]
    relay = (
        f"nohup socat TCP-LISTEN:{DOCKER_PORT + 1},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/var/run/docker.sock"
        " >/dev/null 2>&1 &"
    )
    outside.sh(relay)
    worker.sh(relay)
    holder = json.dumps({"owner": "ci-runner-7:4242", "at": "2026-12-04T10:00:00Z"})
    sh("docker", "-H", swarm["docker_host"], "config", "create", f"{APP}-dev-bg-lock", "-", input_text=holder)
    try:
        not_in_swarm = "tcp://" + outside.url(DOCKER_PORT + 1).split("//", 1)[1].rstrip("/")
        on_worker = "tcp://" + worker.url(DOCKER_PORT + 1).split("//", 1)[1].rstrip("/")
        res = bg_swap_play(
            tmp_path, swarm, registry, images,
            [
                {"env": "dev", "artifact": images["tag_v1"]},
                {"env": "dev", "artifact": images["v1"], "swarm": {"router_image": images["router"].split("@")[0]}},
                {"env": "dev", "artifact": images["v1"], "swarm": {"docker_host": not_in_swarm}},
                {"env": "dev", "artifact": images["v1"], "swarm": {"docker_host": on_worker}},
                {"env": "dev", "state": "rolled_back"},
                {"env": "dev", "artifact": images["v1"]},
            ],
        )  # fmt: skip
    finally:
        mdocker(swarm, "config", "rm", f"{APP}-dev-bg-lock", check=False)
        for host in (outside, worker):
            host.sh(f"pkill -f 'TCP-LISTEN:{DOCKER_PORT + 1}' || true", check=False)
    tag, router, outside_swarm, from_worker, nothing, locked = res.results
    assert tag["failed"] and "not an immutable image reference" in tag["msg"] and "never a mutable tag" in tag["msg"]
    assert router["failed"] and "swarm.router_image" in router["msg"] and "extensions/swarm-router" in router["msg"]
    assert outside_swarm["failed"] and "not part of a swarm" in outside_swarm["msg"]
    assert "docker swarm init" in outside_swarm["msg"]
    assert from_worker["failed"] and "is a swarm worker: run bg_swap on a manager node" in from_worker["msg"]
    assert nothing["failed"] and "nothing to roll back to" in nothing["msg"]
    # another run holds the lock (a swarm config object): refused, the holder and the way out named
    assert locked["failed"] and locked["failed_check"] == "lock", locked
    assert "held by ci-runner-7:4242 since 2026-12-04T10:00:00Z" in locked["msg"], locked
    assert f"docker config rm {APP}-dev-bg-lock" in locked["msg"]
    assert mdocker(swarm, "service", "ls", "-q").stdout.split() == []
    assert registry["password"] not in res.stdout + res.stderr


def test_deploy_sick_green_switch_under_load_drift_rollback(swarm, registry, images, tmp_path):
    """v1 on blue; a sick release on green fails its gate with blue untouched; v2 on green in steps 50/100 with wrk
    through the router: 0 non-2xx; the live service changed by hand is drift; the rollback switches back to blue."""
    first, sick = bg_swap_play(
        tmp_path, swarm, registry, images,
        [{"env": "dev", "artifact": images["v1"]}, {"env": "dev", "artifact": images["sick"], "health_timeout": 8}],
    ).results  # fmt: skip
    assert not first.get("failed") and first["live_colour"] == "blue", (first.get("msg"), first.get("last_check"))
    # a release whose health check fails: the gate stops it; blue keeps the traffic and its very tasks
    assert sick["failed"] and sick["failed_check"] == "health_gate" and sick["rolled_back"] is False, sick
    assert "traffic stays on blue" in sick["msg"] and ": 500" in sick["msg"], sick
    assert router_get(swarm, "dev")[1:] == ("blue", "v1")
    history = mdocker(swarm, "service", "ps", "--format", "{{.Image}} {{.DesiredState}}", f"{APP}-dev-blue").stdout
    assert sorted(history.splitlines()) == [f"{images['v1']} Running"] * 2  # never restarted nor replaced

    with router_load(swarm, "dev", seconds=60) as wrk:
        deployed, again, clean = bg_swap_play(
            tmp_path, swarm, registry, images,
            [{"env": "dev", "artifact": images["v2"], "traffic_steps": [50, 100]},
             {"env": "dev", "artifact": images["v2"]}, {"drift": images["v2"], "known": [images["v1"]]}],
        ).results  # fmt: skip
    load = wrk["output"]
    assert not deployed.get("failed"), deployed
    assert (deployed["live_colour"], deployed["previous_colour"]) == ("green", "blue")
    assert deployed["traffic_steps"] == [50, 100]
    assert again["changed"] is False
    requests = re.search(r"(\d+) requests in", load)
    assert requests and int(requests.group(1)) > 100, load
    assert "Non-2xx" not in load and "Socket errors" not in load, load
    assert router_get(swarm, "dev")[1:] == ("green", "v2")
    green_tasks = task_images(swarm, f"{APP}-dev-green")
    assert set(green_tasks.values()) == {images["v2"]} and len(green_tasks) == 2
    assert clean["drift"] is False, clean

    # a container started by hand on the environment's network (the router image: the manager has it), and the live
    # service updated by hand (docker service update --image): both drift, named; then the rollback
    mdocker(swarm, "run", "--detach", "--name", f"{APP}-dev-byhand", "--network", f"{APP}-dev", "--entrypoint",
            "sleep", images["router"], "600")  # fmt: skip
    mdocker(swarm, "service", "update", "--detach", "--quiet", "--no-resolve-image", "--image", images["v1"],
            f"{APP}-dev-green")  # fmt: skip
    drift, back = bg_swap_play(
        tmp_path, swarm, registry, images,
        [{"drift": images["v2"], "known": [images["v1"]]}, {"env": "dev", "state": "rolled_back"}],
    ).results  # fmt: skip
    assert drift["drift"] is True, drift
    assert any(f"live service {APP}-dev-green is set to run {images['v1']}" in m for m in drift["mismatches"]), drift
    byhand = f"container {APP}-dev-byhand is on the network {APP}-dev of {APP}/dev but is no task of its services"
    assert any(byhand in m for m in drift["mismatches"]), drift
    mdocker(swarm, "rm", "--force", f"{APP}-dev-byhand")
    # rollback: the kept colour (blue, v1) takes the traffic again
    assert not back.get("failed"), back
    assert back["live_colour"] == "blue" and back["rollback_method"] == "switch_back"
    assert router_get(swarm, "dev")[1:] == ("blue", "v1")
    remove_environment(swarm, "dev")


def router_file(swarm, service: str, path: str) -> str | None:
    """A file in the router service's task on the manager; None when it does not exist."""
    container = mdocker(swarm, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").stdout.split()
    got = mdocker(swarm, "exec", container[0], "cat", path, check=False)
    return got.stdout if got.returncode == 0 else None


def test_analysis_aborts_a_flaky_release_at_the_first_step_and_passes_a_good_one(swarm, registry, images, tmp_path):
    """Under load through the router, with analysis between the steps: the flaky release (20 % of its answers 500)
    fails the 20 % window and all traffic goes back to blue; v2 passes the 20 % and 100 % windows with its figures.
    The router's analysis log exists only during an analysed rollout: after each, no access_log and no file."""
    router, log = f"{APP}-dev-router", "/var/log/nginx/bg-analysis.log"
    analysis = {"window": 5, "min_requests": 5, "max_error_rate": 0.05}
    (first,) = bg_swap_play(tmp_path, swarm, registry, images, [{"env": "dev", "artifact": images["v1"]}]).results
    assert not first.get("failed") and first["live_colour"] == "blue", (first.get("msg"), first.get("last_check"))
    with router_load(swarm, "dev", seconds=120):
        flaky, good = bg_swap_play(
            tmp_path, swarm, registry, images,
            [{"env": "dev", "artifact": images["flaky"], "traffic_steps": [20, 100], "analysis": analysis},
             {"env": "dev", "artifact": images["v2"], "traffic_steps": [20, 100], "analysis": analysis}],
        ).results  # fmt: skip
    for name, result in (("flaky", flaky), ("v2", good)):
        print(name, [(item["step"], item["verdict"], item["requests"], item["errors"]) for item in result["analysis"]])
    assert flaky["failed"] and flaky["failed_check"] == "analysis" and flaky["rolled_back"] is True, flaky
    (verdict,) = flaky["analysis"]
    assert (verdict["step"], verdict["verdict"]) == (20, "failed"), verdict
    assert verdict["requests"] >= 5 and verdict["errors"] >= 1 and "requests to green answered 5xx" in verdict["detail"]
    assert "analysis at 20% of traffic on green: failed" in flaky["msg"] and "traffic is on blue again" in flaky["msg"]
    # the good release: both windows measured and passed; green serves it
    assert not good.get("failed"), good
    assert [(item["step"], item["verdict"]) for item in good["analysis"]] == [(20, "passed"), (100, "passed")], good
    assert all(item["requests"] >= 5 and item["errors"] == 0 for item in good["analysis"]), good
    assert router_get(swarm, "dev")[1:] == ("green", "v2")
    conf = router_file(swarm, router, "/etc/nginx/bg/router.conf")
    assert conf and "# weights:" in conf and "access_log" not in conf, conf
    assert router_file(swarm, router, log) is None
    remove_environment(swarm, "dev")


def test_promotion_deploy_promote_rollback_same_digest(swarm, registry, images, tmp_path):
    """deploy.yml dev -> promote.yml dev->staging -> rollback.yml staging with promotion_backend: swarm (a group
    var): staging runs the very digest dev ran, and the rollback goes back to it."""
    root = tmp_path / "chain"
    records = root / "artifacts" / (APP + "p") / "records"
    records.mkdir(parents=True)
    for index, name in enumerate(("v1", "v2")):
        (records / f"{index:02d}-{name}.json").write_text(json.dumps({"id": images[name], "kind": "container"}))
    (root / "artifacts" / (APP + "p") / "latest.json").write_text(json.dumps({"id": images["v1"]}))
    inventory = root / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "inventories" / "local" / "hosts.yml", inventory / "hosts.yml")
    envs = {
        env: {"router_image": images["router"], "router_port": port, "docker_host": swarm["docker_host"]}
        for env, port in PROMOTION_PORTS.items()
    }
    # staging's promotions are analysed (an idle 1 s window passes with min_requests 0): bg_swap gets the analysis
    envs["staging"]["analysis"] = {"window": 1, "min_requests": 0}
    settings = {
        "promotion_chain": ["dev", "staging"],
        "promotion_app": APP + "p",
        "promotion_backend": "swarm",
        "promotion_artifacts_dir": str(root / "artifacts"),
        "promotion_ledger": {"backend": "file", "path": str(root / "ledger.json")},
        "promotion_environments": envs,
        "promotion_health_interval": 0.3,
        "promotion_health_timeout": 40,
    }
    (inventory / "group_vars" / "all" / "promotion.yml").write_text(json.dumps(settings))
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}

    def run(playbook, **extra):
        res = run_playbook(PLAYBOOKS / playbook, extra, "-i", str(inventory), env=env)
        assert res.returncode == 0, show(res)
        return res

    # dev's and staging's routers on the same swarm: each its own services, router and port
    run("deploy.yml", env="dev")
    run("promote.yml", **{"from": "dev", "to": "staging"})
    run("deploy.yml", env="dev", artifact=images["v2"])
    run("promote.yml", **{"from": "dev", "to": "staging"})
    ledger = json.loads((root / "ledger.json").read_text())["apps"][APP + "p"]
    assert ledger["staging"]["live"] == ledger["dev"]["live"] == images["v2"]
    analysed = ledger["staging"]["history"][-1]["evidence"]["analysis"]
    assert [(item["step"], item["verdict"]) for item in analysed] == [(100, "passed")], analysed
    assert set(task_images(swarm, f"{APP}p-staging-green").values()) == {images["v2"]}
    run("rollback.yml", env="staging")
    ledger = json.loads((root / "ledger.json").read_text())["apps"][APP + "p"]
    assert ledger["staging"]["live"] == images["v1"]
    with urllib.request.urlopen(swarm["manager"].url(PROMOTION_PORTS["staging"]), timeout=5) as resp:
        assert (resp.headers.get("X-Colour"), resp.read().decode().strip()) == ("blue", "v1")
    run("verify.yml")  # drift_info backend=swarm for both environments: every task runs its ledger ID (exit 0)
    checked = json.loads((root / "artifacts" / (APP + "p") / "verify.json").read_text())
    assert {name: (env["checked"], env["drift"]) for name, env in checked["environments"].items()} == {
        "dev": (True, False),
        "staging": (True, False),
    }, checked
