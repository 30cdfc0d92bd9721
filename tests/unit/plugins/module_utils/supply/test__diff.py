"""module_utils/supply/_diff.py: Debian's version order, the package diff and its compact lines."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import artifact_diff
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import compare_versions
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import package_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import summary_lines


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0-1", "1.1-1"),
        ("1.0-1", "1.0-2"),
        ("1.0~rc1-1", "1.0-1"),
        ("2.36-9+deb12u7", "2.36-9+deb12u10"),
        ("9.9", "1:0.1"),
        ("3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
        ("1.0", "1.0a"),
        ("1.0", "1.0.1"),
    ],
)
def test_debian_version_order(older, newer):
    assert compare_versions(older, newer) < 0
    assert compare_versions(newer, older) > 0
    assert compare_versions(newer, newer) == 0


def test_the_package_key_keeps_type_name_and_arch_not_the_version():
    one = {"purl": "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12", "name": "libc6"}
    two = {"purl": "pkg:deb/debian/libc6@2.36-10?arch=amd64&distro=debian-12", "name": "libc6"}
    assert package_key(one) == package_key(two) == ("deb", "debian/libc6", "amd64")
    assert package_key({"purl": "pkg:pypi/requests@2.0", "name": "requests"}) == ("pypi", "requests", "")


def sbom(*packages):
    return {
        "bomFormat": "CycloneDX",
        "components": [
            {"name": name, "version": version, "purl": f"pkg:deb/debian/{name}@{version}?arch=all&distro=debian-12"}
            for name, version in packages
        ],
    }


def test_added_removed_upgraded_downgraded_with_versions_and_the_inputs():
    old = sbom(("a", "1.0-1"), ("b", "2.0"), ("c", "1:1.0"), ("same", "1"))
    new = sbom(("a", "1.1-1"), ("c", "1:0.9"), ("d", "4.0"), ("same", "1"))
    manifest = {"roles": [{"name": "web", "digest": "x", "files": {"tasks/main.yml": "1"}}]}
    changed = {"roles": [{"name": "web", "digest": "y", "files": {"tasks/main.yml": "2"}}]}
    diff = artifact_diff(old, new, {"inputs_manifest": manifest}, {"inputs_manifest": changed})
    assert [p["name"] for p in diff["packages"]["added"]] == ["d"]
    assert [p["name"] for p in diff["packages"]["removed"]] == ["b"]
    assert [(p["name"], p["from"], p["to"]) for p in diff["packages"]["upgraded"]] == [("a", "1.0-1", "1.1-1")]
    assert [(p["name"], p["from"], p["to"]) for p in diff["packages"]["downgraded"]] == [("c", "1:1.0", "1:0.9")]
    assert diff["counts"] == {"added": 1, "removed": 1, "upgraded": 1, "downgraded": 1}
    assert summary_lines(diff) == [
        "packages: 1 added, 1 removed, 1 upgraded, 1 downgraded",
        "+ d 4.0",
        "- b 2.0",
        "^ a 1.0-1 -> 1.1-1",
        "v c 1:1.0 -> 1:0.9",
        "inputs: role web file tasks/main.yml changed",
    ]


def test_without_a_record_the_inputs_are_not_compared_and_long_lists_are_cut():
    diff = artifact_diff(sbom(), sbom(*[(f"p{i:02}", "1") for i in range(5)]))
    assert diff["inputs"] is None
    lines = summary_lines(diff, limit=2)
    assert lines == [
        "packages: 5 added, 0 removed, 0 upgraded, 0 downgraded",
        "+ p00 1",
        "+ p01 1",
        "... and 3 more package changes",
        "inputs: not compared (no artifact record of one side)",
    ]
