# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion ledger: per app and environment, the live artifact ID, the previous one and the history.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Pure planners (no I/O): canonical_id, accepted_ids, check_promotion, check_rollback, plan_record.
Backends behind one interface (Ledger): FileLedger (a local JSON file, atomic writes, fcntl lock) and
SsmLedger (one AWS SSM parameter per app/env, a lock parameter created without Overwrite).
The schema is documented in docs/ledger.md.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import json
import os
import re
import time

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write

SCHEMA = 1
ACTIONS = ("deploy", "promote", "rollback")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AMI_RE = re.compile(r"^ami-(?:[0-9a-f]{8}|[0-9a-f]{17})$")
REGION_RE = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+$")
DIGEST_RE = re.compile(r"^[^\s@]+@sha256:[0-9a-fA-F]{64}$")


class LedgerError(Exception):
    """A ledger operation was refused; the message names the bad input and the fix. Nothing was written.

    `original` keeps a backend exception (for example a botocore ClientError) when there is one.
    """

    def __init__(self, message: str, original: BaseException | None = None, context: str | None = None):
        super().__init__(message)
        self.message = message
        self.original = original
        self.context = context or message


# ---------------------------------------------------------------------------------------------------------------
# Identifiers and names
# ---------------------------------------------------------------------------------------------------------------


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_name(kind: str, value) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or value.endswith(".lock"):
        raise LedgerError(
            f"{kind} name {value!r} is not valid: use letters, digits, '.', '_' and '-' "
            "(starting with a letter or digit, not ending in '.lock')"
        )
    return value


