"""Artifact records: built from named inputs, valid by docs/artifact-record.schema.json, written atomically.

The Python rules in _records.py and the JSON Schema are checked against each other: every record built here passes
both, every broken one fails both (except the three cross-field rules only Python can say).
"""

from __future__ import annotations

import copy
import json

import pytest
from conftest import assert_valid_record

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import RECORD_SCHEMA_VERSION
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import build_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import record_problems
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import write_record

FP = "sha256:" + "a" * 64
ROLE_FPS = {"immutable.infra.baseline": "sha256:" + "1" * 64, "web": "sha256:" + "2" * 64}
INPUTS = {"base": "sha256:" + "b" * 64, "roles": ROLE_FPS, "vars": "sha256:" + "c" * 64, "collection_version": "0.2.0"}
MANIFEST = {"roles": {"web": {"files": {"tasks/main.yml": "sha256:" + "d" * 64}}}}
COMMON = dict(
    fingerprint=FP,
    revision="abc1234",
    source="https://example.invalid/repo.git",
    version="1.4.0",
    bake_id="20261126T201500-a1b2c3",
    changes=["role web file templates/index.json.j2 changed"],
    inputs=INPUTS,
    inputs_manifest=MANIFEST,
    started=1_790_000_000.0,
    fingerprinted=1_790_000_000.125,
    finished=1_790_000_031.5,
)
CONTAINER = dict(
    COMMON,
    name="web",
    kind="container",
    id="127.0.0.1:5000/web@sha256:" + "9" * 64,
    repository="127.0.0.1:5000/web",
    tags=["fp-" + "a" * 64, "1.4.0"],
    base={"image": "immutable-infra/base:bookworm", "id": "sha256:" + "b" * 64},
    reused_roles=["immutable.infra.baseline"],
    cached=False,
)
AMI = dict(
    COMMON,
    name="web-ami",
    kind="ami",
    artifact="web",
    id={"eu-west-1": "ami-0123456789abcdef0", "eu-central-1": "ami-0fedcba9876543210"},
    region="eu-west-1",
    image_name="web-1.4.0-aaaaaaaaaaaa-20261126T201500-a1b2c3",
    resumed=False,
    sharing={"accounts": ["111122223333"], "organizations": [], "ous": []},
    base={"image": {"name": "debian-12-amd64-*", "owners": ["136693071363"]}, "id": "ami-0abcdef0123456789"},
    cached=False,
)
# the fields of the records bake.yml and tasks/bake_ami_capture.yml assembled in Jinja before the module built them
COMMON_KEYS = {
    "schema", "name", "kind", "fingerprint", "id", "created", "revision", "source", "version", "bake_id", "base",
    "roles", "reused_roles", "cached", "changes", "durations", "inputs", "inputs_manifest",
}  # fmt: skip
CONTAINER_KEYS = COMMON_KEYS | {"repository", "digest", "tags"}
AMI_KEYS = COMMON_KEYS | {"artifact", "region", "image_id", "image_name", "resumed", "sharing"}


def test_a_container_record_has_every_field_of_the_bake_record_with_its_value():
    record = build_record(**CONTAINER)
    assert set(record) == CONTAINER_KEYS
    assert record["schema"] == RECORD_SCHEMA_VERSION == 1
    assert record["digest"] == "sha256:" + "9" * 64
    assert record["roles"] == [
        {"name": "immutable.infra.baseline", "fingerprint": ROLE_FPS["immutable.infra.baseline"]},
        {"name": "web", "fingerprint": ROLE_FPS["web"]},
    ]
    assert record["created"] == "2026-09-21T14:13:51Z"
    assert record["durations"] == {"fingerprint": 0.125, "provision_and_capture": 31.375, "total": 31.5}
    assert record["inputs"] == INPUTS and record["inputs_manifest"] == MANIFEST
    assert record_problems(record) == []
    assert_valid_record(record)


def test_an_ami_record_has_every_field_of_the_ami_record_with_its_value():
    record = build_record(**AMI)
    assert set(record) == AMI_KEYS
    assert record["image_id"] == "ami-0123456789abcdef0"
    assert record["reused_roles"] == []
    assert record["base"]["image"] == {"name": "debian-12-amd64-*", "owners": ["136693071363"]}
    assert record_problems(record) == []
    assert_valid_record(record)


def test_a_cache_hit_has_no_provisioning_time_and_an_ami_hit_no_image_name():
    record = build_record(**{**CONTAINER, "cached": True, "reused_roles": []})
    assert record["durations"]["provision_and_capture"] == 0 and record["cached"] is True
    ami = build_record(**{**AMI, "cached": True, "image_name": None})
    assert ami["image_name"] is None
    for valid in (record, ami):
        assert record_problems(valid) == []
        assert_valid_record(valid)


def test_writes_the_record_and_latest_with_the_same_content(tmp_path):
    record = build_record(**CONTAINER)
    result = write_record(str(tmp_path), record, CONTAINER["bake_id"])
    assert result["changed"]
    assert result["path"] == str(tmp_path / "web" / "records" / f"{CONTAINER['bake_id']}.json")
    written = json.loads((tmp_path / "web" / "records" / f"{CONTAINER['bake_id']}.json").read_text())
    assert written == record == json.loads((tmp_path / "web" / "latest.json").read_text())
    leftovers = [
        p.name for d in (tmp_path / "web", tmp_path / "web" / "records") for p in d.iterdir() if p.name.startswith(".")
    ]
    assert leftovers == []  # no temporary file of the atomic write is left


