"""Signing and provenance (issue 20, items 3 and 4, and the verification half of 5) against the real registry.

One artifact for every case (module-scoped): first baked without a key (the record says it is not signed, the
registry holds no .sig/.att, verification says "no signature"), then baked again with an encrypted key at -vvv (a
cache hit: the artifact gets signed; the key and its password appear nowhere in the output), then once more (nothing
is re-signed). The verification cases run verify_artifact.yml once (the right key) and the refusals through the
module's own functions on the real registry, each restoring what it changed.
"""

from __future__ import annotations

import base64
import json
import sys

import pytest
from conftest import COLLECTIONS_DIR
from conftest import REPO_ROOT
from conftest import assert_valid_record
from conftest import run_playbook

if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryClient
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import list_artifacts
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import materials
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SIGNATURE_ANNOTATION
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SIMPLE_SIGNING_MEDIA_TYPE
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import attestation_tag
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import blob_descriptor
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_public_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import push_layers
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import read_layers
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import sign_bytes
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import signature_tag
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import simple_signing_payload
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import verify_artifact

pytestmark = [pytest.mark.docker, pytest.mark.registry]

APP = "signedapp"
BAKE = REPO_ROOT / "playbooks" / "bake.yml"
VERIFY = REPO_ROOT / "playbooks" / "verify_artifact.yml"
SERVE = "mkdir -p /tmp/w && echo ok > /tmp/w/healthz && cd /tmp/w && exec python3 -m http.server 8080"
PASSWORD = "k3y-pa55-Zq9xW7"


def show(res) -> str:
    return f"rc={res.returncode}\nSTDOUT:\n{res.stdout[-6000:]}\nSTDERR:\n{res.stderr[-3000:]}"


def new_key(path, password=None):
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (path.parent / (path.name + ".pub")).write_bytes(public)
    return pem, path.parent / (path.name + ".pub"), key


@pytest.fixture(scope="module")
def signed(registry, base_image, tmp_path_factory):
    here = tmp_path_factory.mktemp("signing")
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}
    client = RegistryClient(registry["address"], username=registry["username"], password=registry["password"])
    for tag in client.tags(APP):  # a previous run's signatures: this run must write its own
        if tag.endswith((".sig", ".att")):
            client.delete_manifest(APP, client.manifest(APP, tag)[0])
    pem, public_path, _key = new_key(here / "signing", PASSWORD)
    _other_pem, other_public, _other = new_key(here / "other")
    artifacts = here / "artifacts"
    extra = {
        "bake_name": APP,
        "bake_roles": [],
        "bake_image_config": {"cmd": ["/bin/sh", "-c", SERVE]},
        "bake_registry": registry["address"],
        "bake_artifacts_dir": str(artifacts),
    }
    # a bake that must be signed but has no key stops before anything builds
    required = run_playbook(BAKE, dict(extra, bake_sign="required"), env=env, cwd=here, timeout=600)
    # without a key: not signed, and the record says so
    unsigned = run_playbook(BAKE, extra, env=env, cwd=here, timeout=900)
    assert unsigned.returncode == 0, show(unsigned)
    unsigned_record = json.loads((artifacts / APP / "latest.json").read_text())
    unsigned_tags = sorted(client.tags(APP))
    digest = unsigned_record["digest"]
    unsigned_check = verify_artifact(
        client, unsigned_record["repository"], APP, digest, [load_public_key(public_path.read_bytes())], None
    )
    # with the key (encrypted, its password as a variable), at -vvv: the cached artifact gets signed
    keyed = dict(extra, bake_signing_key=pem, bake_signing_key_password=PASSWORD, bake_sign="required")
    first = run_playbook(BAKE, keyed, "-vvv", env=env, cwd=here, timeout=900)
    assert first.returncode == 0, show(first)
    record = json.loads((artifacts / APP / "latest.json").read_text())
    sig_before = client.manifest(APP, signature_tag(digest))
    again = run_playbook(BAKE, keyed, env=env, cwd=here, timeout=900)
    assert again.returncode == 0, show(again)
    return {
        "here": here,
        "env": env,
        "client": client,
        "required": required,
        "unsigned_record": unsigned_record,
        "unsigned_tags": unsigned_tags,
        "unsigned_check": unsigned_check,
        "first": first,
        "again": again,
        "record": record,
        "again_record": json.loads((artifacts / APP / "latest.json").read_text()),
        "sig_before": sig_before,
        "pem": pem,
        "public": public_path,
        "other_public": other_public,
        "digest": digest,
        "repository": record["repository"],
        "artifact": record["id"],
    }


def check(signed, public=None):
    keys = [load_public_key((public or signed["public"]).read_bytes())]
    return verify_artifact(signed["client"], signed["repository"], APP, signed["digest"], keys, signed["record"])


def test_sign_required_without_a_key_stops_before_anything_builds(signed):
    res = signed["required"]
    assert res.returncode != 0
    assert "bake_sign is required but no signing key is configured" in res.stdout
    assert "Start the builder container" not in res.stdout


def test_without_a_key_nothing_is_signed_and_the_record_says_so(signed):
    assert_valid_record(signed["unsigned_record"])
    assert signed["unsigned_record"]["signature"] == {
        "signed": False,
        "key_id": None,
        "signature": None,
        "attestation": None,
        "provenance": None,
    }
    assert not [tag for tag in signed["unsigned_tags"] if tag.endswith((".sig", ".att"))]
    result = signed["unsigned_check"]
    assert result["verified"] is False
    assert result["signature"]["status"] == "missing"
    assert result["problems"][0].startswith("no signature")


