"""Start and stop a real moto_server on 127.0.0.1 for integration tests.

Other test modules may import `start_moto` / `stop_moto`; the server only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

MOTO_HOST = "127.0.0.1"

# Fake AWS credentials for moto_server (it accepts any): distinctive and new in every test process, so a leak check
# (tests/integration/test_secrets.py) can search output, logs and files for them; "testing" would be found nowhere
# and everywhere. The access key has AWS's shape (AKIA + 16), the secret is 40 characters like AWS's.
FAKE_ACCESS_KEY_ID = "AKIA" + secrets.token_hex(8).upper()
FAKE_SECRET_ACCESS_KEY = "Fk" + secrets.token_urlsafe(29)[:38]
FAKE_KEYS = {"aws_access_key_id": FAKE_ACCESS_KEY_ID, "aws_secret_access_key": FAKE_SECRET_ACCESS_KEY}
FAKE_ENV = {"AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY}


def _moto_command() -> list[str]:
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(exe).exists():
        raise RuntimeError("moto_server not found: install moto[server] (scripts/setup.sh does) in the test venv")
    return [exe]


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1) as response:  # noqa: S310 (local test server)
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_moto(port: int, timeout: float = 30.0, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start moto_server on 127.0.0.1:<port>, wait until it answers; return (process, endpoint URL).

    EC2's ~1300 default AMIs are not loaded (MOTO_EC2_LOAD_DEFAULT_AMIS=false): tests register their own base AMI.
    Raises RuntimeError (and kills the process) if it does not answer within `timeout` seconds or the port is taken.
    """
    endpoint = f"http://{MOTO_HOST}:{port}"
    if _answers(endpoint):
        raise RuntimeError(f"something already answers on {endpoint}; pick another port or stop it")
    proc_env = dict(os.environ)
    proc_env.update({"MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})
    proc_env.update(env or {})
    log = tempfile.NamedTemporaryFile(prefix=f"moto-{port}-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        _moto_command() + ["-H", MOTO_HOST, "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=proc_env,
    )
    process.log_path = log.name  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop_moto(process)
            raise RuntimeError(f"moto_server exited early (rc={process.returncode}); log: {log.name}")
        if _answers(endpoint):
            return process, endpoint
        time.sleep(0.2)
    stop_moto(process)
    raise RuntimeError(f"moto_server did not answer on {endpoint} within {timeout}s; log: {log.name}")


def stop_moto(process: subprocess.Popen) -> None:
    """Terminate the moto_server started by start_moto (kill it if it does not stop within 5 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def reset_moto(endpoint: str) -> None:
    """Clear every resource in the server (POST /moto-api/reset)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 (local test server)
        pass


def ec2_client(endpoint: str, region: str = "us-east-1"):
    """A boto3 EC2 client of moto_server with the fake test credentials."""
    import boto3

    return boto3.client("ec2", region_name=region, endpoint_url=endpoint, **FAKE_KEYS)


def register_base_ami(ec2) -> str:
    """A new Debian-like base AMI (named debian-12-base-<ns>, so a name filter finds the newest)."""
    return ec2.register_image(
        Name=f"debian-12-base-{time.time_ns()}",
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8}}],
        Architecture="x86_64",
        VirtualizationType="hvm",
    )["ImageId"]


def base_ami_and_subnet(ec2, second_octet: int) -> tuple[str, str, str]:
    """What an AMI bake starts from: a registered base AMI, a new VPC 10.<second_octet>.0.0/16 and a subnet of it
    (base AMI, VPC and subnet IDs)."""
    base = register_base_ami(ec2)
    vpc = ec2.create_vpc(CidrBlock=f"10.{second_octet}.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.{second_octet}.1.0/24")["Subnet"]["SubnetId"]
    return base, vpc, subnet
