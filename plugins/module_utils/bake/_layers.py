# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The hygiene rules over every layer of a pushed image, one layer at a time.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

A check of the merged file system (image_hygiene on the builder) is enough for an image of one layer above its base,
which is what a bake pushes. For an image of several layers it is not: a file written in one layer and removed in a
later one is only hidden by a whiteout, its bytes stay in the first layer's blob in the registry, where anyone who
can pull the image can read them. So each layer's blob is unpacked on its own (only the paths the rules look at) and
checked with the same HygieneChecker; whiteouts are not followed, symbolic links are not recreated.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile

from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import DEFAULT_SCAN_PATHS
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import MAX_SCAN_BYTES
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneChecker
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import check_globs

# what the checks read besides the scan paths: host keys, homes, machine identity
ALWAYS_READ = ("/etc/ssh", "/root", "/home", "/etc/machine-id", "/var/lib/dbus/machine-id")
WHITEOUT_PREFIX = ".wh."
LAYER_MEDIA_TYPES = (
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
)


class LayerError(Exception):
    """The image cannot be read layer by layer; the message says why and what to do."""


def image_path(name: str) -> str | None:
    """The absolute path of a tar member name inside the image, or None for a name that leaves the root."""
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
    if any(part == ".." for part in parts):
        return None
    return "/" + "/".join(parts)


def _under(path: str, top: str) -> bool:
    top = top.rstrip("/") or "/"
    return top == "/" or path == top or path.startswith(top + "/")


def read_filter(scan_paths, forbidden):
    """wanted(path): whether a checked rule can look at the path (a superset: the checker decides)."""
    tops = list(ALWAYS_READ) + list(scan_paths)

    def wanted(path: str) -> bool:
        # fnmatch's * also crosses "/": wider than the checker's glob, never narrower
        return any(_under(path, top) for top in tops) or any(fnmatch.fnmatchcase(path, p) for p in forbidden)

    return wanted


def unpack_for_hygiene(blob: bytes, root: str, wanted, max_bytes: int = MAX_SCAN_BYTES) -> int:
    """Write the layer's directories and regular files the rules read under root; files larger than max_bytes keep
    their size but not their content (the checker does not read them). Whiteouts, symbolic links, devices and
    names that leave the root are skipped. Returns how many files were written."""
    written = {}
    try:
        archive = tarfile.open(fileobj=io.BytesIO(blob), mode="r:*")  # pylint: disable=consider-using-with
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LayerError(f"the layer is not a (gzip) tar archive: {exc}") from None
    with archive:
        try:
            for member in archive:
                path = image_path(member.name)
                if path is None or path == "/" or not wanted(path):
                    continue
                if posixpath.basename(path).startswith(WHITEOUT_PREFIX):
                    continue
                target = os.path.join(root, path.lstrip("/"))
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                elif member.isreg():
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "wb") as handle:
                        if member.size > max_bytes:
                            handle.truncate(member.size)  # sparse: the size without the content
                        else:
                            source = archive.extractfile(member)
                            handle.write(source.read() if source is not None else b"")
                    written[path] = target
                elif member.islnk():
                    linked = image_path(member.linkname)
                    if linked in written:
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        shutil.copyfile(written[linked], target)
                        written[path] = target
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise LayerError(f"cannot unpack the layer: {exc}") from None
    return len(written)


def image_layers(client, repository: str, reference: str):
    """(manifest digest, [(index, layer descriptor, diff_id)]) of an image manifest in the registry."""
    found = client.manifest(repository, reference)
    if found is None:
        raise LayerError(f"{client.address}/{repository}@{reference} is not in the registry: check the reference")
    digest, _media_type, body = found
    manifest = json.loads(body)
    if "manifests" in manifest:
        raise LayerError(
            f"{client.address}/{repository}@{reference} is an index of several images: give the digest of one "
            "platform's manifest (docker buildx imagetools inspect, or the record's digest)"
        )
    layers = manifest.get("layers") or []
    diff_ids = ((client.config(repository, manifest) or {}).get("rootfs") or {}).get("diff_ids") or []
    if len(diff_ids) != len(layers):
        raise LayerError(
            f"{client.address}/{repository}@{reference}: its config lists {len(diff_ids)} layer(s) but its manifest "
            f"{len(layers)}; the image is damaged: push it again"
        )
    return digest, [(index, layer, diff_ids[index]) for index, layer in enumerate(layers)]


def scan_layers(client, repository, reference, forbidden=(), allow=(), scan_paths=DEFAULT_SCAN_PATHS, skip=()):
    """Check each layer of the image whose diff_id is not in skip (the base's layers, say). Returns {digest,
    layers: [{index, digest, diff_id, scanned, files, findings}], findings: [{layer, digest, path, reason}]}."""
    for patterns, option in ((forbidden, "forbidden"), (allow, "allow"), (scan_paths, "scan_paths")):
        check_globs(patterns, option)  # before any blob is fetched
    digest, layers = image_layers(client, repository, reference)
    wanted = read_filter(scan_paths, forbidden)
    skip = set(skip)
    report, findings = [], []
    for index, layer, diff_id in layers:
        entry = {"index": index, "digest": layer.get("digest"), "diff_id": diff_id, "scanned": diff_id not in skip}
        report.append(entry)
        if not entry["scanned"]:
            continue
        media_type = layer.get("mediaType")
        if media_type not in LAYER_MEDIA_TYPES:
            raise LayerError(
                f"layer {index} ({layer.get('digest')}) of {repository} has media type {media_type!r}, which this "
                f"check cannot unpack (it reads {', '.join(LAYER_MEDIA_TYPES)})"
            )
        with tempfile.TemporaryDirectory(prefix="immutable-layer-") as root:
            entry["files"] = unpack_for_hygiene(client.blob(repository, layer["digest"]), root, wanted)
            checker = HygieneChecker(root=root, forbidden=forbidden, allow=allow, scan_paths=scan_paths)
            entry["findings"] = checker.run()
        findings.extend(dict(item, layer=index, digest=layer.get("digest")) for item in entry["findings"])
    return {"digest": digest, "layers": report, "findings": findings}


def layers_failure_message(image, findings) -> str:
    listed = "; ".join(f"layer {f['layer']}: {f['path']} ({f['reason']})" for f in findings)
    return (
        f"{image}: {len(findings)} file(s) that must not be in an image are in its layers (a later layer may hide "
        f"them, the registry still serves them): {listed}. Rebuild it without them: remove a file in the same step "
        "(layer) that wrote it, or bake it with immutable.infra (one layer above the base, checked before the push)"
    )
