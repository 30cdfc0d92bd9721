"""The overlay2 accelerator on layer directories as the engine stores them (whiteouts and trusted.overlay xattrs
need root; user.overlay xattrs, a rootless daemon's, need a filesystem with user xattrs)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import container_upper_changes
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import image_layer_dirs
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import overlay_upper_changes
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import path_in_layers


def _whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, 0o600 | 0o020000, os.makedev(0, 0))  # a character device 0/0: overlayfs' whiteout


def _opaque(path):
    os.makedirs(path, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def _file(path, content="x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content)


@pytest.fixture
def layers(tmp_path):
    """Three layers, top first: bottom holds a small tree; mid removes /etc/motd and replaces /usr/share/doc/apt;
    top adds /opt/new."""
    if os.geteuid() != 0:
        pytest.fail("whiteouts and trusted.overlay xattrs need root, as the engine's own layer directories do")
    top, mid, bottom = (str(tmp_path / name) for name in ("top", "mid", "bottom"))
    for path in ("etc/motd", "etc/issue", "usr/share/doc/apt/copyright", "usr/lib/x", "bin/tool"):
        _file(os.path.join(bottom, path))
    os.symlink("usr/lib", os.path.join(bottom, "lib"))
    _whiteout(os.path.join(mid, "etc/motd"))
    _opaque(os.path.join(mid, "usr/share/doc/apt"))
    _file(os.path.join(mid, "usr/share/doc/apt/new"))
    _file(os.path.join(top, "opt/new"))
    return [top, mid, bottom]


def test_path_in_layers_looks_up_as_overlayfs_does(layers):
    assert path_in_layers(layers, "/etc/issue") is True  # only in the bottom layer
    assert path_in_layers(layers, "/etc/motd") is False  # whited out above
    assert path_in_layers(layers, "/etc/motd/below") is False
    assert path_in_layers(layers, "/usr/share/doc/apt/copyright") is False  # hidden by the opaque directory
    assert path_in_layers(layers, "/usr/share/doc/apt/new") is True
    assert path_in_layers(layers, "/usr/share/doc/apt") is True
    assert path_in_layers(layers, "/opt/new") is True and path_in_layers(layers, "/opt") is True
    assert path_in_layers(layers, "/usr/lib/x") is True
    assert path_in_layers(layers, "/bin/tool/x") is False  # a file where a directory would be
    assert path_in_layers(layers, "/nowhere") is False
    assert path_in_layers(layers, "/lib") is True  # the symlink itself
    assert path_in_layers(layers, "/lib/x") is None  # through a symlink: only the container can tell
    assert path_in_layers(layers[1:], "/opt/new") is False  # without the top layer
    assert path_in_layers(layers, "/etc/../etc/issue") is None  # the list comes from the builder: stay in the layers


def test_overlay_upper_changes_lists_entries_and_whiteouts_and_declines_opaque_directories(layers, tmp_path):
    top, mid, _bottom = layers
    assert sorted(overlay_upper_changes(top)) == ["/opt", "/opt/new"]
    assert overlay_upper_changes(mid) is None  # opaque: docker diff must list the hidden entries
    upper = str(tmp_path / "upper")
    _file(os.path.join(upper, "etc/app.conf"))
    _whiteout(os.path.join(upper, "etc/motd"))
    os.symlink("/srv/data", os.path.join(upper, "data"))
    assert sorted(overlay_upper_changes(upper)) == ["/data", "/etc", "/etc/app.conf", "/etc/motd"]
    _file(os.path.join(upper, "etc/.wh.other"))  # aufs-style whiteout file: not overlay2's format
    assert overlay_upper_changes(upper) is None
    assert overlay_upper_changes(str(tmp_path / "absent")) is None


@pytest.mark.parametrize("namespace", ["trusted", "user"])
def test_both_xattr_namespaces_mark_opaque_and_redirected_directories(tmp_path, namespace):
    upper = str(tmp_path / "upper")
    _file(os.path.join(upper, "etc/app/conf"))
    assert sorted(overlay_upper_changes(upper)) == ["/etc", "/etc/app", "/etc/app/conf"]
    try:
        os.setxattr(os.path.join(upper, "etc/app"), f"{namespace}.overlay.redirect", b"/etc/old")
    except OSError as exc:
        pytest.skip(f"{namespace} xattrs not available here: {exc}")
    assert overlay_upper_changes(upper) is None  # a renamed directory: only the engine knows its lower entries
    os.removexattr(os.path.join(upper, "etc/app"), f"{namespace}.overlay.redirect")
    os.setxattr(os.path.join(upper, "etc/app"), f"{namespace}.overlay.opaque", b"y")
    assert overlay_upper_changes(upper) is None
    assert path_in_layers([upper], "/etc/app/conf") is True


def test_container_upper_changes_reads_only_an_overlay2_upper_directory(layers, tmp_path):
    top = layers[0]
    overlay = {"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": top, "LowerDir": ":".join(layers[1:])}}}
    assert container_upper_changes(overlay) == (["/opt", "/opt/new"], [])
    assert container_upper_changes({"GraphDriver": {"Name": "btrfs", "Data": {}}}) is None
    assert container_upper_changes({"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/nowhere"}}}) is None
    assert image_layer_dirs(overlay) == layers
    assert image_layer_dirs({"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/nowhere"}}}) is None
