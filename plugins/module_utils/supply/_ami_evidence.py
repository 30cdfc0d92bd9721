# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""An AMI's SBOM, signature and provenance (docs/supply-chain.md, "AMIs").

PRIVATE to the collection: do not import it from other collections, it may change without notice.

An AMI has no registry to keep them beside it: they are objects in an S3 bucket the user names, under
`<prefix><source AMI ID>/` (sbom.cdx.json, signature.json, provenance.dsse.json), and the AMI and each of its copies
carry the location and the sha256 of each object in their tags, so another runner finds them from the AMI ID alone
and an object replaced in the bucket (or a tag pointed at another AMI's objects) is detected.

The signature is the container path's (ECDSA P-256 over canonical JSON, the same keys: supply/_sign.py) over a payload
that binds every AMI ID of the bake with its region, the owning account and the SBOM's sha256. The provenance is an
in-toto Statement v1 / SLSA provenance v1 in the same DSSE envelope; its subjects are the AMIs (ARN names, the
SBOM's sha256 as digest: an AMI has no content digest of its own), its materials the base AMI and the roles.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid

from ansible_collections.immutable.infra.plugins.module_utils.supply import _provenance
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import dsse_sign
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import dsse_verify
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import matching_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import sign_bytes
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import verification

TAG_EVIDENCE = "immutable-infra:evidence"
TAG_SBOM = "immutable-infra:sbom-sha256"
TAG_SIGNATURE = "immutable-infra:signature-sha256"
TAG_PROVENANCE = "immutable-infra:provenance-sha256"
EVIDENCE_TAGS = (TAG_EVIDENCE, TAG_SBOM, TAG_SIGNATURE, TAG_PROVENANCE)
# the key ID (supply/_sign.py key_id) that made the signature and the provenance the tags name: written last, on the
# source AMI after its copies, so a cached re-bake with the same key can skip the evidence step (bake_ami_capture.yml).
# A hint for the bake only: verification reads the objects and never trusts this tag.
TAG_KEY = "immutable-infra:signing-key"
AMI_SIGNATURE_TYPE = "immutable.infra ami signature"
OBJECTS = {"sbom": "sbom.cdx.json", "signature": "signature.json", "provenance": "provenance.dsse.json"}


class EvidenceError(Exception):
    """Bad input or an unreadable store; the message names what and the fix."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def location(bucket: str, prefix: str, source_ami: str) -> str:
    """s3://<bucket>/<prefix><source AMI>/: where the objects of one bake are (the evidence tag's value)."""
    if not bucket or "/" in bucket:
        raise EvidenceError(f"the evidence bucket {bucket!r} is not an S3 bucket name: set bake_ami_evidence_bucket")
    prefix = (prefix or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"s3://{bucket}/{prefix}{source_ami}/"


def split_location(value: str):
    """(bucket, key prefix) of an evidence tag's value; EvidenceError when it is not an s3:// URL."""
    if not isinstance(value, str) or not value.startswith("s3://") or "/" not in value[5:]:
        raise EvidenceError(f"the tag {TAG_EVIDENCE}={value!r} is not an s3://<bucket>/<prefix>/ location")
    bucket, _sep, key = value[5:].partition("/")
    return bucket, key


# -- what is signed -------------------------------------------------------------------------------------------


def normalise_amis(amis: dict) -> dict:
    return {str(region): str(ami) for region, ami in sorted(amis.items())}


def ami_payload(amis: dict, account: str, sbom_sha256: str) -> bytes:
    """The signed payload: every AMI of the bake with its region, the owning account and the SBOM's sha256."""
    payload = {
        "critical": {
            "identity": {"aws-account": str(account)},
            "image": {"amis": normalise_amis(amis)},
            "sbom": {"sha256": str(sbom_sha256)},
            "type": AMI_SIGNATURE_TYPE,
        },
        "optional": None,
    }
    return _canonical(payload)


def parse_payload(payload: bytes) -> dict:
    """{amis, account, sbom} of a signed payload; SignError when it is not an AMI signature payload."""
    try:
        critical = json.loads(payload.decode("utf-8"))["critical"]
        if critical["type"] != AMI_SIGNATURE_TYPE:
            raise SignError(f"the signed payload is of type {critical['type']!r}, not {AMI_SIGNATURE_TYPE!r}")
        return {
            "amis": dict(critical["image"]["amis"]),
            "account": str(critical["identity"]["aws-account"]),
            "sbom": str(critical["sbom"]["sha256"]),
        }
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        raise SignError("the signed payload is not an AMI signature payload") from None


def signature_document(private_key, payload: bytes) -> bytes:
    """signature.json: the payload (base64) and one signature of it."""
    document = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": key_id(private_key), "sig": sign_bytes(private_key, payload)}],
    }
    return _canonical(document) + b"\n"


def build_ami_statement(*, amis, account, sbom_sha256, fingerprint, base_ami, base_region, roles, **bake) -> dict:
    """The in-toto Statement v1 of one AMI bake: the container statement (supply/_provenance.py) with the AMIs as
    subjects and the base AMI as the base material. bake: name, revision, source, version, collection_version,
    bake_id, started, finished."""
    statement = _provenance.build_statement(
        repository="ami",
        digest=f"sha256:{sbom_sha256}",
        fingerprint=fingerprint,
        base={"image": base_ami, "id": f"sha256:{sha256_hex(base_ami.encode())}"},
        roles=roles,
        **bake,
    )
    statement["subject"] = [
        {"name": f"arn:aws:ec2:{region}:{account}:image/{ami}", "digest": {"sha256": sbom_sha256}}
        for region, ami in normalise_amis(amis).items()
    ]
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    dependencies[0] = {
        "name": "base",
        "uri": f"arn:aws:ec2:{base_region}::image/{base_ami}",
        "annotations": {"amiId": base_ami},
        "digest": {},
    }
    return statement


def statement_amis(statement) -> dict:
    """{region: ami} of a statement's subjects (arn:aws:ec2:<region>:<account>:image/<ami>)."""
    found = {}
    for subject in statement.get("subject") or []:
        name = str((subject or {}).get("name", "")) if isinstance(subject, dict) else ""
        parts = name.split(":", 5)
        if len(parts) == 6 and parts[:3] == ["arn", "aws", "ec2"] and parts[5].startswith("image/"):
            found[parts[3]] = parts[5][len("image/") :]
    return found


def statement_base(statement):
    for entry in (statement.get("predicate") or {}).get("buildDefinition", {}).get("resolvedDependencies") or []:
        if isinstance(entry, dict) and entry.get("name") == "base":
            return (entry.get("annotations") or {}).get("amiId")
    return None


def ami_materials_problems(statement, record) -> list:
    """What differs between the statement's materials and the record: fingerprint, base AMI, roles (when the record
    has them: a record read from the AMIs' tags has the fingerprint and the base only)."""
    claimed = _provenance.materials(statement)
    problems = []
    if claimed["fingerprint"] != record.get("fingerprint"):
        problems.append(f"fingerprint {claimed['fingerprint']} (record: {record.get('fingerprint')})")
    recorded_base = (record.get("base") or {}).get("id") if isinstance(record.get("base"), dict) else None
    if recorded_base and statement_base(statement) != recorded_base:
        problems.append(f"base AMI {statement_base(statement)} (record: {recorded_base})")
    if record.get("roles"):
        problems.extend(_provenance.roles_problems(claimed, record))
    return problems


def normalise_sbom(raw: bytes, source_ami: str, region: str, tree_digest=None) -> bytes:
    """syft's document of the builder (its filesystem, or its package tree read on the controller: tree_digest) as the
    SBOM of the AMI: the container path's normalisation (supply/_sbom.py) with metadata.component naming the AMI
    (version = the source AMI ID) and, for a package tree, the properties that say so (supply/_sbom_tree.py)."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import normalise
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import SOURCE_PROPERTY
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import TREE_PROPERTY

    document = json.loads(normalise(raw, source_ami))
    document["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"immutable-infra:sbom:{source_ami}"))
    component = dict((document.get("metadata") or {}).get("component") or {})
    component.update({"type": "platform", "name": f"ec2:{region}/{source_ami}", "version": source_ami})
    document.setdefault("metadata", {})["component"] = component
    if tree_digest:
        # syft's bom-ref of a scanned directory depends on its (temporary) path
        component["bom-ref"] = hashlib.sha256(f"ec2:{region}/{source_ami}".encode()).hexdigest()[:16]
        properties = [
            prop
            for prop in document["metadata"].get("properties") or []
            if not (isinstance(prop, dict) and prop.get("name") in (SOURCE_PROPERTY, TREE_PROPERTY))
        ]
        properties += [
            {"name": SOURCE_PROPERTY, "value": "package-tree"},
            {"name": TREE_PROPERTY, "value": tree_digest},
        ]
        document["metadata"]["properties"] = sorted(properties, key=lambda p: (p.get("name", ""), p.get("value", "")))
    return (json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def package_tree_raw(tar_path, source_name, cache_dir=None, syft=None):
    """syft's CycloneDX of the builder's package tree, read on the controller: {raw, tree, key, cache}, reused from
    cache_dir (the record's sbom/ directory, where the AMI's local SBOM copies are) as for containers
    (supply/_sbom_tree.py scan_package_tree_cached). SbomError (an SbomTreeError) when the tree cannot be used."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import scan_package_tree_cached

    hint = ": bake with bake_sbom_scope=image to scan the builder's filesystem"
    return scan_package_tree_cached(tar_path, source_name, cache_dir, syft=syft, hint=hint)


def remember_tree(key, sbom_file):
    """Note in the TreeCache of sbom_file's directory that it was made from key (package_tree_raw's); a cache that
    cannot be written is only a later miss."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import TreeCache

    try:
        TreeCache(os.path.dirname(sbom_file)).put(key, sbom_file)
    except OSError:
        pass


# -- the store ----------------------------------------------------------------------------------------------------


def get_object(s3, bucket, key):
    """The object's bytes, or None when there is none. EvidenceError for another failure."""
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:  # noqa: BLE001 - botocore's errors
        code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
        if code in ("NoSuchKey", "404", "NotFound"):
            return None
        raise EvidenceError(f"cannot read s3://{bucket}/{key} ({type(exc).__name__}: {exc})") from None


def put_object(s3, bucket, key, data, content_type):
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
    except Exception as exc:  # noqa: BLE001 - botocore's errors
        raise EvidenceError(
            f"cannot write s3://{bucket}/{key} ({type(exc).__name__}: {exc}): check that the bucket exists and that"
            " the controller may s3:PutObject there (docs/supply-chain.md, AMIs)"
        ) from None


# -- verification -------------------------------------------------------------------------------------------------


def _result(status, detail, reference=None, key=None, **more):
    return dict({"status": status, "detail": detail, "reference": reference, "key_id": key}, **more)


def _images(ec2_for, amis):
    """{region: (ami, tags, owner)}; EvidenceError for an AMI that cannot be described or does not exist."""
    found = {}
    for region, ami in sorted(amis.items(), key=lambda item: str(item[0])):
        try:
            images = ec2_for(region).describe_images(ImageIds=[ami]).get("Images") or []
        except Exception as exc:  # noqa: BLE001 - botocore's errors
            raise EvidenceError(f"cannot describe {ami} ({type(exc).__name__}: {exc})") from None
        if not images:
            raise EvidenceError(f"{ami} ({region or 'default region'}) does not exist")
        tags = {tag["Key"]: tag["Value"] for tag in images[0].get("Tags") or []}
        found[region] = (ami, tags, str(images[0].get("OwnerId") or ""))
    return found


def _missing(amis):
    names = ", ".join(amis.values())
    signature = _result(
        "missing",
        f"no signature: {names} carries no {TAG_EVIDENCE} tag (bake it with bake_ami_evidence_bucket and"
        " bake_signing_key)",
    )
    provenance = _result("missing", f"no provenance: {names} carries no {TAG_EVIDENCE} tag")
    return signature, provenance


def _same_tags(images):
    """The evidence tags every AMI of the artifact carries (they must agree), else EvidenceError-like detail."""
    seen = {tuple(tags.get(name) for name in EVIDENCE_TAGS) for _ami, tags, _owner in images.values()}
    return next(iter(seen)) if len(seen) == 1 else None


def _object(s3, bucket, key, expected):
    """(bytes, problem): the object when its sha256 is the tag's."""
    data = get_object(s3, bucket, key)
    if data is None:
        return None, f"s3://{bucket}/{key} does not exist"
    if expected and sha256_hex(data) != expected:
        return data, (
            f"tampered: s3://{bucket}/{key} is not the object the AMI's tags name (sha256 {sha256_hex(data)[:12]}…,"
            f" tag {expected[:12]}…): it was replaced"
        )
    return data, None


def _checked_object(s3, where, tags, name, tag, what):
    """(reference, bytes, None) of an evidence object whose sha256 is its tag's, else (reference, None, result)."""
    bucket, prefix = where
    reference = f"s3://{bucket}/{prefix}{OBJECTS[name]}"
    data, problem = _object(s3, bucket, prefix + OBJECTS[name], tags[tag])
    if data is None:
        return reference, None, _result("missing", f"no {what}: {problem}", reference)
    if problem:
        return reference, None, _result("tampered", problem + "; refused", reference)
    return reference, data, None


def _check_ami_signature(s3, where, tags, images, public_keys):
    bucket, prefix = where
    reference, data, refused = _checked_object(s3, where, tags, "signature", TAG_SIGNATURE, "signature")
    if refused:
        return refused
    try:
        document = json.loads(data)
        payload = base64.b64decode(document["payload"], validate=True)
        signatures = [entry.get("sig", "") for entry in document["signatures"] if isinstance(entry, dict)]
        signed = parse_payload(payload)
    except (ValueError, KeyError, TypeError, AttributeError, SignError) as exc:
        return _result("invalid", f"{reference} is not an AMI signature ({exc})", reference)
    keys = [matching_key(public_keys, payload, sig) for sig in signatures]
    key = next((found for found in keys if found is not None), None)
    if key is None:
        return _result(
            "wrong_key",
            f"{reference} is not signed by a trusted key ({len(public_keys)} given): signed with another key, or the"
            " signature was modified; refused",
            reference,
        )
    for region, (ami, _tags, owner) in images.items():
        named = signed["amis"].get(region) if region is not None else (ami if ami in signed["amis"].values() else None)
        if named != ami or (owner and owner != signed["account"]):
            return _result(
                "other_digest",
                f"tampered: {reference} holds a signature of {json.dumps(signed['amis'], sort_keys=True)} (account"
                f" {signed['account']}), not of {ami} (account {owner or '?'}): the AMI's evidence tag or the object"
                " was moved or copied from another AMI; refused",
                reference,
                key_id(key),
            )
    if signed["sbom"] != tags[TAG_SBOM]:
        return _result(
            "other_digest",
            f"tampered: {reference} signs the SBOM sha256 {signed['sbom'][:12]}…, the AMI's tag names"
            f" {str(tags[TAG_SBOM])[:12]}…; refused",
            reference,
            key_id(key),
        )
    sbom, problem = _object(s3, bucket, prefix + OBJECTS["sbom"], tags[TAG_SBOM])
    if problem:
        return _result("tampered", f"{problem} (the signed SBOM); refused", reference, key_id(key))
    return _result("valid", f"signed by {key_id(key)}", reference, key_id(key), sbom_bytes=len(sbom))


def _check_ami_provenance(s3, where, tags, images, public_keys, record):
    reference, data, refused = _checked_object(s3, where, tags, "provenance", TAG_PROVENANCE, "provenance")
    if refused:
        return refused
    try:
        envelope = json.loads(data)
        payload, key = dsse_verify(envelope, public_keys)
        statement = _provenance.parse_statement(payload)
    except ValueError:
        return _result("invalid", f"{reference} is not JSON", reference)
    except (SignError, _provenance.ProvenanceError) as exc:
        trusted = {key_id(k) for k in public_keys}
        claimed = {e.get("keyid") for e in (envelope.get("signatures") or []) if isinstance(e, dict)}
        if "does not verify" in str(exc) and trusted & claimed:
            return _result(
                "tampered",
                f"tampered: the provenance in {reference} was modified after signing (its signature by the trusted"
                f" key {sorted(trusted & claimed)[0]} no longer verifies); refused",
                reference,
            )
        if "does not verify" in str(exc):
            return _result(
                "wrong_key", f"the provenance in {reference} is not signed by a trusted key; refused", reference
            )
        return _result("invalid", f"{reference}: {exc}", reference)
    subjects = statement_amis(statement)
    for region, (ami, _tags, _owner) in images.items():
        if (subjects.get(region) if region is not None else (ami if ami in subjects.values() else None)) != ami:
            return _result(
                "subject_mismatch",
                f"the provenance in {reference} is about {json.dumps(subjects, sort_keys=True)}, not {ami}: refused",
                reference,
                key_id(key),
            )
    if record is None:
        return _result("no_record", f"no artifact record of {', '.join(a for a, _t, _o in images.values())}", reference)
    problems = ami_materials_problems(statement, record)
    if problems:
        return _result(
            "materials_mismatch",
            "the provenance's materials differ from the artifact record: " + "; ".join(problems),
            reference,
            key_id(key),
        )
    return _result("valid", f"provenance signed by {key_id(key)}, materials match", reference, key_id(key))


def verify_ami(ec2_for, s3_for, amis, public_keys, record, require_provenance=True) -> dict:
    """verify_artifact (supply/_sign.py) for an AMI artifact ({region or None: ami}): {verified, problems, signature,
    provenance}. ec2_for(region) / s3_for(region) give clients; EvidenceError only for an AWS it cannot read."""
    images = _images(ec2_for, amis)
    tags = _same_tags(images)
    if tags is None:
        detail = (
            "tampered: the AMIs of the artifact carry different evidence tags ("
            + "; ".join(f"{ami}: {t.get(TAG_EVIDENCE)}" for ami, t, _o in images.values())
            + "): refused"
        )
        signature = provenance = _result("other_digest", detail)
    elif not tags[0]:
        signature, provenance = _missing(amis)
    else:
        tags = {name: tags[index] for index, name in enumerate(EVIDENCE_TAGS)}
        try:
            where = split_location(tags[TAG_EVIDENCE])
        except EvidenceError as exc:
            signature = provenance = _result("invalid", str(exc))
        else:
            s3 = s3_for(next(iter(images)))
            signature = _check_ami_signature(s3, where, tags, images, public_keys)
            provenance = _check_ami_provenance(s3, where, tags, images, public_keys, record)
    return verification(signature, provenance, require_provenance)


def read_ami_sbom(ec2_for, s3_for, amis):
    """The SBOM bytes of an AMI artifact (checked against the AMI's tag), None when it has none. EvidenceError when
    the object was replaced or cannot be read."""
    return read_ami_sbom_at(ec2_for, s3_for, amis)[1]


def read_ami_sbom_at(ec2_for, s3_for, amis):
    """(s3://bucket/key, bytes) of an AMI artifact's SBOM, as read_ami_sbom; (None, None) when it has none."""
    images = _images(ec2_for, amis)
    tags = _same_tags(images)
    if tags is None or not tags[0]:
        return None, None
    tags = {name: tags[index] for index, name in enumerate(EVIDENCE_TAGS)}
    bucket, prefix = split_location(tags[TAG_EVIDENCE])
    data, problem = _object(s3_for(next(iter(images))), bucket, prefix + OBJECTS["sbom"], tags[TAG_SBOM])
    if problem:
        raise EvidenceError(problem)
    return f"s3://{bucket}/{prefix}{OBJECTS['sbom']}", data


# -- at bake time -------------------------------------------------------------------------------------------------


def _kept_signature(data, public_key, payload):
    """Whether signature.json already holds this key's signature of exactly this payload."""
    try:
        document = json.loads(data)
        kept = base64.b64decode(document["payload"], validate=True)
        sigs = [entry.get("sig", "") for entry in document["signatures"] if isinstance(entry, dict)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return kept == payload and any(matching_key([public_key], payload, sig) for sig in sigs)


def _kept_provenance(data, public_key, amis, sbom_sha256):
    try:
        payload, _key = dsse_verify(json.loads(data), [public_key])
        statement = _provenance.parse_statement(payload)
    except (ValueError, SignError, _provenance.ProvenanceError):
        return False
    subjects = statement.get("subject") or []
    return statement_amis(statement) == normalise_amis(amis) and all(
        (s.get("digest") or {}).get("sha256") == sbom_sha256 for s in subjects if isinstance(s, dict)
    )


def ensure_evidence(
    ec2_for, s3, amis, region, bucket, prefix, raw_sbom, private_key, bake, check_mode=False, tree_digest=None
):
    """Store (or reuse) the SBOM, the signature and the provenance of the AMIs of one bake and tag every AMI with
    where they are and their sha256. raw_sbom: syft's document of the builder (None on a cached re-bake: the kept
    SBOM is reused as is, nothing is generated). private_key None: the SBOM only. bake: the provenance's inputs
    (fingerprint, base_ami, roles [{name, fingerprint}], name, revision, source, version, collection_version,
    bake_id, started, finished). tree_digest: raw_sbom was read from this package tree (supply/_sbom_tree.py).
    Returns {changed, sbom: bytes or None, sha256s, location, account, reused}."""
    amis = normalise_amis(amis)
    if region not in amis:
        raise EvidenceError(f"the AMIs {json.dumps(amis)} have none in the bake's region {region}")
    source_ami = amis[region]
    where = location(bucket, prefix, source_ami)
    key_prefix = split_location(where)[1]
    images = _images(ec2_for, amis)
    source_tags, account = images[region][1], images[region][2]
    changed, reused = False, []

    sbom = None
    if source_tags.get(TAG_SBOM) and source_tags.get(TAG_EVIDENCE) == where:
        sbom, problem = _object(s3, bucket, key_prefix + OBJECTS["sbom"], source_tags[TAG_SBOM])
        if problem:
            sbom = None
        else:
            reused.append("sbom")
    if sbom is None and raw_sbom is not None:
        sbom = normalise_sbom(raw_sbom, source_ami, region, tree_digest)
        if get_object(s3, bucket, key_prefix + OBJECTS["sbom"]) != sbom:
            changed = True
            if not check_mode:
                put_object(s3, bucket, key_prefix + OBJECTS["sbom"], sbom, "application/vnd.cyclonedx+json")
    if sbom is None:
        return {"changed": False, "sbom": None, "sha256s": {}, "location": where, "account": account, "reused": []}
    sha256s = {"sbom": sha256_hex(sbom)}

    if private_key is not None:
        public_key = private_key.public_key()
        payload = ami_payload(amis, account, sha256s["sbom"])
        kept = get_object(s3, bucket, key_prefix + OBJECTS["signature"])
        if kept is not None and _kept_signature(kept, public_key, payload):
            signature = kept
            reused.append("signature")
        else:
            signature, changed = signature_document(private_key, payload), True
            if not check_mode:
                put_object(s3, bucket, key_prefix + OBJECTS["signature"], signature, "application/json")
        sha256s["signature"] = sha256_hex(signature)
        kept = get_object(s3, bucket, key_prefix + OBJECTS["provenance"])
        if kept is not None and _kept_provenance(kept, public_key, amis, sha256s["sbom"]):
            envelope = kept
            reused.append("provenance")
        else:
            statement = build_ami_statement(
                amis=amis, account=account, sbom_sha256=sha256s["sbom"], base_region=region, **bake
            )
            envelope = _canonical(dsse_sign(private_key, _provenance.statement_bytes(statement))) + b"\n"
            changed = True
            if not check_mode:
                put_object(
                    s3, bucket, key_prefix + OBJECTS["provenance"], envelope, "application/vnd.dsse.envelope.v1+json"
                )
        sha256s["provenance"] = sha256_hex(envelope)

    wanted = {TAG_EVIDENCE: where, TAG_SBOM: sha256s["sbom"]}
    if "signature" in sha256s:
        wanted.update(
            {
                TAG_SIGNATURE: sha256s["signature"],
                TAG_PROVENANCE: sha256s["provenance"],
                TAG_KEY: key_id(private_key),
            }
        )
    # a bake without a key leaves a signature made before alone: signing is added, never taken away. The source AMI
    # is tagged last: its key tag then says that every copy carries the same evidence.
    for image_region, (ami, tags, _owner) in sorted(images.items(), key=lambda item: item[0] == region):
        missing = [{"Key": k, "Value": v} for k, v in sorted(wanted.items()) if tags.get(k) != v]
        if not missing:
            continue
        changed = True
        if check_mode:
            continue
        try:
            ec2_for(image_region).create_tags(Resources=[ami], Tags=missing)
        except Exception as exc:  # noqa: BLE001 - botocore's errors
            raise EvidenceError(f"cannot tag {ami} with its evidence ({type(exc).__name__}: {exc})") from None
    return {
        "changed": changed,
        "sbom": sbom,
        "sha256s": sha256s,
        "location": where,
        "account": account,
        "reused": reused,
    }