def test_the_key_and_its_password_never_appear_in_the_output(signed):
    body = "".join(signed["pem"].strip().splitlines()[1:-1])
    for res in (signed["first"], signed["again"]):
        text = res.stdout + res.stderr
        assert PASSWORD not in text
        assert "PRIVATE KEY" not in text
        for line in signed["pem"].strip().splitlines()[1:-1]:
            assert line not in text
        assert body[:40] not in text
    stored = "".join(p.read_text() for p in (signed["here"] / "artifacts").rglob("*.json"))
    assert PASSWORD not in stored and "PRIVATE KEY" not in stored


def test_the_bake_signs_and_a_cached_rebake_signs_nothing_again(signed):
    assert_valid_record(signed["record"])
    field = signed["record"]["signature"]
    assert field["signed"] is True
    assert field["signature"] == f"{signed['repository']}:{signature_tag(signed['digest'])}"
    assert field["attestation"] == f"{signed['repository']}:{attestation_tag(signed['digest'])}"
    assert (signed["here"] / "artifacts" / APP / field["provenance"]).is_file()
    assert signed["client"].manifest(APP, signature_tag(signed["digest"])) == signed["sig_before"]
    assert signed["again_record"]["signature"] == field
    assert "Sign the digest and attest the provenance" in signed["again"].stdout


def test_verify_playbook_passes_with_the_right_key(signed):
    res = run_playbook(
        VERIFY,
        {"artifact": signed["artifact"], "verify_public_keys": [str(signed["public"])]},
        env=dict(signed["env"], IMMUTABLE_ARTIFACTS_DIR=str(signed["here"] / "artifacts")),
        cwd=signed["here"],
        timeout=300,
    )
    assert res.returncode == 0, show(res)
    assert "signed by sha256:" in res.stdout
    assert "materials match" in res.stdout


def test_verify_playbook_refuses_another_key(signed):
    res = run_playbook(
        VERIFY,
        # one key as a string (-e verify_public_keys=<file>)
        {"artifact": signed["artifact"], "verify_public_keys": str(signed["other_public"])},
        env=signed["env"],
        cwd=signed["here"],
        timeout=300,
    )
    assert res.returncode != 0
    assert "is refused" in res.stdout
    assert "not signed by a trusted key" in res.stdout


def test_provenance_subject_is_the_pushed_digest_and_materials_are_the_records(signed):
    result = check(signed)
    assert result["verified"] is True, result["problems"]
    assert result["provenance"]["subject"] == [signed["digest"]]
    claimed = result["provenance"]["materials"]
    record = signed["record"]
    assert claimed["roles"] == record["roles"]
    assert claimed["base"] == record["base"]["id"]
    assert claimed["fingerprint"] == record["fingerprint"]
    assert materials(json.loads(base64.b64decode(read_envelope(signed)["payload"])))["roles"] == record["roles"]


def read_envelope(signed):
    entries = read_layers(signed["client"], APP, attestation_tag(signed["digest"]))
    return json.loads(entries[0][1])


def test_a_modified_attestation_is_refused(signed):
    client, tag = signed["client"], attestation_tag(signed["digest"])
    before = client.manifest(APP, tag)
    descriptor, blob = read_layers(client, APP, tag)[0]
    envelope = json.loads(blob)
    payload = bytearray(base64.b64decode(envelope["payload"]))
    at = payload.index(b'"invocationId":"') + len(b'"invocationId":"')
    payload[at] = ord("X") if payload[at] != ord("X") else ord("Y")  # one byte changed
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    changed = json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()
    try:
        layer = blob_descriptor(descriptor["mediaType"], changed, descriptor["annotations"])
        push_layers(client, APP, tag, [(layer, changed)])
        result = check(signed)
        assert result["verified"] is False
        assert result["signature"]["status"] == "valid"
        assert result["provenance"]["status"] == "tampered"
        assert "modified after signing" in result["problems"][0]
    finally:
        client.put_manifest(APP, tag, before[2], before[1])  # the original manifest, byte for byte
    assert check(signed)["verified"] is True
    assert client.manifest(APP, tag) == before


def test_a_signature_of_another_digest_copied_onto_the_tag_is_refused(signed):
    client, tag = signed["client"], signature_tag(signed["digest"])
    before = client.manifest(APP, tag)
    # the trusted key's signature of another image, as if copied from that image's .sig tag
    trusted_private = serialization.load_pem_private_key(signed["pem"].encode(), password=PASSWORD.encode())
    other_digest = "sha256:" + "ab" * 32
    payload = simple_signing_payload(signed["repository"], other_digest)
    annotations = {SIGNATURE_ANNOTATION: sign_bytes(trusted_private, payload)}
    layer = blob_descriptor(SIMPLE_SIGNING_MEDIA_TYPE, payload, annotations)
    try:
        push_layers(client, APP, tag, [(layer, payload)])
        result = check(signed)
        assert result["verified"] is False
        assert result["signature"]["status"] == "other_digest"
        assert other_digest in result["problems"][0] and "tampered" in result["problems"][0]
    finally:
        client.put_manifest(APP, tag, before[2], before[1])  # the original manifest, byte for byte
    assert check(signed)["verified"] is True
    assert client.manifest(APP, tag) == before


def test_registry_gc_counts_signatures_as_part_of_their_artifact(signed):
    artifacts = list_artifacts(signed["client"], APP)
    assert [tag for a in artifacts for tag in a["tags"] if tag.endswith((".sig", ".att"))] == []
    mine = next(a for a in artifacts if a["digest"] == signed["digest"])
    kept_beside = {ref["tag"] for ref in mine["referrers"]}
    assert {signature_tag(signed["digest"]), attestation_tag(signed["digest"])} <= kept_beside
