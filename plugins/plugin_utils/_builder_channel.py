# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One long-lived channel into a builder container, shared by every task of a run (the SSH ControlPersist idea).

PRIVATE to the collection: used by the immutable.infra.builder connection plugin; it may change without notice.

Ansible runs each task in a fresh worker process, so a connection plugin cannot keep a process open across tasks
itself. The first task therefore starts a small relay daemon on the controller (this file run as a script). The
relay starts ``docker exec -i <container> python3 -B -c <agent>`` once, listens on a unix socket in a private
0700 directory, and passes each task's requests to the agent and the answers back, one request at a time. Every
later task connects to the socket: no ``docker exec``, no docker CLI start-up, no shell per command.

The relay exits when it has been idle for ``idle_timeout`` seconds, when the agent ends (the builder was removed)
or on any protocol error (it then kills the agent, so a half-answered request can never be read by the next task).
It logs life-cycle events only, never commands or their data, to ``<socket>.log``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time

AGENT_SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_builder_agent.py")
START_TIMEOUT = 30


class ChannelError(Exception):
    """The channel could not be started or broke; the message says why."""


def _read_exact(sock_or_file, size):
    chunks = []
    while size:
        if isinstance(sock_or_file, socket.socket):
            chunk = sock_or_file.recv(min(size, 1 << 20))
        else:
            chunk = sock_or_file.read(min(size, 1 << 20))
        if not chunk:
            raise EOFError("channel closed")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_header(stream):
    size = struct.unpack(">I", _read_exact(stream, 4))[0]
    return json.loads(_read_exact(stream, size).decode("utf-8"))


def _encode_header(header):
    encoded = json.dumps(header).encode("utf-8")
    return struct.pack(">I", len(encoded)) + encoded


def channel_dir():
    """A per-user 0700 directory for the relays' sockets; refuses one that someone else could tamper with."""
    path = os.path.join(tempfile.gettempdir(), f"immutable-infra-builder-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not os.path.isdir(path) or os.path.islink(path):
        raise ChannelError(
            f"{path} must be a directory owned by uid {os.getuid()} with mode 0700: remove it and run again"
        )
    return path


LOG_KEEP_SECONDS = 7 * 24 * 3600


def sweep_old_logs(directory, keep_seconds=LOG_KEEP_SECONDS, now=None):
    """Remove the logs that relays left after an error (kept for whoever investigates) once they are older than
    keep_seconds and no relay of theirs is serving; on a shared CI runner they would otherwise pile up forever."""
    now = time.time() if now is None else now
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            if not name.endswith(".sock.log"):
                continue
            log = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                if os.path.exists(log[: -len(".log")]) or now - os.lstat(log).st_mtime < keep_seconds:
                    continue
                os.unlink(log)
                removed.append(name)
    return removed


def socket_path(docker, container, user):
    identity = json.dumps(
        [docker, os.environ.get("DOCKER_HOST", ""), os.environ.get("DOCKER_CONTEXT", ""), container, user or ""]
    )
    return os.path.join(channel_dir(), hashlib.sha256(identity.encode()).hexdigest()[:24] + ".sock")


def agent_argv(docker, container, user, python):
    with open(AGENT_SOURCE_PATH, encoding="utf-8") as source:
        agent = source.read()
    return [docker, "exec", "-i"] + (["-u", user] if user else []) + [container, python, "-B", "-c", agent]


class Client:
    """What a task's worker process uses: connects to the relay, starting it first when none answers."""

    def __init__(self, docker, container, user=None, python="python3", idle_timeout=60):
        self.config = {
            "docker": docker,
            "container": container,
            "user": user,
            "python": python,
            "idle_timeout": idle_timeout,
        }
        self.path = socket_path(docker, container, user)

    def _connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            return None
        return sock

    def _spawn_relay(self, stdout, lock_fd=None):
        """The relay process, in its own session, logging to <socket>.log; with lock_fd, it inherits the start lock."""
        config = dict(self.config, socket=self.path)
        if lock_fd is not None:
            config["lock_fd"] = lock_fd
        with open(self.path + ".log", "ab") as log:
            return subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), json.dumps(config)],
                stdin=subprocess.DEVNULL,
                stdout=log if stdout is None else stdout,
                stderr=log,
                start_new_session=True,
                close_fds=True,
                pass_fds=() if lock_fd is None else (lock_fd,),
            )

    def _start_relay(self):
        relay = self._spawn_relay(subprocess.PIPE)
        ready, _unused_w, _unused_x = select.select([relay.stdout], [], [], START_TIMEOUT + 5)
        line = relay.stdout.readline().decode("utf-8", "replace").strip() if ready else ""
        relay.stdout.close()
        if line != "ready":
            with contextlib.suppress(OSError):
                relay.kill()
            relay.wait()
            raise ChannelError(line or f"the builder channel did not start within {START_TIMEOUT} s")

    def open(self):
        sock = self._connect()
        if sock:
            return sock
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sock = self._connect()
            if sock:
                return sock
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self._start_relay()
        sock = self._connect()
        if not sock:
            raise ChannelError(f"the builder channel started but {self.path} does not answer")
        return sock

    def start_in_background(self):
        """Start the relay without waiting for it (the bake_builder action does, right after starting the builder).

        The relay inherits the start lock and releases it once it serves, so the first request waits for this
        relay instead of starting a second one. Returns False when a relay serves or is being started already.
        """
        with open(self.path + ".lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            # not probed by connecting: the relay takes a connection without a request for a broken task and stops
            # (a stale socket of a killed relay is left to the connection, which replaces it)
            if os.path.exists(self.path):
                return False
            self._spawn_relay(None, lock_fd=lock.fileno())
        return True

    def request(self, header, payload=b""):
        """Send one request; return (answer header, answer payload)."""
        sock = self.open()
        try:
            sock.sendall(_encode_header(dict(header, len=len(payload))))
            if payload:
                sock.sendall(payload)
            answer = _read_header(sock)
            return answer, _read_exact(sock, int(answer.get("len", 0)))
        except (OSError, EOFError, ValueError) as exc:
            raise ChannelError(f"the builder channel broke ({exc}); the builder may have stopped") from exc
        finally:
            sock.close()

    def stop(self):
        sock = self._connect()
        if sock:
            with contextlib.suppress(OSError, EOFError, ValueError):
                sock.sendall(_encode_header({"op": "relay-stop", "len": 0}))
                _read_header(sock)
            sock.close()


def _log(message):
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} relay {os.getpid()}: {message}\n")
    sys.stderr.flush()


