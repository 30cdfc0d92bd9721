"""supply/_sbom_tree.py: the package tree's digest, its safe extraction, the cache, the fallback when no tree comes.

The real syft over a real tree, against the image scan of the same image, is in
tests/integration/test_supply_chain_sbom.py (the parity test).
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import CACHE_INDEX
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import PACKAGE_TREE_COMMAND
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import SbomTreeError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import TreeCache
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import cache_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import describe_image
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import extract_tree
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import has_package_database
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import package_tree_digest
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import package_tree_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import sbom_source_kind
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import take_package_tree
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import tree_of

DIGEST = "sha256:" + "ab" * 32
IMAGE = f"127.0.0.1:5000/web@{DIGEST}"
STATUS = b"Package: probe\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n\n"


def make_tar(path, entries, mtime=0, uid=0):
    """entries: (name, kind, payload, mode); kind f (payload bytes), d, l (payload = link target), h, c, p."""
    with tarfile.open(path, "w") as archive:
        for name, kind, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.mode = mtime, uid, mode
            data = None
            if kind == "f":
                info.size, data = len(payload), io.BytesIO(payload)
            else:
                info.type = {
                    "d": tarfile.DIRTYPE,
                    "l": tarfile.SYMTYPE,
                    "h": tarfile.LNKTYPE,
                    "c": tarfile.CHRTYPE,
                    "p": tarfile.FIFOTYPE,
                }[kind]
                info.linkname = payload or ""
            archive.addfile(info, data)
    return str(path)


TREE = [
    ("var/lib/dpkg/status", "f", STATUS, 0o644),
    ("etc/os-release", "l", "../usr/lib/os-release", 0o777),
    ("usr/lib/os-release", "f", b"ID=debian\nVERSION_ID=12\n", 0o644),
    ("usr/share/doc/probe", "l", "/usr/share/doc/other", 0o777),
]


def test_the_digest_is_of_the_content_not_of_times_owners_or_order(tmp_path):
    first = package_tree_digest(make_tar(tmp_path / "a.tar", TREE))
    again = package_tree_digest(make_tar(tmp_path / "b.tar", list(reversed(TREE)), mtime=1796400000, uid=1000))
    assert first == again and first.startswith("sha256:") and len(first) == 71
    changed_bytes = [(n, k, p.replace(b"1.0", b"1.1") if k == "f" else p, m) for n, k, p, m in TREE]
    changed_mode = [(n, k, p, 0o600 if k == "f" else m) for n, k, p, m in TREE]
    changed_link = [(n, k, "/elsewhere" if k == "l" else p, m) for n, k, p, m in TREE]
    others = {
        package_tree_digest(make_tar(tmp_path / f"{i}.tar", entries))
        for i, entries in enumerate((changed_bytes, changed_mode, changed_link, TREE[1:]))
    }
    assert len(others) == 4 and first not in others


@pytest.mark.parametrize(
    "entry, problem",
    [
        (("../etc/passwd", "f", b"x", 0o644), "leaving its root"),
        (("var/../../etc/passwd", "f", b"x", 0o644), "leaving its root"),
        (("/etc/passwd", "f", b"x", 0o644), "absolute path"),
        (("dev/sda", "c", None, 0o600), "device or fifo"),
        (("run/pipe", "p", None, 0o600), "device or fifo"),
        (("var/lib/dpkg/evil", "h", "/etc/shadow", 0o644), "hard link"),
    ],
)
def test_an_unsafe_tree_is_refused_naming_the_entry(tmp_path, entry, problem):
    tar = make_tar(tmp_path / "bad.tar", TREE + [entry])
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SbomTreeError, match=problem):
        extract_tree(tar, str(root))
    with pytest.raises(SbomTreeError, match=problem):
        package_tree_digest(tar)
    assert not (tmp_path / "etc").exists()


def test_a_file_written_through_a_symlinked_directory_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    tar = make_tar(
        tmp_path / "trick.tar",
        [("usr/share/doc/x", "l", str(outside), 0o777), ("usr/share/doc/x/copyright", "f", b"y", 0o644)],
    )
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(SbomTreeError, match="through the symlink"):
        extract_tree(tar, str(root))
    assert list(outside.iterdir()) == []


def test_the_tree_extracts_with_links_kept_as_links(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    extract_tree(make_tar(tmp_path / "tree.tar", TREE), str(root))
    assert (root / "var/lib/dpkg/status").read_bytes() == STATUS
    assert os.readlink(root / "etc/os-release") == "../usr/lib/os-release"
    assert (root / "etc/os-release").read_bytes().startswith(b"ID=debian")
    assert os.readlink(root / "usr/share/doc/probe") == "/usr/share/doc/other"  # never followed
    assert stat.S_IMODE(os.stat(root / "var/lib/dpkg/status").st_mode) == 0o644


def test_names_as_find_prints_them_and_hard_links_inside_the_tree_extract(tmp_path):
    entries = [(f"./{name}", kind, payload, mode) for name, kind, payload, mode in TREE]
    entries.append(("./var/lib/dpkg/.status-copy", "h", "./var/lib/dpkg/status", 0o644))
    tar = make_tar(tmp_path / "dotted.tar", entries)
    assert package_tree_digest(tar) != package_tree_digest(make_tar(tmp_path / "plain.tar", TREE))
    assert package_tree_digest(make_tar(tmp_path / "plain2.tar", [(f"./{n}", k, p, m) for n, k, p, m in TREE])) == (
        package_tree_digest(make_tar(tmp_path / "plain.tar", TREE))
    )
    root = tmp_path / "root"
    root.mkdir()
    extract_tree(tar, str(root))
    assert (root / "var/lib/dpkg/.status-copy").read_bytes() == STATUS


def test_a_tree_without_any_package_database_is_not_worth_scanning(tmp_path):
    assert has_package_database(make_tar(tmp_path / "a.tar", TREE))
    assert not has_package_database(make_tar(tmp_path / "b.tar", TREE[1:]))
    python_only = [("opt/venv/lib/python3.11/site-packages/x-1.dist-info/METADATA", "f", b"Name: x\n", 0o644)]
    assert has_package_database(make_tar(tmp_path / "c.tar", python_only))


def test_the_command_is_plain_sh_that_names_what_it_needs():
    assert "find" in PACKAGE_TREE_COMMAND and "tar -cf - -T -" in PACKAGE_TREE_COMMAND
    assert "var/lib/dpkg/status" in PACKAGE_TREE_COMMAND and "*.dist-info" in PACKAGE_TREE_COMMAND
    assert "-path ./proc" in PACKAGE_TREE_COMMAND and "-xdev" in PACKAGE_TREE_COMMAND


class FakeEngine:
    """Only to reach the paths no real image gives on demand: an exec that fails, a tar holding no package DB."""

    def __init__(self, tar=None, error=None):
        self.tar, self.error = tar, error

    def exec_to_file(self, container, argv, path, timeout=None):
        assert argv[:2] == ["sh", "-c"] and argv[2] == PACKAGE_TREE_COMMAND
        with open(path, "wb") as handle:
            handle.write(b"partial")
        if self.error:
            raise DockerError(self.error)
        with open(self.tar, "rb") as source, open(path, "wb") as handle:
            handle.write(source.read())


def test_no_tree_is_taken_when_the_exec_fails_or_finds_no_package_database(tmp_path):
    dest = tmp_path / "tree.tar"
    failed = take_package_tree(FakeEngine(error="docker exec failed (rc=126): sh not found"), "b1", str(dest))
    assert failed == {"taken": False, "reason": "docker exec failed (rc=126): sh not found"} and not dest.exists()
    empty = take_package_tree(FakeEngine(tar=make_tar(tmp_path / "e.tar", TREE[1:])), "b1", str(dest))
    assert empty["taken"] is False and "no package database" in empty["reason"] and not dest.exists()
    taken = take_package_tree(FakeEngine(tar=make_tar(tmp_path / "t.tar", TREE)), "b1", str(dest))
    assert taken == {
        "taken": True,
        "path": str(dest),
        "digest": package_tree_digest(str(dest)),
        "size": dest.stat().st_size,
    }


def raw_sbom(components):
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": components}).encode()


def test_the_sbom_describes_the_image_and_says_it_was_read_from_the_tree():
    document = json.loads(describe_image(raw_sbom([{"name": "probe"}]), "127.0.0.1:5000/web", DIGEST, "sha256:tree"))
    component = document["metadata"]["component"]
    assert (component["name"], component["type"], component["version"]) == ("127.0.0.1:5000/web", "container", DIGEST)
    assert tree_of(document) == "sha256:tree"
    labelled = json.loads(describe_image(raw_sbom([]), "r", DIGEST, "sha256:tree", {"b": "2", "a": 1, "empty": ""}))
    assert labelled["metadata"]["properties"][2:] == [
        {"name": "syft:image:labels:a", "value": "1"},
        {"name": "syft:image:labels:b", "value": "2"},
    ]
    with pytest.raises(Exception, match="no JSON"):
        describe_image(b"not json", "127.0.0.1:5000/web", DIGEST, "sha256:tree")


def fake_syft(tmp_path, version="1.18.1"):
    """A syft stand-in that logs every run: a cache hit must leave its log empty."""
    log = tmp_path / "syft.log"
    script = tmp_path / "syft"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho \'{{"version": "{version}"}}\'\n')
    script.chmod(0o755)
    return str(script), log


def test_a_cache_hit_runs_no_syft_and_retargets_the_kept_sbom(tmp_path):
    tar = make_tar(tmp_path / "tree.tar", TREE)
    tree = package_tree_digest(tar)
    sbom_dir = tmp_path / "sbom"
    sbom_dir.mkdir()
    older = "127.0.0.1:5000/web@sha256:" + "cd" * 32
    kept = describe_image(
        raw_sbom([{"name": "probe", "version": "1.0"}]), "127.0.0.1:5000/web", older.split("@")[1], tree
    )
    (sbom_dir / "sha256-old.cdx.json").write_bytes(kept)
    syft, log = fake_syft(tmp_path)
    cache = TreeCache(str(sbom_dir))
    key = cache_key(tree, cache.syft_version(syft))  # learns the version once: the one run of the stand-in
    cache.put(key, str(sbom_dir / "sha256-old.cdx.json"))
    log.unlink()
    raw, details = package_tree_sbom(tar, IMAGE, str(sbom_dir), syft=syft)
    assert details == {"source_kind": "package-tree", "tree": tree, "key": key, "cache": "hit"}
    assert not log.exists()
    document = json.loads(raw)
    assert document["components"] == [{"name": "probe", "version": "1.0"}]
    assert document["metadata"]["component"]["version"] == DIGEST
    assert sbom_source_kind(str(sbom_dir / "sha256-old.cdx.json")) == "package-tree"


def test_the_cache_misses_on_another_syft_a_stale_entry_or_a_damaged_index(tmp_path):
    sbom_dir = tmp_path / "sbom"
    sbom_dir.mkdir()
    (sbom_dir / "a.cdx.json").write_bytes(describe_image(raw_sbom([]), "r", DIGEST, "sha256:t1"))
    cache = TreeCache(str(sbom_dir))
    cache.put(cache_key("sha256:t1", "1.18.1"), str(sbom_dir / "a.cdx.json"))
    assert cache.get(cache_key("sha256:t1", "1.18.1")) is not None
    assert cache.get(cache_key("sha256:t1", "1.19.0")) is None
    assert cache.get(cache_key("sha256:t2", "1.18.1")) is None
    # a file that says it was made from another tree (replaced by hand) is no hit
    (sbom_dir / "a.cdx.json").write_bytes(describe_image(raw_sbom([]), "r", DIGEST, "sha256:other"))
    assert cache.get(cache_key("sha256:t1", "1.18.1")) is None
    (sbom_dir / CACHE_INDEX).write_text("{not json")
    assert cache.get(cache_key("sha256:t1", "1.18.1")) is None


def test_the_index_stays_bounded_and_drops_entries_whose_file_is_gone(tmp_path):
    sbom_dir = tmp_path / "sbom"
    sbom_dir.mkdir()
    cache = TreeCache(str(sbom_dir), limit=3)
    for number in range(5):
        (sbom_dir / f"{number}.cdx.json").write_bytes(b"{}")
        cache.put(cache_key(f"sha256:t{number}", "1"), str(sbom_dir / f"{number}.cdx.json"))
    (sbom_dir / "4.cdx.json").unlink()
    (sbom_dir / "5.cdx.json").write_bytes(b"{}")
    cache.put(cache_key("sha256:t5", "1"), str(sbom_dir / "5.cdx.json"))
    entries = json.loads((sbom_dir / CACHE_INDEX).read_text())["entries"]
    assert [entry["sbom"] for entry in entries] == ["2.cdx.json", "3.cdx.json", "5.cdx.json"]


def test_an_image_scan_sbom_is_said_to_come_from_the_image(tmp_path):
    path = tmp_path / "s.cdx.json"
    path.write_bytes(raw_sbom([]))
    assert sbom_source_kind(str(path)) == "image"
    assert sbom_source_kind(str(tmp_path / "missing.json")) is None
