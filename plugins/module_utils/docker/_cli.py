# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The docker CLI implementation of the Docker engine interface (_interface.py).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The runner is injected (AnsibleModule.run_command, or any callable with the same shape) so the code is testable
without Docker. Errors become DockerError with the CLI's stderr summarised; registered secrets are masked. Get an
engine with docker_engine() (_engine.py), which takes the Engine API where it can and this CLI otherwise.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess

from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerEngine
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import is_missing
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import summarise

__all__ = ["DockerCli", "DockerError", "is_missing", "summarise"]

TAR_CREATE = [
    "tar", "-C", "/", "--create", "--file", "-", "--no-recursion", "--numeric-owner", "--xattrs", "--xattrs-include=*",
    "--verbatim-files-from", "--files-from", "-",
]  # fmt: skip


def run_locally(cmd, data=None, binary_data=False, environ_update=None):
    """AnsibleModule.run_command's shape for code that has no module (lookups and actions on the controller):
    (rc, stdout, stderr) of cmd, data (str or bytes) on its stdin."""
    del binary_data  # data is passed as it is, like run_command(binary_data=True)
    env = dict(os.environ, **environ_update) if environ_update else None
    stdin = data.encode() if isinstance(data, str) else data
    proc = subprocess.run(cmd, input=stdin, capture_output=True, env=env, check=False)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _created_epoch(text):
    """`docker image ls` CreatedAt ("2026-12-02 13:28:06 +0000 UTC") in epoch seconds (0 when unreadable)."""
    try:
        return datetime.datetime.strptime(" ".join(str(text).split()[:3]), "%Y-%m-%d %H:%M:%S %z").timestamp()
    except ValueError:
        return 0


