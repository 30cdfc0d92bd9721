# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The file backend of the ledger: a local JSON file, atomic writes, an exclusive lock, a backup of the last good
version.

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

import copy
import json
import os
from contextlib import ExitStack
from contextlib import contextmanager

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import flock_exclusive
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import empty_state
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import filter_state
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import get_entry
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import state_problem
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import Ledger


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
        problem = state_problem(state)
        if problem:
            raise self._corrupt(problem)
        return state, raw

    def read(self, app=None) -> dict:
        return filter_state(self._load()[0], app)

    def entry(self, app, env):
        return copy.deepcopy(get_entry(self._load()[0], app, env))

    @contextmanager
    def _locked(self):
        directory = os.path.dirname(self.path)
        with ExitStack() as held:
            try:
                os.makedirs(directory, exist_ok=True)
                held.enter_context(flock_exclusive(self.lock_path, self.lock_timeout))
            except TimeoutError:
                raise LedgerError(
                    f"ledger {self.path} is locked by another writer for more than {self.lock_timeout:g} s "
                    f"(lock file {self.lock_path}): retry later, or raise lock_timeout"
                ) from None
            except OSError as exc:
                raise LedgerError(
                    f"cannot lock {self.lock_path}: {exc.strerror}; check that {directory} is writable"
                ) from exc
            yield

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

    def revocations(self, app) -> list:
        return copy.deepcopy((self._load()[0].get("revocations") or {}).get(app) or [])

    def _add_revocation(self, app, item, dry_run):
        from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import add_revocation

        if dry_run:
            changed, _after, stands = add_revocation(self.revocations(app), item)
            return changed, stands
        with self._locked():
            state, raw = self._load()
            changed, after, stands = add_revocation((state.get("revocations") or {}).get(app) or [], item)
            if changed:
                state.setdefault("revocations", {})[app] = after
                self._write(state, raw)
            return changed, stands

    def _update(self, app, env, mutate):
        with self._locked():
            state, raw = self._load()
            result = mutate(filter_state(state, app))
            if result.changed:
                state["apps"].setdefault(app, {})[env] = result.after
                self._write(state, raw)
            return result
