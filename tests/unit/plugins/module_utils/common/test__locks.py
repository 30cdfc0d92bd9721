"""Deploy lock files: exclusive, informative when held, stale locks of dead pids taken over."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.common._locks import FileLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError


def test_second_holder_is_refused_with_owner_and_path(tmp_path):
    path = str(tmp_path / "web-prod.bg.lock")
    with FileLock(path, "web/prod"):
        with pytest.raises(LockedError) as err:
            FileLock(path, "web/prod").acquire()
    msg = str(err.value)
    assert msg.startswith("locked: deploy of web/prod in progress by pid ") and path in msg and "since" in msg
    assert not (tmp_path / "web-prod.bg.lock").exists()


def test_stale_lock_of_dead_pid_is_taken_over(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    path = tmp_path / "l.lock"
    path.write_text(json.dumps({"owner": "x", "pid": dead.pid, "host": socket.gethostname(), "since": "t"}))
    lock = FileLock(str(path), "web/prod")
    lock.acquire()
    assert json.loads(path.read_text())["owner"] == lock.owner
    lock.release()


def test_lock_of_other_host_is_never_stale(tmp_path):
    path = tmp_path / "l.lock"
    path.write_text(json.dumps({"owner": "ci-1", "pid": 1, "host": "elsewhere", "since": "t"}))
    with pytest.raises(LockedError, match="by ci-1 since t"):
        FileLock(str(path), "web/prod").acquire()
