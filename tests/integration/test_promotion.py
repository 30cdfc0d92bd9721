"""Promotion end to end: playbooks/deploy.yml, promote.yml, rollback.yml and verify.yml through ansible-playbook
against the real Docker Engine, the local registry (with auth), a self-contained nginx per environment on
127.0.0.1 high ports, and the SSM ledger backend on a moto_server started here (127.0.0.1:5058).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook
from moto_fixtures import FAKE_ENV
from moto_fixtures import start_moto
from moto_fixtures import stop_moto
from test_analysis_prometheus import prometheus  # noqa: F401  # pylint: disable=unused-import

PLAYBOOKS = REPO_ROOT / "playbooks"
MOTO_PORT = 5058
CHAIN = ["dev", "staging", "prod"]
# The artifacts differ only by a label (bake_image_config), which re-runs only the seal role and the push.
IMAGE_CONFIG: dict = {}

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]


def show(res: subprocess.CompletedProcess) -> str:
    return f"rc={res.returncode}\nSTDOUT:\n{res.stdout[-5000:]}\nSTDERR:\n{res.stderr[-2000:]}"


def sh(*cmd, check=True, input_text=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, input=input_text, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    return proc


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _i in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


# --- artifacts: two real bakes, once per module ----------------------------------------------------------------


@pytest.fixture(scope="module")
def registry_env(registry):
    return {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}


@pytest.fixture(scope="module")
def artifacts(registry_env, base_image, tmp_path_factory):
    """Two distinct container artifacts of the default roles (the second differs by one image label, so only the
    seal role and the push re-run); bakes of the same inputs are cache hits in later runs."""
    out = tmp_path_factory.mktemp("bakes")
    records = []
    for variant in ("a", "b"):
        config = dict(IMAGE_CONFIG, labels={"io.immutable-infra.test.variant": variant})
        res = run_playbook(
            PLAYBOOKS / "bake.yml",
            {"bake_name": "promotest", "bake_artifacts_dir": str(out), "bake_image_config": config},
            env=registry_env,
            timeout=1500,
        )
        assert res.returncode == 0, show(res)
        records.append(json.loads((out / "promotest" / "latest.json").read_text()))
    assert records[0]["id"] != records[1]["id"]
    return records


class Chain:
    """A three-environment chain for one app in a temp dir: its inventory, ledger, routers and records."""

    def __init__(self, root: Path, app: str, records: list, backend="docker", ledger=None, env=None):
        self.root = root
        self.app = app
        self.backend = backend
        self.extra_env = env or {}
        self.ledger_path = root / "ledger" / "ledger.json"
        self.inventory = root / "inventory"
        art = root / "artifacts" / app / "records"
        art.mkdir(parents=True)
        for index, record in enumerate(records):
            (art / f"{index:02d}.json").write_text(json.dumps(record))
        (root / "artifacts" / app / "latest.json").write_text(json.dumps(records[0]))
        ports = free_ports(9)
        self.envs = {
            name: {
                "router_port": ports[3 * i],
                "blue_port": ports[3 * i + 1],
                "green_port": ports[3 * i + 2],
                "router_dir": str(root / "routers" / name),
            }
            for i, name in enumerate(CHAIN)
        }
        group_vars = self.inventory / "group_vars" / "all"
        group_vars.mkdir(parents=True)
        shutil.copy(REPO_ROOT / "inventories" / "local" / "hosts.yml", self.inventory / "hosts.yml")
        settings = {
            "promotion_chain": CHAIN,
            "promotion_app": app,
            "promotion_backend": backend,
            "promotion_artifacts_dir": str(root / "artifacts"),
            "promotion_ledger": ledger or {"backend": "file", "path": str(self.ledger_path)},
            "promotion_environments": self.envs,
            "promotion_health_interval": 0.3,
            "promotion_health_timeout": 30,
        }
        (group_vars / "promotion.yml").write_text(json.dumps(settings, indent=1))

    def run(self, playbook: str, **extra) -> subprocess.CompletedProcess:
        return run_playbook(PLAYBOOKS / playbook, extra, "-i", str(self.inventory), env=self.extra_env)

    def stage_two_in_dev(self, two: dict) -> subprocess.CompletedProcess:
        """The chain's latest.json artifact deployed to dev and promoted to staging, then `two` deployed to dev, so
        dev has a new artifact to promote over staging's. Returns the last run."""
        for playbook, extra in (
            ("deploy.yml", {"env": "dev"}),
            ("promote.yml", {"from": "dev", "to": "staging"}),
            ("deploy.yml", {"env": "dev", "artifact": two["id"]}),
        ):
            res = self.run(playbook, **extra)
            assert res.returncode == 0, show(res)
        return res

    def popen(self, playbook: str, **extra) -> subprocess.Popen:
        cmd = ["ansible-playbook", str(PLAYBOOKS / playbook), "-i", str(self.inventory), "-e", json.dumps(extra)]
        return subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=ansible_env(self.extra_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ledger(self) -> dict:
        return json.loads(self.ledger_path.read_text())

    def entry(self, env: str) -> dict:
        return self.ledger()["apps"][self.app][env]

    def name(self, env, colour):
        return f"{self.app}-{env}-{colour}"

    def live_container(self, env: str) -> dict:
        state = json.loads(
            (Path(self.envs[env]["router_dir"]) / "conf.d" / f"{self.app}-{env}.bg_state.json").read_text()
        )
        return json.loads(sh("docker", "container", "inspect", self.name(env, state["live"])).stdout)[0]

    def running_digests(self, env: str) -> set:
        info = self.live_container(env)
        digests = json.loads(
            sh("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", info["Image"]).stdout
        )
        return {ref.split("@", 1)[1] for ref in digests}

    def served(self, env: str):
        url = f"http://127.0.0.1:{self.envs[env]['router_port']}/"
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.headers.get("X-Colour")

    def teardown(self):
        for env in CHAIN:
            for suffix in ("blue", "green", "byhand"):
                sh("docker", "rm", "--force", self.name(env, suffix), check=False)
            pid_file = Path(self.envs[env]["router_dir"]) / "nginx.pid"
            if pid_file.exists():
                try:
                    pid = int(pid_file.read_text().strip())
                    os.kill(pid, signal.SIGQUIT)
                    for _i in range(50):
                        os.kill(pid, 0)
                        time.sleep(0.1)
                    os.kill(pid, signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass


@pytest.fixture
def chain(tmp_path, unique, artifacts, registry_env):
    made = []

    def make(**kwargs):
        kwargs.setdefault("env", registry_env)
        item = Chain(tmp_path / f"c{len(made)}", f"pr{unique}{len(made)}", artifacts, **kwargs)
        made.append(item)
        return item

    try:
        yield make
    finally:
        for item in made:
            item.teardown()


def registry_tag_digest(registry, repository: str, tag: str) -> str | None:
    name = repository.split("/", 1)[1]
    req = urllib.request.Request(f"{registry['url']}/v2/{name}/manifests/{tag}", method="HEAD")
    token = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    req.add_header("Authorization", f"Basic {token}")
    req.add_header(
        "Accept",
        "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=10) as resp:
            return resp.headers.get("Docker-Content-Digest")
    except urllib.error.HTTPError:
        return None


def last_line(res: subprocess.CompletedProcess, app: str, env: str) -> str:
    lines = [line for line in res.stdout.splitlines() if f"{app}/{env} live: " in line]
    assert lines, show(res)
    return lines[-1]


# --- the story --------------------------------------------------------------------------------------------------


def test_bake_once_promote_everywhere_gate_force_rollback_and_drift(chain, artifacts, registry):
    one, two = artifacts
    c = chain()

    # deploy dev (latest.json = one) -> promote staging -> promote prod: the same ID everywhere
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    assert one["id"] in last_line(res, c.app, "dev")
    for src, dst in (("dev", "staging"), ("staging", "prod")):
        res = c.run("promote.yml", **{"from": src, "to": dst})
        assert res.returncode == 0, show(res)
        assert one["id"] in last_line(res, c.app, dst)
    for env in CHAIN:
        entry = c.entry(env)
        assert entry["live"] == one["id"], env
        assert one["digest"] in c.running_digests(env), env
        assert c.served(env)[0] == 200
        # the environment tag points at the same manifest digest (added by manifest, never re-pushed)
        assert registry_tag_digest(registry, one["repository"], env) == one["digest"], env
    assert [h["action"] for h in c.entry("prod")["history"]] == ["promote"]
    assert c.entry("prod")["history"][0]["from_env"] == "staging"
    assert c.entry("dev")["history"][0]["record"].endswith("00.json")

    res = c.run("verify.yml")
    assert res.returncode == 0, show(res)
    assert "no drift" in res.stdout

    # a new artifact in dev; prod only takes it through staging: the skip is refused, nothing changes
    res = c.run("deploy.yml", env="dev", artifact=two["id"])
    assert res.returncode == 0, show(res)
    before = c.ledger_path.read_bytes()
    prod_before = c.live_container("prod")["Id"]
    res = c.run("promote.yml", **{"from": "dev", "to": "prod"})
    assert res.returncode != 0
    assert "skips the chain" in res.stdout and "force" in res.stdout, show(res)
    assert c.ledger_path.read_bytes() == before
    assert c.live_container("prod")["Id"] == prod_before
    assert one["digest"] in c.running_digests("prod")

    # force with a reason: recorded in the history
    res = c.run("promote.yml", **{"from": "dev", "to": "prod", "force": True, "reason": "hotfix CHG-42"})
    assert res.returncode == 0, show(res)
    assert "FORCED" in res.stdout
    last = c.entry("prod")["history"][-1]
    assert (last["id"], last["forced"], last["reason"], last["from_env"]) == (two["id"], True, "hotfix CHG-42", "dev")
    assert two["digest"] in c.running_digests("prod")
    assert registry_tag_digest(registry, two["repository"], "prod") == two["digest"]
    colour_two = c.live_container("prod")["Name"].lstrip("/")

    # rollback: an instant switch back to the kept colour, recorded
    res = c.run("rollback.yml", env="prod", reason="5xx after the hotfix")
    assert res.returncode == 0, show(res)
    assert "instant switch" in res.stdout
    assert one["id"] in last_line(res, c.app, "prod")
    entry = c.entry("prod")
    assert (entry["live"], entry["previous"]) == (one["id"], two["id"])
    assert entry["history"][-1]["action"] == "rollback"
    assert entry["history"][-1]["reason"] == "5xx after the hotfix"
    assert one["digest"] in c.running_digests("prod")
    assert c.live_container("prod")["Name"].lstrip("/") != colour_two

    # drift 1: a file changed inside the live container of prod
    live = c.live_container("prod")["Name"].lstrip("/")
    sh("docker", "exec", live, "touch", "/usr/bin/x")
    res = c.run("verify.yml", env="prod")
    assert res.returncode != 0
    assert f"live container {live} was changed" in res.stdout and "/usr/bin/x" in res.stdout, show(res)

    # drift 2: a container started by hand on staging (named like the app/env, not started by bg_swap)
    sh("docker", "run", "--detach", "--name", c.name("staging", "byhand"), one["id"], "sleep", "600")
    res = c.run("verify.yml", env="staging")
    assert res.returncode != 0
    assert f"extra container {c.name('staging', 'byhand')}" in res.stdout, show(res)


def test_a_registry_refusing_the_environment_tag_changes_nothing(chain, artifacts, registry):
    """The environment tag is planned (credentials checked) before the switch: wrong registry credentials fail the
    promotion with staging's container, traffic, registry tag and ledger untouched, and the password never shown."""
    one, two = artifacts
    c = chain()
    c.stage_two_in_dev(two)
    ledger_before = c.ledger_path.read_bytes()
    live_before = c.live_container("staging")["Id"]
    colour_before = c.served("staging")[1]
    password = "not-the-registry-password-7c1e"
    c.extra_env = dict(c.extra_env, IMMUTABLE_REGISTRY_PASSWORD=password)
    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode != 0
    assert "the environment tag staging cannot be added" in res.stdout, show(res)
    assert "nothing was switched or recorded" in res.stdout, show(res)
    assert password not in res.stdout + res.stderr
    assert c.ledger_path.read_bytes() == ledger_before
    assert c.live_container("staging")["Id"] == live_before
    assert c.served("staging") == (200, colour_before)
    assert one["digest"] in c.running_digests("staging")
    assert registry_tag_digest(registry, one["repository"], "staging") == one["digest"]


def test_a_rollback_whose_kept_colour_is_gone_redeploys_the_previous_id(chain, artifacts):
    """When the colour that ran the previous ID was removed, rollback.yml deploys that ID blue-green instead of
    switching back, and records the rollback."""
    one, two = artifacts
    c = chain()
    for extra in ({"env": "dev"}, {"env": "dev", "artifact": two["id"]}):
        res = c.run("deploy.yml", **extra)
        assert res.returncode == 0, show(res)
    live = c.live_container("dev")["Name"].lstrip("/")
    kept = c.name("dev", "green" if live.endswith("-blue") else "blue")
    sh("docker", "rm", "--force", kept)
    res = c.run("rollback.yml", env="dev", reason="kept colour cleaned up")
    assert res.returncode == 0, show(res)
    assert "blue-green deploy of the previous ID" in res.stdout, show(res)
    assert one["id"] in last_line(res, c.app, "dev")
    entry = c.entry("dev")
    assert (entry["live"], entry["previous"]) == (one["id"], two["id"])
    assert entry["history"][-1]["action"] == "rollback"
    assert one["digest"] in c.running_digests("dev")
    assert c.live_container("dev")["Name"].lstrip("/") == kept
    assert c.served("dev")[0] == 200


def test_the_step_sets_the_router_up_before_the_switch_and_then_leaves_it_alone(chain, artifacts):
    """No router in dev yet: the deploy's own router step writes its config and starts its nginx before the switch.
    With promotion_manage_router_always it runs again and changes nothing (same nginx master, same files); a router
    whose nginx stopped is started again by the next deploy."""
    one, two = artifacts
    c = chain()
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    router_dir = Path(c.envs["dev"]["router_dir"])
    files = [router_dir / "nginx.conf", router_dir / "conf.d" / f"{c.app}-dev.conf"]
    before = [(path.read_text(), path.stat().st_mtime_ns) for path in files]
    pid = int((router_dir / "nginx.pid").read_text())
    assert c.served("dev")[0] == 200

    res = c.run("deploy.yml", env="dev", promotion_manage_router_always=True)
    assert res.returncode == 0, show(res)
    assert "already live" in res.stdout, show(res)
    assert [(path.read_text(), path.stat().st_mtime_ns) for path in files] == before
    assert int((router_dir / "nginx.pid").read_text()) == pid

    os.kill(pid, signal.SIGQUIT)
    deadline = time.monotonic() + 60  # a graceful quit waits for its workers: seconds on a loaded machine
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "nginx did not quit within 60 s of SIGQUIT"
        time.sleep(0.05)
    res = c.run("deploy.yml", env="dev", artifact=two["id"])
    assert res.returncode == 0, show(res)
    assert int((router_dir / "nginx.pid").read_text()) != pid
    assert two["digest"] in c.running_digests("dev")
    assert c.served("dev")[0] == 200


def test_bad_input_changes_nothing(chain):
    c = chain(backend="none")
    res = c.run("deploy.yml", env="dev")
    assert res.returncode == 0, show(res)
    good = c.ledger_path.read_bytes()

    cases = [
        ("deploy.yml", {"env": "qa"}, 'unknown environment "qa": the chain is dev -> staging -> prod'),
        ("promote.yml", {"to": "prod"}, "give both environments: -e from="),
        ("rollback.yml", {}, "give the environment to roll back: -e env="),
        ("promote.yml", {"from": "staging", "to": "prod"}, "from_env 'staging' has no live artifact"),
        ("deploy.yml", {"env": "staging"}, "not the first environment of the chain"),
        (
            "deploy.yml",
            {"env": "dev", "artifact": "127.0.0.1:5000/promotest@sha256:" + "0" * 64},
            "is unknown to every",
        ),
        ("deploy.yml", {"env": "dev", "artifact": "127.0.0.1:5000/promotest:latest"}, "is not immutable"),
        ("promote.yml", {"from": "dev", "to": "prod", "force": True}, "force needs a non-empty reason"),
    ]
    for playbook, extra, message in cases:
        res = c.run(playbook, **extra)
        assert res.returncode != 0, (playbook, extra)
        assert message in res.stdout, show(res)
        assert c.ledger_path.read_bytes() == good, (playbook, extra)

    corrupt = b'{"schema": 1, "apps": {oops'
    c.ledger_path.write_bytes(corrupt)
    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode != 0
    assert "is corrupt" in res.stdout and ".bak" in res.stdout, show(res)
    assert c.ledger_path.read_bytes() == corrupt


def test_two_concurrent_promotions_of_two_apps_share_the_ledger(chain, artifacts, tmp_path):
    shared = {"backend": "file", "path": str(tmp_path / "shared" / "ledger.json")}
    apps = [chain(backend="none", ledger=shared), chain(backend="none", ledger=shared)]
    for item in apps:
        res = item.run("deploy.yml", env="dev")
        assert res.returncode == 0, show(res)
    procs = [item.popen("promote.yml", **{"from": "dev", "to": "staging"}) for item in apps]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    state = json.loads(Path(shared["path"]).read_text())
    for item in apps:
        assert state["apps"][item.app]["staging"]["live"] == artifacts[0]["id"]
        assert [h["action"] for h in state["apps"][item.app]["dev"]["history"]] == ["deploy"]


# --- AMI artifact IDs and the SSM ledger -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_server():
    try:
        process, endpoint = start_moto(MOTO_PORT)
    except RuntimeError as exc:
        pytest.fail(f"the promotion tests start their own moto_server: {exc}")
    yield endpoint
    stop_moto(process)


def test_ami_ids_on_the_ssm_ledger_gate_history_rollback(chain, moto_server, unique):
    """The AMI story at the ledger level, through the playbooks with promotion_backend=none (gate and record only:
    bg_swap's aws backend is not there yet, so nothing is switched and the playbooks say so)."""
    import boto3

    ami_1 = {"eu-west-1": "ami-0123456789abcdef0", "us-east-1": "ami-0fedcba9876543210"}
    ami_2 = {"eu-west-1": "ami-0aaaaaaaaaaaaaaaa", "us-east-1": "ami-0bbbbbbbbbbbbbbbb"}
    records = [
        {"schema": 1, "name": "api", "kind": "ami", "id": ami, "fingerprint": f"sha256:{n:064x}"}
        for n, ami in ((1, ami_1), (2, ami_2))
    ]
    aws = {**FAKE_ENV, "AWS_DEFAULT_REGION": "eu-west-1"}
    prefix = f"/promotion-test/{unique}"
    ledger = {"backend": "ssm", "prefix": prefix, "region": "eu-west-1", "endpoint_url": moto_server}
    c = chain(backend="none", ledger=ledger, env=aws)
    for index, record in enumerate(records):
        (c.root / "artifacts" / c.app / "records" / f"{index:02d}.json").write_text(json.dumps(record))
    (c.root / "artifacts" / c.app / "latest.json").write_text(json.dumps(records[0]))
    ssm = boto3.client("ssm", endpoint_url=moto_server, region_name="eu-west-1", **_keys(aws))

    def entry(env):
        return json.loads(ssm.get_parameter(Name=f"{prefix}/{c.app}/{env}")["Parameter"]["Value"])

    assert c.run("deploy.yml", env="dev").returncode == 0
    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    assert "recorded in the ledger only" in res.stdout
    assert entry("staging")["live"] == ami_1
    res = c.run("deploy.yml", env="dev", artifact=json.dumps(ami_2))
    assert res.returncode == 0, show(res)
    res = c.run("promote.yml", **{"from": "dev", "to": "prod"})
    assert res.returncode != 0 and "skips the chain" in res.stdout, show(res)
    # prod requires an approval: approve.yml records it in SSM (the ledger module as a module, with AWS clients)
    group_vars = c.inventory / "group_vars" / "all" / "promotion.yml"
    settings = json.loads(group_vars.read_text())
    settings["promotion_environments"]["prod"]["approval"] = {"required": True}
    group_vars.write_text(json.dumps(settings))
    res = c.run("promote.yml", **{"from": "staging", "to": "prod"})
    assert res.returncode != 0 and "ansible-playbook playbooks/approve.yml -e env=prod -e artifact=" in res.stdout
    res = c.run("approve.yml", env="prod", artifact=json.dumps(ami_1), by="carol")
    assert res.returncode == 0, show(res)
    assert entry("prod")["approvals"][0]["id"] == ami_1 and entry("prod")["live"] is None
    res = c.run("promote.yml", **{"from": "staging", "to": "prod"})
    assert res.returncode == 0, show(res)
    assert entry("prod")["live"] == ami_1
    assert entry("prod")["history"][-1]["evidence"]["approval"]["by"] == "carol"
    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    res = c.run("rollback.yml", env="staging", reason="bad AMI")
    assert res.returncode == 0, show(res)
    staging = entry("staging")
    assert (staging["live"], staging["previous"]) == (ami_1, ami_2)
    assert [h["action"] for h in staging["history"]] == ["promote", "promote", "rollback"]
    assert staging["history"][-1]["reason"] == "bad AMI"
    # the rolled-back AMI is no longer vouched for by staging: prod refuses it from there
    res = c.run("promote.yml", **{"from": "staging", "to": "prod", "artifact": json.dumps(ami_2)})
    assert res.returncode != 0 and "was rolled back in 'staging'" in res.stdout, show(res)


def _keys(aws: dict) -> dict:
    return {"aws_access_key_id": aws["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": aws["AWS_SECRET_ACCESS_KEY"]}


# --- soak time and approvals (docs/promotion.md, "Soak time and approvals"), on the ledger's clock ---------------


def test_prod_requires_a_soak_in_staging_and_an_approval_then_records_the_evidence(chain, artifacts):
    """Through the real playbooks (docker backend): the soak refusal with the time left, moved past by the ledger's
    clock (IMMUTABLE_NOW); the approval refusal with the command; approve.yml; the promotion and its evidence in the
    ledger and in verify.yml. Nothing changes while refused."""
    one = artifacts[0]
    c = chain()
    group_vars = c.inventory / "group_vars" / "all" / "promotion.yml"
    settings = json.loads(group_vars.read_text())
    settings["promotion_environments"]["prod"].update(
        soak_minutes=30, approval={"required": True, "approvers": ["alice", "bob"]}
    )
    group_vars.write_text(json.dumps(settings, indent=1))

    def run(playbook, minutes, **extra):
        clock = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1796378400 + minutes * 60))  # 2026-12-04T10:00:00Z
        env = dict(c.extra_env, IMMUTABLE_NOW=clock)
        return run_playbook(PLAYBOOKS / playbook, extra, "-i", str(c.inventory), env=env), clock

    for playbook, extra in (("deploy.yml", {"env": "dev"}), ("promote.yml", {"from": "dev", "to": "staging"})):
        res, _clock = run(playbook, 0, **extra)
        assert res.returncode == 0, show(res)
    assert c.entry("staging")["history"][-1]["at"] == "2026-12-04T10:00:00Z", "the ledger's time is IMMUTABLE_NOW"
    before = c.ledger_path.read_bytes()

    res, _clock = run("promote.yml", 12.5, **{"from": "staging", "to": "prod"})
    assert res.returncode != 0
    assert f"staging has run {one['id']} for 12 min of the 30 min soak prod requires: 18 min left" in res.stdout, show(
        res
    )
    res, _clock = run("promote.yml", 31, **{"from": "staging", "to": "prod"})
    assert res.returncode != 0
    command = f"ansible-playbook playbooks/approve.yml -e env=prod -e artifact={one['id']} -e by=alice"
    assert "one of alice, bob may approve it with: " + command in res.stdout, show(res)
    assert c.ledger_path.read_bytes() == before, "a refusal changes nothing"
    assert sh("docker", "container", "inspect", c.name("prod", "blue"), check=False).returncode != 0

    res, _clock = run("approve.yml", 32, env="prod", artifact=one["id"], by="mallory")
    assert res.returncode != 0 and "mallory is not an approver of this environment" in res.stdout, show(res)
    res, approved_at = run("approve.yml", 32, env="prod", artifact=one["id"], by="alice")
    assert res.returncode == 0, show(res)
    assert f"approved by alice at {approved_at}" in res.stdout, show(res)

    res, _clock = run("promote.yml", 33, **{"from": "staging", "to": "prod"})
    assert res.returncode == 0, show(res)
    assert one["id"] in last_line(res, c.app, "prod") and f"approved by alice at {approved_at}" in res.stdout
    assert c.served("prod")[0] == 200
    evidence = c.entry("prod")["history"][-1]["evidence"]
    assert evidence["approval"] == {"by": "alice", "at": approved_at}
    assert evidence["soak"] == {
        "from_env": "staging",
        "required_min": 30,
        "live_since": "2026-12-04T10:00:00Z",
        "minutes": 33,
        "left_min": 0,
        "ok": True,
    }
    assert "evidence" not in c.entry("dev")["history"][-1], "no analysis, soak, approval or hooks: none stored"

    res, _clock = run("verify.yml", 34)
    assert res.returncode == 0, show(res)
    shown = res.stdout[res.stdout.index("TASK [Show the evidence of the last promotion") :]
    assert "dev: no evidence recorded" in shown and "by: alice" in shown and approved_at in shown, show(res)


def test_a_rollout_aborted_by_its_analysis_is_recorded_with_its_verdicts(chain, artifacts):
    """bg_swap aborts at the first weighted step (an idle window: fewer requests than min_requests is never a pass):
    traffic stays on the old colour, the ledger records the abort with the verdicts, live and previous unchanged,
    and staging does not vouch for the aborted artifact."""
    one, two = artifacts
    c = chain()
    c.stage_two_in_dev(two)
    group_vars = c.inventory / "group_vars" / "all" / "promotion.yml"
    settings = json.loads(group_vars.read_text())
    settings["promotion_traffic_steps"] = [50, 100]
    settings["promotion_environments"]["staging"]["analysis"] = {"window": 1, "min_requests": 5}
    group_vars.write_text(json.dumps(settings))

    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode != 0
    assert "the abort is recorded in the ledger" in res.stdout, show(res)
    staging = c.entry("staging")
    assert (staging["live"], staging["previous"]) == (one["id"], None)
    assert one["digest"] in c.running_digests("staging") and c.served("staging")[0] == 200
    item = staging["history"][-1]
    assert (item["action"], item["id"], item["verified"], item["from_env"]) == ("abort", two["id"], False, "dev")
    [step] = item["evidence"]["analysis"]
    assert (step["step"], step["verdict"]) == (50, "inconclusive") and step["requests"] < 5
    res = c.run("promote.yml", **{"from": "staging", "to": "prod", "artifact": two["id"]})
    assert res.returncode != 0 and "was aborted in 'staging' by its analysis" in res.stdout, show(res)


def test_an_abort_on_prometheus_figures_is_recorded_and_the_header_value_shown_nowhere(chain, artifacts, prometheus):  # noqa: F811
    """promotion_analysis with prometheus (constant PromQL on a real Debian prometheus: 100 requests, 40 % errors):
    the rollout aborts at the first weighted step, the ledger records the abort with the Prometheus figures, the run
    fails; the Authorization header's value is in neither the output (-v) nor the ledger."""
    one, two = artifacts
    c = chain()
    c.stage_two_in_dev(two)
    secret = "Bearer prom-" + os.urandom(6).hex()
    group_vars = c.inventory / "group_vars" / "all" / "promotion.yml"
    settings = json.loads(group_vars.read_text())
    settings["promotion_traffic_steps"] = [50, 100]
    settings["promotion_analysis"] = {
        "window": 1,
        "min_requests": 10,
        "prometheus": {
            "url": prometheus.url,
            "requests": 'vector(100) + 0 * scalar(absent(nothing{env="{env}",colour="{colour}"}))',
            "error_rate": "vector(0.4)",
            "headers": {"Authorization": secret},
        },
    }
    group_vars.write_text(json.dumps(settings))

    res = run_playbook(
        PLAYBOOKS / "promote.yml", {"from": "dev", "to": "staging"}, "-i", str(c.inventory), "-v", env=c.extra_env
    )
    assert res.returncode != 0 and "the abort is recorded in the ledger" in res.stdout, show(res)
    assert secret not in res.stdout + res.stderr and secret not in c.ledger_path.read_text()
    staging = c.entry("staging")
    assert staging["live"] == one["id"] and one["digest"] in c.running_digests("staging")
    item = staging["history"][-1]
    assert (item["action"], item["id"], item["verified"]) == ("abort", two["id"], False)
    [step] = item["evidence"]["analysis"]
    assert (step["step"], step["verdict"], step["requests"], step["error_rate"]) == (50, "failed", 100, 0.4), step
    assert step["detail"].startswith("error rate 40.0% (about 40 of 100 requests to green were errors"), step
