# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The overlay2 accelerator of change listing: read a container's changes from its overlay2 directories.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Opt-in only (bake_change_listing=overlay2, see _changes.py): it reads the local daemon's storage directories, which
is safe only on the storage driver overlay2 of the classic image store, never with the containerd image store. The
layer format is overlayfs's: a whiteout (character device 0/0) for a removed entry; the xattrs ``opaque`` and
``redirect`` in the ``trusted.overlay.`` namespace (a root daemon) or the ``user.overlay.`` one (userxattr, a
rootless daemon). Where a directory holds what this walk does not interpret, it says so (None) and the Engine API
answers instead.
"""

from __future__ import annotations

import os
import stat

OVERLAY_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")


def _xattr(path, name):
    """The value of the overlay xattr `name` in either namespace, or None when it is not set."""
    for prefix in OVERLAY_XATTR_PREFIXES:
        try:
            return os.getxattr(path, prefix + name, follow_symlinks=False)
        except OSError:
            continue
    return None


def is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_whiteout_path(path):
    try:
        return is_whiteout(os.lstat(path))
    except OSError:
        return False


def is_opaque(path):
    return _xattr(path, "opaque") in (b"y", b"x")


def overlay_upper_changes(upper):
    """What the Engine lists as changes of a container on overlay2, read from its upper directory: each entry there
    is a path added or changed, or a whiteout for one removed. None when the directory cannot be read or holds what
    this walk does not interpret: an opaque directory (removed and made again: the Engine then lists the lower
    layers' entries it hides, which only the lower directories know), a renamed directory's redirect, aufs-style
    .wh. files."""
    paths = []

    def unreadable(exc):
        raise exc

    try:
        for root, dirs, files in os.walk(upper, onerror=unreadable):
            rel = root[len(upper) :]
            for name in dirs + files:
                if name.startswith(".wh."):
                    return None
                paths.append(f"{rel}/{name}")
            for name in dirs:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    continue
                if _xattr(full, "opaque") is not None or _xattr(full, "redirect") is not None:
                    return None
    except OSError:
        return None
    return paths


def container_upper_changes(info):
    """(the paths an inspected container changed in its own layer, those of them it removed) from its overlay2
    upper directory, or None on another driver, an unreadable directory or one overlay_upper_changes() declines."""
    driver = info.get("GraphDriver") or {}
    upper = (driver.get("Data") or {}).get("UpperDir")
    if driver.get("Name") != "overlay2" or not upper or not os.path.isdir(upper):
        return None
    paths = overlay_upper_changes(upper)
    if paths is None:
        return None
    return paths, [path for path in paths if is_whiteout_path(upper + path)]


def image_layer_dirs(image):
    """The overlay2 layer directories of an inspected image, top layer first, or None when the image is not on
    overlay2 or a directory cannot be read."""
    driver = image.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    if driver.get("Name") != "overlay2" or not data.get("UpperDir"):
        return None
    layers = [data["UpperDir"]] + [d for d in (data.get("LowerDir") or "").split(":") if d]
    return layers if all(os.path.isdir(layer) for layer in layers) else None


def path_in_layers(layers, path):
    """Whether `path` exists in the filesystem overlay2 makes of these layer directories (top first), looked up
    one component at a time as overlayfs does: the topmost entry of a name wins, a whiteout hides it, an opaque
    directory hides the layers below it. None when the directories alone cannot tell: a symlink on the way (its
    target is resolved inside the container, not here) or a redirected directory."""
    parts = [part for part in path.split("/") if part]
    if "." in parts or ".." in parts:
        return None  # never looked up outside the layer directories
    visible = list(layers)  # the layers whose directory at the current depth is part of the merged directory
    for depth in range(len(parts)):
        last = depth == len(parts) - 1
        below = []
        top = None
        for layer in visible:
            candidate = os.path.join(layer, *parts[: depth + 1])
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                continue
            except OSError:
                return None
            if top is None:
                if is_whiteout(st):
                    return False
                top = st
            elif is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break  # hidden by the directory above it
            if not stat.S_ISDIR(st.st_mode):
                break
            if _xattr(candidate, "redirect") is not None:
                return None
            below.append(layer)
            if is_opaque(candidate):
                break
        if top is None:
            return False
        if last:
            return True
        if stat.S_ISLNK(top.st_mode):
            return None
        if not stat.S_ISDIR(top.st_mode):
            return False  # a file where a directory would be
        visible = below
    return True
