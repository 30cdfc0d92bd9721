# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The package-tree SBOM: syft over the package metadata of a root filesystem only, cached by that metadata's content.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

An image scan (``syft scan registry:<image>``) pulls and unpacks every layer to read a few megabytes of package
metadata. Here the target itself writes those files as one tar (``PACKAGE_TREE_COMMAND``, run with ``sh -c`` in the
builder), syft reads the extracted tree with the catalogers of an image scan (``--override-default-catalogers
image``), and the raw output is kept by the tree's content digest: a bake whose packages did not change runs no syft
at all. docs/supply-chain.md ("SBOM") says what the tree holds, what it cannot see and how the bake falls back to
the image scan; tests/integration/test_supply_chain_sbom.py checks that both give the same components.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import stat
import tarfile
import tempfile

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import find_syft
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import offline_environment
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import parse_cyclonedx
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import syft_output
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import syft_version

# The files syft's image catalogers read for packages, found from / on the root filesystem only. Needs sh, find and
# tar (GNU or busybox); exits non-zero when it cannot write the tar. Relative names (no leading /; what find
# prints starts with ./, which the reader drops) so the tar extracts anywhere.
#  - dpkg (syft's dpkg-db-cataloger): status, status.d/*, info/*.list|*.md5sums|*.conffiles, and the copyright
#    files under /usr/share/doc (licenses; a package's doc directory may be a symlink to another package's)
#  - the apk, rpm, pacman and opkg databases when present; os-release for the distro (the purls' distro qualifier)
#  - every *.dist-info / *.egg-info (whole: METADATA, RECORD, top_level.txt, direct_url.json, licenses, PKG-INFO)
#  - installed node packages' package.json, gem specifications, composer's installed.json, conda-meta records
PACKAGE_TREE_COMMAND = r"""
set -u
for tool in find tar; do
  command -v "$tool" >/dev/null 2>&1 || { echo "package tree: $tool is not in the image" >&2; exit 3; }
done
cd / || exit 4
{
  for path in var/lib/dpkg/status var/lib/dpkg/status.d var/lib/opkg/status lib/apk/db/installed \
      var/lib/rpm usr/lib/sysimage/rpm var/lib/pacman/local etc/os-release usr/lib/os-release \
      etc/debian_version etc/alpine-release etc/redhat-release etc/system-release etc/system-release-cpe; do
    if [ -e "$path" ] || [ -L "$path" ]; then echo "$path"; fi
  done
  if [ -d var/lib/dpkg/info ]; then
    find var/lib/dpkg/info -maxdepth 1 \( -name '*.list' -o -name '*.md5sums' -o -name '*.conffiles' \) -print
  fi
  if [ -d usr/share/doc ]; then
    find usr/share/doc -mindepth 1 -maxdepth 2 \( -type l -o -name copyright \) -print
  fi
  find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev \) -prune -o \
    \( -name '*.dist-info' -o -name '*.egg-info' -o -name '*.DIST-INFO' -o -name '*.EGG-INFO' \
       -o \( -name package.json -path '*/node_modules/*' \) -o \( -name '*.gemspec' -path '*/specifications/*' \) \
       -o \( -name installed.json -path '*/composer/*' \) -o \( -name '*.json' -path '*/conda-meta/*' \) \) \
    -print
} | tar -cf - -T -
"""

# the files whose presence makes a tree worth scanning: without any, the target has no package database syft reads
PACKAGE_DATABASES = re.compile(
    r"^(var/lib/dpkg/status(\.d/.+)?|var/lib/opkg/status|lib/apk/db/installed|var/lib/rpm/.+|usr/lib/sysimage/rpm/.+"
    r"|var/lib/pacman/local/.+|.*\.(dist|egg)-info(/.*)?)$",
    re.IGNORECASE,
)
CATALOGERS = "image"
CACHE_INDEX = "package-trees.json"
CACHE_LIMIT = 64
LABEL_PROPERTY = "syft:image:labels:"
SOURCE_PROPERTY = "immutable-infra:sbom:source"
TREE_PROPERTY = "immutable-infra:sbom:package-tree"
_CHUNK = 1 << 20


class SbomTreeError(SbomError):
    """The package tree cannot be used (unsafe, empty of package databases, unreadable); the caller scans the image."""


