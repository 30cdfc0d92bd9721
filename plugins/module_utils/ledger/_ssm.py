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
    The whole history is kept, as the file backend keeps it (the gate and rollback walk it): the entry parameter
    holds live, previous and the newest `max_history` history records (fewer when needed to fit the Standard tier,
    4 KB) plus `archived`, the count of older records; those are in numbered parameters
    `<prefix>/<app>/<env>/history/0001`, ... (JSON lists, oldest first, each filled up to 4 KB). Parts are written
    before the entry that counts them, and a reader takes exactly `archived` records from them, so a run that dies
    between the two writes leaves a consistent ledger. The Advanced tier (8 KB) is used only for a value that
    cannot fit in 4 KB (a single record that large).
    """

    STANDARD_LIMIT = 4096
    # an app's revocations: one parameter each, <prefix>/<app>.revocations/<key> (outside <prefix>/<app>/, so an
    # environment's entries never see them), created with Overwrite=false: a second revocation of an ID changes nothing
    REVOCATIONS_SUFFIX = ".revocations"
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

    @staticmethod
    def part_name(name, number) -> str:
        return f"{name}/history/{number:04d}"

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
        archived = data.pop("archived", 0)
        if not isinstance(archived, int) or isinstance(archived, bool) or archived < 0:
            raise LedgerError(
                f"ledger parameter {name} is corrupt (archived is {archived!r}, not a count): nothing was written; "
                f"restore a good version (aws ssm get-parameter-history --name {name})"
            )
        data.pop("schema", None)
        data.setdefault("live", None)
        data.setdefault("previous", None)
        data.setdefault("history", [])
        return data, archived

    def _join(self, name, entry, archived, parts) -> dict:
        """The whole history: the first `archived` records of the parts (oldest first), then the entry's own."""
        older = []
        for number in sorted(parts):
            try:
                records = json.loads(parts[number])
            except ValueError:
                records = None
            if not isinstance(records, list) or not all(isinstance(r, dict) and "id" in r for r in records):
                raise LedgerError(
                    f"ledger history parameter {self.part_name(name, number)} is corrupt (not a JSON list of "
                    "records): nothing was written; restore a good version with aws ssm get-parameter-history"
                )
            older.extend(records)
        if len(older) < archived:
            raise LedgerError(
                f"ledger parameter {name} counts {archived} archived history records but {name}/history/ holds "
                f"{len(older)}: a history parameter was deleted; restore it (aws ssm get-parameter-history) - "
                "nothing was written"
            )
        entry["history"] = older[:archived] + entry["history"]
        return entry

    def _parts(self, path) -> dict:
        """{name: value} of every parameter under path (paged)."""
        found: dict = {}
        token = None
        while True:
            kwargs = {"Path": path, "Recursive": True}
            if token:
                kwargs["NextToken"] = token
            response = self._call(f"get_parameters_by_path {path}", "get_parameters_by_path", **kwargs)
            for param in response.get("Parameters", []):
                found[param["Name"]] = param["Value"]
            token = response.get("NextToken")
            if not token:
                return found

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
        entry, archived = self._parse(name, response["Parameter"]["Value"])
        if not archived:
            return entry
        prefix = f"{name}/history/"
        found = self._parts(prefix.rstrip("/"))
        parts = {int(k[len(prefix) :]): v for k, v in found.items() if k[len(prefix) :].isdigit()}
        return self._join(name, entry, archived, parts)

    def entry(self, app, env):
        return self._get(app, env)

    def read(self, app=None) -> dict:
        path = self.prefix if app is None else f"{self.prefix}/{check_name('app', app)}"
        state = empty_state()
        entries, parts = {}, {}
        for name, value in self._parts(path).items():
            segments = name[len(self.prefix) + 1 :].split("/")
            if segments[0].endswith(self.REVOCATIONS_SUFFIX):
                continue  # an app's revocations (revocations()), not an environment's entry
            if len(segments) == 2 and not segments[1].endswith(".lock"):
                entries[(segments[0], segments[1])] = (name, *self._parse(name, value))
            elif len(segments) == 4 and segments[2] == "history" and segments[3].isdigit():
                parts.setdefault((segments[0], segments[1]), {})[int(segments[3])] = value
        for (app_name, env), (name, entry, archived) in sorted(entries.items()):
            joined = self._join(name, entry, archived, parts.get((app_name, env), {})) if archived else entry
            state["apps"].setdefault(app_name, {})[env] = joined
        return state

    def revocations_path(self, app) -> str:
        return f"{self.prefix}/{check_name('app', app)}{self.REVOCATIONS_SUFFIX}"

    def revocations(self, app) -> list:
        path = self.revocations_path(app)
        items = []
        for name, value in self._parts(path).items():
            try:
                item = json.loads(value)
            except ValueError:
                item = None
            if not isinstance(item, dict) or "id" not in item or "kind" not in item:
                raise LedgerError(
                    f"revocation parameter {name} is corrupt (not a JSON revocation): restore it with aws ssm"
                    " get-parameter-history, or delete it (the revocation is then lost)"
                )
            items.append(item)
        return sorted(items, key=lambda item: (str(item.get("at")), str(item.get("id"))))

    def _add_revocation(self, app, item, dry_run):
        from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import add_revocation
        from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import revocation_key

        changed, _after, stands = add_revocation(self.revocations(app), item)
        if not changed or dry_run:
            return changed, stands
        name = f"{self.revocations_path(app)}/{revocation_key(item)}"
        value = self._dump(item)
        kwargs = {"Name": name, "Value": value, "Type": "String", "Overwrite": False}
        if self._fit(value):
            kwargs["Tier"] = self._fit(value)
        try:
            self.client.put_parameter(**kwargs)
        except is_boto3_error_code("ParameterAlreadyExists"):
            return False, self._one(name)  # revoked by another run meanwhile: that one stands
        except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
            raise LedgerError(
                f"SSM put_parameter {name} failed: {exc}", original=exc, context=f"SSM put_parameter {name} failed"
            ) from exc
        return True, stands

    def _one(self, name) -> dict:
        response = self._call(f"get_parameter {name}", "get_parameter", Name=name)
        return json.loads(response["Parameter"]["Value"])

    def _fit(self, text) -> str | None:
        """The tier a value needs: "" (Standard), "Advanced", or None when it does not fit at all."""
        size = len(text.encode("utf-8"))
        return "" if size <= self.STANDARD_LIMIT else "Advanced" if size <= self.ADVANCED_LIMIT else None

    def pack(self, records) -> list:
        """Oldest first, greedily: each part a JSON list of as many records as fit in 4 KB (8 KB for a record that
        alone does not fit in 4 KB). The same records always give the same parts, and more records only extend
        the last part and add new ones: the earlier parts never change."""
        parts: list = []
        current: list = []
        for record in records:
            if current and self._fit(self._dump(current + [record])) != "":
                parts.append(current)
                current = []
            current.append(record)
            if self._fit(self._dump(current)) is None:
                raise LedgerError(
                    "a ledger history record does not fit in an SSM parameter (8 KB): shorten the reason or the "
                    "record reference"
                )
        if current:
            parts.append(current)
        return [self._dump(part) for part in parts]

    @staticmethod
    def _dump(value) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def encode(self, entry, archived=0) -> tuple:
        """(entry value, tier or None, archived count): the newest records that fit stay in the entry (at most
        max_history); the records before them (never fewer than `archived`, already written) go to the parts."""
        history = entry.get("history", [])
        start = max(archived, len(history) - self.max_history, 0)
        for wanted in ("", "Advanced"):
            for count in range(start, len(history) + 1):
                value = dict(entry, schema=SCHEMA, history=history[count:], archived=count)
                if not count:
                    value.pop("archived")
                text = self._dump(value)
                if self._fit(text) == wanted:
                    return text, wanted or None, count
        raise LedgerError(
            "the ledger record does not fit in an SSM parameter (8 KB even without history): shorten the "
            "record reference"
        )

    def _put(self, name, value, tier) -> None:
        kwargs = {"Name": name, "Value": value, "Type": "String", "Overwrite": True}
        if tier:
            kwargs["Tier"] = tier
        self._call(f"put_parameter {name}", "put_parameter", **kwargs)

    def _archived(self, name) -> int:
        try:
            response = self.client.get_parameter(Name=name)
        except is_boto3_error_code("ParameterNotFound"):
            return 0
        except (BotoCoreError, ClientError) as exc:  # pylint: disable=duplicate-except
            raise LedgerError(
                f"SSM get_parameter {name} failed: {exc}", original=exc, context=f"SSM get_parameter {name} failed"
            ) from exc
        return self._parse(name, response["Parameter"]["Value"])[1]

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
                archived = self._archived(name)
                value, tier, count = self.encode(result.after, archived)
                history = result.after.get("history", [])
                if count > archived:  # parts first: until the entry counts them, readers ignore the new records
                    kept = len(self.pack(history[:archived]))
                    for number, part in enumerate(self.pack(history[:count]), start=1):
                        if number >= kept:  # the last old part may grow; the ones before it never change
                            self._put(self.part_name(name, number), part, self._fit(part) or None)
                self._put(name, value, tier)
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
