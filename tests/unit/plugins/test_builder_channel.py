"""plugin_utils/_builder_channel.py: the logs relays leave after an error are swept once old (a relay starting does
it), and never while their relay serves or before they are a week old."""

from __future__ import annotations

import os
import time

from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import LOG_KEEP_SECONDS
from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import sweep_old_logs


def test_only_old_logs_of_relays_no_longer_serving_are_removed(tmp_path):
    old = time.time() - LOG_KEEP_SECONDS - 60
    for name in ("gone.sock.log", "serving.sock.log", "recent.sock.log", "other.txt"):
        (tmp_path / name).write_text("2026-12-01T10:00:00 relay 42: stopping after a broken request\n")
    (tmp_path / "serving.sock").write_text("")  # stands for the socket of a relay still serving
    for name in ("gone.sock.log", "serving.sock.log", "other.txt"):
        os.utime(tmp_path / name, (old, old))
    assert sweep_old_logs(str(tmp_path)) == ["gone.sock.log"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["other.txt", "recent.sock.log", "serving.sock", "serving.sock.log"]


def test_a_directory_that_cannot_be_read_sweeps_nothing(tmp_path):
    assert sweep_old_logs(str(tmp_path / "missing")) == []
