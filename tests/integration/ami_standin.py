"""A stand-in for the EC2 builder instance of an AMI bake, reached over real SSH.

moto launches instances nobody can log in to. The AMI path of playbooks/bake.yml is still run the way it runs against
AWS: `bake_ami state=builder` writes the temporary key pair's private key, the provisioning play connects with
`ansible.builtin.ssh` as `bake_ami_ssh_user` (admin) with that key file, become root, and accepts the builder's host
key into the bake's own known_hosts file. What answers is a container from tests/ami-standin/Dockerfile (the local
base image plus openssh-server and sudo; built once, tagged by the hash of its inputs), its sshd published on a
random 127.0.0.1 port. The bake reaches it through the user-facing knobs `bake_ami_ssh_host` / `bake_ami_ssh_port`
(`StandIn.bake_vars`), which map the builder's address to that port as a tunnel or port forward would.

What cloud-init does on a real instance's first boot, `StandIn.boot` does while the bake runs: once the bake's
private key file appears in the key directory, it derives the public key (`ssh-keygen -y`) and writes it into
admin's authorized_keys. Until then sshd answers but refuses the key, as a real instance does before cloud-init
ran; the play's `wait_for_connection` rides that out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

STANDIN_DIR = Path(__file__).resolve().parents[1] / "ami-standin"
IMAGE_REPOSITORY = "immutable-infra/ami-standin"
SSH_USER = "admin"  # the default user of Debian AMIs, bake.yml's default bake_ami_ssh_user


def docker(*args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, text=True, check=check)


def ensure_image(base_image: str) -> str:
    """The stand-in image for this Dockerfile and base image ID: reused when present, built (~20 s) otherwise."""
    base_id = docker("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()
    digest = hashlib.sha256(f"{base_id}\n".encode() + (STANDIN_DIR / "Dockerfile").read_bytes()).hexdigest()
    image = f"{IMAGE_REPOSITORY}:{digest[:16]}"
    if docker("image", "inspect", image, check=False).returncode != 0:
        subprocess.run(
            ["docker", "build", "--pull=false", "-q", "--build-arg", f"BASE_IMAGE={base_image}", "-t", image, "."],
            cwd=STANDIN_DIR,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx needed, the base stays local
            capture_output=True,
            text=True,
            timeout=900,
            check=True,
        )
        # builds of older inputs are no use any more (removal fails harmlessly for one a container still runs)
        listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPOSITORY).stdout.split()
        for old in set(listed) - {image}:
            docker("image", "rm", old, check=False)
    return image


class StandIn:
    """One running stand-in "instance": a container whose sshd is published on 127.0.0.1:<port>."""

    def __init__(self, image: str, name: str):
        self.name = name
        docker("run", "-d", "--name", name, "-p", "127.0.0.1::22", image)
        self.port = int(docker("port", name, "22/tcp").stdout.split("\n")[0].rsplit(":", 1)[1])
        # filled by boot(): the public key it authorized, the sshd's host keys then, the bake's known_hosts lines
        self.authorized: list[str] = []
        self.host_keys_at_boot: set[str] = set()
        self.known_hosts: list[str] = []

    @property
    def bake_vars(self) -> dict:
        """bake.yml's knobs for a builder reached through a forwarded port, pointed at this stand-in."""
        return {"bake_ami_ssh_host": "127.0.0.1", "bake_ami_ssh_port": self.port}

    def sh(self, script: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        return docker("exec", "-i", self.name, "sh", "-c", script, check=check, stdin=stdin)

    def host_keys(self) -> set[str]:
        """The sshd's public host keys as `type base64` (before the seal removes them)."""
        out = self.sh("cat /etc/ssh/ssh_host_*_key.pub", check=False).stdout
        return {" ".join(line.split()[:2]) for line in out.splitlines() if line.strip()}

    def sshd_log(self) -> str:
        proc = docker("logs", self.name, check=False)
        return proc.stdout + proc.stderr

    def authorize(self, private_key: Path) -> None:
        """cloud-init's part: the key pair's public key into the default user's authorized_keys."""
        public = subprocess.run(
            ["ssh-keygen", "-y", "-f", str(private_key)], capture_output=True, text=True, check=True
        ).stdout
        self.sh(
            f"install -d -m 0700 -o {SSH_USER} -g {SSH_USER} /home/{SSH_USER}/.ssh"
            f" && install -m 0600 -o {SSH_USER} -g {SSH_USER} /dev/stdin /home/{SSH_USER}/.ssh/authorized_keys",
            stdin=public,
        )
        self.authorized.append(public.strip())

    @contextlib.contextmanager
    def boot(self, key_dir: Path) -> Iterator[StandIn]:
        """While the bake runs: authorize the first new private key in key_dir, remember the known_hosts entry."""
        before = set(key_dir.iterdir())
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                new = set(key_dir.iterdir()) - before
                keys = sorted(p for p in new if p.suffix == ".key")
                if keys and not self.authorized:
                    # a half-written key file fails ssh-keygen: try again on the next round
                    with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
                        self.authorize(keys[0])
                if self.authorized and not self.host_keys_at_boot:
                    self.host_keys_at_boot = self.host_keys()  # empty until sshd's `ssh-keygen -A` is done
                for path in (p for p in new if p.suffix == ".known_hosts"):
                    with contextlib.suppress(FileNotFoundError):
                        lines = path.read_text().splitlines()
                        if lines:
                            self.known_hosts = lines

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@contextlib.contextmanager
def stand_in(image: str, prefix: str = "ami-standin") -> Iterator[StandIn]:
    """A stand-in instance for one bake, removed afterwards."""
    box = StandIn(image, f"{prefix}-{time.time_ns() % 10**12}")
    try:
        yield box
    finally:
        box.remove()
