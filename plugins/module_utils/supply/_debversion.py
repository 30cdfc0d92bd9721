# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Debian version order: dpkg's algorithm (lib/dpkg/version.c, ``dpkg --compare-versions``), in plain Python.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A version is ``[epoch:]upstream[-revision]``: the epoch (digits before the first ``:``, default 0) is compared as a
number first, then the upstream part, then the revision (after the last ``-``, default empty, which equals ``0``).
Upstream and revision are compared by dpkg's ``verrevcmp``: alternately a run of non-digits, character by character,
where ``~`` sorts before anything (even the end of the string), then letters, then the other characters; and a run
of digits, as a number. So ``1.0~rc1 < 1.0 < 1.0+b1 < 1.0a`` and ``1:0.9 > 2.0``.

Used by the package diff (_diff.py: upgraded or downgraded) and the freshness report (_freshness.py: a newer
version in the mirror). tests/unit/.../test__debversion.py checks it against the real ``dpkg --compare-versions``.
"""

from __future__ import annotations


def _is_digit(char):
    return "0" <= char <= "9"


def _order(char):
    """dpkg's order(): digits 0 (they are compared as numbers), '~' first, letters, then everything else."""
    if _is_digit(char):
        return 0
    if char.isascii() and char.isalpha():
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256


def verrevcmp(left, right):
    """<0, 0, >0: dpkg's comparison of two upstream versions (or two revisions)."""
    i = j = 0
    while i < len(left) or j < len(right):
        # a run of non-digits; the end of a string orders as 0 (after '~', before anything else)
        while (i < len(left) and not _is_digit(left[i])) or (j < len(right) and not _is_digit(right[j])):
            lc = _order(left[i]) if i < len(left) else 0
            rc = _order(right[j]) if j < len(right) else 0
            if lc != rc:
                return lc - rc
            i += 1
            j += 1
        # a run of digits, as a number: leading zeros do not count, the longer run is the larger
        while i < len(left) and left[i] == "0":
            i += 1
        while j < len(right) and right[j] == "0":
            j += 1
        first = 0
        while i < len(left) and _is_digit(left[i]) and j < len(right) and _is_digit(right[j]):
            if not first:
                first = ord(left[i]) - ord(right[j])
            i += 1
            j += 1
        if i < len(left) and _is_digit(left[i]):
            return 1
        if j < len(right) and _is_digit(right[j]):
            return -1
        if first:
            return first
    return 0


def split_version(version):
    """(epoch, upstream, revision) of a Debian version; an epoch that is not a number is taken as part of upstream."""
    text = str(version).strip()
    epoch, sep, rest = text.partition(":")
    if not sep or not epoch or not all(_is_digit(char) for char in epoch):
        epoch, rest = "0", text
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch), upstream, revision


def compare_versions(left, right):
    """<0, 0, >0 as left is older than, the same as or newer than right (Debian's rules: epoch, upstream, revision)."""
    left_epoch, left_upstream, left_revision = split_version(left)
    right_epoch, right_upstream, right_revision = split_version(right)
    if left_epoch != right_epoch:
        return left_epoch - right_epoch
    return verrevcmp(left_upstream, right_upstream) or verrevcmp(left_revision, right_revision)
