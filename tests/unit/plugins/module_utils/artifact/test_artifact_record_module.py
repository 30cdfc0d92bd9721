"""immutable.infra.artifact_record as bake.yml runs it: argument validation and run_module in process, real files.

The records it writes pass docs/artifact-record.schema.json for both kinds; a broken input fails naming the field
and the fix, and nothing is written.
"""

from __future__ import annotations

import json
import socket

import pytest
import yaml
from conftest import assert_valid_record

from ansible_collections.immutable.infra.plugins.doc_fragments.registry import ModuleDocFragment as RegistryFragment
from ansible_collections.immutable.infra.plugins.modules import artifact_record
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModule
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import ModuleDone
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import validate_args

FP = "sha256:" + "a" * 64
COMMON = {
    "bake_id": "20261126T201500-a1b2c3",
    "fingerprint": FP,
    "revision": "abc1234",
    "source": "",
    "version": "1.4.0",
    "cached": False,
    "changes": [],
    "inputs": {"base": "x", "roles": {"immutable.infra.baseline": "sha256:" + "1" * 64, "web": "sha256:" + "2" * 64}},
    "inputs_manifest": {"vars": {}},
    "started": 1_790_000_000.0,
    "fingerprinted": 1_790_000_000.5,
}
CONTAINER = dict(
    COMMON,
    name="web",
    kind="container",
    id="127.0.0.1:5000/web@sha256:" + "9" * 64,
    repository="127.0.0.1:5000/web",
    tags=["fp-" + "a" * 64, "1.4.0"],
    base={"image": "immutable-infra/base:bookworm", "id": "sha256:" + "b" * 64},
    reused_roles=["immutable.infra.baseline"],
)
AMI = dict(
    COMMON,
    name="web-ami",
    kind="ami",
    artifact="web",
    id={"us-east-1": "ami-12345678", "eu-west-1": "ami-9abcdef0"},
    region="us-east-1",
    image_name="web-1.4.0",
    resumed=False,
    sharing={"accounts": ["111122223333"]},
    base={"image": "ami-0abcdef0123456789", "id": "ami-0abcdef0123456789"},
)


def run(args, check_mode=False):
    params, _no_log, failed = validate_args("immutable.infra.artifact_record", artifact_record, args)
    if failed:
        return failed
    with pytest.raises(ModuleDone) as done:
        artifact_record.run_module(InProcessModule(params, check_mode=check_mode))
    return done.value.result


@pytest.mark.parametrize("inputs", [CONTAINER, AMI], ids=["container", "ami"])
def test_the_record_of_either_kind_is_written_valid_with_latest(tmp_path, inputs):
    result = run(dict(inputs, path=str(tmp_path)))
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    record = json.loads((tmp_path / inputs["name"] / "records" / f"{inputs['bake_id']}.json").read_text())
    assert record == json.loads((tmp_path / inputs["name"] / "latest.json").read_text()) == result["record"]
    assert_valid_record(record)
    assert record["kind"] == inputs["kind"] and record["id"] == inputs["id"]


def test_the_ami_sharing_lists_default_to_empty(tmp_path):
    record = run(dict(AMI, path=str(tmp_path)))["record"]
    assert record["sharing"] == {"accounts": ["111122223333"], "organizations": [], "ous": []}
    assert record["image_id"] == "ami-12345678"


def test_check_mode_writes_nothing(tmp_path):
    result = run(dict(CONTAINER, path=str(tmp_path)), check_mode=True)
    assert result["changed"] is True and result["record"]["name"] == "web"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (dict(CONTAINER, id="127.0.0.1:5000/web:1.4.0"), "field 'id' is '127.0.0.1:5000/web:1.4.0': expected"),
        (dict(CONTAINER, tags=["1.4.0"]), "field 'tags' lacks the fingerprint's tag fp-aaaa"),
        (dict(CONTAINER, fingerprint="fp-x"), "field 'fingerprint' is 'fp-x': expected sha256:<64 hex digits>"),
        (dict(AMI, id={"us-east-1": "i-0123"}), "field 'id' is {'us-east-1': 'i-0123'}"),
        (dict(AMI, region="eu-central-1"), "field 'id' has no 'eu-central-1'"),
        (dict(CONTAINER, bake_id="a/b"), "bake_id 'a/b' is not usable as a file name"),
    ],
)
def test_a_broken_input_fails_naming_the_field_and_writes_nothing(tmp_path, args, message):
    result = run(dict(args, path=str(tmp_path)))
    assert result["failed"] is True
    assert message in result["msg"], result["msg"]
    assert result["msg"].endswith(f"Nothing was written under {tmp_path}")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {k: v for k, v in CONTAINER.items() if k != "repository"},
            "kind is container but all of the following are missing: repository",
        ),
        ({k: v for k, v in AMI.items() if k != "sharing"}, "kind is ami but all of the following are missing: sharing"),
        (dict(CONTAINER, record={"schema": 1}), "record"),
    ],
)
def test_missing_or_unknown_options_are_refused_by_the_argument_spec(tmp_path, args, message):
    result = run(dict(args, path=str(tmp_path)))
    assert result["failed"] is True and message in result["msg"], result["msg"]
    assert list(tmp_path.iterdir()) == []


