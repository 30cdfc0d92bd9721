# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Signatures of artifacts: cosign-compatible simple signing and DSSE envelopes, with an ECDSA P-256 key.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

What is written (docs/supply-chain.md, "Signatures" and "Provenance"), beside the image in its repository, found
from the image's digest alone (the OCI referrers "tag schema", as the artifact record's ``sha256-<hex>.record``):

- ``sha256-<hex>.sig``: cosign's signature manifest. One layer per signature, media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``, whose blob is the "simple signing" payload naming the
  repository and the image's manifest digest, and whose annotation ``dev.cosignproject.cosign/signature`` holds the
  base64 of the ECDSA (SHA-256, DER) signature of that blob. ``cosign verify --key cosign.pub`` checks it.
- ``sha256-<hex>.att``: cosign's attestation manifest. One layer, media type ``application/vnd.dsse.envelope.v1+json``,
  whose blob is a DSSE envelope of an in-toto Statement (module_utils/supply/_provenance.py), signed over the DSSE
  pre-authentication encoding (PAE) with the same key.

Keys are PEM: a PKCS#8 / SEC1 EC private key (optionally encrypted with a password) and its SubjectPublicKeyInfo
public key. The key ID is ``sha256:<hex>`` of the public key's DER. Nothing here ever returns or logs a private key
or its password.
"""

from __future__ import annotations

import base64
import hashlib
import json

try:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - cryptography comes with ansible-core
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_IMPORT_ERROR = _exc

from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_OCI_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.supply import _provenance

SIGNATURE_TAG_SUFFIX = ".sig"
ATTESTATION_TAG_SUFFIX = ".att"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
SIGNATURE_TYPE = "cosign container image signature"


class SignError(Exception):
    """A key cannot be used or a signature cannot be written; the message names the fix and holds no secret."""


def _require_cryptography():
    if not HAS_CRYPTOGRAPHY:
        raise SignError(
            f"signing needs the Python package cryptography (it comes with ansible-core): {CRYPTOGRAPHY_IMPORT_ERROR}"
        )


# -- tags ----------------------------------------------------------------------------------------------------


def _suffixed(digest, suffix):
    algorithm, _sep, hexdigest = str(digest).partition(":")
    return f"{algorithm}-{hexdigest}{suffix}"


def signature_tag(digest):
    """sha256:<hex> -> sha256-<hex>.sig (cosign's tag of the signatures of that image)."""
    return _suffixed(digest, SIGNATURE_TAG_SUFFIX)


def attestation_tag(digest):
    """sha256:<hex> -> sha256-<hex>.att (cosign's tag of the attestations of that image)."""
    return _suffixed(digest, ATTESTATION_TAG_SUFFIX)


# -- keys ----------------------------------------------------------------------------------------------------


def load_private_key(pem, password=None, where="the signing key"):
    """An EC P-256 private key from PEM text (str or bytes). SignError names what is wrong, never the key."""
    _require_cryptography()
    data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
    secret = password.encode("utf-8") if isinstance(password, str) and password != "" else None
    try:
        key = serialization.load_pem_private_key(data, password=secret)
    except TypeError:
        if secret is None:
            raise SignError(f"{where} is encrypted: give its password (bake_signing_key_password)") from None
        raise SignError(f"{where} is not encrypted but a password was given: remove the password") from None
    except ValueError:
        if secret is not None and b"ENCRYPTED" in data:
            raise SignError(f"{where} cannot be decrypted: wrong password (bake_signing_key_password)") from None
        raise SignError(
            f"{where} is not a PEM private key: give an EC P-256 key, e.g. from"
            " `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`"
        ) from None
    except Exception:  # noqa: BLE001 - cryptography raises others for unsupported encryptions; never show the key
        raise SignError(f"{where} cannot be read: give an EC P-256 PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SignError(
            f"{where} is not an ECDSA P-256 key ({type(key).__name__}): generate one with"
            " `openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt`"
        )
    return key


def load_public_key(pem, where="the public key"):
    """An EC P-256 public key from PEM text (SubjectPublicKeyInfo, "BEGIN PUBLIC KEY")."""
    _require_cryptography()
    data = pem.encode("utf-8") if isinstance(pem, str) else bytes(pem)
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # noqa: BLE001 - a broken key of any kind: say so, with the fix
        raise SignError(
            f"{where} is not a PEM public key: give the output of `openssl ec -in key.pem -pubout`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise SignError(f"{where} is not an ECDSA P-256 public key ({type(key).__name__})")
    return key


def read_private_key(params):
    """The private key of a module's private_key / private_key_path / private_key_password options, None when neither
    is given; SignError names the problem, never the key."""
    if params.get("private_key_path"):
        where = f"the signing key {params['private_key_path']}"
        try:
            with open(params["private_key_path"], "rb") as handle:
                pem = handle.read()
        except OSError as exc:
            raise SignError(f"cannot read {where}: {exc.strerror}: check bake_signing_key_path") from None
    elif params.get("private_key"):
        where, pem = "the signing key (bake_signing_key)", params["private_key"]
    else:
        return None
    return load_private_key(pem, params.get("private_key_password"), where=where)


def public_pem(key):
    """The PEM text of a public key (or of a private key's public half)."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_id(key):
    """sha256:<hex of the public key's DER>: names a key in results, envelopes and records."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign_bytes(private_key, data):
    """base64 of the ECDSA-SHA256 (DER) signature of data."""
    return base64.b64encode(private_key.sign(data, ec.ECDSA(hashes.SHA256()))).decode("ascii")


def verify_bytes(public_key, data, signature_b64):
    """Whether signature_b64 is public_key's ECDSA-SHA256 signature of data."""
    try:
        raw = base64.b64decode(signature_b64, validate=True)
        public_key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def matching_key(public_keys, data, signature_b64):
    """The first of public_keys that verifies the signature, or None."""
    for key in public_keys:
        if verify_bytes(key, data, signature_b64):
            return key
    return None


# -- simple signing payload ------------------------------------------------------------------------------------


def simple_signing_payload(repository, digest):
    """The payload cosign signs for an image: its repository and manifest digest (canonical JSON bytes)."""
    payload = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def payload_digest(payload):
    """The image digest a simple signing payload names; SignError when it is not one."""
    try:
        critical = json.loads(payload.decode("utf-8"))["critical"]
        if critical["type"] != SIGNATURE_TYPE:
            raise SignError(f"the signed payload is of type {critical['type']!r}, not {SIGNATURE_TYPE!r}")
        return critical["image"]["docker-manifest-digest"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise SignError("the signed payload is not a simple signing payload") from None


# -- DSSE ------------------------------------------------------------------------------------------------------


def pae(payload_type, payload):
    """DSSE v1 pre-authentication encoding: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body (LEN in bytes)."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def dsse_sign(private_key, payload, payload_type=IN_TOTO_PAYLOAD_TYPE):
    """A DSSE envelope (dict) of payload (bytes) signed with private_key."""
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": key_id(private_key), "sig": sign_bytes(private_key, pae(payload_type, payload))}],
    }


def dsse_verify(envelope, public_keys):
    """(payload bytes, the key that verified) of a DSSE envelope; SignError says why it is refused."""
    try:
        payload_type = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, ValueError):
        raise SignError("the attestation is not a DSSE envelope (payloadType, payload, signatures)") from None
    if not signatures:
        raise SignError("the attestation's DSSE envelope has no signature")
    message = pae(str(payload_type), payload)
    for entry in signatures:
        key = matching_key(public_keys, message, (entry or {}).get("sig", "") if isinstance(entry, dict) else "")
        if key is not None:
            return payload, key
    raise SignError(
        "the attestation's DSSE signature does not verify with any trusted key: it was signed with another key,"
        " or its statement was modified after signing"
    )


# -- manifests -------------------------------------------------------------------------------------------------


def _canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def empty_config(layers):
    """The config blob cosign writes under its signature manifests (rootfs names the layers)."""
    return _canonical(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"diff_ids": [layer["digest"] for layer in layers], "type": "layers"},
        }
    )


def blob_descriptor(media_type, blob, annotations):
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "annotations": annotations,
    }


def layered_manifest(layers, subject=None):
    """(manifest bytes, config bytes) of an OCI manifest holding these layer descriptors (and pointing at subject, a
    descriptor of the image, so a registry with the Referrers API lists it too)."""
    config = empty_config(layers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG_MEDIA_TYPE,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
    }
    if subject is not None:
        manifest["subject"] = subject
    return _canonical(manifest), config


def read_layers(client, path, tag):
    """[(descriptor, blob)] of the manifest under tag, None when the tag does not exist. A blob that does not match
    its digest raises SignError."""
    return read_manifest_layers(client, path, tag)[1]


def read_manifest_layers(client, path, tag):
    """(manifest digest, [(descriptor, blob)]) of the manifest under tag; (None, None) when the tag does not exist."""
    found = client.manifest(path, tag)
    if found is None:
        return None, None
    try:
        layers = json.loads(found[2]).get("layers") or []
    except (ValueError, AttributeError):
        raise SignError(f"{tag} is not an OCI manifest") from None
    result = []
    for layer in layers:
        blob = client.blob(path, layer.get("digest"))
        if "sha256:" + hashlib.sha256(blob).hexdigest() != layer.get("digest"):
            raise SignError(f"a blob of {tag} does not match its digest: the registry's storage is damaged")
        result.append((layer, blob))
    return found[0], result


def push_layers(client, path, tag, entries, subject=None):
    """Write [(descriptor, blob)] as the OCI manifest under tag. Returns the manifest's digest."""
    body, config = layered_manifest([descriptor for descriptor, _blob in entries], subject)
    client.put_blob(path, config)
    for _descriptor, blob in entries:
        client.put_blob(path, blob)
    return client.put_manifest(path, tag, body, MEDIA_OCI_MANIFEST)


# -- signing an artifact (after the push) ----------------------------------------------------------------------


def _payloads(entries):
    """[(descriptor, blob, digest the payload names or None)] of a signature manifest's layers."""
    found = []
    for descriptor, blob in entries or []:
        try:
            named = payload_digest(blob)
        except SignError:
            named = None
        found.append((descriptor, blob, named))
    return found


def _envelope(blob):
    try:
        envelope = json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return envelope if isinstance(envelope, dict) else None


def sign_artifact(client, repository, path, digest, private_key, statement, check_mode=False):
    """Sign the image repository@digest and attest its provenance statement, beside it in the registry.

    Idempotent: a signature of this digest by this key under sha256-<hex>.sig, and an attestation of this digest
    signed by this key under sha256-<hex>.att, are left alone (a cached re-bake writes nothing). Other signers'
    signatures of this digest are kept; anything else under those tags (another digest's signature, a modified
    attestation) is replaced. Returns {key_id, signature: {reference, digest, changed}, attestation: {...},
    envelope}."""
    public = private_key.public_key()
    result = {"key_id": key_id(private_key)}
    subjects = []

    def subject():
        # only before a write: what is signed already needs no more requests (a cached re-bake)
        if not subjects:
            image = client.manifest(path, digest)
            if image is None:
                raise SignError(f"{repository}@{digest} is not in the registry: push the image before signing it")
            subjects.append({"mediaType": image[1], "digest": image[0], "size": len(image[2])})
        return subjects[0]

    sig_tag = signature_tag(digest)
    sig_digest, sig_entries = read_manifest_layers(client, path, sig_tag)
    existing = _payloads(sig_entries)
    mine = [
        entry
        for entry in existing
        if entry[2] == digest
        and verify_bytes(public, entry[1], (entry[0].get("annotations") or {}).get(SIGNATURE_ANNOTATION, ""))
    ]
    signature = {"reference": f"{repository}:{sig_tag}", "changed": not mine, "digest": None}
    if mine:
        signature["digest"] = sig_digest
    elif not check_mode:
        image = subject()
        payload = simple_signing_payload(repository, digest)
        annotations = {SIGNATURE_ANNOTATION: sign_bytes(private_key, payload)}
        layer = blob_descriptor(SIMPLE_SIGNING_MEDIA_TYPE, payload, annotations)
        others = [(descriptor, blob) for descriptor, blob, named in existing if named == digest]
        signature["digest"] = push_layers(client, path, sig_tag, others + [(layer, payload)], image)
    result["signature"] = signature

    att_tag = attestation_tag(digest)
    kept = None
    att_digest, att_entries = read_manifest_layers(client, path, att_tag)
    for _descriptor, blob in att_entries or []:
        envelope = _envelope(blob)
        if envelope is None:
            continue
        try:
            payload, _key = dsse_verify(envelope, [public])
            if digest in _provenance.subject_digests(_provenance.parse_statement(payload)):
                kept = envelope
                break
        except (SignError, _provenance.ProvenanceError):
            continue
    attestation = {"reference": f"{repository}:{att_tag}", "changed": kept is None, "digest": None}
    if kept is not None:
        attestation["digest"] = att_digest
        result["envelope"] = kept
    else:
        envelope = dsse_sign(private_key, _provenance.statement_bytes(statement))
        result["envelope"] = envelope
        if not check_mode:
            image = subject()
            blob = _canonical(envelope)
            annotations = {SIGNATURE_ANNOTATION: "", "predicateType": _provenance.SLSA_PROVENANCE_V1}
            layer = blob_descriptor(DSSE_MEDIA_TYPE, blob, annotations)
            attestation["digest"] = push_layers(client, path, att_tag, [(layer, blob)], image)
    result["attestation"] = attestation
    return result


# -- verifying an artifact -------------------------------------------------------------------------------------


def _check_signature(client, repository, path, digest, public_keys):
    """{status, reference, key_id, detail}: status valid, missing, invalid, wrong_key or other_digest."""
    tag = signature_tag(digest)
    result = {"reference": f"{repository}:{tag}", "key_id": None}
    try:
        entries = read_layers(client, path, tag)
    except SignError as exc:
        return dict(result, status="invalid", detail=f"{repository}:{tag}: {exc}")
    if not entries:
        return dict(
            result,
            status="missing",
            detail=f"no signature: the registry holds no {tag} for {repository}@{digest} (bake it with a signing key,"
            " bake_signing_key)",
        )
    named_other, signed_by_other = [], False
    for descriptor, blob, named in _payloads(entries):
        if descriptor.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE or named is None:
            continue
        signature = (descriptor.get("annotations") or {}).get(SIGNATURE_ANNOTATION, "")
        key = matching_key(public_keys, blob, signature)
        if named != digest:
            named_other.append(named)
            continue
        if key is None:
            signed_by_other = True
            continue
        return dict(result, status="valid", key_id=key_id(key), detail=f"signed by {key_id(key)}")
    if named_other:
        return dict(
            result,
            status="other_digest",
            detail=f"tampered: {tag} holds a signature of {named_other[0]}, not of {digest}: the signature tag was"
            " moved or copied from another image; refused",
        )
    if signed_by_other:
        return dict(
            result,
            status="wrong_key",
            detail=f"{tag} is not signed by a trusted key ({len(public_keys)} given): signed with another key, or"
            " the signature was modified; refused",
        )
    return dict(result, status="invalid", detail=f"{tag} holds no simple signing payload: it is not a signature")


def _check_attestation(client, repository, path, digest, public_keys, record):
    """{status, reference, key_id, subject, materials, detail}: valid, missing, invalid, wrong_key,
    subject_mismatch, materials_mismatch or no_record."""
    tag = attestation_tag(digest)
    result = {"reference": f"{repository}:{tag}", "key_id": None, "subject": [], "materials": None}
    try:
        entries = read_layers(client, path, tag)
    except SignError as exc:
        return dict(result, status="invalid", detail=f"{repository}:{tag}: {exc}")
    if not entries:
        return dict(result, status="missing", detail=f"no provenance: the registry holds no {tag} for {digest}")
    envelopes = [_envelope(blob) for descriptor, blob in entries if descriptor.get("mediaType") == DSSE_MEDIA_TYPE]
    envelopes = [envelope for envelope in envelopes if envelope is not None]
    if not envelopes:
        return dict(result, status="invalid", detail=f"{tag} holds no DSSE envelope: it is not an attestation")
    failure = None
    for envelope in envelopes:
        try:
            payload, key = dsse_verify(envelope, public_keys)
            statement = _provenance.parse_statement(payload)
        except (SignError, _provenance.ProvenanceError) as exc:
            failure = failure or str(exc)
            continue
        subjects = _provenance.subject_digests(statement)
        found = dict(result, key_id=key_id(key), subject=subjects, materials=_provenance.materials(statement))
        if digest not in subjects:
            return dict(
                found,
                status="subject_mismatch",
                detail=f"the provenance in {tag} is about {', '.join(subjects) or 'nothing'}, not {digest}: refused",
            )
        if record is None:
            return dict(
                found,
                status="no_record",
                detail=f"no artifact record of {repository}@{digest} (local or {repository}:sha256-….record): its"
                " digest was never recorded by a bake, so its materials cannot be checked",
            )
        problems = _provenance.materials_problems(statement, record)
        if problems:
            return dict(
                found,
                status="materials_mismatch",
                detail="the provenance's materials differ from the artifact record: " + "; ".join(problems),
            )
        return dict(found, status="valid", detail=f"provenance of {digest} signed by {key_id(key)}, materials match")
    trusted = {key_id(key) for key in public_keys}
    claimed = {
        entry.get("keyid")
        for envelope in envelopes
        for entry in (envelope.get("signatures") or [])
        if isinstance(entry, dict)
    }
    if failure and "does not verify" in failure and trusted & claimed:
        return dict(
            result,
            status="tampered",
            detail=f"tampered: the provenance in {tag} was modified after signing (its signature by the trusted key"
            f" {sorted(trusted & claimed)[0]} no longer verifies); refused",
        )
    if failure and "does not verify" in failure:
        return dict(
            result,
            status="wrong_key",
            detail=f"the provenance in {tag} is not signed by a trusted key (signed by"
            f" {', '.join(sorted(str(k) for k in claimed)) or 'an unnamed key'}); refused",
        )
    return dict(result, status="invalid", detail=f"{tag}: {failure}")


def verify_artifact(client, repository, path, digest, public_keys, record, require_provenance=True):
    """Check the signature and the provenance of repository@digest against trusted public keys and the artifact
    record (None when there is none). Returns {verified, problems, signature, provenance}; never raises for what
    it finds, only RegistryError for a registry it cannot read."""
    signature = _check_signature(client, repository, path, digest, public_keys)
    provenance = _check_attestation(client, repository, path, digest, public_keys, record)
    return verification(signature, provenance, require_provenance)


def verification(signature, provenance, require_provenance=True):
    """{verified, problems, signature, provenance} of the two checks' results (a missing provenance is a problem only
    where it is required)."""
    problems = [] if signature["status"] == "valid" else [signature["detail"]]
    if provenance["status"] != "valid" and (require_provenance or provenance["status"] != "missing"):
        problems.append(provenance["detail"])
    return {"verified": not problems, "problems": problems, "signature": signature, "provenance": provenance}
