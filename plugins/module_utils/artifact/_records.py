# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Artifact records of bakes: built from named inputs, validated, written atomically.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The record schema is documented once, in docs/artifact-record.md, with its JSON Schema in
docs/artifact-record.schema.json. ``validate`` checks the same rules in plain Python (the collection has no run-time
dependency on a JSON Schema library) plus three that a JSON Schema cannot express: a container record's ``id`` is
``<repository>@<digest>`` and its ``tags`` hold the fingerprint's own tag, an AMI record's ``image_id`` is its
``id`` in its ``region``. The unit tests check that both agree.

Layout (artifact/_contract.py): <dir>/<name>/records/<bake_id>.json and <dir>/<name>/latest.json (a copy of the
newest record).
"""

from __future__ import annotations

import json
import re
import time

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import RECORD_SCHEMA_VERSION
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import fingerprint_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import latest_path
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_path
from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write

KINDS = ("container", "ami")
# the patterns of docs/artifact-record.schema.json, one for one
RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SHA256 = re.compile(r"^sha256:[0-9a-f]{64}$")
DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
IMAGE_ID = re.compile(r"^([^@\s]+@)?sha256:[0-9a-f]{64}$")
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
CREATED = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")

COMMON_FIELDS = (
    "schema",
    "name",
    "kind",
    "fingerprint",
    "id",
    "created",
    "revision",
    "source",
    "version",
    "bake_id",
    "base",
    "roles",
    "reused_roles",
    "cached",
    "changes",
    "durations",
    "inputs",
    "inputs_manifest",
)
KIND_FIELDS = {
    "container": ("repository", "digest", "tags"),
    "ami": ("artifact", "region", "image_id", "image_name", "resumed", "sharing"),
}
# fields a record may have (not required): the supply-chain documents kept with the artifact (docs/supply-chain.md)
OPTIONAL_FIELDS = ("sbom", "signature")
SIGNATURE_FIELDS = ("signed", "key_id", "signature", "attestation", "provenance")
SBOM_FIELDS = ("format", "spec_version", "generator", "path", "sha256", "packages", "reference")
DURATIONS = ("fingerprint", "provision_and_capture", "total")
SHARING = ("accounts", "organizations", "ous")


class RecordError(Exception):
    """A record cannot be built, written or read; the message names the field and the fix."""


# -- validation ------------------------------------------------------------------------------------------------


def _is_str(value):
    return isinstance(value, str)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_str_list(value):
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _match(pattern):
    return lambda value: isinstance(value, str) and pattern.match(value) is not None


def _object_of(keys, check):
    """A dict with exactly these keys, each value passing check."""
    return lambda value: isinstance(value, dict) and set(value) == set(keys) and all(check(value[k]) for k in keys)


def _roles(value):
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(role, dict)
            and set(role) == {"name", "fingerprint"}
            and isinstance(role["name"], str)
            and role["name"] != ""
            and SHA256.match(str(role["fingerprint"])) is not None
            for role in value
        )
    )


def _sbom(value):
    return (
        isinstance(value, dict)
        and set(value) == set(SBOM_FIELDS)
        and value["format"] == "cyclonedx-json"
        and all(isinstance(value[key], str) for key in ("spec_version", "generator", "path"))
        and SHA256.match(str(value["sha256"])) is not None
        and isinstance(value["packages"], int)
        and not isinstance(value["packages"], bool)
        and (value["reference"] is None or isinstance(value["reference"], str))
    )


def _signature(value):
    if not (isinstance(value, dict) and set(value) == set(SIGNATURE_FIELDS) and isinstance(value["signed"], bool)):
        return False
    others = [value[key] for key in SIGNATURE_FIELDS if key != "signed"]
    if value["signed"]:
        return all(isinstance(item, str) and item for item in others[:3]) and (others[3] is None or _is_str(others[3]))
    return all(item is None for item in others)


def _ami_ids(value):
    return (
        isinstance(value, dict)
        and len(value) > 0
        and all(REGION.match(str(region)) and _match(AMI_ID)(ami) for region, ami in value.items())
    )


# field -> (check, what is expected and the fix). One table per kind, as in the JSON Schema.
COMMON_RULES = {
    "schema": (
        lambda v: v == RECORD_SCHEMA_VERSION and not isinstance(v, bool),
        f"the integer {RECORD_SCHEMA_VERSION}",
    ),
    "name": (
        _match(RECORD_ID),
        "1-128 letters, digits, '.', '_' or '-' starting with a letter or digit (it names a directory): fix bake_name",
    ),
    "kind": (lambda v: v in KINDS, "container or ami"),
    "fingerprint": (
        _match(SHA256),
        "sha256:<64 hex digits>: pass the fingerprint the immutable.infra.bake_fingerprint lookup returned",
    ),
    "created": (_match(CREATED), "a UTC time YYYY-MM-DDTHH:MM:SSZ"),
    "revision": (_is_str, "a string (the source revision, e.g. a git commit)"),
    "source": (_is_str, "a string (the source URL, may be empty)"),
    "version": (_is_str, "a string (the version tag, empty when none)"),
    "bake_id": (_match(RECORD_ID), "1-128 letters, digits, '.', '_' or '-' (it names the record file)"),
    "roles": (
        _roles,
        "a non-empty list of {name, fingerprint: sha256:<64 hex>}: pass the lookup's inputs (inputs.roles)",
    ),
    "reused_roles": (_is_str_list, "a list of role names"),
    "cached": (lambda v: isinstance(v, bool), "true or false"),
    "changes": (_is_str_list, "a list of sentences (the lookup's changes)"),
    "durations": (_object_of(DURATIONS, _is_number), "{fingerprint, provision_and_capture, total} in seconds"),
    "inputs": (
        lambda v: isinstance(v, dict) and isinstance(v.get("roles"), dict),
        "a dictionary with roles: pass the lookup's inputs",
    ),
    "inputs_manifest": (lambda v: isinstance(v, dict), "a dictionary: pass the lookup's manifest"),
    "sbom": (
        _sbom,
        "{format: cyclonedx-json, spec_version, generator, path, sha256: sha256:<64 hex>, packages, reference}:"
        " let artifact_record's sbom option fill it in",
    ),
    "signature": (
        _signature,
        "{signed: true, key_id, signature, attestation, provenance} or {signed: false} with the others null:"
        " pass artifact_sign's result through artifact_record's signature option",
    ),
}
BASE_RULES = {
    "container": (
        lambda v: isinstance(v.get("image"), str) and v["image"] != "" and _match(IMAGE_ID)(v.get("id")),
        "{image: <local image name>, id: sha256:<64 hex>}: pass the base image and the ID it resolved to",
    ),
    "ami": (
        lambda v: isinstance(v.get("image"), (str, dict)) and v["image"] != "" and _match(AMI_ID)(v.get("id")),
        "{image: <AMI ID or name filter>, id: ami-<hex>}: pass bake_ami_base (or its filter) and the resolved AMI ID",
    ),
}
KIND_RULES = {
    "container": {
        "id": (
            _match(DIGEST_REF),
            "<repository>@sha256:<64 hex>, never a tag: pass the image push_image or registry_image_info returned",
        ),
        "repository": (lambda v: isinstance(v, str) and v != "", "the repository the artifact was pushed to"),
        "digest": (_match(SHA256), "sha256:<64 hex> (the id's digest)"),
        "tags": (
            lambda v: _is_str_list(v) and len(v) > 0,
            "a non-empty list of the tags the artifact has (push_image's tags)",
        ),
    },
    "ami": {
        "id": (
            _ami_ids,
            "a mapping region -> ami-<hex> with at least the source region: pass bake_ami's amis",
        ),
        "artifact": (_match(RECORD_ID), "the bake name the AMI record belongs to"),
        "region": (_match(REGION), "the source region, e.g. eu-west-1"),
        "image_id": (_match(AMI_ID), "ami-<hex> (the id in the source region)"),
        "image_name": (lambda v: v is None or (isinstance(v, str) and v != ""), "the image name, or null when cached"),
        "resumed": (lambda v: isinstance(v, bool), "true or false"),
        "sharing": (_object_of(SHARING, _is_str_list), "{accounts, organizations, ous}, each a list of strings"),
    },
}


def record_problems(record):
    """Every rule of docs/artifact-record.schema.json (and the three cross-checks) the record breaks, as sentences."""
    if not isinstance(record, dict):
        return [
            f"the record is a {type(record).__name__}, not a dictionary: build it with immutable.infra.artifact_record"
        ]
    kind = record.get("kind")
    if kind not in KINDS:
        return [f"field 'kind' is {kind!r}: set it to container or ami"]
    expected = COMMON_FIELDS + KIND_FIELDS[kind]
    problems = [f"field '{key}' is missing" for key in expected if key not in record]
    problems += [
        f"field '{key}' is not part of a {kind} record: remove it (docs/artifact-record.md lists the fields)"
        for key in record
        if key not in expected + OPTIONAL_FIELDS
    ]
    rules = dict(COMMON_RULES, **KIND_RULES[kind])
    for key, (check, fix) in rules.items():
        if key in record and not check(record[key]):
            problems.append(f"field '{key}' is {record[key]!r}: expected {fix}")
    base = record.get("base")
    if "base" in record:
        if not (isinstance(base, dict) and set(base) == {"image", "id"} and BASE_RULES[kind][0](base)):
            problems.append(f"field 'base' is {base!r}: expected {BASE_RULES[kind][1]}")
    if problems:
        return problems
    # what the JSON Schema cannot say
    if kind == "container":
        if record["id"] != f"{record['repository']}@{record['digest']}":
            problems.append(
                f"field 'id' is {record['id']!r}, not <repository>@<digest> "
                f"({record['repository']}@{record['digest']}): pass the pushed image's digest reference"
            )
        if fingerprint_tag(record["fingerprint"]) not in record["tags"]:
            problems.append(
                f"field 'tags' lacks the fingerprint's tag {fingerprint_tag(record['fingerprint'])}: "
                "pass the tags push_image returned"
            )
    elif record["id"].get(record["region"]) != record["image_id"]:
        problems.append(
            f"field 'id' has no {record['region']!r}: {record['image_id']!r} (the source region's image): "
            "pass the amis bake_ami returned for this region"
        )
    return problems


def validate(record, bake_id):
    """Raise RecordError naming every broken field and its fix; nothing is written then."""
    problems = record_problems(record)
    if not RECORD_ID.match(str(bake_id)):
        problems.append(f"bake_id {bake_id!r} is not usable as a file name: use letters, digits, '.', '_' or '-'")
    elif isinstance(record, dict) and "bake_id" in record and record["bake_id"] != bake_id:
        problems.append(f"field 'bake_id' is {record['bake_id']!r} but the record is written as {bake_id!r}")
    if problems:
        raise RecordError("invalid artifact record: " + "; ".join(problems))


# -- building --------------------------------------------------------------------------------------------------


def build_record(
    *,
    name,
    kind,
    fingerprint,
    id,  # noqa: A002 - the record's field name
    revision,
    source,
    version,
    bake_id,
    base,
    cached,
    changes,
    inputs,
    inputs_manifest,
    started,
    fingerprinted,
    finished=None,
    reused_roles=(),
    repository=None,
    tags=None,
    artifact=None,
    region=None,
    image_name=None,
    resumed=None,
    sharing=None,
    sbom=None,
    signature=None,
):
    """The record of one bake from its named inputs (docs/artifact-record.md). Times are epoch seconds.

    ``roles`` comes from ``inputs['roles']`` (name -> fingerprint, in bake order), the container ``digest`` from
    the ``id``, the AMI ``image_id`` from ``id[region]``, ``created`` and the ``durations`` from the times.
    """
    if kind not in KINDS:
        raise RecordError(f"kind {kind!r} is not an artifact kind: use container or ami")
    kind_options = {
        "container": {"repository": repository, "tags": tags},
        "ami": {"artifact": artifact, "region": region, "resumed": resumed, "sharing": sharing},
    }
    other = "ami" if kind == "container" else "container"
    wrong = [key for key, value in kind_options[other].items() if value is not None]
    if kind == "container" and image_name is not None:
        wrong.append("image_name")
    if wrong:
        raise RecordError(f"{', '.join(wrong)}: only for kind={other}, not for kind={kind}: remove them")
    missing = [key for key, value in kind_options[kind].items() if value is None]
    if missing:
        raise RecordError(f"kind={kind} needs {', '.join(missing)}: pass them to immutable.infra.artifact_record")
    if kind == "ami" and isinstance(id, dict) and region not in id:
        raise RecordError(
            f"invalid artifact record: field 'id' has no {region!r} (the source region) among {sorted(id)}: "
            "pass the amis bake_ami returned for this region"
        )
    finished = time.time() if finished is None else finished
    roles = inputs.get("roles") if isinstance(inputs, dict) else None
    record = {
        "schema": RECORD_SCHEMA_VERSION,
        "name": name,
        "kind": kind,
        "fingerprint": fingerprint,
        "id": id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finished)),
        "revision": revision,
        "source": source,
        "version": version,
        "bake_id": bake_id,
        "base": dict(base),
        "roles": [{"name": role, "fingerprint": digest} for role, digest in roles.items()]
        if isinstance(roles, dict)
        else roles,
        "reused_roles": list(reused_roles),
        "cached": cached,
        "changes": list(changes),
        "durations": {
            "fingerprint": round(fingerprinted - started, 3),
            "provision_and_capture": 0 if cached else round(finished - fingerprinted, 3),
            "total": round(finished - started, 3),
        },
        "inputs": inputs,
        "inputs_manifest": inputs_manifest,
    }
    if sbom is not None:
        record["sbom"] = dict(sbom)
    if signature is not None:
        record["signature"] = dict(signature)
    if kind == "container":
        record.update(repository=repository, digest=str(id).partition("@")[2], tags=list(tags))
    else:
        record.update(
            artifact=artifact,
            region=region,
            image_id=id.get(region) if isinstance(id, dict) else None,
            image_name=image_name,
            resumed=resumed,
            sharing={key: list(sharing.get(key) or []) for key in SHARING},
        )
    return record


# -- writing and reading ---------------------------------------------------------------------------------------


def serialise(record):
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_record(directory, record, bake_id, check_mode=False):
    """Validate the record, write it and point latest.json at it. Unchanged content is not rewritten (changed=False)."""
    validate(record, bake_id)
    path = record_path(directory, record["name"], bake_id)
    latest = latest_path(directory, record["name"])
    text = serialise(record)
    changed = False
    for target in (path, latest):
        try:
            with open(target, encoding="utf-8") as handle:
                if handle.read() == text:
                    continue
        except FileNotFoundError:
            pass
        changed = True
        if not check_mode:
            atomic_write(target, text)
    return {"changed": changed, "path": path, "latest": latest}
