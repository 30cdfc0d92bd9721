"""The compiled-code cache the builder connection puts in front of module payloads (plugin_utils/_module_code_cache)."""

from __future__ import annotations

import hashlib
import marshal
import os
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

from ansible_collections.immutable.infra.plugins.plugin_utils._module_code_cache import with_code_cache

HEAD = b"#!/usr/bin/python3\n\nfrom __future__ import annotations\n\nimport datetime\n\n_ANSIBALLZ_WRAPPER = True\n"


def test_the_prelude_goes_right_after_the_future_import():
    payload = HEAD + b"print('module')\n"
    cached = with_code_cache(payload)
    assert cached.startswith(b"#!/usr/bin/python3\n\nfrom __future__ import annotations\n")
    assert cached.endswith(payload[len(b"#!/usr/bin/python3\n\nfrom __future__ import annotations\n") :])
    assert b"_immutable_infra_code_cache" in cached
    compile(cached, "<payload>", "exec")  # still valid Python: the future import stays first


def test_anything_but_a_module_payload_is_left_alone():
    assert with_code_cache(b"echo hello\n") == b"echo hello\n"
    no_future = b"#!/usr/bin/python3\n_ANSIBALLZ_WRAPPER = True\n"
    assert with_code_cache(no_future) == no_future


def test_zip_imports_use_the_cache_and_a_changed_source_is_compiled_again(tmp_path):
    archive = tmp_path / "payload.zip"
    script = tmp_path / "run.py"

    def write_module(body: str) -> None:
        with zipfile.ZipFile(archive, "w") as zipped:
            zipped.writestr("cachedmod.py", body)

    script.write_bytes(
        with_code_cache(
            HEAD
            + f"import sys, zipimport\nsys.path.insert(0, {str(archive)!r})\n".encode()
            + b"import cachedmod\nprint(cachedmod.VALUE, zipimport._compile_source.__name__)\n"
        )
    )

    def run() -> str:
        return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout.split()

    source = f"VALUE = 'first {uuid.uuid4().hex}'\n"
    write_module(source)
    assert run()[0] == "first"
    entry = (
        Path(f"/dev/shm/.immutable-infra-code-{os.getuid()}-{sys.implementation.cache_tag}")
        / hashlib.sha256(b"cachedmod.py\0" + source.encode()).hexdigest()
    )
    assert entry.is_file()
    # the next import takes the code from the cache entry, not from the source
    entry.write_bytes(marshal.dumps(compile("VALUE = 'from-cache'", "cachedmod.py", "exec")))
    assert run() == ["from-cache", "cached"]
    # another source is another key: compiled, never the stale entry
    write_module(f"VALUE = 'second {uuid.uuid4().hex}'\n")
    assert run()[0] == "second"
    entry.unlink()