def _relay_one(conn, agent):
    header = _read_header(conn)
    if header.get("op") == "relay-stop":
        conn.sendall(_encode_header({"len": 0}))
        return False
    agent.stdin.write(_encode_header(header))
    remaining = int(header.get("len", 0))
    while remaining:
        chunk = conn.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("the task went away while sending")
        agent.stdin.write(chunk)
        remaining -= len(chunk)
    agent.stdin.flush()
    # Wait for the answer; a task that goes away meanwhile (killed worker, timeout) ends the relay: the agent is
    # busy with a command nobody will read, and the next task must not get its answer.
    while True:
        ready, _unused_w, _unused_x = select.select([agent.stdout, conn], [], [])
        if agent.stdout in ready:
            break
        if not conn.recv(1, socket.MSG_PEEK):
            raise EOFError("the task went away before the answer")
    answer = _read_header(agent.stdout)
    remaining = int(answer.get("len", 0))
    conn.sendall(_encode_header(answer))
    while remaining:
        chunk = agent.stdout.read1(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("the agent ended while answering")
        conn.sendall(chunk)
        remaining -= len(chunk)
    return True


def serve(config):
    path = config["socket"]
    for name in sweep_old_logs(os.path.dirname(path)):
        _log(f"removed {name}, a log older than {LOG_KEEP_SECONDS // 86400} days of a relay no longer serving")
    try:
        agent = subprocess.Popen(
            agent_argv(config["docker"], config["container"], config["user"], config["python"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        print(f"cannot run {config['docker']}: {exc}", flush=True)
        return 1
    agent.stdin.write(_encode_header({"op": "ping", "len": 0}))
    agent.stdin.flush()
    ready, _unused_w, _unused_x = select.select([agent.stdout], [], [], START_TIMEOUT)
    try:
        if not ready:
            raise EOFError(f"no answer within {START_TIMEOUT} s")
        _read_header(agent.stdout)
    except (EOFError, ValueError) as exc:
        agent.kill()
        error = agent.communicate()[1].decode("utf-8", "replace").strip().splitlines()
        print(
            f"cannot start the agent in builder {config['container']} with {config['python']}"
            f" ({error[-1] if error else exc})",
            flush=True,
        )
        return 1
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    if config.get("lock_fd") is not None:
        os.close(config["lock_fd"])  # started in the background: serving now, so the start lock is free
    else:
        print("ready", flush=True)
    sys.stdout.close()
    status = 1
    try:
        while True:
            ready, _unused_w, _unused_x = select.select([server, agent.stdout], [], [], config["idle_timeout"])
            if not ready:
                status = 0  # idle: nothing to keep
                return status
            if agent.stdout in ready:
                status = 0  # the agent ended: the builder was stopped or removed
                return status
            conn, _unused_addr = server.accept()
            with conn:
                if not _relay_one(conn, agent):
                    status = 0
                    return status
    except (OSError, EOFError, ValueError) as exc:
        _log(f"stopping after a broken request: {exc}")
        return status
    finally:
        # a clean stop leaves nothing behind; after an error the log stays for whoever investigates
        for leftover in [path, path + ".lock"] + ([path + ".log"] if status == 0 else []):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        server.close()
        with contextlib.suppress(OSError):
            agent.stdin.close()
        if agent.poll() is None:
            agent.kill()
        agent.wait()


if __name__ == "__main__":
    sys.exit(serve(json.loads(sys.argv[1])))
