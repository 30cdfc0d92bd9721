# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Deploy locks for bg_swap: one deploy per app/environment at a time.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

A lock file is created with O_CREAT|O_EXCL (atomic on a local file system) and holds the owner as JSON
(pid, host, time). A lock whose owner pid no longer exists on this host is stale and is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time


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


def _iso(ts: float) -> str:
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
            payload = {"owner": self.owner, "pid": os.getpid(), "host": socket.gethostname(), "since": _iso(now)}
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


def _aws_error_code(exc) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def _parse_lock_value(value) -> dict:
    try:
        info = json.loads(value)
    except (TypeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


class SsmLock:
    """An exclusive lock for `<app>/<env>` held in an SSM parameter (aws backend of bg_swap).

    acquire() creates the parameter WITHOUT Overwrite: SSM answers ParameterAlreadyExists when another run holds it.
    The value is JSON: owner, a random token, since, expires (ISO 8601 UTC) and expires_epoch.

    An expired lock (its run died or hung past `ttl` seconds) is taken over with Overwrite=true; the parameter's
    version number decides a race between two runs taking over the same expired lock: only the run whose write got
    version <expired version> + 1 holds it, the other one restores the winner's value and reports `locked`.
    release() deletes the parameter only while it still holds our token.
    """

    def __init__(self, client, name: str, what: str, owner: str, ttl: float = 1800, now=time.time):
        self.client = client
        self.name = name
        self.what = what
        self.owner = owner
        self.ttl = float(ttl)
        self.now = now
        self.token = os.urandom(8).hex()
        self.held = False
        self.took_over = None  # the expired lock's value when acquire() took it over

    def _value(self) -> str:
        now = self.now()
        return json.dumps(
            {
                "owner": self.owner,
                "token": self.token,
                "since": _iso(now),
                "expires": _iso(now + self.ttl),
                "expires_epoch": round(now + self.ttl, 3),
            },
            sort_keys=True,
        )

    def _put(self, overwrite: bool) -> int:
        response = self.client.put_parameter(
            Name=self.name,
            Value=self._value(),
            Type="String",
            Overwrite=overwrite,
            Description=f"immutable.infra bg_swap deploy lock of {self.what}",
        )
        return int(response.get("Version") or 0)

    def _locked(self, info: dict) -> LockedError:
        owner = info.get("owner") or "an unknown owner"
        since = info.get("since") or "an unknown time"
        expires = info.get("expires") or "an unknown time"
        return LockedError(
            f"locked: deploy of {self.what} in progress by {owner} since {since}; the lock expires at {expires}. "
            f"Retry later, or if that run is dead delete the SSM parameter {self.name} "
            f"(aws ssm delete-parameter --name {self.name})"
        )

    def _expired(self, info: dict, modified) -> bool:
        expires = info.get("expires_epoch")
        if isinstance(expires, (int, float)):
            return self.now() >= expires
        # Not written by us (or corrupt): expired only when untouched for longer than a whole ttl.
        if modified is not None and hasattr(modified, "timestamp"):
            return self.now() - modified.timestamp() > self.ttl
        return False

    def acquire(self) -> None:
        for _attempt in range(3):
            try:
                self._put(overwrite=False)
                self.held = True
                return
            except Exception as exc:  # botocore ClientError; anything else is re-raised
                if _aws_error_code(exc) != "ParameterAlreadyExists":
                    raise
            try:
                current = self.client.get_parameter(Name=self.name)["Parameter"]
            except Exception as exc:
                if _aws_error_code(exc) == "ParameterNotFound":
                    continue  # released in between: try again
                raise
            info = _parse_lock_value(current.get("Value"))
            if not self._expired(info, current.get("LastModifiedDate")):
                raise self._locked(info)
            version = int(current.get("Version") or 0)
            mine = self._put(overwrite=True)
            if mine == version + 1:
                self.held = True
                self.took_over = info
                return
            winner = self._version_value(version + 1)
            if winner is not None and self._current_token() == self.token:
                # We overwrote the winner of the take-over race: put its value back, it holds the lock.
                self.client.put_parameter(Name=self.name, Value=winner, Type="String", Overwrite=True)
            raise self._locked(_parse_lock_value(winner))
        raise LockedError(f"locked: could not take the SSM lock {self.name} for {self.what} after 3 attempts; retry")

    def _version_value(self, version: int):
        kwargs = {"Name": self.name}
        while True:
            page = self.client.get_parameter_history(**kwargs)
            for item in page.get("Parameters") or []:
                if int(item.get("Version") or 0) == version:
                    return item.get("Value")
            if not page.get("NextToken"):
                return None
            kwargs["NextToken"] = page["NextToken"]

    def _current_token(self):
        try:
            value = self.client.get_parameter(Name=self.name)["Parameter"]["Value"]
        except Exception as exc:
            if _aws_error_code(exc) == "ParameterNotFound":
                return None
            raise
        return _parse_lock_value(value).get("token")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._current_token() != self.token:
            return  # expired and taken over by another run: not ours to delete
        try:
            self.client.delete_parameter(Name=self.name)
        except Exception as exc:
            if _aws_error_code(exc) != "ParameterNotFound":
                raise

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
