"""The compiled-code cache for this collection's Python on the controller (plugin_utils/_collection_code_cache.py)."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import textwrap

from conftest import COLLECTIONS_DIR

from ansible_collections.immutable.infra.plugins.plugin_utils._collection_code_cache import compile_cached

SOURCE = b"VALUE = 6 * 7\n"


def run(code):
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the code under test is compiled from SOURCE above
    return namespace


def test_the_first_compile_is_kept_and_the_second_comes_from_the_cache(tmp_path):
    first = compile_cached(SOURCE, "/c/mod.py", str(tmp_path))
    entries = os.listdir(tmp_path)
    assert len(entries) == 1
    assert run(first)["VALUE"] == 42
    # an entry is what the next import loads: replace it by other code and that code runs
    other = compile(b"VALUE = 1\n", "/c/mod.py", "exec")
    with open(tmp_path / entries[0], "wb") as entry:
        marshal.dump(other, entry)
    assert run(compile_cached(SOURCE, "/c/mod.py", str(tmp_path)))["VALUE"] == 1
    assert first.co_filename == "/c/mod.py"


def test_a_changed_source_or_file_gets_its_own_entry(tmp_path):
    compile_cached(SOURCE, "/c/mod.py", str(tmp_path))
    assert run(compile_cached(b"VALUE = 7\n", "/c/mod.py", str(tmp_path)))["VALUE"] == 7
    compile_cached(SOURCE, "/c/other.py", str(tmp_path))
    assert len(os.listdir(tmp_path)) == 3


def test_a_corrupt_entry_is_compiled_again_and_replaced(tmp_path):
    compile_cached(SOURCE, "/c/mod.py", str(tmp_path))
    (entry,) = os.listdir(tmp_path)
    (tmp_path / entry).write_bytes(b"\x00garbage")
    assert run(compile_cached(SOURCE, "/c/mod.py", str(tmp_path)))["VALUE"] == 42
    assert run(compile_cached(SOURCE, "/c/mod.py", str(tmp_path)))["VALUE"] == 42


def test_an_unwritable_cache_still_compiles(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert run(compile_cached(SOURCE, "/c/mod.py", str(blocked / "cache")))["VALUE"] == 42


def test_the_loader_caches_this_collections_code_only(tmp_path):
    """Through Ansible's own collection loader, in a fresh interpreter: this collection's modules are cached and
    import as before; another collection's are left to the loader."""
    collections_root = str(COLLECTIONS_DIR)
    script = textwrap.dedent(
        f"""
        from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
        _AnsibleCollectionFinder(paths=[{collections_root!r}])._install()
        from ansible_collections.immutable.infra.plugins.plugin_utils import _collection_code_cache
        assert _collection_code_cache.install()
        from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import summary_lines
        from ansible_collections.community.docker.plugins.module_utils import selectors
        assert callable(summary_lines)
        print(_collection_code_cache.cache_dir())
        """
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    cache = out.strip()
    assert cache.startswith(str(tmp_path))
    assert len(os.listdir(cache)) == 1  # _promotion.py only: community.docker and the cache module itself are not
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    again = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert again.stdout.strip() == cache
    assert len(os.listdir(cache)) == 1
