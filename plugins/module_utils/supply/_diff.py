# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What changes between two artifacts: their packages (from the SBOMs) and their roles' inputs (from the records).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Pure functions (no I/O): ``package_diff`` compares two CycloneDX documents, ``artifact_diff`` adds the inputs that
changed (the records' ``inputs_manifest``, compared by bake/_fingerprint.diff_inputs, the same sentences a bake
prints) and ``summary_lines`` prints both compactly. Used by immutable.infra.artifact_diff (docs/supply-chain.md,
"Package diff"); the promotion step can put the result in the ledger's evidence.
"""

from __future__ import annotations

from urllib.parse import unquote

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import diff_inputs
from ansible_collections.immutable.infra.plugins.module_utils.supply._debversion import compare_versions
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import packages

# -- packages ------------------------------------------------------------------------------------------------------


def package_key(package):
    """(type, name with namespace, arch): what stays the same when a package is upgraded."""
    purl = package.get("purl") or ""
    if not purl.startswith("pkg:"):
        return (package.get("type") or "", package.get("name") or "", "")
    path, _sep, qualifiers = purl[4:].partition("?")
    path = path.split("#", 1)[0]
    name = path.rsplit("@", 1)[0] if "@" in path else path
    kind, _sep, name = name.partition("/")
    arch = ""
    for pair in qualifiers.split("&"):
        key, _sep, value = pair.partition("=")
        if key == "arch":
            arch = unquote(value)
    return (kind, unquote(name), arch)


def _by_key(document):
    found = {}
    for package in packages(document):
        found.setdefault(package_key(package), []).append(package)
    return found


def _label(key, package):
    arch = f" ({key[2]})" if key[2] else ""
    return f"{package['name']}{arch}"


def package_diff(old_document, new_document):
    """{added, removed, upgraded, downgraded}: each a sorted list; added/removed items {name, version, purl, type},
    upgraded/downgraded items {name, type, arch, from, to, purl}. A package present with several versions on one side
    is compared as the set of its versions (removed and added ones)."""
    old, new = _by_key(old_document), _by_key(new_document)
    result = {"added": [], "removed": [], "upgraded": [], "downgraded": []}
    for key in sorted(set(old) | set(new)):
        before = old.get(key, [])
        after = new.get(key, [])
        before_versions = sorted({p["version"] for p in before})
        after_versions = sorted({p["version"] for p in after})
        if before_versions == after_versions:
            continue
        if len(before_versions) == 1 and len(after_versions) == 1:
            change = {
                "name": after[0]["name"],
                "type": key[0],
                "arch": key[2],
                "from": before_versions[0],
                "to": after_versions[0],
                "purl": after[0]["purl"],
            }
            kind = "upgraded" if compare_versions(after_versions[0], before_versions[0]) > 0 else "downgraded"
            result[kind].append(change)
            continue
        result["removed"].extend(p for p in before if p["version"] not in after_versions)
        result["added"].extend(p for p in after if p["version"] not in before_versions)
    return result


def artifact_diff(old_sbom, new_sbom, old_record=None, new_record=None):
    """The package diff plus the inputs that changed (None when a record is missing: not known)."""
    result = {"packages": package_diff(old_sbom, new_sbom)}
    if old_record is not None and new_record is not None:
        result["inputs"] = diff_inputs(old_record.get("inputs_manifest") or {}, new_record.get("inputs_manifest") or {})
    else:
        result["inputs"] = None
    counts = {kind: len(items) for kind, items in result["packages"].items()}
    result["counts"] = counts
    return result


def summary_lines(diff, limit=50):
    """Compact lines: one per package change ('+ name version', '- name version', '^ name a -> b', 'v name a -> b'),
    then the inputs that changed; at most limit package lines (the rest counted)."""
    changes = diff["packages"]
    lines = []
    for package in changes["added"]:
        lines.append(f"+ {package['name']} {package['version']}")
    for package in changes["removed"]:
        lines.append(f"- {package['name']} {package['version']}")
    for package in changes["upgraded"]:
        lines.append(f"^ {package['name']} {package['from']} -> {package['to']}")
    for package in changes["downgraded"]:
        lines.append(f"v {package['name']} {package['from']} -> {package['to']}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more package changes"]
    counts = diff["counts"]
    head = (
        f"packages: {counts['added']} added, {counts['removed']} removed, {counts['upgraded']} upgraded,"
        f" {counts['downgraded']} downgraded"
    )
    inputs = diff.get("inputs")
    tail = (
        ["inputs: not compared (no artifact record of one side)"]
        if inputs is None
        else ([f"inputs: {change}" for change in inputs] or ["inputs: unchanged"])
    )
    return [head] + lines + tail
