# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that give playbooks the artifact contract (module_utils/artifact/_contract.py) instead of copies of it.

Documented in the sidecar files fingerprint_tag.yml, artifact_tags.yml, artifact_latest_path.yml and
artifact_local_evidence.yml.
"""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

from ansible_collections.immutable.infra.plugins.module_utils.artifact import _contract

FINGERPRINT = re.compile(r"^(sha256:)?[0-9a-f]{64}$")


def _checked_fingerprint(fingerprint, filter_name):
    if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
        raise AnsibleFilterError(
            f"{filter_name}: {fingerprint!r} is not a bake fingerprint: pass the fingerprint of the "
            "immutable.infra.bake_fingerprint lookup (sha256:<64 hex digits>)"
        )
    return fingerprint


def fingerprint_tag(fingerprint):
    """fp-<hex>: the registry tag naming an artifact by its content."""
    return _contract.fingerprint_tag(_checked_fingerprint(fingerprint, "fingerprint_tag"))


def artifact_tags(fingerprint, version="", extra_tags=None):
    """The tags a bake pushes: the fingerprint tag first, then the version (when given), then the extra tags."""
    extra_tags = [] if extra_tags is None else extra_tags
    if isinstance(extra_tags, str) or not all(isinstance(tag, str) for tag in extra_tags):
        raise AnsibleFilterError(f"extra tags {extra_tags!r} are not a list of strings: fix bake_extra_tags")
    if version is None or not isinstance(version, (str, int, float)):
        raise AnsibleFilterError(f"version {version!r} is not a string (empty for none): fix bake_version")
    return _contract.artifact_tags(_checked_fingerprint(fingerprint, "artifact_tags"), str(version), extra_tags)


def artifact_latest_path(artifacts_dir, name):
    """<artifacts_dir>/<name>/latest.json: the copy of the newest record of an artifact name."""
    if not isinstance(artifacts_dir, str) or not artifacts_dir or not isinstance(name, str) or not name:
        raise AnsibleFilterError(
            f"artifact_latest_path: needs the artifacts directory and an artifact name, got {artifacts_dir!r} and "
            f"{name!r}: pass bake_artifacts_dir | immutable.infra.artifact_latest_path(bake_name)"
        )
    return _contract.latest_path(artifacts_dir, name)


def artifact_local_evidence(digest, artifacts_dir, name):
    """The files a bake keeps on its machine about one image (its SBOM and provenance envelope), existing or not."""
    if not isinstance(digest, str) or not re.match(r"^sha256:[0-9a-f]{64}$", digest):
        raise AnsibleFilterError(f"artifact_local_evidence: {digest!r} is not an image digest (sha256:<64 hex digits>)")
    if not isinstance(artifacts_dir, str) or not artifacts_dir or not isinstance(name, str) or not name:
        raise AnsibleFilterError(
            f"artifact_local_evidence: needs the artifacts directory and an artifact name, got {artifacts_dir!r} and"
            f" {name!r}: pass digest | immutable.infra.artifact_local_evidence(bake_artifacts_dir, bake_name)"
        )
    return _contract.local_evidence_paths(artifacts_dir, name, digest)


class FilterModule:
    def filters(self):
        return {
            "fingerprint_tag": fingerprint_tag,
            "artifact_tags": artifact_tags,
            "artifact_latest_path": artifact_latest_path,
            "artifact_local_evidence": artifact_local_evidence,
        }
