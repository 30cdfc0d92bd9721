# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of immutable.infra.registry_gc: keep the newest bake artifacts of a repository and what the ledger uses.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

An artifact is a manifest digest carrying at least one C(fp-*) tag (the bake's fingerprint tag). The planner keeps
the newest `keep` artifacts (by the org.opencontainers.image.created label, else the image config's created time),
every protected digest (live or previous in an environment of the ledger) and every manifest that is not a bake
artifact, and deletes the rest. The applier deletes through the registry HTTP API (DELETE
/v2/<repo>/manifests/<digest>, which removes every tag of that digest), each with its artifact record kept beside it
(the manifest tagged sha256-<hex>.record) and everything else kept beside it under a referrer tag
(sha256-<hex>.sbom, .sig, .att), and skips that in dry-run and check mode.
"""

from __future__ import annotations

import re

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import is_fingerprint_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import is_record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import is_referrer_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import referrer_subject
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository

OCI_CREATED = "org.opencontainers.image.created"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class GcError(Exception):
    """registry_gc cannot proceed; the message names the bad input or the registry problem and the fix."""


def protected_digests(protected):
    """Digests named by the protected entries (a digest, or any reference 'repo@sha256:...').

    Protection is by digest whatever the repository named: protecting too much is safe, too little is not.
    """
    digests = set()
    for entry in protected or []:
        if not isinstance(entry, str):
            raise GcError(
                f"protected entry {entry!r} is not a string: give digests (sha256:...) or references "
                "(host/repo@sha256:...); AMI IDs and other artifacts do not belong in a registry's list"
            )
        match = _DIGEST.search(entry)
        if not match or not (entry == match.group(0) or entry.endswith("@" + match.group(0))):
            raise GcError(
                f"protected entry {entry!r} is neither a digest (sha256:<64 hex>) nor a reference "
                "host/repo@sha256:<64 hex>: pass the ledger's live and previous IDs, never tags"
            )
        digests.add(match.group(0))
    return digests


def list_artifacts(registry, repo):
    """[{digest, tags, created, fingerprint, managed, record}] for every manifest reachable through a tag of repo.

    What is kept beside an image under a tag sha256-<hex>.<kind> (its artifact record ``.record``, its SBOM ``.sbom``,
    its signature and attestation) is not an artifact: the record is the ``record`` (its manifest digest) of the image
    it names, and each of them is one of its ``referrers`` ({tag, digest}); they go with it."""
    by_digest, records, referrers = {}, {}, {}
    for tag in sorted(registry.tags(repo)):
        found = registry.manifest(repo, tag)
        if found is None:  # deleted while we looked
            continue
        digest, _media_type, body = found
        if is_referrer_tag(tag):
            subject = referrer_subject(tag)
            if is_record_tag(tag):
                records[subject] = digest
            referrers.setdefault(subject, []).append({"tag": tag, "digest": digest})
            continue
        entry = by_digest.setdefault(digest, {"digest": digest, "tags": [], "body": body})
        entry["tags"].append(tag)
    artifacts = []
    for entry in by_digest.values():
        config = registry.config(repo, entry.pop("body"))
        labels = (config.get("config") or {}).get("Labels") or {}
        artifacts.append(
            {
                "digest": entry["digest"],
                "tags": entry["tags"],
                "created": labels.get(OCI_CREATED) or config.get("created") or "",
                "fingerprint": labels.get(LABEL_FINGERPRINT),
                "managed": any(is_fingerprint_tag(tag) for tag in entry["tags"]),
                "record": records.get(entry["digest"]),
                "referrers": referrers.get(entry["digest"], []),
            }
        )
    return artifacts


def plan_gc(artifacts, keep, protected):
    """Split artifacts into kept (each with a reason) and deleted, newest first."""
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise GcError(
            f"keep must be a whole number of at least 1, got {keep!r}: the newest artifact is always kept "
            "(it is the next deploy's candidate)"
        )
    managed = sorted((a for a in artifacts if a["managed"]), key=lambda a: (a["created"], a["digest"]), reverse=True)
    kept, deleted = [], []
    for index, artifact in enumerate(managed):
        item = {k: artifact[k] for k in ("digest", "tags", "created", "fingerprint")}
        if index < keep:
            kept.append(dict(item, reason=f"one of the {keep} newest"))
        elif artifact["digest"] in protected:
            kept.append(dict(item, reason="live or previous in the ledger"))
        else:
            if artifact.get("record"):
                item["record"] = artifact["record"]
            if artifact.get("referrers"):
                item["referrers"] = artifact["referrers"]
            deleted.append(item)
    for artifact in artifacts:
        if not artifact["managed"]:
            item = {k: artifact[k] for k in ("digest", "tags", "created", "fingerprint")}
            kept.append(dict(item, reason="not a bake artifact (no fp-* tag): never collected"))
    return {"kept": kept, "delete": deleted}


def run_gc(registry, repository, keep, protected, dry_run=True, check_mode=False):
    """Plan and (unless dry-run or check mode) delete. Returns the module result."""
    try:
        _host, repo = parse_repository(repository)
    except ImageReferenceError as exc:
        raise GcError(str(exc)) from None
    digests = protected_digests(protected)
    try:
        plan = plan_gc(list_artifacts(registry, repo), keep, digests)
        deleted = []
        if not (dry_run or check_mode):
            for item in plan["delete"]:
                registry.delete_manifest(repo, item["digest"])
                # what is kept beside it (record, SBOM, signature) goes with it
                for digest in dict.fromkeys([item.get("record")] + [r["digest"] for r in item.get("referrers", [])]):
                    if digest:
                        registry.delete_manifest(repo, digest)
                deleted.append(item)
    except RegistryError as exc:
        message = exc.message
        if exc.status == 405:
            message += (
                ": the registry has deletion disabled; enable it (distribution: storage.delete.enabled=true or "
                "REGISTRY_STORAGE_DELETE_ENABLED=true) and run again"
            )
        raise GcError(message) from None
    return {
        "changed": bool(plan["delete"]) and not dry_run,
        "repository": repository,
        "dry_run": bool(dry_run or check_mode),
        "kept": plan["kept"],
        "would_delete": plan["delete"],
        "deleted": deleted,
        "protected": sorted(digests),
    }
