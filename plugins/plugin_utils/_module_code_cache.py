# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A compiled-code cache for Ansible module payloads run in a builder.

PRIVATE to the collection: used by the immutable.infra.builder connection plugin; it may change without notice.

Ansible ships each module as a zip of sources that the target's Python imports with zipimport, which compiles
every source file (ansible.module_utils.basic and its imports) again for every task: about 0.1 s of each
module run. ``with_code_cache`` inserts a few lines at the top of a module payload that make zipimport keep the
compiled code in ``/dev/shm`` (a tmpfs inside the container: never part of a committed image), keyed by the
Python version, the path inside the zip and the exact source. A source that changes gets a new key, so a stale
entry can never be used; any error falls back to compiling, as without the cache. Entries are also looked up in
``/.immutable-infra-code``, the copy a bake's cache layer keeps (module_utils/bake/_builder.py, KEPT_CODE_DIR), so a
builder started from a cache layer does not compile them again.
"""

from __future__ import annotations

FUTURE_LINE = b"from __future__ import annotations\n"

# Runs in the module's own Python process, before the payload's code: names are private and deleted after use.
PRELUDE = b"""
def _immutable_infra_code_cache():
    import hashlib, marshal, os, sys, zipimport
    compile_source = getattr(zipimport, "_compile_source", None)
    if compile_source is None:
        return
    name = "%d-%s" % (os.getuid(), sys.implementation.cache_tag)
    cache = "/dev/shm/.immutable-infra-code-" + name
    kept = "/.immutable-infra-code/" + name

    def cached(pathname, source):
        inner = pathname.split(".zip" + os.sep, 1)[-1]
        key = hashlib.sha256(inner.encode() + b"\\0" + source).hexdigest()
        path = os.path.join(cache, key)
        for entry_path in (path, os.path.join(kept, key)):
            try:
                with open(entry_path, "rb") as entry:
                    return marshal.load(entry)
            except Exception:
                pass
        code = compile_source(pathname, source)
        try:
            os.makedirs(cache, mode=0o700, exist_ok=True)
            partial = "%s.%d" % (path, os.getpid())
            with open(partial, "wb") as entry:
                marshal.dump(code, entry)
            os.replace(partial, path)
        except Exception:
            pass
        return code

    zipimport._compile_source = cached


_immutable_infra_code_cache()
del _immutable_infra_code_cache
"""


def with_code_cache(payload):
    """Return an AnsiballZ payload with the cache prelude; anything else (or an unexpected layout) unchanged."""
    head = payload[:8192]
    if b"_ANSIBALLZ_WRAPPER = True" not in head:
        return payload
    at = head.find(FUTURE_LINE)
    if at < 0 or head.find(b"_ANSIBALLZ_WRAPPER") < at:
        return payload
    at += len(FUTURE_LINE)
    return payload[:at] + PRELUDE + payload[at:]