def documented(options):
    return {
        name: (
            option.get("type", "str"),
            option.get("required", False),
            option.get("default"),
            option.get("elements"),
            option.get("choices"),
            documented(option.get("suboptions", {})),
        )
        for name, option in options.items()
    }


def specified(spec):
    return {
        name: (
            option.get("type", "str"),
            option.get("required", False),
            option.get("default"),
            option.get("elements"),
            option.get("choices"),
            specified(option.get("options", {})),
        )
        for name, option in spec.items()
    }


def test_the_documentation_matches_the_argument_spec():
    doc = yaml.safe_load(artifact_record.DOCUMENTATION)
    assert doc["extends_documentation_fragment"] == ["immutable.infra.registry"]
    options = dict(doc["options"], **yaml.safe_load(RegistryFragment.DOCUMENTATION)["options"])
    assert documented(options) == specified(artifact_record.ARGUMENT_SPEC)
    assert yaml.safe_load(artifact_record.EXAMPLES) and yaml.safe_load(artifact_record.RETURN)


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_publish_to_a_registry_that_does_not_answer_fails_before_the_local_record(tmp_path):
    """The registry's record is written first: when the registry does not take it, no local record says the bake is
    done, and the password is not in the message (the happy path: tests/integration/test_shared_records.py)."""
    repository = f"127.0.0.1:{closed_port()}/web"
    password = "unit-test-Pa55word"
    args = dict(CONTAINER, repository=repository, id=f"{repository}@sha256:" + "9" * 64, path=str(tmp_path))
    result = run(dict(args, publish=True, registry_username="ci", registry_password=password))
    assert result["failed"] is True
    assert "the registry did not take the record: registry unreachable at 127.0.0.1:" in result["msg"], result["msg"]
    assert password not in json.dumps(result)
    assert list(tmp_path.iterdir()) == []


def test_publish_is_for_container_records_only(tmp_path):
    result = run(dict(AMI, path=str(tmp_path), publish=True))
    assert result["failed"] is True
    assert "publish is for kind=container only" in result["msg"]
    assert list(tmp_path.iterdir()) == []


def test_without_a_usable_package_tree_the_sbom_comes_from_the_image_scan(tmp_path, monkeypatch):
    """The automatic fallback of bake_sbom_scope=packages: a tree with no package database (or none at all) sends the
    SBOM step to the image scan, the result says so and why, and the temporary tree is removed. The registry and
    syft are stood in for (the real path, both ways: tests/integration/test_supply_chain_sbom.py)."""
    import tarfile

    scans = []

    def fake_ensure_sbom(client, image_id, artifacts_dir, app, publish, check_mode, generate):
        generate(image_id)
        return {"changed": True, "source": "syft", "file": str(tmp_path / "sbom.cdx.json"), "reference": None}

    monkeypatch.setattr(artifact_record, "ensure_sbom", fake_ensure_sbom)
    monkeypatch.setattr(artifact_record, "run_syft", lambda image_id, env: scans.append(image_id) or b"{}")
    monkeypatch.setattr(artifact_record, "syft_environment", lambda client, docker_config: {})
    tree = tmp_path / "tree.tar"
    with tarfile.open(tree, "w") as archive:
        info = tarfile.TarInfo("etc/hostname")
        archive.addfile(info)
    args = dict(CONTAINER, path=str(tmp_path / "artifacts"), sbom=True)
    module = artifact_record.record_sbom
    for extra, reason in (({"sbom_tree": str(tree)}, "no package database"), ({}, "no package tree was taken")):
        params, _no_log, failed = validate_args("immutable.infra.artifact_record", artifact_record, dict(args, **extra))
        assert not failed
        result = module(InProcessModule(params, check_mode=False), None, {"id": CONTAINER["id"]})
        assert result["source_kind"] == "image" and reason in result["fallback"] and result["cache"] is None
    assert scans == [CONTAINER["id"], CONTAINER["id"]]
    assert not tree.exists()
    params, _no_log, failed = validate_args(
        "immutable.infra.artifact_record", artifact_record, dict(args, sbom_scope="image", sbom_tree=str(tree))
    )
    result = module(InProcessModule(params, check_mode=False), None, {"id": CONTAINER["id"]})
    assert result["source_kind"] == "image" and result["fallback"] is None and len(scans) == 3