def test_the_same_record_again_changes_nothing(tmp_path):
    record = build_record(**CONTAINER)
    write_record(str(tmp_path), record, CONTAINER["bake_id"])
    before = (tmp_path / "web" / "latest.json").stat().st_mtime_ns
    assert write_record(str(tmp_path), record, CONTAINER["bake_id"])["changed"] is False
    assert (tmp_path / "web" / "latest.json").stat().st_mtime_ns == before


def test_a_newer_bake_moves_latest_and_keeps_the_older_record(tmp_path):
    write_record(str(tmp_path), build_record(**{**CONTAINER, "bake_id": "b1"}), "b1")
    newer_id = "127.0.0.1:5000/web@sha256:" + "8" * 64
    write_record(str(tmp_path), build_record(**{**CONTAINER, "bake_id": "b2", "id": newer_id}), "b2")
    assert json.loads((tmp_path / "web" / "latest.json").read_text())["id"] == newer_id
    assert json.loads((tmp_path / "web" / "records" / "b1.json").read_text())["id"] == CONTAINER["id"]


def test_check_mode_writes_nothing(tmp_path):
    assert write_record(str(tmp_path), build_record(**CONTAINER), CONTAINER["bake_id"], check_mode=True)["changed"]
    assert not (tmp_path / "web").exists()


def broken(kind, change):
    record = build_record(**(CONTAINER if kind == "container" else AMI))
    change(record)
    return record


def _set(key, value):
    def change(record):
        path = key.split(".")
        target = record
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return change


def _drop(key):
    return lambda record: record.pop(key)


# (kind, change, field the message names): every one breaks the JSON Schema and the Python rules alike
BROKEN = [
    ("container", _set("schema", 2), "schema"),
    ("container", _set("name", "a/b"), "name"),
    ("container", _set("fingerprint", "a" * 64), "fingerprint"),
    ("container", _set("id", "127.0.0.1:5000/web:1.4.0"), "id"),
    ("container", _set("digest", "sha256:short"), "digest"),
    ("container", _set("tags", []), "tags"),
    ("container", _set("tags", ["1.4.0"]), "tags"),
    ("container", _set("created", "yesterday"), "created"),
    ("container", _set("cached", "false"), "cached"),
    ("container", _set("base.id", "immutable-infra/base:bookworm"), "base"),
    ("container", _set("roles", []), "roles"),
    ("container", _set("durations", {"total": 1}), "durations"),
    ("container", _set("changes", "one change"), "changes"),
    ("container", _drop("repository"), "repository"),
    ("container", _drop("inputs_manifest"), "inputs_manifest"),
    ("container", _set("region", "eu-west-1"), "region"),
    ("ami", _set("id", "ami-0123456789abcdef0"), "id"),
    ("ami", _set("id", {"eu-west-1": "sha256:" + "9" * 64}), "id"),
    ("ami", _set("image_id", "i-0123"), "image_id"),
    ("ami", _set("resumed", None), "resumed"),
    ("ami", _set("sharing", {"accounts": []}), "sharing"),
    ("ami", _set("base.id", "sha256:" + "b" * 64), "base"),
    ("ami", _drop("image_name"), "image_name"),
    ("ami", _set("tags", ["x"]), "tags"),
    ("ami", _set("kind", "vm"), "kind"),
]


@pytest.mark.parametrize(("kind", "change", "field"), BROKEN)
def test_a_broken_record_breaks_the_schema_and_the_python_rules_and_nothing_is_written(tmp_path, kind, change, field):
    record = broken(kind, change)
    with pytest.raises(AssertionError, match="breaks docs/artifact-record.schema.json"):
        assert_valid_record(record)
    with pytest.raises(RecordError, match=f"field '{field}'"):
        write_record(str(tmp_path), record, record.get("bake_id", "b1"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("container", _set("id", "127.0.0.1:5000/other@sha256:" + "9" * 64), "not <repository>@<digest>"),
        ("container", _set("tags", ["fp-" + "f" * 64]), "lacks the fingerprint's tag fp-aaaa"),
        ("ami", _set("image_id", "ami-0fedcba9876543210"), "field 'id' has no 'eu-west-1': 'ami-0fedcba9876543210'"),
    ],
)
def test_what_only_python_can_check_is_refused_too(tmp_path, kind, change, message):
    record = broken(kind, change)
    assert_valid_record(record)  # the JSON Schema cannot say these
    with pytest.raises(RecordError, match=message):
        write_record(str(tmp_path), record, record["bake_id"])
    assert list(tmp_path.iterdir()) == []


def test_every_problem_is_named_at_once():
    record = broken("container", lambda r: r.update(cached="no", digest="x", version=1))
    problems = record_problems(record)
    assert [p.split("'")[1] for p in problems] == ["version", "cached", "digest"]


@pytest.mark.parametrize(
    ("bake_id", "message"),
    [("../escape", "not usable as a file name"), ("other", "field 'bake_id' is '20261126T201500-a1b2c3'")],
)
def test_a_bake_id_that_is_no_file_name_or_not_the_records_is_refused(tmp_path, bake_id, message):
    with pytest.raises(RecordError, match=message):
        write_record(str(tmp_path), build_record(**CONTAINER), bake_id)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (dict(CONTAINER, kind="vm"), "kind 'vm' is not an artifact kind: use container or ami"),
        (dict(CONTAINER, region="eu-west-1"), "region: only for kind=ami, not for kind=container: remove them"),
        (dict(AMI, repository="r/web"), "repository: only for kind=container"),
        (dict(AMI, sharing=None), "kind=ami needs sharing"),
    ],
)
def test_inputs_of_the_wrong_kind_are_refused_before_a_record_is_built(inputs, message):
    with pytest.raises(RecordError, match=message):
        build_record(**inputs)


def test_the_inputs_are_not_changed():
    inputs = copy.deepcopy(AMI)
    build_record(**inputs)
    assert inputs == AMI
