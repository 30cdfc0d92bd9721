"""Records a team can share: a bake in one working directory keeps the artifact record in the registry beside the
image (sha256-<hex>.record); a promotion from another working directory, whose artifacts/ is empty, reads it there.
Real Docker Engine, the local registry with auth, a self-contained nginx per environment (test_promotion's Chain).
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from conftest import COLLECTIONS_DIR
from conftest import REPO_ROOT
from conftest import run_playbook
from moto_fixtures import FAKE_ENV
from moto_fixtures import ec2_client
from moto_fixtures import register_base_ami
from moto_fixtures import start_moto
from moto_fixtures import stop_moto
from test_promotion import Chain
from test_promotion import last_line
from test_promotion import registry_tag_digest
from test_promotion import show

if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_reader
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import serialise
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import MEDIA_OCI_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import publish_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import read_registry_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import record_manifest
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import ROLE_IMAGE
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_BAKE_ID
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_REVISION
from ansible_collections.immutable.infra.plugins.module_utils.bake.ami._common import TAG_ROLE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryClient
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import list_artifacts
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_record

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.nginx]

APP = "sharedrec"
# no role but the seal: a small image whose only service answers /healthz on 8080 (the base image has python3)
SERVE = "mkdir -p /tmp/w && echo ok > /tmp/w/healthz && cd /tmp/w && exec python3 -m http.server 8080"
IMAGE_CONFIG = {"cmd": ["/bin/sh", "-c", SERVE]}


def client(registry) -> RegistryClient:
    return RegistryClient(registry["address"], username=registry["username"], password=registry["password"])


@pytest.fixture(scope="module")
def baked(registry, base_image, tmp_path_factory):
    """One bake in working directory A (its own artifacts/). The registry's record of a previous run is deleted
    first, so this bake has to write it whether it builds or reuses the image."""
    registry_env = {
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
    }
    here = tmp_path_factory.mktemp("bake_dir_a")
    regclient = client(registry)
    for tag in regclient.tags(APP):
        if tag.endswith(".record"):
            regclient.delete_manifest(APP, regclient.manifest(APP, tag)[0])
    extra = {
        "bake_name": APP,
        "bake_roles": [],
        "bake_image_config": IMAGE_CONFIG,
        "bake_registry": registry["address"],
        "bake_artifacts_dir": str(here / "artifacts"),
    }
    res = run_playbook(REPO_ROOT / "playbooks" / "bake.yml", extra, env=registry_env, cwd=here, timeout=900)
    assert res.returncode == 0, show(res)
    record = json.loads((here / "artifacts" / APP / "latest.json").read_text())
    assert f"{record['repository']}:{record_tag(record['digest'])}" in res.stdout, show(res)
    return {"record": record, "env": registry_env, "dir": here}


def directory_b(root, record, env, **settings):
    """Working directory B: an inventory of three environments, an EMPTY artifacts/, a ledger file outside it (the
    shared one); settings: promotion_* values replacing the docker ones."""
    made = Chain(root, APP, [record], env=env)
    shutil.rmtree(made.root / "artifacts")
    (made.root / "artifacts").mkdir()
    made.ledger_path = root.parent / "shared" / "ledger.json"
    settings_file = made.inventory / "group_vars" / "all" / "promotion.yml"
    values = json.loads(settings_file.read_text())
    values.update(promotion_ledger={"backend": "file", "path": str(made.ledger_path)}, **settings)
    settings_file.write_text(json.dumps(values))
    return made


@pytest.fixture
def other_dir(tmp_path, baked):
    made = directory_b(tmp_path / "b", baked["record"], baked["env"])
    try:
        yield made
    finally:
        made.teardown()


def test_promote_from_another_directory_reads_the_record_kept_in_the_registry(baked, other_dir, registry):
    record, b = baked["record"], other_dir
    reference = f"{record['repository']}:{record_tag(record['digest'])}"
    assert not any((b.root / "artifacts").iterdir())

    res = b.run("deploy.yml", env="dev", artifact=record["id"])
    assert res.returncode == 0, show(res)
    res = b.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    assert record["id"] in last_line(res, APP, "staging")
    assert b.entry("staging")["history"][-1]["from_env"] == "dev"
    for env in ("dev", "staging"):
        entry = b.entry(env)
        assert entry["live"] == record["id"]
        # the ledger names where the record came from: the registry, not a file
        assert entry["history"][-1]["record"] == reference
        assert record["digest"] in b.running_digests(env)
    # the environment tag needs the record's repository and fingerprint: it came from the registry's record
    assert registry_tag_digest(registry, record["repository"], "staging") == record["digest"]
    assert not any((b.root / "artifacts").iterdir())

    res = b.run("verify.yml")
    assert res.returncode == 0, show(res)
    assert "no drift" in res.stdout

    # a cached re-bake does not rewrite the record: the same manifest stays under the tag
    regclient = client(registry)
    before = regclient.manifest(APP, record_tag(record["digest"]))[0]
    assert publish_record(regclient, dict(record, bake_id="later", cached=True)) == {
        "changed": False,
        "reference": reference,
        "digest": before,
    }
    # registry_gc sees the record as part of its image (deleted with it), never as a manifest of its own
    listed = list_artifacts(regclient, APP)
    assert [item["record"] for item in listed if item["digest"] == record["digest"]] == [before]
    assert not [tag for item in listed for tag in item["tags"] if tag.endswith(".record")]


def test_an_altered_record_in_the_registry_is_refused_and_a_bake_writes_it_again(baked, other_dir, registry):
    record, b = baked["record"], other_dir
    regclient = client(registry)
    tag = record_tag(record["digest"])
    image = regclient.manifest(APP, record["digest"])
    subject = {"mediaType": image[1], "digest": image[0], "size": len(image[2])}

    def store(altered):
        blob = serialise(altered).encode()
        regclient.put_blob(APP, blob)
        regclient.put_manifest(APP, tag, record_manifest(blob, subject), MEDIA_OCI_MANIFEST)

    # the record of another digest under this image's record tag
    other = "sha256:" + "0" * 64
    store(dict(record, digest=other, id=f"{record['repository']}@{other}"))
    res = b.run("deploy.yml", env="dev", artifact=record["id"])
    assert res.returncode != 0
    assert f"describes {record['repository']}@{other}, not {record['id']}" in res.stdout, show(res)
    assert "refused" in res.stdout
    assert not b.ledger_path.exists()
    assert registry["password"] not in res.stdout + res.stderr

    # a record that claims another fingerprint than the image's label (tags adjusted so the record itself is valid)
    fingerprint = "sha256:" + "1" * 64
    store(dict(record, fingerprint=fingerprint, tags=["fp-" + "1" * 64]))
    with pytest.raises(RecordError, match=f"says fingerprint {fingerprint} but the image carries"):
        read_registry_record(regclient, record["id"])

    # writing the record again (as the next bake of this image does) replaces the altered one
    assert publish_record(regclient, record)["changed"] is True
    assert read_registry_record(regclient, record["id"]) == record


def test_an_artifact_without_any_record_is_refused_naming_both_places(baked, registry, tmp_path):
    unknown = f"{baked['record']['repository']}@sha256:{'2' * 64}"

    def client_for(host):
        assert host == registry["address"]
        return client(registry)

    with pytest.raises(PromotionError) as refused:
        resolve_record([], unknown, str(tmp_path / "artifacts"), APP, client_for)
    assert "unknown to every artifact record" in refused.value.message
    assert str(tmp_path / "artifacts" / APP / "records") in refused.value.message
    assert f"{baked['record']['repository']}:{record_tag('sha256:' + '2' * 64)}" in refused.value.message
    # the baked one is found in the registry (directory A's records are not there) and added to the known records
    records = []
    found = resolve_record(records, baked["record"]["id"], str(tmp_path / "artifacts"), APP, client_for)
    assert records == [found]
    assert (found["id"], found["fingerprint"]) == (baked["record"]["id"], baked["record"]["fingerprint"])


# --- AMIs: the bake's tags on every copy are the record the promotion reads (moto_server) -------------------------

MOTO_PORT = 5074


@pytest.fixture(scope="module")
def moto_server():
    try:
        process, endpoint = start_moto(MOTO_PORT)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield endpoint
    finally:
        stop_moto(process)


def baked_ami(ec2, fingerprint: str, bake_id: str) -> str:
    """An AMI with the tags immutable.infra.bake_ami gives the image and each copy."""
    ami = register_base_ami(ec2)
    tags = {TAG_FINGERPRINT: fingerprint, TAG_ROLE: ROLE_IMAGE, TAG_BAKE_ID: bake_id, TAG_REVISION: "abc1234"}
    ec2.create_tags(Resources=[ami], Tags=[{"Key": key, "Value": value} for key, value in tags.items()])
    return ami


def test_an_ami_promotion_from_a_directory_without_records_reads_the_amis_tags(moto_server, tmp_path, unique):
    fingerprint = "sha256:" + unique * 8
    east, west = ec2_client(moto_server, "us-east-1"), ec2_client(moto_server, "eu-west-1")
    artifact = {"us-east-1": baked_ami(east, fingerprint, "b1"), "eu-west-1": baked_ami(west, fingerprint, "b1")}
    aws = {"endpoint_url": moto_server, "region": "us-east-1"}
    record = {"id": "127.0.0.1:1/unused@sha256:" + "0" * 64}
    b = directory_b(tmp_path / "b", record, FAKE_ENV, promotion_backend="none", promotion_aws=aws)

    res = b.run("deploy.yml", env="dev", artifact=artifact)
    assert res.returncode == 0, show(res)
    res = b.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    entry = b.entry("staging")
    assert entry["live"] == artifact
    assert entry["history"][-1]["record"] == f"ec2:eu-west-1/{artifact['eu-west-1']},us-east-1/{artifact['us-east-1']}"

    # a copy whose tags name another bake: the region map is refused, nothing recorded
    before = b.ledger_path.read_bytes()
    west.create_tags(Resources=[artifact["eu-west-1"]], Tags=[{"Key": TAG_FINGERPRINT, "Value": "sha256:" + "f" * 64}])
    res = b.run("promote.yml", **{"from": "staging", "to": "prod"})
    assert res.returncode != 0
    assert "do not describe one bake" in res.stdout and "Refused" in res.stdout, show(res)
    assert b.ledger_path.read_bytes() == before

    # an AMI no bake tagged has no record anywhere (the step's reader, as above, without a playbook run)
    untagged = {"us-east-1": register_base_ami(east)}
    read_ami = ami_reader(lambda region: ec2_client(moto_server, region))
    with pytest.raises(PromotionError) as refused:
        resolve_record([], untagged, str(b.root / "artifacts"), APP, None, read_ami)
    assert "unknown to every artifact record" in refused.value.message
    assert "nor in its AMIs' tags" in refused.value.message
