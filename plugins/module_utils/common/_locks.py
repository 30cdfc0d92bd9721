# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection's local locks: one writer per app/environment at a time.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

- FileLock (bg_swap docker backend): a lock file created with O_CREAT|O_EXCL (atomic on a local file system)
  holding the owner as JSON (pid, host, time); a lock whose owner pid no longer exists on this host is stale and
  is taken over.
- flock_exclusive (file ledger): an fcntl lock on a lock file, released by the kernel when its holder dies.
SsmLock (an SSM parameter) is in module_utils/aws/_ssm_lock.py.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from contextlib import contextmanager


class LockedError(Exception):
    """Another run holds the lock."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def iso_time(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class FileLock:
    """An exclusive lock file for `<app>/<env>`; use as a context manager or acquire()/release()."""

    def __init__(self, path: str, what: str, owner: str | None = None):
        self.path = path
        self.what = what
        self.owner = owner or f"pid {os.getpid()} on {socket.gethostname()}"
        self.held = False

    def read_owner(self) -> dict | None:
        try:
            with open(self.path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _is_stale(self, info: dict) -> bool:
        if not info:
            # Unreadable or half-written: only stale when old enough that no writer can still be busy.
            try:
                return time.time() - os.stat(self.path).st_mtime > 60
            except FileNotFoundError:
                return True
        if info.get("host") != socket.gethostname():
            return False
        pid = info.get("pid")
        return isinstance(pid, int) and not _pid_alive(pid)

    def acquire(self) -> None:
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.read_owner()
                if info is None:
                    continue  # released between our open and read: try again
                if self._is_stale(info):
                    self._remove_stale(info)
                    continue
                owner = info.get("owner") or "an unknown owner"
                since = info.get("since") or "an unknown time"
                raise LockedError(
                    f"locked: deploy of {self.what} in progress by {owner} since {since}; "
                    f"retry later or remove {self.path} if that run is dead"
                ) from None
            now = time.time()
            payload = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "since": iso_time(now)}
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            self.held = True
            return
        raise LockedError(f"locked: could not take {self.path} for {self.what} after 3 attempts; retry later")

    def _remove_stale(self, info: dict) -> None:
        # Rename first so two runs that both saw the stale lock cannot both delete a fresh one.
        grave = f"{self.path}.stale-{os.getpid()}"
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return
        try:
            with open(grave, encoding="utf-8") as handle:
                moved = json.load(handle)
        except (OSError, ValueError):
            moved = {}
        if moved and info and moved != info:
            # Someone replaced the stale lock with a live one in between: put it back.
            try:
                os.link(grave, self.path)
            except FileExistsError:
                pass
        os.unlink(grave)

    def release(self) -> None:
        if not self.held:
            return
        info = self.read_owner()
        if info and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.held = False

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False


@contextmanager
def flock_exclusive(path: str, timeout: float, poll: float = 0.02):
    """Hold an exclusive fcntl lock on `path` (created if missing) for the block; TimeoutError after `timeout` s.

    OSError from creating or locking the file passes through (the caller names the directory to fix)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{path} is locked by another process")
            time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
