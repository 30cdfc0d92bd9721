"""Signing: keys, the simple signing payload, DSSE (PAE, envelopes) and the provenance statement, checked against the
DSSE spec's own example and against openssl (a standard tool verifies what we sign). The registry side runs against
the real registry in tests/integration/test_supply_signing.py."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric import rsa

from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import SLSA_PROVENANCE_V1
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import build_statement
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import materials
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import materials_problems
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import parse_statement
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import statement_bytes
from ansible_collections.immutable.infra.plugins.module_utils.supply._provenance import subject_digests
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import attestation_tag
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import dsse_sign
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import dsse_verify
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import layered_manifest
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_private_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_public_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import pae
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import payload_digest
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import public_pem
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import sign_bytes
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import signature_tag
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import simple_signing_payload
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import verify_bytes

DIGEST = "sha256:" + "9c" * 32
BASE = "sha256:" + "0b" * 32
ROLES = [{"name": "immutable.infra.baseline", "fingerprint": "sha256:" + "1a" * 32}]


def pem_of(key, password=None):
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


@pytest.fixture(scope="module")
def key():
    return ec.generate_private_key(ec.SECP256R1())


def statement(**changes):
    values = dict(
        repository="127.0.0.1:5000/web",
        digest=DIGEST,
        name="web",
        fingerprint="sha256:" + "3f" * 32,
        base={"image": "immutable-infra/base:bookworm", "id": BASE},
        roles=ROLES,
        revision="abc123",
        source="",
        version="",
        collection_version="0.3.0",
        bake_id="20261204T150000-abcdef",
        started=1_764_860_400,
        finished=1_764_860_460,
    )
    values.update(changes)
    return build_statement(**values)


def test_pae_is_the_dsse_spec_example():
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md (lengths in bytes, ASCII decimal)
    expected = b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    assert pae("http://example.com/HelloWorld", b"hello world") == expected
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 " + "é".encode()


def test_dsse_envelope_verifies_and_refuses_a_changed_byte_or_another_key(key):
    envelope = dsse_sign(key, b'{"a":1}')
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert envelope["signatures"][0]["keyid"] == key_id(key)
    payload, found = dsse_verify(envelope, [key.public_key()])
    assert payload == b'{"a":1}' and key_id(found) == key_id(key)
    changed = dict(envelope, payload=base64.b64encode(b'{"a":2}').decode())
    with pytest.raises(SignError, match="does not verify"):
        dsse_verify(changed, [key.public_key()])
    with pytest.raises(SignError, match="does not verify"):
        dsse_verify(envelope, [ec.generate_private_key(ec.SECP256R1()).public_key()])
    with pytest.raises(SignError, match="not a DSSE envelope"):
        dsse_verify({"payload": "x"}, [key.public_key()])


def test_simple_signing_payload_names_the_repository_and_digest():
    payload = simple_signing_payload("127.0.0.1:5000/web", DIGEST)
    data = json.loads(payload)
    assert data["critical"]["identity"]["docker-reference"] == "127.0.0.1:5000/web"
    assert data["critical"]["image"]["docker-manifest-digest"] == DIGEST
    assert data["critical"]["type"] == "cosign container image signature"
    assert payload_digest(payload) == DIGEST
    with pytest.raises(SignError):
        payload_digest(b'{"critical": {}}')


def test_tags_follow_cosign():
    assert signature_tag(DIGEST) == "sha256-" + "9c" * 32 + ".sig"
    assert attestation_tag(DIGEST) == "sha256-" + "9c" * 32 + ".att"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verifies_what_we_sign(key, tmp_path):
    payload = simple_signing_payload("127.0.0.1:5000/web", DIGEST)
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "sig").write_bytes(base64.b64decode(sign_bytes(key, payload)))
    (tmp_path / "key.pub").write_text(public_pem(key))
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "key.pub", "-signature", "sig", "payload"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and "Verified OK" in done.stdout, done.stdout + done.stderr
    (tmp_path / "payload").write_bytes(payload.replace(b"9c", b"9d", 1))
    done = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", "key.pub", "-signature", "sig", "payload"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0


def test_keys_load_with_their_password_and_errors_never_show_the_key(key):
    secret = "pa55-Word-unit"
    encrypted = pem_of(key, secret)
    assert key_id(load_private_key(encrypted, secret)) == key_id(key)
    with pytest.raises(SignError, match="is encrypted: give its password") as missing:
        load_private_key(encrypted)
    with pytest.raises(SignError, match="wrong password") as wrong:
        load_private_key(encrypted, "nope")
    with pytest.raises(SignError, match="not encrypted but a password"):
        load_private_key(pem_of(key), secret)
    with pytest.raises(SignError, match="not a PEM private key"):
        load_private_key("garbage")
    rsa_pem = pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(SignError, match="not an ECDSA P-256 key"):
        load_private_key(rsa_pem)
    body = encrypted.splitlines()[1]
    for raised in (missing, wrong):
        assert body not in str(raised.value) and secret not in str(raised.value)
    assert key_id(load_public_key(public_pem(key))) == key_id(key)
    with pytest.raises(SignError, match="not a PEM public key"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_signatures_verify_only_with_the_signing_key(key):
    signature = sign_bytes(key, b"data")
    assert verify_bytes(key.public_key(), b"data", signature)
    assert not verify_bytes(key.public_key(), b"datA", signature)
    assert not verify_bytes(ec.generate_private_key(ec.SECP256R1()).public_key(), b"data", signature)
    assert not verify_bytes(key.public_key(), b"data", "not base64!")


def test_statement_subject_materials_and_times():
    built = statement()
    parsed = parse_statement(statement_bytes(built))
    assert parsed["predicateType"] == SLSA_PROVENANCE_V1
    assert subject_digests(parsed) == [DIGEST]
    claimed = materials(parsed)
    assert claimed == {
        "base": BASE,
        "roles": ROLES,
        "revision": "abc123",
        "collection_version": "0.3.0",
        "fingerprint": "sha256:" + "3f" * 32,
    }
    metadata = parsed["predicate"]["runDetails"]["metadata"]
    assert metadata == {
        "invocationId": "20261204T150000-abcdef",
        "startedOn": "2025-12-04T15:00:00Z",
        "finishedOn": "2025-12-04T15:01:00Z",
    }
    assert parsed["predicate"]["runDetails"]["builder"]["id"].endswith("0.3.0")


def test_materials_problems_name_what_differs_from_the_record():
    record = {"fingerprint": "sha256:" + "3f" * 32, "base": {"id": BASE}, "roles": ROLES, "revision": "abc123"}
    assert materials_problems(statement(), record) == []
    # a cached re-bake from a later commit records another revision of the same image: not a mismatch
    assert materials_problems(statement(revision="later"), record) == []
    other_roles = [{"name": "immutable.infra.baseline", "fingerprint": "sha256:" + "2b" * 32}]
    problems = materials_problems(statement(roles=other_roles), record)
    assert len(problems) == 1 and problems[0].startswith("roles immutable.infra.baseline=sha256:2b2b")
    problems = materials_problems(statement(base={"image": "x", "id": "sha256:" + "ff" * 32}), record)
    assert problems[0].startswith("base image sha256:ffff")


def test_parse_statement_refuses_what_is_not_slsa_provenance():
    with pytest.raises(Exception, match="not JSON"):
        parse_statement(b"{")
    with pytest.raises(Exception, match="not an in-toto Statement"):
        parse_statement(b'{"_type": "x"}')


def test_signature_manifest_is_cosigns_shape():
    body, config = layered_manifest([{"mediaType": "m", "digest": "sha256:" + "1" * 64, "size": 1}])
    manifest = json.loads(body)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert json.loads(config)["rootfs"]["diff_ids"] == ["sha256:" + "1" * 64]