def _relative(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _member_name(member):
    return _relative(member.name)


def _check_member(member):
    """The member's safe relative name, or SbomTreeError naming what is wrong with it."""
    name = member.name
    if name.startswith("/") or posixpath.isabs(name):
        raise SbomTreeError(f"the package tree holds an absolute path {name!r}: refused")
    parts = _member_name(member).split("/")
    if ".." in parts:
        raise SbomTreeError(f"the package tree holds a path leaving its root {name!r}: refused")
    if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
        raise SbomTreeError(f"the package tree holds a device or fifo {name!r}: refused")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise SbomTreeError(f"the package tree holds {name!r} of an unknown type: refused")
    if member.islnk() and (member.linkname.startswith("/") or ".." in member.linkname.split("/")):
        raise SbomTreeError(f"the package tree holds a hard link {name!r} to {member.linkname!r}: refused")
    return _member_name(member)


def _chunks(handle):
    while True:
        chunk = handle.read(_CHUNK)
        if not chunk:
            return
        yield chunk


def _open(tar_path):
    try:
        return tarfile.open(tar_path, mode="r:")
    except (OSError, tarfile.TarError) as exc:
        raise SbomTreeError(f"the package tree {tar_path} is not a readable tar: {exc}") from None


def package_tree_digest(tar_path) -> str:
    """sha256:<hex> over the tar's content: member names (sorted), types, permission bits, link targets and file
    bytes; not mtimes, owners or the order, so the same package state always gives the same digest."""
    entries = {}
    with _open(tar_path) as archive:
        for member in archive:
            name = _check_member(member)
            if not name:
                continue
            if member.isfile():
                content = hashlib.sha256()
                for chunk in _chunks(archive.extractfile(member)):
                    content.update(chunk)
                body = content.hexdigest()
            else:
                body = member.linkname if (member.issym() or member.islnk()) else ""
            kind = "f" if member.isfile() else "d" if member.isdir() else "l" if member.issym() else "h"
            entries[name] = f"{kind} {stat.S_IMODE(member.mode):o} {body}"
    digest = hashlib.sha256()
    for name in sorted(entries):
        digest.update(f"{name}\0{entries[name]}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + digest.hexdigest()


def has_package_database(tar_path) -> bool:
    """Whether the tree holds any package database syft's image catalogers read (dpkg, apk, rpm, Python...)."""
    with _open(tar_path) as archive:
        return any(PACKAGE_DATABASES.match(_check_member(member)) for member in archive)


def _no_link_on_the_way(root, name):
    """SbomTreeError when a parent directory of name inside root is a symlink: writing there would leave root."""
    current = root
    for part in name.split("/")[:-1]:
        current = os.path.join(current, part)
        if os.path.islink(current):
            raise SbomTreeError(f"the package tree writes {name!r} through the symlink {part!r}: refused")


def extract_tree(tar_path, root):
    """Extract the tree into the directory root: regular files, directories and symlinks (kept as links, never
    followed while extracting); SbomTreeError for an absolute or escaping path, a device, fifo or link trick."""
    with _open(tar_path) as archive:
        for member in archive:
            name = _check_member(member)
            if not name:
                continue
            _no_link_on_the_way(root, name)
            target = os.path.join(root, name)
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if os.path.lexists(target) and not (member.isdir() and os.path.isdir(target)):
                if os.path.isdir(target) and not os.path.islink(target):
                    continue  # a directory stays a directory
                os.unlink(target)
            if member.isdir():
                os.makedirs(target, mode=0o755, exist_ok=True)
            elif member.issym():
                os.symlink(member.linkname, target)
            elif member.islnk():
                source = os.path.join(root, _relative(member.linkname))
                if os.path.islink(source) or not os.path.isfile(source):
                    raise SbomTreeError(f"the package tree holds a hard link {name!r} to a missing file: refused")
                with open(source, "rb") as reader, open(target, "xb") as writer:
                    writer.write(reader.read())
            else:
                with open(target, "xb") as writer:
                    for chunk in _chunks(archive.extractfile(member)):
                        writer.write(chunk)
                os.chmod(target, 0o644)


def scan_package_tree(tar_path, source_name, syft=None, timeout=900) -> bytes:
    """The raw CycloneDX JSON the real syft writes for the extracted package tree, with the catalogers of an image
    scan (declared-only ones such as requirements.txt do not run) and syft's offline environment."""
    syft = syft or find_syft()
    with tempfile.TemporaryDirectory(prefix="immutable-infra-tree-") as work:
        root = os.path.join(work, "root")
        os.mkdir(root)
        extract_tree(tar_path, root)
        out = os.path.join(work, "sbom.cdx.json")
        args = [
            "scan",
            "-q",
            f"dir:{root}",
            "--override-default-catalogers",
            CATALOGERS,
            "--source-name",
            str(source_name),
            "-o",
            f"cyclonedx-json={out}",
        ]
        return syft_output(
            syft, args, out, offline_environment(), timeout, f"syft could not read the tree of {source_name}"
        )


# -- the document -------------------------------------------------------------------------------------------------


def describe_image(raw, repository, digest, tree_digest, labels=None) -> bytes:
    """The tree's CycloneDX JSON made the SBOM of the image repository@digest: metadata.component is the image
    (type container, name the repository, version the digest, as an image scan says), the properties are the image's
    labels as an image scan lists them (``syft:image:labels:<name>``, what freshness and the SPDX form read) and say
    it was read from the package tree (and which); nothing of the scanned directory or of another image is left.
    SbomError when raw is no CycloneDX."""
    document = parse_cyclonedx(raw, f"the package tree of {repository}@{digest}")
    metadata = document.get("metadata") or {}
    metadata["component"] = {
        "bom-ref": hashlib.sha256(f"{repository}@{digest}".encode()).hexdigest()[:16],
        "name": repository,
        "type": "container",
        "version": digest,
    }
    metadata["properties"] = [
        {"name": SOURCE_PROPERTY, "value": "package-tree"},
        {"name": TREE_PROPERTY, "value": tree_digest},
    ] + [  # as syft lists them: an empty label is left out
        {"name": f"{LABEL_PROPERTY}{name}", "value": str(value)}
        for name, value in sorted((labels or {}).items())
        if str(value) != ""
    ]
    document["metadata"] = metadata
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def tree_of(document):
    """The package-tree digest an SBOM was made from (its metadata property), or None for an image scan's."""
    for prop in (document.get("metadata") or {}).get("properties") or []:
        if isinstance(prop, dict) and prop.get("name") == TREE_PROPERTY:
            return prop.get("value")
    return None


def sbom_source_kind(sbom_file):
    """What a kept SBOM file says it was made from: "package-tree", "image", or None when it cannot be read."""
    try:
        with open(sbom_file, "rb") as handle:
            document = json.load(handle)
    except (OSError, ValueError):
        return None
    return "package-tree" if isinstance(document, dict) and tree_of(document) else "image"


# -- the cache ------------------------------------------------------------------------------------------------------


def cache_key(tree_digest, syft_version, catalogers=CATALOGERS):
    return f"{tree_digest}|syft {syft_version}|{catalogers}"


class TreeCache:
    """Which SBOM file of a directory was made from which package tree, syft version and catalogers.

    The index (``package-trees.json``) lives beside the SBOM files it points at (``<artifacts_dir>/<app>/sbom/``):
    no second copy of any SBOM, shared by every runner that shares the artifacts directory, bounded (entries whose
    file is gone are dropped, at most CACHE_LIMIT kept). A hit is checked against the file itself (it must still say
    it was made from that tree); a damaged or stale index is only a miss. Safe to delete at any time."""

    def __init__(self, directory, limit=CACHE_LIMIT):
        self.directory = directory
        self.path = os.path.join(directory, CACHE_INDEX)
        self.limit = limit

    def _index(self):
        try:
            with open(self.path, encoding="utf-8") as handle:
                index = json.load(handle)
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}

    def _entries(self):
        entries = self._index().get("entries")
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def _write(self, index):
        os.makedirs(self.directory, exist_ok=True)
        atomic_write(self.path, (json.dumps(index, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    def syft_version(self, syft):
        """syft's version, remembered in the index with the binary's path, size and mtime: a hit runs no syft."""
        try:
            info = os.stat(syft)
        except OSError:
            return syft_version(syft)
        identity = {"path": os.path.realpath(syft), "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        index = self._index()
        known = index.get("syft") if isinstance(index.get("syft"), dict) else {}
        if known.get("version") and {k: known.get(k) for k in identity} == identity:
            return known["version"]
        version = syft_version(syft)
        if version != "unknown":
            with contextlib.suppress(OSError):
                self._write(dict(index, syft=dict(identity, version=version)))
        return version

    def get(self, key):
        """The bytes of the SBOM file made from this key, or None."""
        for entry in reversed(self._entries()):
            name = str(entry.get("sbom") or "")
            if entry.get("key") != key or "/" in name or not name.endswith(".cdx.json"):
                continue
            try:
                with open(os.path.join(self.directory, name), "rb") as handle:
                    data = handle.read()
                document = json.loads(data)
            except (OSError, ValueError):
                continue
            if isinstance(document, dict) and tree_of(document) == key.split("|", 1)[0]:
                return data
        return None

    def put(self, key, sbom_file):
        """Remember that sbom_file (a file in the directory) was made from key."""
        name = os.path.basename(sbom_file)
        kept = [
            e
            for e in self._entries()
            if e.get("key") != key and os.path.isfile(os.path.join(self.directory, str(e.get("sbom") or "")))
        ]
        kept = (kept + [{"key": key, "sbom": name}])[-self.limit :]
        self._write(dict(self._index(), entries=kept))


# -- taking the tree and making the SBOM ----------------------------------------------------------------------------


def take_package_tree(docker, container, dest, timeout=300):
    """Write the package tree of the running container to the file dest with one exec (docker: the engine interface,
    module_utils/docker). {"taken": True, "path", "digest", "size"}, or {"taken": False, "reason"} (dest removed)
    when it cannot be taken (no sh, find or tar in the image, exec failing) or holds no package database: the SBOM
    then comes from the image scan."""
    try:
        docker.exec_to_file(container, ["sh", "-c", PACKAGE_TREE_COMMAND], dest, timeout=timeout)
        if not has_package_database(dest):
            raise SbomTreeError("the package tree holds no package database (dpkg, apk, rpm, Python)")
        digest = package_tree_digest(dest)
    except (DockerError, SbomTreeError, OSError) as exc:
        with contextlib.suppress(OSError):
            os.unlink(dest)
        return {"taken": False, "reason": str(exc)}
    return {"taken": True, "path": dest, "digest": digest, "size": os.path.getsize(dest)}


def image_labels(client, image_id):
    """The labels of the pushed image (its config in the registry: client, a registry client), {} when unreadable."""
    repository, _sep, digest = str(image_id).partition("@")
    path = repository.split("/", 1)[1] if "/" in repository else repository
    try:
        found = client.manifest(path, digest)
        config = client.config(path, found[2]) if found else {}
    except (RegistryError, ValueError, TypeError, AttributeError, IndexError):
        return {}  # the labels are a nicety: never fail the SBOM for them
    labels = (config.get("config") or {}).get("Labels") if isinstance(config, dict) else None
    return labels if isinstance(labels, dict) else {}


def scan_package_tree_cached(tar_path, source_name, cache_dir=None, syft=None, timeout=900, hint=""):
    """syft's CycloneDX of a package tree: {"raw", "tree" (its digest), "key", "cache"}. With cache_dir an SBOM made
    there from the same tree, syft version and catalogers is reused and no syft runs ("hit"; else "miss"; the caller
    records its new copy with TreeCache.put(key, file)); without, key and cache are None. SbomTreeError (+ hint) when
    the tree holds no package database: never cached either, the image scan is the answer."""
    tree = package_tree_digest(tar_path)
    if not has_package_database(tar_path):
        raise SbomTreeError("the package tree holds no package database (dpkg, apk, rpm, Python)" + hint)
    syft = syft or find_syft()
    cache = TreeCache(cache_dir) if cache_dir else None
    key = cache_key(tree, cache.syft_version(syft)) if cache else None
    kept = cache.get(key) if cache else None
    if kept is not None:
        return {"raw": kept, "tree": tree, "key": key, "cache": "hit"}
    raw = scan_package_tree(tar_path, source_name, syft=syft, timeout=timeout)
    return {"raw": raw, "tree": tree, "key": key, "cache": "miss" if cache else None}


def package_tree_sbom(tar_path, image_id, cache_dir, syft=None, timeout=900, labels=None):
    """(raw CycloneDX bytes of the image image_id read from its package tree, details) with details {"source_kind":
    "package-tree", "tree": digest, "cache": "hit" | "miss", "key"}. A hit (an SBOM in cache_dir made from the same
    tree, syft version and catalogers) runs no syft. labels: the image's labels (image_labels()), listed as an image
    scan lists them. SbomTreeError when the tree cannot be used."""
    repository, _sep, digest = str(image_id).partition("@")
    made = scan_package_tree_cached(tar_path, repository, cache_dir, syft=syft, timeout=timeout)
    details = {"source_kind": "package-tree", "tree": made["tree"], "key": made["key"], "cache": made["cache"]}
    return describe_image(made["raw"], repository, digest, made["tree"], labels), details
