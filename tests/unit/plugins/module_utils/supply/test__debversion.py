"""module_utils/supply/_debversion.py: dpkg's version order, and its parity with the real dpkg --compare-versions."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.supply._debversion import compare_versions
from ansible_collections.immutable.infra.plugins.module_utils.supply._debversion import split_version

# (older, newer): each strictly ordered by dpkg
ORDERED = [
    ("1.0-1", "1.1-1"),
    ("1.0-1", "1.0-2"),
    ("1.0~rc1-1", "1.0-1"),
    ("1.0~~", "1.0~"),
    ("1.0~", "1.0"),
    ("1.0~rc1", "1.0~rc2"),
    ("1.0", "1.0+b1"),
    ("1.0", "1.0a"),
    ("1.0a", "1.0b"),
    ("1.0Z", "1.0a"),
    ("1.0+", "1.0."),
    ("1.0", "1.0.1"),
    ("1.9", "1.10"),
    ("1.09", "1.10"),
    ("9.9", "1:0.1"),
    ("1:9.9", "2:0"),
    ("2.36-9+deb12u7", "2.36-9+deb12u10"),
    ("3.0.15-1~deb12u1", "3.0.16-1~deb12u1"),
    ("3.0.16-1~deb12u1", "3.0.16-1"),
    ("1:2.66-4+deb12u3", "1:2.66-4+deb12u3+b1"),
    ("2.38.1-5+deb12u2", "2.38.1-5+deb12u3"),
    ("7.88.1-10+deb12u8", "7.88.1-10+deb12u12"),
    ("1.2.3-1-1", "1.2.3-1-2"),
    ("0.9", "1.0-0"),
    ("1.0-a", "1.0-b"),
    ("1.0-1~bpo12+1", "1.0-1"),
    ("20230101", "20230102"),
    ("1.0-0.1", "1.0-1"),
]

# (left, right): equal for dpkg although the strings differ
EQUAL = [
    ("1.0", "1.0-0"),
    ("0:1.0", "1.0"),
    ("1.01", "1.1"),
    ("1.0-01", "1.0-1"),
    ("00:1.0", "1.0"),
]


@pytest.mark.parametrize(("older", "newer"), ORDERED)
def test_dpkg_order(older, newer):
    assert compare_versions(older, newer) < 0
    assert compare_versions(newer, older) > 0
    assert compare_versions(newer, newer) == 0


@pytest.mark.parametrize(("one", "other"), EQUAL)
def test_versions_dpkg_holds_equal(one, other):
    assert compare_versions(one, other) == 0
    assert compare_versions(other, one) == 0


def test_the_parts_of_a_version():
    assert split_version("1:2.38.1-5+deb12u3") == (1, "2.38.1", "5+deb12u3")
    assert split_version("1.2.3-1-1") == (0, "1.2.3-1", "1")
    assert split_version("1.0") == (0, "1.0", "")
    assert split_version(" 2:1.0~rc1 ") == (2, "1.0~rc1", "")


def dpkg_compare(left: str, op: str, right: str) -> bool:
    result = subprocess.run(["dpkg", "--compare-versions", left, op, right], capture_output=True, check=False)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode == 0


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs the real dpkg (a Debian or Ubuntu machine)")
def test_parity_with_dpkg_compare_versions():
    pairs = ORDERED + EQUAL
    pairs += [(right, left) for left, right in pairs]
    versions = sorted({version for pair in ORDERED for version in pair})
    pairs += [(left, right) for left in versions[::3] for right in versions[1::4]]
    mismatches = []
    for left, right in pairs:
        ours = compare_versions(left, right)
        theirs = "lt" if dpkg_compare(left, "lt", right) else ("gt" if dpkg_compare(left, "gt", right) else "eq")
        mine = "lt" if ours < 0 else ("gt" if ours > 0 else "eq")
        if mine != theirs:
            mismatches.append(f"{left} vs {right}: ours {mine}, dpkg {theirs}")
    assert not mismatches, mismatches
