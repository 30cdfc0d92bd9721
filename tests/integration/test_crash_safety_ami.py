"""Fault injection on the AMI path: kill `ansible-playbook playbooks/bake.yml` during the AMI capture (moto_server).

moto answers at once, so there is no natural window to hit "during capture". The test puts a small HTTP proxy of
its own (127.0.0.1, random port) between the bake and moto_server on 127.0.0.1:5062: it forwards every EC2 request
unchanged, except that a CreateImage request is forwarded to moto and its *answer* is held back until the test lets
it go. The bake's `bake_ami_aws.endpoint_url` points at the proxy. Nothing in the product changes: the kill lands
while the `bake_ami state=captured` module waits for CreateImage, i.e. the builder is stopped, the image exists in
moto, and the module has not seen its ID yet (what a kill during a real multi-minute capture looks like).

Like tests/integration/test_bake_playbook_ami.py, an SSH server in a container stands in for the EC2 builder
(tests/integration/ami_standin.py): the provisioning play reaches it over ansible.builtin.ssh with the bake's temporary
key, through bake_ami_ssh_host/bake_ami_ssh_port; one per bake, created and removed by this module. The clean-up
runs straight against moto (no proxy).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import ansible_env
from conftest import run_playbook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ami_standin import StandIn  # noqa: E402
from ami_standin import ensure_image  # noqa: E402
from ami_standin import stand_in as ssh_stand_in  # noqa: E402
from moto_fixtures import FAKE_KEYS  # noqa: E402
from moto_fixtures import base_ami_and_subnet  # noqa: E402
from moto_fixtures import ec2_client  # noqa: E402
from moto_fixtures import start_moto  # noqa: E402
from moto_fixtures import stop_moto  # noqa: E402

pytestmark = pytest.mark.moto

BAKE = REPO_ROOT / "playbooks" / "bake.yml"
CLEANUP = REPO_ROOT / "playbooks" / "cleanup.yml"
PORT = 5062
REGION = "us-east-1"
TAG = "immutable-infra:"
AWS_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
}
HELD = (b"Action=CreateImage", b"Action=CopyImage")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def live_bake_resources(ec2) -> dict:
    """Every non-terminated instance, key pair and security group carrying a bake ID tag (any bake)."""
    tagged = [{"Name": "tag-key", "Values": [f"{TAG}bake-id"]}]
    live = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}]
    return {
        "instances": sorted(
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=tagged + live)["Reservations"]
            for i in r["Instances"]
        ),
        "key_pairs": sorted(k["KeyName"] for k in ec2.describe_key_pairs(Filters=tagged)["KeyPairs"]),
        "security_groups": sorted(g["GroupId"] for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]),
    }


NOTHING = {"instances": [], "key_pairs": [], "security_groups": []}


class SlowCaptureProxy:
    """Forwards HTTP requests to moto; holds the answer to CreateImage/CopyImage until `release()` (or 300 s)."""

    def __init__(self, upstream_port: int):
        self.held = threading.Event()  # a capture request arrived and is being held
        self.released = threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                finally:
                    conn.close()
                if any(marker in body for marker in HELD):
                    proxy.held.set()
                    proxy.released.wait(300)
                try:
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client was killed while we held its answer

            do_GET = do_POST = forward  # noqa: N815

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def descendants(pid: int) -> list[int]:
    """Every live descendant of pid (from /proc), whatever its process group or session."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Bake:
    """ansible-playbook bake.yml in its own session, so a signal can go to its whole process group."""

    def __init__(self, extra_vars: dict, env: dict, log: Path):
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(  # noqa: S603
            ["ansible-playbook", str(BAKE), "-e", json.dumps(extra_vars)],
            cwd=REPO_ROOT,
            env=ansible_env(dict(env, PYTHONUNBUFFERED="1")),
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text()

    def kill(self, sig: int) -> int:
        tree = descendants(self.proc.pid)
        os.killpg(self.proc.pid, sig)  # SIGINT: what Ctrl-C in a terminal does; SIGKILL: the whole group at once
        if sig == signal.SIGKILL:
            for pid in tree:  # workers/modules outside the group too: nothing of the run survives
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        rc = self.proc.wait(timeout=120)
        deadline = time.monotonic() + 60
        while descendants(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.handle.close()
        return rc


@pytest.fixture(scope="module")
def moto():
    process, endpoint = start_moto(PORT)
    yield endpoint
    stop_moto(process)


@pytest.fixture(scope="module")
def aws(moto):
    """A registered base AMI, a VPC and a subnet."""
    ec2 = ec2_client(moto)
    base, _vpc, subnet = base_ami_and_subnet(ec2, 44)
    return {"endpoint": moto, "ec2": ec2, "base_ami": base, "subnet": subnet}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("amicrash")
    role = root / "roles" / "cs_marker" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text(
        "---\n- name: Write a marker\n  ansible.builtin.copy:\n"
        '    content: "{{ cs_marker | default(\'m\') }}\\n"\n    dest: /etc/cs-marker\n    mode: "0644"\n'
    )
    (root / "keys").mkdir()
    return {"roles": root / "roles", "artifacts": root / "artifacts", "keys": root / "keys"}


@pytest.fixture(scope="module")
def app():
    name = f"amicrash{os.urandom(3).hex()}"
    yield name
    for cid in docker("ps", "-aq", "--filter", f"label=io.immutable-infra.app={name}", check=False).stdout.split():
        docker("rm", "-f", cid, check=False)


@pytest.fixture(scope="module")
def standin_image(base_image):
    return ensure_image(base_image)


@pytest.fixture
def stand_in(standin_image):
    """The SSH server standing in for the EC2 builder (moto instances cannot be reached over SSH)."""
    with ssh_stand_in(standin_image, "ami-crash-standin") as box:
        yield box
    assert docker("ps", "-aq", "--filter", f"name=^{box.name}$", check=False).stdout.strip() == ""


@pytest.fixture
def proxy(aws):
    slow = SlowCaptureProxy(int(aws["endpoint"].rsplit(":", 1)[1]))
    yield slow
    slow.close()


def bake_vars(aws, work, app: str, endpoint: str, stand_in: StandIn, marker: str) -> dict:
    return {
        "bake_name": app,
        "bake_kinds": ["ami"],
        "bake_roles": ["cs_marker"],
        "bake_vars": {"cs_marker": marker},
        "bake_artifacts_dir": str(work["artifacts"]),
        "bake_revision": "abc1234",
        "bake_source": "https://example.invalid/repo.git",
        "bake_ami_aws": {"endpoint_url": endpoint, **FAKE_KEYS},
        "bake_ami_region": REGION,
        "bake_ami_base": aws["base_ami"],
        "bake_ami_subnet_id": aws["subnet"],
        "bake_ami_ssh_cidr": "192.0.2.10/32",
        "bake_ami_poll_interval": 1,
        "bake_ami_key_dir": str(work["keys"]),
        "bake_ami_ssh_timeout": 60,
        **stand_in.bake_vars,
    }


def cleanup_vars(aws, work, app: str, *, min_age: int) -> dict:
    return {
        "bake_ami_key_dir": str(work["keys"]),
        "cleanup_app": app,  # never another app's builder containers (other suites may be running)
        "cleanup_config_min_age": 86400,  # leave other runs' temporary docker configs alone
        "cleanup_ami_region": REGION,
        "cleanup_min_age": min_age,
        "bake_ami_aws": {
            "endpoint_url": aws["endpoint"],
            **FAKE_KEYS,
        },
    }


def flat(text: str) -> str:
    return " ".join(text.split())


def kill_during_capture(aws, work, app, proxy, stand_in, sig, tmp_path) -> tuple[int, dict, str]:
    """Start a bake through the proxy, wait until its CreateImage is held, kill it; return rc, leftovers, log."""
    with stand_in.boot(work["keys"]):
        return _kill_during_capture(aws, work, app, proxy, stand_in, sig, tmp_path)


def _kill_during_capture(aws, work, app, proxy, stand_in, sig, tmp_path) -> tuple[int, dict, str]:
    bake = Bake(
        bake_vars(aws, work, app, proxy.endpoint, stand_in, os.urandom(4).hex()),
        {**AWS_ENV, "ANSIBLE_ROLES_PATH": str(work["roles"])},
        tmp_path / "bake.log",
    )
    try:
        deadline = time.monotonic() + 600
        while not proxy.held.wait(0.5):
            if bake.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the bake never reached CreateImage (rc={bake.proc.poll()}):\n{bake.output()[-4000:]}")
        # CreateImage is sent only by the capture (the task banner itself is printed with its first result)
        assert (
            "included: /work/main/playbooks/tasks/bake_ami_capture.yml for localhost".replace(
                "/work/main", str(REPO_ROOT)
            )
            in bake.output()
        ), bake.output()[-3000:]
        time.sleep(0.5)
        rc = bake.kill(sig)
    finally:
        if bake.proc.poll() is None:
            bake.kill(signal.SIGKILL)
        proxy.release()
    return rc, live_bake_resources(aws["ec2"]), bake.output()


SIGNALS = [signal.SIGINT, signal.SIGKILL]


@pytest.mark.parametrize("sig", SIGNALS, ids=[s.name for s in SIGNALS])
def test_an_ami_bake_killed_during_capture_leaves_nothing_after_cleanup(aws, work, app, proxy, stand_in, sig, tmp_path):
    assert live_bake_resources(aws["ec2"]) == NOTHING
    rc, left, output = kill_during_capture(aws, work, app, proxy, stand_in, sig, tmp_path)
    print(f"AMI capture {sig.name}: rc={rc}, left by the killed run: {left}")  # the 'before' column of the table
    assert rc != 0
    # the kill skipped the capture's `always`: the builder, its key pair and its security group are still there
    assert len(left["instances"]) == 1 and len(left["key_pairs"]) == 1 and len(left["security_groups"]) == 1, left
    assert "PRIVATE KEY" not in output
    # and the builder's private key file (0600) of that bake
    (key_file,) = [
        p for p in work["keys"].iterdir() if p.name.endswith(left["key_pairs"][0][len("immutable-infra-") :] + ".key")
    ]
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    # and the bake's known_hosts file (the builder's host key, accepted when the provisioning connected)
    known_hosts = key_file.with_suffix(".known_hosts")
    assert known_hosts.exists()

    # the default sweep (2 h) keeps a young orphan: it cannot tell it from a bake that is still running
    default = run_playbook(CLEANUP, cleanup_vars(aws, work, app, min_age=7200), env=AWS_ENV)
    assert default.returncode == 0, default.stdout[-3000:]
    assert live_bake_resources(aws["ec2"]) == left and key_file.exists() and known_hosts.exists()

    # check mode lists it and removes nothing; a real run with cleanup_min_age=0 removes all of it
    check = run_playbook(CLEANUP, cleanup_vars(aws, work, app, min_age=0), "--check", env=AWS_ENV)
    assert check.returncode == 0, check.stdout[-3000:]
    assert all(i in flat(check.stdout) for i in left["instances"] + left["security_groups"]), check.stdout[-3000:]
    assert "would remove 2 private key and known_hosts file(s) of swept AMI bakes: " in flat(check.stdout)
    assert str(key_file) in flat(check.stdout) and str(known_hosts) in flat(check.stdout)
    assert live_bake_resources(aws["ec2"]) == left and key_file.exists() and known_hosts.exists()
    cleanup = run_playbook(CLEANUP, cleanup_vars(aws, work, app, min_age=0), env=AWS_ENV)
    assert cleanup.returncode == 0, cleanup.stdout[-3000:]
    assert live_bake_resources(aws["ec2"]) == NOTHING
    assert not key_file.exists() and not known_hosts.exists()
    # the AMI path starts no builder container; none of this app exists
    assert docker("ps", "-aq", "--filter", f"label=io.immutable-infra.app={app}").stdout.split() == []


def test_the_next_bake_with_a_zero_sweep_age_removes_a_killed_capture(
    aws, work, app, proxy, stand_in, standin_image, tmp_path
):
    """No cleanup.yml in between: the next (non-cached) bake sweeps the orphan when bake_sweep_min_age allows it."""
    rc, left, _output = kill_during_capture(aws, work, app, proxy, stand_in, signal.SIGKILL, tmp_path)
    assert rc != 0 and len(left["instances"]) == 1, left
    # the next bake's builder is another instance: another stand-in (the seal left the first without host keys)
    with ssh_stand_in(standin_image, "ami-crash-standin") as box, box.boot(work["keys"]):
        extra = bake_vars(aws, work, app, aws["endpoint"], box, os.urandom(4).hex())
        extra["bake_sweep_min_age"] = 0
        result = run_playbook(BAKE, extra, env={**AWS_ENV, "ANSIBLE_ROLES_PATH": str(work["roles"])})
    assert result.returncode == 0, result.stdout[-4000:]
    assert live_bake_resources(aws["ec2"]) == NOTHING
    # the next bake's sweep also removed the killed bake's private key and known_hosts files; its own were removed
    # by its cleanup
    assert list(work["keys"].iterdir()) == []
