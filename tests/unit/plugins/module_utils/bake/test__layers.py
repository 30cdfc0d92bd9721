"""The hygiene rules layer by layer: unpacking what the rules read from a layer blob, and an image read through a
registry client that serves a manifest, a config and blobs (the real registry is in
tests/integration/test_layer_hygiene.py)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import LayerError
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import image_path
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import layers_failure_message
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import read_filter
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import scan_layers
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import unpack_for_hygiene

OPENSSH = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl...\n-----END OPENSSH PRIVATE KEY-----\n"
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def layer(entries, compress=True) -> bytes:
    """A layer blob from (name, content | ('dir',) | ('link', target) | ('symlink', target) | ('size', n))."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if content == ("dir",):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(content, tuple) and content[0] in ("link", "symlink"):
                info.type = tarfile.LNKTYPE if content[0] == "link" else tarfile.SYMTYPE
                info.linkname = content[1]
                tar.addfile(info)
            elif isinstance(content, tuple) and content[0] == "size":
                info.size = content[1]
                tar.addfile(info, io.BytesIO(b"A" * content[1]))
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return gzip.compress(out.getvalue()) if compress else out.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Registry:
    """Serves one image: its manifest, config and layer blobs; counts the blobs fetched."""

    address = "registry.test:5000"

    def __init__(self, blobs, media_type=LAYER, diff_ids=None):
        self.blobs = {sha(blob): blob for blob in blobs}
        self.layers = [{"mediaType": media_type, "digest": sha(blob), "size": len(blob)} for blob in blobs]
        self.diff_ids = diff_ids if diff_ids is not None else [sha(gzip.decompress(b)) for b in blobs]
        self.fetched = []

    def manifest(self, repo, ref):
        body = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:c0"}, "layers": self.layers}).encode()
        return sha(body), "application/vnd.docker.distribution.manifest.v2+json", body

    def config(self, repo, manifest):
        return {"rootfs": {"type": "layers", "diff_ids": self.diff_ids}}

    def blob(self, repo, digest):
        self.fetched.append(digest)
        return self.blobs[digest]


def test_image_path_keeps_names_inside_the_root():
    assert image_path("./etc/ssh/ssh_host_rsa_key") == "/etc/ssh/ssh_host_rsa_key"
    assert image_path("opt//app/./key") == "/opt/app/key"
    assert image_path("../../etc/passwd") is None
    assert image_path("opt/../../x") is None


def test_only_what_the_rules_read_is_unpacked_whiteouts_and_links_skipped(tmp_path):
    wanted = read_filter(["/opt", "/etc"], ["/var/app/*.json"])
    blob = layer(
        [
            ("etc", ("dir",)),
            ("etc/app.conf", b"x=1\n"),
            ("opt/app/deploy_key", OPENSSH),
            ("opt/app/.wh.old_key", b""),
            ("opt/app/same_key", ("link", "opt/app/deploy_key")),
            ("opt/app/link", ("symlink", "/etc/shadow")),
            ("usr/bin/tool", b"\x7fELF"),
            ("var/app/creds.json", b"{}"),
            ("../escape", b"x"),
        ]
    )
    written = unpack_for_hygiene(blob, str(tmp_path), wanted)
    assert written == 4
    assert (tmp_path / "opt/app/deploy_key").read_bytes() == OPENSSH
    assert (tmp_path / "opt/app/same_key").read_bytes() == OPENSSH  # a hard link gets the content
    assert not (tmp_path / "opt/app/.wh.old_key").exists() and not (tmp_path / "opt/app/link").exists()
    assert not (tmp_path / "usr").exists() and (tmp_path / "var/app/creds.json").exists()
    assert not (tmp_path.parent / "escape").exists()


def test_a_large_file_keeps_its_size_not_its_content(tmp_path):
    blob = layer([("opt/big.bin", ("size", 4096))], compress=False)
    unpack_for_hygiene(blob, str(tmp_path), read_filter(["/opt"], []), max_bytes=1024)
    target = tmp_path / "opt/big.bin"
    assert target.stat().st_size == 4096 and target.read_bytes() == b"\0" * 4096


def test_a_secret_hidden_by_a_later_layer_is_found_in_its_own_layer():
    planted = layer([("opt/app/deploy_key", OPENSSH), ("root/.bash_history", b"export TOKEN=x\n")])
    removed = layer([("opt/app/.wh.deploy_key", b""), ("root/.wh..bash_history", b""), ("srv/ok.txt", b"ok")])
    registry = Registry([planted, removed])
    result = scan_layers(registry, "web", "sha256:" + "a" * 64)
    assert [(f["layer"], f["path"], f["reason"]) for f in result["findings"]] == [
        (0, "/opt/app/deploy_key", "OPENSSH private key"),
        (0, "/root/.bash_history", "shell or tool history"),
    ]
    assert [(entry["index"], entry["scanned"], entry["files"]) for entry in result["layers"]] == [
        (0, True, 2),
        (1, True, 1),
    ]
    message = layers_failure_message("registry.test:5000/web@sha256:aa", result["findings"])
    assert "layer 0: /opt/app/deploy_key (OPENSSH private key)" in message and "b3Bl" not in message


def test_the_base_layers_are_skipped_and_not_fetched():
    base = layer([("root/.bash_history", b"apt-get install x\n")])
    top = layer([("opt/app/index.html", b"<p>hi</p>")])
    registry = Registry([base, top])
    result = scan_layers(registry, "web", "sha256:" + "a" * 64, skip=[registry.diff_ids[0]])
    assert result["findings"] == []
    assert [entry["scanned"] for entry in result["layers"]] == [False, True]
    assert registry.fetched == [sha(top)]


def test_allow_and_forbidden_apply_per_layer():
    blob = layer([("etc/app/secret.json", b"{}"), ("opt/app/deploy_key", OPENSSH)])
    result = scan_layers(
        Registry([blob]), "web", "sha256:" + "a" * 64, forbidden=["/etc/app/*.json"], allow=["/opt/app/*"]
    )
    assert [(f["path"], f["reason"]) for f in result["findings"]] == [
        ("/etc/app/secret.json", "forbidden by /etc/app/*.json")
    ]


def test_unreadable_images_fail_naming_why():
    blob = layer([("opt/x", b"x")])
    with pytest.raises(LayerError, match="config lists 0 layer"):
        scan_layers(Registry([blob], diff_ids=[]), "web", "sha256:" + "a" * 64)
    with pytest.raises(LayerError, match="media type 'application/vnd.oci.image.layer.v1.tar\\+zstd'"):
        scan_layers(
            Registry([blob], media_type="application/vnd.oci.image.layer.v1.tar+zstd"), "web", "sha256:" + "a" * 64
        )
    with pytest.raises(LayerError, match="not a \\(gzip\\) tar archive"):
        unpack_for_hygiene(b"not a tar at all, just bytes" * 40, "/nonexistent", lambda path: True)


def test_a_relative_glob_fails_before_any_blob_is_fetched():
    registry = Registry([layer([("opt/x", b"x")])])
    with pytest.raises(Exception, match="forbidden entry 'etc/x' is not an absolute path glob"):
        scan_layers(registry, "web", "sha256:" + "a" * 64, forbidden=["etc/x"])
    assert registry.fetched == []
