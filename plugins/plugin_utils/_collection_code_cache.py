# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A compiled-code cache for this collection's own Python on the controller.

PRIVATE to the collection: installed by plugin_utils/_in_process.py; it may change without notice.

Ansible's collection loader compiles a collection's source on every import, in every worker process: it keeps no
bytecode. The modules run in process on the controller import about 3,000 lines of this collection (bg_swap,
push_image, ledger and their module_utils), which cost a promotion step about 60 ms of compiling, in every run.
``install()`` makes the loader keep the compiled code of ``ansible_collections.immutable.infra.*`` in a cache
directory of the user (``$XDG_CACHE_HOME/immutable-infra`` or ``~/.cache/immutable-infra``, mode 0700), keyed by the
Python version, the file name and the exact source: a changed source gets a new key, so a stale entry is never
used. Any error (no home, a read-only disk, a corrupt entry, a loader that changed) falls back to compiling, exactly
as the loader does. Other collections' code is left to the loader.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys

PREFIX = "ansible_collections.immutable.infra."


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "immutable-infra", f"code-{sys.implementation.cache_tag}")


def compile_cached(source, filename: str, directory: str | None = None):
    """compile(source, filename) as the collection loader does, from the cache when an entry for it exists."""
    directory = directory or cache_dir()
    raw = source.encode("utf-8") if isinstance(source, str) else bytes(source)
    key = hashlib.sha256(filename.encode("utf-8", "surrogateescape") + b"\0" + raw).hexdigest()
    path = os.path.join(directory, key)
    try:
        with open(path, "rb") as entry:
            return marshal.load(entry)
    except (OSError, EOFError, ValueError, TypeError):
        pass
    code = compile(source=source, filename=filename, mode="exec", flags=0, dont_inherit=True)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as entry:
            marshal.dump(code, entry)
        os.replace(partial, path)
    except OSError:
        pass
    return code


def install() -> bool:
    """Make Ansible's collection loader use the cache for this collection; False when the loader is not as known."""
    try:
        from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionPkgLoaderBase as loader
    except ImportError:
        return False
    original = getattr(loader, "get_code", None)
    if original is None:
        return False
    if getattr(original, "immutable_infra_code_cache", False):
        return True

    def get_code(self, fullname):
        if not fullname.startswith(PREFIX) or getattr(self, "_compiled_code", None) is not None:
            return original(self, fullname)
        try:
            filename = self.get_filename(fullname) or "<string>"
            source = self.get_source(fullname)
        except (AttributeError, ValueError, OSError):
            return original(self, fullname)
        if source is None:
            return original(self, fullname)
        self._compiled_code = compile_cached(source, filename)
        return self._compiled_code

    get_code.immutable_infra_code_cache = True
    loader.get_code = get_code
    return True
