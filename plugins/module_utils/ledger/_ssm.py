# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SSM backend of the ledger: one AWS SSM Parameter Store parameter per app and environment.

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

import json
import re

try:
    from botocore.exceptions import BotoCoreError
    from botocore.exceptions import ClientError
except ImportError:  # only the SSM backend needs botocore; the ledger module checks for it before using this one
    BotoCoreError = ClientError = None

from ansible_collections.amazon.aws.plugins.module_utils.botocore import is_boto3_error_code

from ansible_collections.immutable.infra.plugins.module_utils.aws._ssm_lock import SsmLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import SCHEMA
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_name
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import empty_state
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import entry_problem
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import Ledger


class SsmLedger(Ledger):
    """AWS SSM Parameter Store: one String parameter per app/env, `<prefix>/<app>/<env>`, holding the entry as JSON.

    Concurrency: common._locks.SsmLock on `<prefix>/<app>/<env>.lock` (created with Overwrite=false: SSM refuses
    a second create with ParameterAlreadyExists), waited for up to lock_timeout, deleted after the write; a lock
    left by a run that died expires after LOCK_TTL. Parameter versions are no compare-and-swap (put_parameter has
    no "if version" condition), so they cannot prevent a lost update; the lock can.
    History is bounded: the newest `max_history` records, fewer when needed to fit the Standard tier (4 KB); the
    Advanced tier (8 KB) is used only when a single record does not fit in 4 KB.
    """

    STANDARD_LIMIT = 4096
    # a ledger write holds its lock for about a second: a lock older than this belongs to a run that died
    LOCK_TTL = 600
    ADVANCED_LIMIT = 8192

    def __init__(self, client, prefix, lock_timeout=60.0, max_history=20, owner=None):
        prefix = "/" + str(prefix).strip("/")
        if not re.match(r"^(/[A-Za-z0-9_.-]+)+$", prefix) or re.match(r"^/(aws|ssm)", prefix, re.IGNORECASE):
            raise LedgerError(
                f"prefix {prefix!r} is not a valid SSM parameter path: use /segments of letters, digits, '.', '_' "
                "and '-', not starting with /aws or /ssm (for example /immutable-infra/ledger)"
            )
        self.client = client
        self.prefix = prefix
        self.location = prefix
        self.lock_timeout = lock_timeout
        self.max_history = max(1, int(max_history))
        self.owner = owner or "immutable.infra"

    def name(self, app, env) -> str:
        return f"{self.prefix}/{check_name('app', app)}/{check_name('environment', env)}"

    def _call(self, what, method, **kwargs):
        try:
            return getattr(self.client, method)(**kwargs)
        except (BotoCoreError, ClientError) as exc:  # the caller reports them with fail_json_aws
            raise LedgerError(f"SSM {what} failed: {exc}", original=exc, context=f"SSM {what} failed") from exc

    def _parse(self, name, value):
        try:
            data = json.loads(value)
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        else:
            problem = entry_problem(data) if isinstance(data, dict) else "is not an object"
            if not problem and data.get("schema", SCHEMA) != SCHEMA:
                problem = f"schema is {data.get('schema')!r}, this collection reads schema {SCHEMA}"
        if problem:
            raise LedgerError(
                f"ledger parameter {name} is corrupt ({problem}): nothing was written; restore a good version "
                f"(aws ssm get-parameter-history --name {name}, then put-parameter --overwrite with that value) "
                "or fix the JSON by hand"
            )
        data.pop("schema", None)
        data.setdefault("live", None)
        data.setdefault("previous", None)
        data.setdefault("history", [])
        return data

    def _get(self, app, env):
        name = self.name(app, env)
        try:
            response = self.client.get_parameter(Name=name)
        except is_boto3_error_code("ParameterNotFound"):
            return None
        except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
            raise LedgerError(
                f"SSM get_parameter {name} failed: {exc}", original=exc, context=f"SSM get_parameter {name} failed"
            ) from exc
        return self._parse(name, response["Parameter"]["Value"])

    def entry(self, app, env):
        return self._get(app, env)

    def read(self, app=None) -> dict:
        path = self.prefix if app is None else f"{self.prefix}/{check_name('app', app)}"
        state = empty_state()
        token = None
        while True:
            kwargs = {"Path": path, "Recursive": True}
            if token:
                kwargs["NextToken"] = token
            response = self._call(f"get_parameters_by_path {path}", "get_parameters_by_path", **kwargs)
            for param in response.get("Parameters", []):
                parts = param["Name"][len(self.prefix) + 1 :].split("/")
                if len(parts) != 2 or parts[1].endswith(".lock"):
                    continue
                state["apps"].setdefault(parts[0], {})[parts[1]] = self._parse(param["Name"], param["Value"])
            token = response.get("NextToken")
            if not token:
                return state

    def encode(self, entry) -> tuple:
        """(JSON value, tier or None): the newest history records that fit, Advanced only when one cannot."""
        history = entry.get("history", [])
        for limit, tier in ((self.STANDARD_LIMIT, None), (self.ADVANCED_LIMIT, "Advanced")):
            for keep in range(min(self.max_history, len(history)), 0, -1):
                value = dict(entry, schema=SCHEMA, history=history[-keep:])
                text = json.dumps(value, sort_keys=True, separators=(",", ":"))
                if len(text.encode("utf-8")) <= limit:
                    return text, tier
        raise LedgerError(
            "the ledger record does not fit in an SSM parameter (8 KB even with one history entry): shorten the "
            "reason or the record reference"
        )

    def _update(self, app, env, mutate):
        name = self.name(app, env)
        lock = SsmLock(
            self.client, f"{name}.lock", f"{app}/{env}", self.owner, ttl=self.LOCK_TTL, activity="ledger write"
        )
        try:
            lock.acquire_waiting(self.lock_timeout)
        except LockedError as exc:
            held = str(exc).removeprefix("locked: ")
            raise LedgerError(f"ledger parameter {name} stayed locked for {self.lock_timeout:g} s: {held}") from None
        except (BotoCoreError, ClientError) as exc:
            raise LedgerError(
                f"SSM put_parameter {lock.name} failed: {exc}",
                original=exc,
                context=f"SSM put_parameter {lock.name} failed",
            ) from exc
        try:
            result = mutate(self.read(app))
            if result.changed:
                value, tier = self.encode(result.after)
                kwargs = {"Name": name, "Value": value, "Type": "String", "Overwrite": True}
                if tier:
                    kwargs["Tier"] = tier
                self._call(f"put_parameter {name}", "put_parameter", **kwargs)
                result.after = self._parse(name, value)
            return result
        finally:
            try:
                lock.release()
            except (BotoCoreError, ClientError) as exc:
                raise LedgerError(
                    f"SSM delete_parameter {lock.name} failed: {exc}",
                    original=exc,
                    context=f"SSM delete_parameter {lock.name} failed",
                ) from exc
