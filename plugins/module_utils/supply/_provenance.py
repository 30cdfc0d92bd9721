# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Provenance of a bake: an in-toto Statement v1 with a SLSA provenance v1 predicate, and the checks against it.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The statement (docs/supply-chain.md, "Provenance"):

- ``subject``: the image (its repository as ``name``, ``digest.sha256`` = the manifest digest);
- ``predicate.buildDefinition.resolvedDependencies`` (the SLSA v1 name for materials): the base image ID
  (``name: base``), each role's fingerprint in bake order (``name: role:<role>``), the bake's source revision
  (``name: source``, ``digest.gitCommit``) and this collection with its version (``name: collection:immutable.infra``);
- ``internalParameters.fingerprint``: the bake's fingerprint; ``externalParameters``: name, version, roles;
- ``runDetails.builder.id``: this collection and its version; ``metadata``: the bake ID and the start and finish
  times of the bake (the artifact record's ``created``).

``materials_problems`` compares a statement with an artifact record: what a verifier checks besides signatures.
"""

from __future__ import annotations

import json
import time

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://github.com/immutable-infra/immutable.infra/bake/v1"
BUILDER_ID = "https://galaxy.ansible.com/ui/repo/published/immutable/infra/"
COLLECTION = "immutable.infra"


class ProvenanceError(Exception):
    """A statement cannot be built or read; the message names what is wrong."""


def _utc(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(seconds)))


def _hex(digest):
    algorithm, sep, value = str(digest).partition(":")
    if not sep or algorithm != "sha256" or len(value) != 64:
        raise ProvenanceError(f"{digest!r} is not a sha256:<64 hex> digest")
    return value


def build_statement(
    *,
    repository,
    digest,
    name,
    fingerprint,
    base,
    roles,
    revision,
    source,
    version,
    collection_version,
    bake_id,
    started,
    finished,
):
    """The in-toto Statement v1 (dict) of one container bake. roles: [{name, fingerprint}] in bake order."""
    dependencies = [{"name": "base", "uri": f"docker-image:{base['image']}", "digest": {"sha256": _hex(base["id"])}}]
    dependencies += [
        {"name": f"role:{role['name']}", "digest": {"sha256": _hex(role["fingerprint"])}} for role in roles
    ]
    source_entry = {"name": "source", "digest": {"gitCommit": str(revision)}}
    if source:
        source_entry["uri"] = str(source)
    dependencies.append(source_entry)
    dependencies.append(
        {"name": f"collection:{COLLECTION}", "annotations": {"version": str(collection_version)}, "digest": {}}
    )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": _hex(digest)}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "name": name,
                    "version": version,
                    "roles": [role["name"] for role in roles],
                },
                "internalParameters": {"fingerprint": fingerprint},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": f"{BUILDER_ID}{collection_version}",
                    "version": {COLLECTION: str(collection_version)},
                },
                "metadata": {"invocationId": bake_id, "startedOn": _utc(started), "finishedOn": _utc(finished)},
            },
        },
    }


def statement_bytes(statement):
    """The canonical JSON bytes that are signed (sorted keys, no spaces)."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_statement(payload):
    """The statement (dict) of DSSE payload bytes; ProvenanceError when it is not an in-toto Statement v1."""
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, AttributeError):
        raise ProvenanceError("the attestation's payload is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"the attestation's payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
    if statement.get("predicateType") != SLSA_PROVENANCE_V1:
        raise ProvenanceError(
            f"the attestation's predicate is {statement.get('predicateType')!r}, not SLSA provenance v1"
        )
    return statement


def subject_digests(statement):
    """['sha256:<hex>'] of the statement's subjects."""
    found = []
    for subject in statement.get("subject") or []:
        value = ((subject or {}).get("digest") or {}).get("sha256") if isinstance(subject, dict) else None
        if value:
            found.append(f"sha256:{value}")
    return found


def materials(statement):
    """{base, roles: [{name, fingerprint}], fingerprint, revision, collection_version} the statement claims."""
    predicate = statement.get("predicate") or {}
    definition = predicate.get("buildDefinition") or {}
    result = {"base": None, "roles": [], "revision": None, "collection_version": None}
    for entry in definition.get("resolvedDependencies") or []:
        name = str(entry.get("name", ""))
        digest = entry.get("digest") or {}
        if name == "base":
            result["base"] = f"sha256:{digest.get('sha256')}"
        elif name.startswith("role:"):
            result["roles"].append({"name": name[len("role:") :], "fingerprint": f"sha256:{digest.get('sha256')}"})
        elif name == "source":
            result["revision"] = digest.get("gitCommit")
        elif name == f"collection:{COLLECTION}":
            result["collection_version"] = (entry.get("annotations") or {}).get("version")
    result["fingerprint"] = (definition.get("internalParameters") or {}).get("fingerprint")
    return result


def roles_problems(claimed, record):
    """[one sentence] when the roles (name, fingerprint, in order) of claimed materials differ from the record's."""
    recorded = [{"name": role["name"], "fingerprint": role["fingerprint"]} for role in record.get("roles") or []]
    if claimed["roles"] == recorded:
        return []
    return [
        "roles "
        + ", ".join(f"{r['name']}={r['fingerprint'][:19]}" for r in claimed["roles"])
        + " (record: "
        + ", ".join(f"{r['name']}={r['fingerprint'][:19]}" for r in recorded)
        + ")"
    ]


def materials_problems(statement, record):
    """What differs between the statement's materials and the artifact record (sentences; [] when they agree): the
    fingerprint, the base image ID and each role's fingerprint, in order."""
    claimed = materials(statement)
    problems = []
    if claimed["fingerprint"] != record.get("fingerprint"):
        problems.append(f"fingerprint {claimed['fingerprint']} (record: {record.get('fingerprint')})")
    if claimed["base"] != (record.get("base") or {}).get("id"):
        problems.append(f"base image {claimed['base']} (record: {(record.get('base') or {}).get('id')})")
    problems.extend(roles_problems(claimed, record))
    # not the revision: a cached re-bake from a later commit writes a new record of the same image (same fingerprint)
    # while the attestation of the bake that built it stays
    return problems
