# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SsmLock: one writer per app/environment at a time, held in an AWS SSM parameter (bg_swap aws backend, SSM ledger).

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

import json
import os
import time

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import iso_time


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

    def __init__(self, client, name: str, what: str, owner: str, ttl: float = 1800, now=time.time, activity="deploy"):
        self.client = client
        self.name = name
        self.what = what
        self.activity = activity
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
                "since": iso_time(now),
                "expires": iso_time(now + self.ttl),
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
            Description=f"immutable.infra {self.activity} lock of {self.what}",
        )
        return int(response.get("Version") or 0)

    def _locked(self, info: dict) -> LockedError:
        # "by": the owner field of the SSM ledger's locks before they were SsmLocks
        owner = info.get("owner") or info.get("by") or "an unknown owner"
        since = info.get("since") or "an unknown time"
        expires = info.get("expires") or "an unknown time"
        return LockedError(
            f"locked: {self.activity} of {self.what} in progress by {owner} since {since}; "
            f"the lock expires at {expires}. "
            f"Retry later, or if that run is dead delete the SSM parameter {self.name}: "
            f"`aws ssm delete-parameter --name {self.name}`"
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
            except is_boto3_error_code("ParameterAlreadyExists"):
                pass
            try:
                current = self.client.get_parameter(Name=self.name)["Parameter"]
            except is_boto3_error_code("ParameterNotFound"):
                continue  # released in between: try again
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

    def acquire_waiting(self, timeout: float, poll: float = 0.25) -> None:
        """acquire(), retried while another run holds the lock, for up to `timeout` seconds; then LockedError."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.acquire()
            except LockedError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(poll)

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
        except is_boto3_error_code("ParameterNotFound"):
            return None
        return _parse_lock_value(value).get("token")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._current_token() != self.token:
            return  # expired and taken over by another run: not ours to delete
        try:
            self.client.delete_parameter(Name=self.name)
        except is_boto3_error_code("ParameterNotFound"):
            pass

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
