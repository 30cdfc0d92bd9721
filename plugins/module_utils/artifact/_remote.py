# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Artifact records kept with the artifact, so that every machine that reaches the registry can read them.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A container artifact's record is stored in the registry beside the image it describes (docs/artifact-record.md,
"In the registry"): an OCI image manifest whose config blob is the record JSON (media type ``RECORD_MEDIA_TYPE``,
also its ``artifactType``), whose ``subject`` is the image manifest, tagged ``sha256-<hex>.record`` after the
image's digest (the OCI "referrers tag schema" fallback: the registry needs no Referrers API), so it is found by
digest.

``find_record`` is the one reader: the local record (``<artifacts_dir>/<app>/records/*.json``) when there is one for
the ID, else the registry's. A registry record is only accepted when it is a valid record of exactly that digest
and the image carries the record's fingerprint label; otherwise RecordError names what is wrong.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import records_dir
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import record_problems
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import serialise
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import same_id
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_OCI_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository

RECORD_MEDIA_TYPE = "application/vnd.immutable-infra.artifact-record.v1+json"


def split_id(artifact_id):
    """(repository, registry host, repository path, digest) of a container ID <repository>@sha256:<hex>."""
    repository, sep, digest = str(artifact_id).partition("@")
    if not sep:
        raise RecordError(f"artifact {artifact_id!r} is not a digest reference <repository>@sha256:<hex>")
    try:
        host, path = parse_repository(repository)
    except ImageReferenceError as exc:
        raise RecordError(f"artifact {artifact_id!r}: {exc}") from None
    return repository, host, path, digest


def record_manifest(blob: bytes, subject) -> bytes:
    """The OCI manifest that stores the record blob and points at the image it describes (subject)."""
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_OCI_MANIFEST,
        "artifactType": RECORD_MEDIA_TYPE,
        "config": {"mediaType": RECORD_MEDIA_TYPE, "digest": digest, "size": len(blob)},
        "layers": [],
        "subject": subject,
        "annotations": {"io.immutable-infra.record": "artifact-record"},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


# -- reading ---------------------------------------------------------------------------------------------------


def read_registry_record(client, artifact_id):
    """The registry's record of a container artifact, checked; None when the registry holds none.

    Raises RecordError when what the record tag holds is not a valid record of exactly this image (another digest,
    another repository, a fingerprint the image's label does not carry): a tampered or misplaced record is never
    used."""
    repository, _host, path, digest = split_id(artifact_id)
    tag = record_tag(digest)
    where = f"{repository}:{tag}"
    found = client.manifest(path, tag)
    if found is None:
        return None
    manifest = json.loads(found[2])
    config = manifest.get("config") or {}
    if config.get("mediaType") != RECORD_MEDIA_TYPE:
        raise RecordError(
            f"{where} is not an artifact record (config media type {config.get('mediaType')!r}, expected"
            f" {RECORD_MEDIA_TYPE}): remove the tag, then re-run the bake of {artifact_id} to write its record"
        )
    blob = client.blob(path, config.get("digest"))
    if "sha256:" + hashlib.sha256(blob).hexdigest() != config.get("digest"):
        raise RecordError(f"the record blob of {where} does not match its digest: the registry's storage is damaged")
    try:
        record = json.loads(blob.decode("utf-8"))
    except ValueError:
        raise RecordError(f"the record in {where} is not JSON: remove the tag and re-run the bake") from None
    problems = record_problems(record)
    if problems:
        raise RecordError(
            f"the record in {where} is invalid: {'; '.join(problems)}. Remove the tag and re-run the bake"
        )
    if record.get("digest") != digest or parse_repository(record["repository"])[1] != path:
        raise RecordError(
            f"the record in {where} describes {record['id']}, not {artifact_id}: it was altered or copied; refused."
            " Remove the tag and re-run the bake (a cached bake writes it again)"
        )
    image = client.manifest(path, digest)
    if image is None:
        raise RecordError(f"{where} is a record of {artifact_id}, which is not in the registry (deleted?)")
    labels = (client.config(path, image[2]).get("config") or {}).get("Labels") or {}
    if labels.get(LABEL_FINGERPRINT) != record["fingerprint"]:
        raise RecordError(
            f"the record in {where} says fingerprint {record['fingerprint']} but the image carries"
            f" {labels.get(LABEL_FINGERPRINT)!r}: it was altered; refused. Remove the tag and re-run the bake"
        )
    return record


def local_records(artifacts_dir, app):
    """[(path, record)] of <artifacts_dir>/<app>/records/*.json, oldest first. RecordError names an unreadable one."""
    found = []
    if not artifacts_dir:
        return found
    for path in sorted(glob.glob(os.path.join(glob.escape(records_dir(artifacts_dir, app)), "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            record["id"]  # noqa: B018 - every record has an id
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecordError(
                f"artifact record {path} is unreadable ({type(exc).__name__}: {exc}): restore it from the bake's"
                " output or remove it"
            ) from None
        found.append((path, record))
    return found


def same_artifact_id(left, right):
    """The ledger's comparison (region maps in any order, digests in any case); plain equality for what it refuses."""
    try:
        return same_id(left, right)
    except LedgerError:
        return left == right


def find_record(artifact_id, artifacts_dir, app, client_for, read_ami=None):
    """(where, record) of an artifact, from the one reader of every promotion step:

    - the local record when one has this ID (where: its file);
    - else, for a container, the record kept in the registry beside the image (where: <repository>:sha256-<hex>.record;
      client_for(registry_host) gives a RegistryClient);
    - else, for an AMI, what read_ami(artifact_id) returns as (where, record) or None: the bake's tags on its AMIs
      (module_utils/artifact/_ami_record.py, kept apart so that this module needs no AWS library).

    (None, None) when none holds one; RecordError when the registry's record or the AMIs' tags are refused or cannot
    be read."""
    for path, record in local_records(artifacts_dir, app):
        if same_artifact_id(record["id"], artifact_id):
            return path, record
    if isinstance(artifact_id, str) and "@" in artifact_id:
        repository, host, _path, digest = split_id(artifact_id)
        try:
            record = read_registry_record(client_for(host), artifact_id)
        except RegistryError as exc:
            raise RecordError(f"cannot read the record of {artifact_id} from the registry: {exc.message}") from None
        return (None, None) if record is None else (f"{repository}:{record_tag(digest)}", record)
    found = read_ami(artifact_id) if read_ami is not None else None
    return found or (None, None)


# -- writing ---------------------------------------------------------------------------------------------------


def publish_record(client, record, check_mode=False):
    """Store a container record in the registry beside its image (after the push). A valid record of the same image
    there already is left alone: a cached re-bake rewrites nothing. Returns {changed, reference, digest}."""
    problems = record_problems(record)
    if problems:
        raise RecordError("invalid artifact record: " + "; ".join(problems))
    if record["kind"] != "container":
        raise RecordError("only container records are kept in a registry: an AMI's record goes to its tags")
    artifact_id = record["id"]
    repository, _host, path, digest = split_id(artifact_id)
    tag = record_tag(digest)
    result = {"changed": False, "reference": f"{repository}:{tag}", "digest": None}
    image = client.manifest(path, digest)
    if image is None:
        raise RecordError(f"{artifact_id} is not in the registry: push the image before its record")
    try:
        existing = read_registry_record(client, artifact_id)
    except RecordError:
        existing = None  # refused (altered, damaged): written again below
    if existing is not None and existing["fingerprint"] == record["fingerprint"]:
        result["digest"] = client.manifest(path, tag)[0]
        return result
    blob = serialise(record).encode("utf-8")
    subject = {"mediaType": image[1], "digest": image[0], "size": len(image[2])}
    body = record_manifest(blob, subject)
    result["changed"] = True
    if check_mode:
        return result
    client.put_blob(path, blob)
    result["digest"] = client.put_manifest(path, tag, body, MEDIA_OCI_MANIFEST)
    return result