def normalize_id(value):
    """Return the immutable artifact ID in its stored form, or raise LedgerError.

    Accepted: a container digest reference `repo@sha256:<64 hex>`, an AMI ID `ami-...`, or a region map
    `{"eu-west-1": "ami-...", ...}` (also as a JSON string). Tags and names are refused: they can move.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError:
                raise LedgerError(f"artifact id {value!r} looks like a region map but is not valid JSON") from None
        elif AMI_RE.match(text):
            return text
        elif DIGEST_RE.match(text):
            repo, digest = text.split("@", 1)
            return f"{repo}@{digest.lower()}"
        else:
            raise LedgerError(
                f"artifact id {value!r} is not immutable: use the digest reference repo@sha256:<64 hex> "
                "(push_image returns it), an AMI id ami-... or a region map {region: ami-...} (bake_ami returns it); "
                "never a tag or a name"
            )
    if isinstance(value, dict):
        if not value:
            raise LedgerError("artifact id is an empty region map: give at least one {region: ami-...}")
        out = {}
        for region in sorted(value):
            ami = value[region]
            if not isinstance(region, str) or not REGION_RE.match(region):
                raise LedgerError(f"artifact id region map has an invalid region {region!r} (expected e.g. eu-west-1)")
            if not isinstance(ami, str) or not AMI_RE.match(ami.strip()):
                raise LedgerError(f"artifact id region map has {region}: {ami!r}, which is not an AMI id (ami-...)")
            out[region] = ami.strip()
        return out
    raise LedgerError(
        f"artifact id {value!r} has type {type(value).__name__}: give a string (repo@sha256:..., ami-...) "
        "or a region map {region: ami-...}"
    )


def canonical_id(value) -> str | None:
    """A string that is equal for equal artifact IDs (key order and digest case do not matter)."""
    if value is None:
        return None
    value = normalize_id(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def same_id(left, right) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return canonical_id(left) == canonical_id(right)


def show_id(value) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def empty_state() -> dict:
    return {"schema": SCHEMA, "apps": {}}


def empty_entry() -> dict:
    return {"live": None, "previous": None, "history": []}


# ---------------------------------------------------------------------------------------------------------------
# Planners (pure)
# ---------------------------------------------------------------------------------------------------------------


def check_chain(chain) -> list:
    if not isinstance(chain, (list, tuple)) or not chain:
        raise LedgerError("chain is empty: give the ordered environments, for example [dev, staging, prod]")
    seen = set()
    for env in chain:
        check_name("environment", env)
        if env in seen:
            raise LedgerError(f"chain {' -> '.join(chain)} names environment {env!r} twice")
        seen.add(env)
    return list(chain)


def _check_env(chain, env, what="environment") -> None:
    if env not in chain:
        raise LedgerError(
            f"unknown {what} {env!r}: the chain is {' -> '.join(chain)}; "
            "use one of those or add it to the chain in inventory/group vars"
        )


def get_entry(state: dict, app: str, env: str) -> dict | None:
    return ((state or {}).get("apps") or {}).get(app, {}).get(env)


def accepted_ids(entry: dict | None) -> dict:
    """IDs an environment vouches for: canonical id -> why (for messages).

    Walking the history in order: a record with verified=true vouches for its id, verified=false withdraws it, and
    a rollback withdraws the id that was live before it (it was judged bad).
    """
    verdict: dict = {}
    live_before = None
    for item in (entry or {}).get("history", []):
        key = canonical_id(item.get("id"))
        if item.get("action") == "rollback" and live_before is not None:
            verdict[canonical_id(live_before)] = "rolled back"
        if item.get("verified"):
            verdict[key] = "ok"
        else:
            verdict[key] = "not verified"
        live_before = item.get("id")
    return verdict


def check_promotion(chain, ledger_state, app, from_env, to_env, artifact_id, force=False, reason=None, known_ids=None):
    """Check a deploy (from_env None) or a promotion against the chain gate; return the plan or raise LedgerError.

    The plan: {app, env, from_env, id, action, forced, overridden}; `forced` is true only when force was needed,
    `overridden` lists the gate messages that force overrode. Never overridable: an unknown environment, a
    from_env without a live artifact, an invalid or unknown artifact id, force without a reason.
    """
    chain = check_chain(chain)
    check_name("app", app)
    _check_env(chain, to_env)
    if from_env is not None:
        _check_env(chain, from_env, "from_env environment")
    if force and not (reason or "").strip():
        raise LedgerError("force needs a non-empty reason: it is recorded in the ledger history next to the override")

    overridden = []
    if from_env is None:
        action = "deploy"
        if artifact_id is None:
            raise LedgerError(f"deploy to {to_env!r} needs artifact_id (the immutable id from the artifact record)")
        artifact_id = normalize_id(artifact_id)
        if to_env != chain[0]:
            index = chain.index(to_env)
            overridden.append(
                f"{to_env!r} is not the first environment of the chain {' -> '.join(chain)}: it only accepts "
                f"artifacts promoted from {chain[index - 1]!r} (set from_env: {chain[index - 1]}); a deploy goes to "
                f"{chain[0]!r}"
            )
    else:
        action = "promote"
        source = get_entry(ledger_state, app, from_env)
        if not source or source.get("live") is None:
            raise LedgerError(
                f"from_env {from_env!r} has no live artifact for app {app!r}: deploy or promote one there first "
                f"(the chain is {' -> '.join(chain)})"
            )
        artifact_id = normalize_id(source["live"] if artifact_id is None else artifact_id)
        if to_env == from_env:
            raise LedgerError(f"promotion from {from_env!r} to itself: promote to the next environment of the chain")
        index = chain.index(from_env)
        successor = chain[index + 1] if index + 1 < len(chain) else None
        if to_env != successor:
            if successor is None:
                overridden.append(f"{from_env!r} is the last environment of the chain {' -> '.join(chain)}")
            else:
                overridden.append(
                    f"promotion from {from_env!r} to {to_env!r} skips the chain {' -> '.join(chain)}: "
                    f"{from_env!r} promotes to {successor!r} only"
                )
        verdict = accepted_ids(source).get(canonical_id(artifact_id))
        if verdict != "ok":
            live = show_id(source["live"])
            if verdict is None:
                why = f"was never live in {from_env!r} (live there: {live})"
            elif verdict == "rolled back":
                why = f"was rolled back in {from_env!r} (live there: {live})"
            else:
                why = f"was live in {from_env!r} but its last record there says verified=false"
            overridden.append(f"artifact {show_id(artifact_id)} {why}")

    if known_ids is not None:
        known = {canonical_id(known) for known in known_ids}
        if canonical_id(artifact_id) not in known:
            raise LedgerError(
                f"artifact id {show_id(artifact_id)} is unknown to every artifact record: bake it first "
                "(bake_ami / push_image write the record) or pass the id from an existing record"
            )

    if overridden and not force:
        raise LedgerError(
            f"{to_env!r} refuses artifact {show_id(artifact_id)} for app {app!r}: {'; '.join(overridden)}. "
            f"Promote along the chain {' -> '.join(chain)} (each environment accepts only what is live and "
            "verified in the one before it) or set force: true with a reason"
        )
    return {
        "app": app,
        "env": to_env,
        "from_env": from_env,
        "id": artifact_id,
        "action": action,
        "forced": bool(overridden),
        "overridden": overridden,
    }


def check_rollback(chain, ledger_state, app, env, artifact_id=None):
    """Plan a rollback of app in env to artifact_id (default: the previous one); raise LedgerError when impossible."""
    if chain is not None:
        _check_env(check_chain(chain), env)
    check_name("app", app)
    entry = get_entry(ledger_state, app, env)
    if not entry or entry.get("live") is None:
        raise LedgerError(f"app {app!r} has nothing live in {env!r}: there is nothing to roll back")
    history = entry.get("history", [])
    if artifact_id is None and history and history[-1].get("action") == "rollback":
        # Already rolled back: "previous" is now the artifact rolled away from, never a default target.
        target = entry["live"]
    else:
        target = entry.get("previous") if artifact_id is None else normalize_id(artifact_id)
    if target is None:
        raise LedgerError(
            f"app {app!r} in {env!r} has no previous artifact to roll back to (live: {show_id(entry['live'])}); "
            "give artifact_id of an artifact that was live there before"
        )
    if not any(same_id(item.get("id"), target) for item in entry.get("history", [])):
        raise LedgerError(
            f"artifact {show_id(target)} was never live for app {app!r} in {env!r}: a rollback returns to an "
            "artifact that was live there before (see the history with immutable.infra.ledger_info)"
        )
    return {"app": app, "env": env, "from_env": None, "id": normalize_id(target), "action": "rollback"}


def plan_record(
    entry,
    artifact_id,
    action,
    by,
    at,
    from_env=None,
    record=None,
    reason=None,
    forced=False,
    verified=True,
):
    """current entry + what happened -> (changed, new entry). Pure; never mutates `entry`.

    Idempotent: the id already live, recorded last with the same action and verified flag, is changed=false.
    deploy/promote: live <- id, previous <- the old live (when it differs). rollback: live and previous swap
    (rollback to an older id: live <- that id, previous <- the old live).
    """
    if action not in ACTIONS:
        raise LedgerError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    current = copy.deepcopy(entry) if entry else empty_entry()
    if action == "rollback" and artifact_id is None:
        artifact_id = current.get("previous")
        if artifact_id is None:
            raise LedgerError("rollback: there is no previous artifact to roll back to")
    artifact_id = normalize_id(artifact_id)
    history = current.setdefault("history", [])
    last = history[-1] if history else None
    if (
        same_id(current.get("live"), artifact_id)
        and last is not None
        and last.get("action") == action
        and bool(last.get("verified")) == bool(verified)
    ):
        return False, current
    old_live = current.get("live")
    if old_live is not None and not same_id(old_live, artifact_id):
        current["previous"] = old_live
    current["live"] = artifact_id
    history.append(
        {
            "id": artifact_id,
            "at": at,
            "by": by,
            "action": action,
            "from_env": from_env,
            "record": record,
            "reason": reason,
            "forced": bool(forced),
            "verified": bool(verified),
        }
    )
    return True, current


# ---------------------------------------------------------------------------------------------------------------
# Validation of stored data
# ---------------------------------------------------------------------------------------------------------------


def _entry_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "is not an object"
    if not isinstance(entry.get("history", []), list):
        return "history is not a list"
    for key in ("live", "previous"):
        if entry.get(key) is not None:
            try:
                normalize_id(entry[key])
            except LedgerError as exc:
                return f"{key}: {exc}"
    for index, item in enumerate(entry.get("history", [])):
        if not isinstance(item, dict) or "id" not in item:
            return f"history[{index}] is not an object with an id"
    return None


def _state_problem(state) -> str | None:
    if not isinstance(state, dict):
        return "the top level is not an object"
    if state.get("schema") != SCHEMA:
        return f"schema is {state.get('schema')!r}, this collection reads schema {SCHEMA}"
    apps = state.get("apps")
    if not isinstance(apps, dict):
        return "apps is not an object"
    for app, envs in apps.items():
        if not isinstance(envs, dict):
            return f"apps.{app} is not an object"
        for env, entry in envs.items():
            problem = _entry_problem(entry)
            if problem:
                return f"apps.{app}.{env} {problem}"
    return None


def filter_state(state: dict, app=None, env=None) -> dict:
    apps = state.get("apps", {})
    if app is None:
        return {"schema": SCHEMA, "apps": copy.deepcopy(apps)}
    envs = copy.deepcopy(apps.get(app, {}))
    if env is not None:
        envs = {env: envs[env]} if env in envs else {}
    return {"schema": SCHEMA, "apps": {app: envs} if envs else {}}


# ---------------------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------------------


class RecordResult:
    def __init__(self, changed, before, after, plan=None):
        self.changed = changed
        self.before = before
        self.after = after
        self.plan = plan


class Ledger:
    """The interface: read(app=None), entry(app, env), record(...) -> (changed, entry).

    Backends implement read(), entry() and _update(app, env, mutate), which runs `mutate(state_of_app)` under the
    backend's lock and writes what it returns.
    """

    location = ""

    def read(self, app=None) -> dict:
        raise NotImplementedError

    def entry(self, app, env):
        raise NotImplementedError

    def _update(self, app, env, mutate):
        raise NotImplementedError

    def apply(
        self,
        app,
        env,
        artifact_id,
        action,
        by,
        from_env=None,
        record=None,
        reason=None,
        forced=False,
        verified=True,
        at=None,
        gate=None,
        dry_run=False,
    ) -> RecordResult:
        """Record a deploy/promotion/rollback; `gate(state_of_app)` (re-)checks the plan on fresh data under the
        lock and returns it (a dict that may override id/forced). dry_run computes without locking or writing."""
        check_name("app", app)
        check_name("environment", env)

        def mutate(state):
            plan = gate(state) if gate else None
            target = plan["id"] if plan else artifact_id
            is_forced = plan["forced"] if plan and "forced" in plan else forced
            before = get_entry(state, app, env)
            changed, after = plan_record(
                before,
                target,
                action,
                by=by,
                at=at or utc_now(),
                from_env=from_env,
                record=record,
                reason=reason,
                forced=is_forced,
                verified=verified,
            )
            return RecordResult(changed, copy.deepcopy(before), after, plan)

        if dry_run:
            return mutate(self.read(app))
        return self._update(app, env, mutate)

    def record(self, app, env, artifact_id, action, by, **kwargs):
        result = self.apply(app, env, artifact_id, action, by, **kwargs)
        return result.changed, result.after


class FileLedger(Ledger):
    """A local JSON file: exclusive fcntl lock on `<path>.lock` across read-modify-write, atomic replace,
    `<path>.bak` keeps the previous good version; a corrupt file is never written."""

    def __init__(self, path, lock_timeout=60.0):
        self.path = os.path.abspath(os.path.expanduser(str(path)))
        self.location = self.path
        self.lock_path = self.path + ".lock"
        self.backup_path = self.path + ".bak"
        self.lock_timeout = lock_timeout

    def _corrupt(self, detail) -> LedgerError:
        return LedgerError(
            f"ledger {self.path} is corrupt ({detail}): nothing was written; restore it from {self.backup_path} "
            "(kept at every successful write) or fix the JSON by hand"
        )

    def _load(self):
        """(state, raw bytes or None)."""
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return empty_state(), None
        except OSError as exc:
            raise LedgerError(
                f"cannot read ledger {self.path}: {exc.strerror}; check the path and permissions"
            ) from exc
        try:
            state = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"byte {exc.start}: not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise self._corrupt(f"line {exc.lineno}: {exc.msg}") from None
        problem = _state_problem(state)
        if problem:
            raise self._corrupt(problem)
        return state, raw

    def read(self, app=None) -> dict:
        return filter_state(self._load()[0], app)

    def entry(self, app, env):
        return copy.deepcopy(get_entry(self._load()[0], app, env))

    def _lock(self):
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LedgerError(
                f"cannot create the ledger lock {self.lock_path}: {exc.strerror}; check that {directory} is writable"
            ) from exc
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise LedgerError(f"cannot lock {self.lock_path}: {exc.strerror}") from exc
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LedgerError(
                    f"ledger {self.path} is locked by another writer for more than {self.lock_timeout:g} s "
                    f"(lock file {self.lock_path}): retry later, or raise lock_timeout"
                )
            time.sleep(0.02)

    def _write(self, state, old_raw) -> None:
        data = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8")
        try:
            mode = os.stat(self.path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        try:
            if old_raw is not None:
                atomic_write(self.backup_path, old_raw, mode)
            atomic_write(self.path, data, mode)
        except OSError as exc:
            raise LedgerError(
                f"cannot write ledger {self.path}: {exc.strerror}; the previous version is unchanged"
            ) from exc

    def _update(self, app, env, mutate):
        fd = self._lock()
        try:
            state, raw = self._load()
            result = mutate(filter_state(state, app))
            if result.changed:
                state["apps"].setdefault(app, {})[env] = result.after
                self._write(state, raw)
            return result
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _error_code(exc) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


class SsmLedger(Ledger):
    """AWS SSM Parameter Store: one String parameter per app/env, `<prefix>/<app>/<env>`, holding the entry as JSON.

    Concurrency: a lock parameter `<prefix>/<app>/<env>.lock` created with Overwrite=false (SSM refuses a second
    create with ParameterAlreadyExists) and deleted after the write. Parameter versions are no compare-and-swap
    (put_parameter has no "if version" condition), so they cannot prevent a lost update; the lock can.
    History is bounded: the newest `max_history` records, fewer when needed to fit the Standard tier (4 KB); the
    Advanced tier (8 KB) is used only when a single record does not fit in 4 KB.
    """

    STANDARD_LIMIT = 4096
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
        except Exception as exc:  # botocore errors; the caller reports them with fail_json_aws
            if _error_code(exc) is None and not type(exc).__module__.startswith("botocore"):
                raise
            raise LedgerError(f"SSM {what} failed: {exc}", original=exc, context=f"SSM {what} failed") from exc

    def _parse(self, name, value):
        try:
            data = json.loads(value)
        except ValueError as exc:
            problem = f"not JSON: {exc}"
        else:
            problem = _entry_problem(data) if isinstance(data, dict) else "is not an object"
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
        except Exception as exc:
            if _error_code(exc) == "ParameterNotFound":
                return None
            if _error_code(exc) is None and not type(exc).__module__.startswith("botocore"):
                raise
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
        lock = name + ".lock"
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self.client.put_parameter(
                    Name=lock,
                    Value=json.dumps({"by": self.owner, "at": utc_now()}),
                    Type="String",
                    Overwrite=False,
                )
                break
            except Exception as exc:
                if _error_code(exc) != "ParameterAlreadyExists":
                    if _error_code(exc) is None and not type(exc).__module__.startswith("botocore"):
                        raise
                    raise LedgerError(
                        f"SSM put_parameter {lock} failed: {exc}",
                        original=exc,
                        context=f"SSM put_parameter {lock} failed",
                    ) from exc
            if time.monotonic() >= deadline:
                holder = self._call(f"get_parameter {lock}", "get_parameter", Name=lock)["Parameter"]["Value"]
                raise LedgerError(
                    f"ledger parameter {name} is locked ({lock} = {holder}) for more than {self.lock_timeout:g} s: "
                    f"retry later; if no other run is active, remove the stale lock with "
                    f"`aws ssm delete-parameter --name {lock}`"
                )
            time.sleep(0.25)
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
            self._call(f"delete_parameter {lock}", "delete_parameter", Name=lock)


def default_by() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def run_record(ledger: Ledger, params: dict, check_mode: bool) -> dict:
    """What the ledger module does, testable without Ansible: gate, record, describe."""
    action = params["action"]
    app, env, chain = params["app"], params["env"], params["chain"]
    from_env = params.get("from_env")
    reason = params.get("reason")
    force = bool(params.get("force"))
    known_ids = params.get("known_ids")
    check_chain(chain)
    if action == "deploy" and from_env is not None:
        raise LedgerError(f"from_env is for action=promote: set action: promote to promote from {from_env!r}")
    if action == "promote" and from_env is None:
        raise LedgerError("action=promote needs from_env (the environment the artifact is live in)")

    def gate(state):
        if action == "rollback":
            plan = check_rollback(chain, state, app, env, params.get("artifact_id"))
            plan.update(forced=False, overridden=[])
            return plan
        return check_promotion(chain, state, app, from_env, env, params.get("artifact_id"), force, reason, known_ids)

    result = ledger.apply(
        app,
        env,
        params.get("artifact_id"),
        action,
        by=params.get("by") or default_by(),
        from_env=from_env,
        record=params.get("record"),
        reason=reason,
        verified=params.get("verified", True),
        gate=gate,
        dry_run=check_mode,
    )
    plan = result.plan or {}
    return {
        "changed": result.changed,
        "before": result.before,
        "after": result.after,
        "artifact_id": plan.get("id"),
        "action": action,
        "forced": bool(plan.get("forced")),
        "overridden": plan.get("overridden", []),
        "location": ledger.location,
    }
