"""Artifact records are written atomically, idempotently, and refuse what cannot be a record."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import write_record

RECORD = {"schema": 1, "name": "web", "kind": "container", "fingerprint": "sha256:" + "a" * 64, "id": "r/web@sha256:1"}


def test_writes_the_record_and_latest_with_the_same_content(tmp_path):
    result = write_record(str(tmp_path), RECORD, "20261126T200000-abc")
    assert result["changed"]
    record = json.loads((tmp_path / "web" / "records" / "20261126T200000-abc.json").read_text())
    assert record == RECORD == json.loads((tmp_path / "web" / "latest.json").read_text())
    leftovers = [
        p.name for d in (tmp_path / "web", tmp_path / "web" / "records") for p in d.iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []  # no temporary file of the atomic write is left


def test_the_same_record_again_changes_nothing(tmp_path):
    write_record(str(tmp_path), RECORD, "b1")
    before = (tmp_path / "web" / "latest.json").stat().st_mtime_ns
    assert write_record(str(tmp_path), RECORD, "b1")["changed"] is False
    assert (tmp_path / "web" / "latest.json").stat().st_mtime_ns == before


def test_a_newer_bake_moves_latest_and_keeps_the_older_record(tmp_path):
    write_record(str(tmp_path), RECORD, "b1")
    newer = dict(RECORD, id="r/web@sha256:2")
    write_record(str(tmp_path), newer, "b2")
    assert json.loads((tmp_path / "web" / "latest.json").read_text())["id"] == "r/web@sha256:2"
    assert json.loads((tmp_path / "web" / "records" / "b1.json").read_text())["id"] == "r/web@sha256:1"


def test_check_mode_writes_nothing(tmp_path):
    assert write_record(str(tmp_path), RECORD, "b1", check_mode=True)["changed"]
    assert not (tmp_path / "web").exists()


@pytest.mark.parametrize(
    ("record", "bake_id", "message"),
    [
        ({"name": "web"}, "b1", "lacks schema, kind, fingerprint, id"),
        (RECORD, "../escape", "not usable as a file name"),
        (dict(RECORD, name="a/b"), "b1", "not usable as a directory name"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(tmp_path, record, bake_id, message):
    with pytest.raises(RecordError, match=message):
        write_record(str(tmp_path), record, bake_id)
    assert list(tmp_path.iterdir()) == []