class DockerCli(DockerEngine):
    """The docker CLI: run(args) -> (rc, out, err) and the interface's methods as CLI commands."""

    def __init__(self, run_command, docker_bin="docker", secrets=None):
        self._run_command = run_command
        self.docker_bin = docker_bin
        self._secrets = [s for s in (secrets or []) if s]

    def add_secret(self, value):
        if value:
            self._secrets.append(value)

    def mask(self, text):
        text = "" if text is None else str(text)
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def run(self, args, data=None, env=None, check=True):
        """Run `docker <args>`; with check, a non-zero exit raises DockerError naming the command."""
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
            raise DockerError(
                f"cannot run '{self.docker_bin}': {exc}: install the docker CLI or put it on PATH"
            ) from None
        if check and rc != 0:
            raise self.error(args, rc, err)
        return rc, out, err

    def error(self, args, rc, err):
        """The DockerError for a failed `docker <args>`: the summarised stderr and, where known, the fix."""
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
        return DockerError(f"{message}: {hint}" if hint else message, rc=rc, stderr=self.mask(err))

    def _json_lines(self, args):
        _rc, out, _err = self.run(args)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    # -- reading -------------------------------------------------------------------------------------------------

    def inspect(self, obj, kind=None):
        args = [kind, "inspect", obj] if kind else ["inspect", obj]
        rc, out, err = self.run(args, check=False)
        if rc != 0:
            if is_missing(err):
                return None
            raise self.error(args, rc, err)
        try:
            data = json.loads(out)
        except ValueError:
            raise DockerError(f"docker {' '.join(args[:2])} returned output that is not JSON") from None
        return data[0] if isinstance(data, list) and data else None

    def changes(self, container):
        _rc, out, _err = self.run(["diff", container])
        found = []
        for line in out.splitlines():
            kind, _sep, path = line.strip().partition(" ")
            if path.strip():
                found.append((kind, path.strip()))
        return found

    def list_containers(self, label=None, name=None):
        args = ["ps", "--all", "--no-trunc", "--format", "{{json .}}"]
        args += ["--filter", f"label={label}"] if label else []
        args += ["--filter", f"name={name}"] if name else []
        found = []
        for row in self._json_lines(args):
            labels = dict(pair.split("=", 1) for pair in (row.get("Labels") or "").split(",") if "=" in pair)
            found.append({"name": row["Names"].split(",")[0], "labels": labels})
        return found

    def list_images(self, label=None, reference=None):
        args = ["image", "ls", "--no-trunc", "--format", "{{json .}}"]
        args += ["--filter", f"label={label}"] if label else []
        args += ["--filter", f"reference={reference}"] if reference else []
        return [
            {
                "id": row.get("ID"),
                "repository": row["Repository"],
                "tag": row["Tag"],
                "created": _created_epoch(row.get("CreatedAt", "")),
            }
            for row in self._json_lines(args)
            if row.get("Tag") not in (None, "", "<none>")
        ]

    def path_exists(self, container, path):
        return None  # only by running something in the container: the caller decides without knowing

    def info(self):
        _rc, out, _err = self.run(["info", "--format", "{{json .}}"])
        try:
            return json.loads(out)
        except ValueError:
            raise DockerError("docker info returned output that is not JSON") from None

    # -- changing ------------------------------------------------------------------------------------------------

    def run_container(self, image, command=(), name=None, labels=None, entrypoint=None, network=None, start=True):
        args = ["run", "--detach"] if start else ["create"]
        args += ["--name", name] if name else []
        args += ["--entrypoint", entrypoint] if entrypoint else []
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        args += ["--network", network] if network else []
        _rc, out, _err = self.run(args + [image] + list(command))
        return out.strip()

    def start(self, container):
        self.run(["start", container])

    def exec(self, container, argv, data=None):
        args = ["exec"] + (["-i"] if data is not None else []) + [container] + list(argv)
        _rc, out, _err = self.run(args, data=data)
        return out

    def exec_to_file(self, container, argv, path, timeout=None):
        """`docker exec <container> <argv> > path`: one process, the output streamed as bytes, never held in memory."""
        args = ["exec", container] + [str(a) for a in argv]
        try:
            with open(path, "wb") as out:
                done = subprocess.run(
                    [self.docker_bin] + args, stdout=out, stderr=subprocess.PIPE, timeout=timeout, check=False
                )
        except OSError as exc:
            raise DockerError(
                f"cannot run '{self.docker_bin}': {exc}: install the docker CLI or put it on PATH"
            ) from None
        except subprocess.TimeoutExpired:
            raise DockerError(f"docker exec in {container} did not finish within {timeout} s") from None
        if done.returncode != 0:
            raise self.error(args, done.returncode, done.stderr.decode("utf-8", "replace"))

    def copy_paths(self, source, paths, target):
        """`docker exec -i <source> tar ... | docker cp - <target>:/`, streamed (binary, never held in memory)."""
        producer = ["exec", "-i", source] + TAR_CREATE
        consumer = ["cp", "--archive", "-", f"{target}:/"]
        first = subprocess.Popen(
            [self.docker_bin] + producer, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        second = subprocess.Popen(
            [self.docker_bin] + consumer, stdin=first.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        first.stdout.close()  # the consumer holds the only reader: the producer sees EPIPE if it stops
        first.stdin.write("".join(f"{path}\n" for path in paths).encode())
        first.stdin.close()
        _out, second_err = second.communicate()
        first_err = first.stderr.read()
        first.wait()
        for args, proc, err in ((producer, first, first_err), (consumer, second, second_err)):
            if proc.returncode != 0:
                raise self.error(args, proc.returncode, err.decode("utf-8", "replace"))

    def commit(self, container, changes=(), message=None, pause=True):
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
        return self.run_container(image, name=name, labels=labels, start=False)

    def remove_container(self, name, force=True):
        args = ["rm", "-f", name] if force else ["rm", name]
        rc, _out, err = self.run(args, check=False)
        if rc != 0 and not is_missing(err):
            raise self.error(args, rc, err)

    def remove_containers(self, names):
        if not names:
            return
        args = ["rm", "--force", *names]
        rc, _out, err = self.run(args, check=False)
        problems = [line for line in err.splitlines() if line.strip() and not is_missing(line)]
        if rc != 0 and problems:
            raise self.error(args, rc, err)

    def tag(self, source, target):
        self.run(["tag", source, target])

    def remove_image(self, ref, force=False):
        args = ["image", "rm"] + (["--force"] if force else []) + [ref]
        rc, _out, err = self.run(args, check=False)
        if rc != 0 and not is_missing(err):
            raise self.error(args, rc, err)

    def push(self, ref, env=None):
        _rc, out, _err = self.run(["push", ref], env=env)
        for line in out.splitlines():
            if "digest: " in line:
                return line.split("digest: ", 1)[1].split()[0]
        return None
