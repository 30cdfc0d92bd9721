# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Builder containers and the per-role layer cache of the container bake.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Every container and image made here carries labels naming its kind, app, bake ID and creation time, so a later
run can find what a killed run left behind. Cache images live in their own repository
(``immutable-infra-cache/<app>``) and carry ``io.immutable-infra.kind=cache``, so they are never confused with
released artifacts, which live in a registry repository and are addressed by digest.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCliError
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import is_missing
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import summarise

LABEL_KIND = "io.immutable-infra.kind"
LABEL_APP = "io.immutable-infra.app"
LABEL_BAKE_ID = "io.immutable-infra.bake-id"
LABEL_CREATED = "io.immutable-infra.created"
LABEL_LAYER = "io.immutable-infra.layer"
LABEL_ROLE = "io.immutable-infra.role"
LABEL_OWNER = "io.immutable-infra.owner"
DEPLOYED_LABEL = "immutable.infra.colour"  # set by bg_swap on the containers it runs

CACHE_REPOSITORY_PREFIX = "immutable-infra-cache/"
# In cache layers only: every path changed since the base image, so a capture can squash them (see squash)
CHANGES_FILE = "/.immutable-infra-changes"
IMAGE_CONFIG_DIR = "/etc/immutable-infra/image-config.d"
# The builder connection's compiled module code (plugin_utils/_module_code_cache.py) lives in the builder's
# /dev/shm; a cache layer keeps a copy here, so a builder started from it runs its first tasks without compiling
# ansible's module code again. Never part of an artifact: changed_paths() leaves it out and a capture removes it.
KEPT_CODE_DIR = "/.immutable-infra-code"
KEEP_CODE = (
    'for d in /dev/shm/.immutable-infra-code-*; do [ -d "$d" ] || continue; '
    f'k={KEPT_CODE_DIR}/"${{d##*/.immutable-infra-code-}}"; mkdir -p "$k" && cp -a "$d"/. "$k"/; done; true'
)
# One exec reads the builder's change list (and removes it and the kept code when given "rm") and every image
# config file a role declared (docs/roles.md), each file as NUL, its path, a newline and its content.
READ_BUILDER_FILES = (
    f'f={CHANGES_FILE}; [ -f "$f" ] && cat "$f"; [ "$1" = rm ] && rm -rf "$f" {KEPT_CODE_DIR}; '
    f'for c in {IMAGE_CONFIG_DIR}/*.json; do [ -f "$c" ] && printf "\\0%s\\n" "$c" && cat "$c"; done; true'
)
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class BuilderError(Exception):
    """A builder or cache operation failed; the message names the problem and the fix."""


def validate_app(app):
    if not APP_NAME.match(app or ""):
        raise BuilderError(
            f"app name {app!r} is invalid: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )


def cache_repository(app):
    return CACHE_REPOSITORY_PREFIX + app


def fingerprint_hex(fingerprint):
    value = str(fingerprint)
    value = value.split(":", 1)[1] if value.startswith("sha256:") else value
    if not re.match(r"^[0-9a-f]{64}$", value):
        raise BuilderError(
            f"layer fingerprint {fingerprint!r} is not a sha256 digest: pass the bake_fingerprint layers"
        )
    return value


def cache_ref(app, fingerprint):
    return f"{cache_repository(app)}:{fingerprint_hex(fingerprint)}"


def plan_start_layer(layers, available):
    """How many leading layers can be reused: the longest prefix whose cache images all exist.

    layers: [{"role": ..., "fingerprint": ...}] in bake order; available: set of fingerprint hex strings present.
    A gap ends the prefix: layer k's image contains layers 0..k, so only a contiguous prefix is meaningful, and the
    deepest image of that prefix is where the builder starts.
    """
    reused = 0
    for layer in layers:
        if fingerprint_hex(layer["fingerprint"]) not in available:
            break
        reused += 1
    return reused


def parse_diff(output):
    """Paths of `docker diff` output (lines 'A /path', 'C /path', 'D /path')."""
    return [line[2:] for line in output.splitlines() if len(line) > 2 and line[1] == " "]


def overlay_upper_changes(upper):
    """What `docker diff` lists for a container on overlay2, read from the container's upper directory: each entry
    there is a path added or changed, or a whiteout for one removed. None when the directory cannot be read or holds
    what this walk does not interpret: an opaque directory (removed and made again: `docker diff` then lists the
    lower layers' entries it hides, which only the lower directories know), a renamed directory's redirect,
    aufs-style .wh. files. The caller then asks `docker diff`."""
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
                for attribute in ("trusted.overlay.opaque", "trusted.overlay.redirect"):
                    try:
                        os.getxattr(full, attribute, follow_symlinks=False)
                    except OSError:
                        continue  # not set
                    return None
    except OSError:
        return None
    return paths


def image_layer_dirs(image):
    """The overlay2 layer directories of an inspected image, top layer first, or None when the image is not on
    overlay2 or a directory cannot be read."""
    driver = image.get("GraphDriver") or {}
    data = driver.get("Data") or {}
    if driver.get("Name") != "overlay2" or not data.get("UpperDir"):
        return None
    layers = [data["UpperDir"]] + [d for d in (data.get("LowerDir") or "").split(":") if d]
    return layers if all(os.path.isdir(layer) for layer in layers) else None


def _is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_whiteout_path(path):
    try:
        return _is_whiteout(os.lstat(path))
    except OSError:
        return False


def _is_opaque(path):
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


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
                if _is_whiteout(st):
                    return False
                top = st
            elif _is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break  # hidden by the directory above it
            if not stat.S_ISDIR(st.st_mode):
                break
            try:
                os.getxattr(candidate, "trusted.overlay.redirect", follow_symlinks=False)
                return None
            except OSError:
                pass
            below.append(layer)
            if _is_opaque(candidate):
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


def with_parents(paths):
    """The paths and every parent directory of them (not /), parents first: what a squash must carry so each
    directory keeps the mode and owner it has in the builder."""
    full = set()
    for path in paths:
        while path not in ("", "/") and path not in full:
            full.add(path)
            path = path.rsplit("/", 1)[0]
    return sorted(full)


def parse_builder_files(output):
    """(the recorded change list or None, the declared image configs in name order) from READ_BUILDER_FILES."""
    recorded, *files = output.split("\0")
    configs = []
    for chunk in sorted(files):
        path, _newline, content = chunk.partition("\n")
        try:
            config = json.loads(content)
        except ValueError as exc:
            raise BuilderError(
                f"image config {path} in the builder is not valid JSON ({exc}): fix the role that writes it"
            ) from None
        if not isinstance(config, dict):
            raise BuilderError(f"image config {path} in the builder must hold a JSON object (docs/roles.md)")
        configs.append(config)
    return (json.loads(recorded) if recorded.strip() else None), configs


def plan_prune(images, keep_fingerprints, keep_newest):
    """Which cache images to remove: all but the ones on the current path and the newest `keep_newest` others."""
    keep = {fingerprint_hex(fp) for fp in keep_fingerprints}
    others = sorted((img for img in images if img["tag"] not in keep), key=lambda img: img["created"], reverse=True)
    return list(others[keep_newest:])


# -- owners: which ansible-playbook run a builder belongs to ------------------------------------------------------


def process_start(pid, proc="/proc"):
    """Start time of a process (clock ticks since boot, field 22 of /proc/<pid>/stat), or None when it is gone."""
    try:
        with open(os.path.join(proc, str(int(pid)), "stat"), encoding="utf-8") as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return fields[19]
    except IndexError:
        return None


def _parent(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8") as handle:
            stat = handle.read()
        return int(stat[stat.rfind(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_playbook(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg.decode("utf-8", "replace")).startswith("ansible-playbook") for arg in argv[:3])


def find_owner_pid(start=None, proc="/proc"):
    """PID of the ansible-playbook run this process belongs to, or None.

    A module runs under a worker that ansible-playbook forked (so the worker shows the same command line); the
    owner is the outermost process of the chain of ansible-playbook ancestors.
    """
    pid = start if start is not None else os.getpid()
    owner = None
    seen = 0
    while pid and pid > 1 and seen < 64:
        if _is_playbook(pid, proc):
            owner = pid
        elif owner is not None:
            break
        pid = _parent(pid, proc)
        seen += 1
    return owner


def owner_label(pid, host=None, proc="/proc"):
    """'<host>:<pid>:<start ticks>' for a live PID (the start time guards against PID reuse), or None."""
    if pid is None:
        return None
    start = process_start(pid, proc)
    if start is None:
        return None
    return f"{host or socket.gethostname()}:{int(pid)}:{start}"


def owner_state(label, host, alive):
    """'alive', 'dead' or 'unknown' (no label, another host, or a malformed label) for an owner label."""
    if not label:
        return "unknown"
    owner_host, sep, rest = label.rpartition(":")
    owner_host, sep2, pid = owner_host.rpartition(":")
    if not (sep and sep2 and pid.isdigit() and rest) or owner_host != host:
        return "unknown"
    return "alive" if alive(int(pid), rest) else "dead"


def plan_sweep(containers, now, min_age, app=None, exclude=(), host=None, alive=None):
    """Builder containers left behind by killed runs (optionally of one app), with the reason.

    A builder whose owner (an ansible-playbook run on this host) is gone is an orphan whatever its age; one whose
    owner is alive is never taken. Builders without an owner label, or owned by a run on another host, are taken
    only when older than min_age seconds: the safety net.
    """
    orphans = []
    for item in containers:
        labels = item.get("labels", {})
        if labels.get(LABEL_KIND) != "builder":
            continue
        if DEPLOYED_LABEL in labels:
            # a blue/green container of an artifact whose image kept its builder's labels (bakes before 0.2.0)
            continue
        if app and labels.get(LABEL_APP) != app:
            continue
        if item["name"] in exclude:
            continue
        state = owner_state(labels.get(LABEL_OWNER), host, alive) if alive else "unknown"
        if state == "alive":
            continue
        if state == "dead":
            orphans.append(dict(item, reason="owner process gone"))
            continue
        try:
            created = int(labels.get(LABEL_CREATED, "0"))
        except ValueError:
            created = 0
        if now - created >= min_age:
            orphans.append(dict(item, reason=f"older than {min_age}s"))
    return orphans


class BuilderManager:
    """Applies the plans above through an injected DockerCli; every mutation is skipped in check mode."""

    def __init__(self, docker, check_mode=False, clock=time.time, owner=None, host=None, proc="/proc"):
        self.docker = docker
        self.check_mode = check_mode
        self.clock = clock
        self.owner = owner  # owner label of the builders this run starts (see owner_label), or None
        self.host = host or socket.gethostname()
        self.proc = proc

    def _alive(self, pid, start):
        return process_start(pid, self.proc) == start

    # -- reading ------------------------------------------------------------------------------------------

    def cache_images(self, app):
        """Local cache images of an app: [{"tag", "ref", "created"}]."""
        rc, out, err = self.docker.run(
            [
                "image",
                "ls",
                "--filter",
                f"label={LABEL_KIND}=cache",
                "--filter",
                f"reference={cache_repository(app)}",
                "--format",
                "{{json .}}",
            ]
        )
        images = []
        for line in out.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if row.get("Tag") in (None, "", "<none>"):
                continue
            images.append(
                {"tag": row["Tag"], "ref": f"{cache_repository(app)}:{row['Tag']}", "created": row.get("CreatedAt", "")}
            )
        return images

    def builders(self):
        """Labelled builder containers: [{"name", "labels"}]."""
        _rc, out, _err = self.docker.run(
            ["ps", "-a", "--filter", f"label={LABEL_KIND}=builder", "--format", "{{json .}}"]
        )
        found = []
        for line in out.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            labels = dict(pair.split("=", 1) for pair in row.get("Labels", "").split(",") if "=" in pair)
            found.append({"name": row["Names"], "labels": labels})
        return found

    # -- states -------------------------------------------------------------------------------------------

    def start(
        self,
        app,
        bake_id,
        base_image,
        layers,
        name=None,
        use_cache=True,
        network=None,
        sweep_min_age=None,
        keep=None,
        create_only=False,
    ):
        """Start the builder from the deepest cached layer; with `keep`, also prune the app's cache images off
        this bake's path (as state=pruned does), in the same listing: one module call less per bake.
        create_only: create the container without starting it (the squash's copy; `docker start` runs it)."""
        validate_app(app)
        name = name or f"bake-{app}-{bake_id}"
        result = {"changed": False, "container": name, "swept": [], "pruned": [], "owner": self.owner}
        if sweep_min_age is not None:
            result["swept"] = self.sweep(app=app, min_age=sweep_min_age, exclude=(name,))["removed"]
            result["changed"] = bool(result["swept"])

        base = self.docker.inspect(base_image, kind="image")
        if base is None:
            raise BuilderError(
                f"base image {base_image!r} not found in the local Docker Engine: build it (scripts/setup.sh builds"
                " immutable-infra/base:bookworm) or set bake_base_image to an image that exists"
            )
        # The builder runs `sleep infinity`; a commit would keep that command, so the capture restores the base's
        # own entrypoint and command unless the roles or the user declare others.
        base_config = base.get("Config") or {}
        result["base_config"] = {"entrypoint": base_config.get("Entrypoint") or [], "cmd": base_config.get("Cmd") or []}
        images = self.cache_images(app) if use_cache else []
        available = {img["tag"] for img in images}
        reused = plan_start_layer(layers, available)
        if use_cache and keep is not None:
            result["pruned"] = self._remove_cache_images(
                plan_prune(images, [layer["fingerprint"] for layer in layers], keep)
            )
            result["changed"] = result["changed"] or bool(result["pruned"])
        start_image = cache_ref(app, layers[reused - 1]["fingerprint"]) if reused else base_image
        result.update(
            {
                "start_image": start_image,
                "reused_layers": reused,
                "reused_roles": [layer["role"] for layer in layers[:reused]],
            }
        )

        existing = self.docker.inspect(name, kind="container")
        if existing:
            if existing.get("State", {}).get("Running"):
                return result
            raise BuilderError(
                f"a stopped container named {name} exists: remove it (docker rm {name}) or use another bake_id"
            )
        result["changed"] = True
        if self.check_mode:
            return result
        # Keep the builder alive with `sleep infinity` without touching the image's entrypoint where it has none:
        # a commit keeps the container's entrypoint, and docker commit cannot reset one to empty afterwards.
        base_entrypoint = result["base_config"]["entrypoint"]
        args = (["create"] if create_only else ["run", "--detach"]) + ["--name", name]
        args += ["--entrypoint", "sleep"] if base_entrypoint else []
        labels = {LABEL_KIND: "builder", LABEL_APP: app, LABEL_BAKE_ID: bake_id, LABEL_CREATED: str(int(self.clock()))}
        if self.owner:
            labels[LABEL_OWNER] = self.owner
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        if network:
            args += ["--network", network]
        args += [start_image] + (["infinity"] if base_entrypoint else ["sleep", "infinity"])
        self.docker.run(args)
        return result

    def changed_paths(self, container, from_cache_layer=False, own=None):
        """Every path the builder changed since the base image (its cache layers' list plus `docker diff`), and the
        image configs its roles declared.

        from_cache_layer: the builder started from a cache layer, whose list must then exist (without it the
        layer's own changes would be lost). own: the builder's own changes when already read (layer_changes).
        """
        paths = set(self.layer_changes(container) if own is None else own)
        recorded, configs = self.builder_files(container)
        if recorded:
            paths.update(recorded)
        elif from_cache_layer:
            raise BuilderError(
                f"builder {container} started from a cache layer without its list of changed paths ({CHANGES_FILE}),"
                " made by hand or by an older version: remove the app's immutable-infra-cache images (or bake once"
                " with bake_cache=false) and bake again"
            )
        paths.discard(CHANGES_FILE)
        return sorted(p for p in paths if p != KEPT_CODE_DIR and not p.startswith(KEPT_CODE_DIR + "/")), configs

    def layer_changes(self, container):
        """The paths the container changed in its own layer, as `docker diff` lists them: read from its upper
        directory where upper_changes() can, else from `docker diff`."""
        walked = None
        if self.docker.engine is not None:  # without the socket there is no upper directory to read: no inspect
            walked = self.upper_changes(self.docker.inspect(container, kind="container") or {})
        if walked is not None:
            return walked[0]
        _rc, out, _err = self.docker.run(["diff", container])
        return parse_diff(out)

    def upper_changes(self, info):
        """(the paths an inspected container changed in its own layer, those of them it removed), read from its
        overlay2 upper directory, where a removal is a whiteout: a walk of a few milliseconds instead of the
        engine's diff (0.3-0.7 s on a small machine). None without the local daemon's socket, on another storage
        driver, or when overlay_upper_changes() declines."""
        if self.docker.engine is None:
            return None
        driver = info.get("GraphDriver") or {}
        upper = (driver.get("Data") or {}).get("UpperDir")
        if driver.get("Name") != "overlay2" or not upper or not os.path.isdir(upper):
            return None
        paths = overlay_upper_changes(upper)
        if paths is None:
            return None
        return paths, [path for path in paths if _is_whiteout_path(upper + path)]

    def builder_files(self, container, remove_list=False):
        """The builder's recorded change list (or None) and its declared image configs, read in one exec."""
        args = ["exec", container, "sh", "-c", READ_BUILDER_FILES, "sh"] + (["rm"] if remove_list else [])
        _rc, out, _err = self.docker.run(args)
        return parse_builder_files(out)

    def save_layer(self, app, container, role, fingerprint, bake_id):
        """Commit the builder as the cache image of one layer (no-op when that layer image already exists).

        The layer carries CHANGES_FILE, the paths changed since the base image, for the squash of a later bake
        that starts from it.
        """
        validate_app(app)
        ref = cache_ref(app, fingerprint)
        if self.docker.image_id(ref) is not None:
            return {"changed": False, "image": ref}
        if not self.check_mode:
            changes_json = json.dumps(self.changed_paths(container)[0])
            # the list first: the code kept for the next builder is not a change of the image
            self.docker.run(
                ["exec", "-i", container, "sh", "-c", f"cat > {CHANGES_FILE}; {KEEP_CODE}"], data=changes_json
            )
            changes = [
                f"LABEL {LABEL_KIND}=cache",
                f"LABEL {LABEL_APP}={app}",
                f"LABEL {LABEL_LAYER}={fingerprint}",
                f"LABEL {LABEL_ROLE}={role}",
                f"LABEL {LABEL_BAKE_ID}={bake_id}",
                f"LABEL {LABEL_CREATED}={int(self.clock())}",
            ]
            image_id = self.docker.commit(container, changes=changes, message=f"immutable.infra cache: {role}")
            self.docker.tag(image_id, ref)
        return {"changed": True, "image": ref}

    def squash(self, container, base_image):
        """The container to capture, holding exactly the builder's filesystem in ONE layer above the base image.

        A builder started from the base image is that already (its CHANGES_FILE, if a layer was saved, is removed:
        created and removed in the same layer, it is not in the image). A builder started from a cache layer would
        be captured with the cache layers as they are, files removed later (by the seal, say) hidden but still in
        their blobs. So a new container from the base image gets every changed path the builder still has (one tar
        stream, owners, modes and extended attributes kept) and loses every path the builder removed.
        """
        builder = self.docker.inspect(container, kind="container")
        if builder is None:
            raise BuilderError(f"builder {container} not found: it was removed before the capture")
        base = self.docker.inspect(base_image, kind="image") or {}
        if builder.get("Image") == base.get("Id"):
            configs = [] if self.check_mode else self.builder_files(container, remove_list=True)[1]
            return {"changed": False, "container": container, "squashed": False, "declared_config": configs}
        name = f"{container}-squash"
        result = {"changed": True, "container": name, "squashed": True, "declared_config": []}
        if self.check_mode:
            return result
        labels = (builder.get("Config") or {}).get("Labels") or {}
        # The copy of the base runs only when a path the builder removed may be in the base: removing it there
        # takes a `docker exec`. Copying in (docker cp) and committing need no running container, so otherwise it
        # is only created. The builder's own removals (the seal's, say) are known at once from its upper
        # directory: when one is in the base, the copy starts right away (about 0.5 s, mostly the engine's), while
        # the rest of the changes is read; a removal found later in the cache layers' list starts it then.
        base_layers = image_layer_dirs(base) if self.docker.engine is not None else None
        walked = self.upper_changes(builder)  # None: `docker diff` answers, while the copy starts
        own = walked[0] if walked else None
        run_now = (
            base_layers is None
            or walked is None
            or any(path_in_layers(base_layers, path) is not False for path in walked[1])
        )
        with ThreadPoolExecutor(max_workers=1) as pool:
            starting = pool.submit(
                self.start,
                labels.get(LABEL_APP, "squash"),
                labels.get(LABEL_BAKE_ID, "squash"),
                base_image,
                [],
                name=name,
                use_cache=False,
                create_only=not run_now,
            )
            try:
                changed, result["declared_config"] = self.changed_paths(container, from_cache_layer=True, own=own)
                paths = with_parents(changed)
                listing = "".join(f"{path}\n" for path in paths)
                _rc, missing, _err = self.docker.run(
                    [
                        "exec", "-i", container, "sh", "-c",
                        'while IFS= read -r p; do [ -e "$p" ] || [ -L "$p" ] || printf "%s\\n" "$p"; done',
                    ],
                    data=listing,
                )  # fmt: skip
            except BaseException:
                with contextlib.suppress(Exception):
                    starting.result()
                self.docker.remove_container(name)
                raise
            starting.result()  # a failed start raises here
        gone = set(missing.splitlines())
        present = [path.lstrip("/") for path in paths if path not in gone]
        in_base = [p for p in sorted(gone) if base_layers is None or path_in_layers(base_layers, p) is not False]
        try:
            # The removals run while the copy streams: a removed path is in no copied path (its parents, present in
            # the builder, are copied as directories only), so neither touches what the other writes.
            with ThreadPoolExecutor(max_workers=1) as pool:
                removing = None
                if in_base:
                    removing = pool.submit(self._remove_in_copy, name, in_base, not run_now)
                try:
                    if present:
                        self.docker.pipe(
                            [
                                "exec", "-i", container, "tar", "-C", "/", "--create", "--file", "-",
                                "--no-recursion", "--numeric-owner", "--xattrs", "--xattrs-include=*",
                                "--verbatim-files-from", "--files-from", "-",
                            ],
                            ["cp", "--archive", "-", f"{name}:/"],
                            data="".join(f"{path}\n" for path in present).encode(),
                        )  # fmt: skip
                except BaseException:
                    if removing is not None:
                        with contextlib.suppress(Exception):
                            removing.result()  # the copy's own error is the one to report
                    raise
                if removing is not None:
                    removing.result()
        except DockerCliError as exc:
            self.docker.remove_container(name)
            raise BuilderError(
                f"could not squash builder {container} onto {base_image}: {exc} (the builder needs GNU tar; set"
                " bake_cache=false to bake without cache layers)"
            ) from None
        result["paths"] = len(present)
        result["removed_paths"] = len(gone)
        return result

    def _remove_in_copy(self, name, paths, start):
        if start:
            self.docker.run(["start", name])
        self.docker.run(
            ["exec", "-i", name, "sh", "-c", 'while IFS= read -r p; do rm -rf -- "$p"; done'],
            data="".join(f"{path}\n" for path in paths),
        )

    def remove(self, container):
        """Remove the builder and its squashed copy (<container>-squash), whichever exist, in one docker rm."""
        names = [container, f"{container}-squash"]
        rc, out, err = self.docker.run(["container", "inspect", "--format", "{{.Name}}", *names], check=False)
        problems = [line for line in err.splitlines() if line.strip() and not is_missing(line)]
        if rc != 0 and problems:
            raise DockerCliError(f"docker container inspect failed (rc={rc}): {summarise(err)}", rc=rc)
        existing = [line.strip().lstrip("/") for line in out.splitlines() if line.strip()]
        if existing and not self.check_mode:
            self.docker.run(["rm", "--force", *existing])
        return {"changed": bool(existing), "container": container, "removed": existing}

    def sweep(self, app=None, min_age=3600, exclude=()):
        alive = self._alive if os.path.isdir(self.proc) else None
        orphans = plan_sweep(
            self.builders(), self.clock(), min_age, app=app, exclude=exclude, host=self.host, alive=alive
        )
        removed = []
        reasons = {}
        for orphan in orphans:
            if not self.check_mode:
                try:
                    self.docker.remove_container(orphan["name"])
                except DockerCliError as exc:
                    raise BuilderError(f"could not remove orphan builder {orphan['name']}: {exc}") from None
            removed.append(orphan["name"])
            reasons[orphan["name"]] = orphan["reason"]
        return {"changed": bool(removed), "removed": removed, "reasons": reasons}

    def prune(self, app, keep_fingerprints, keep_newest=6):
        validate_app(app)
        removed = self._remove_cache_images(plan_prune(self.cache_images(app), keep_fingerprints, keep_newest))
        return {"changed": bool(removed), "removed": removed}

    def _remove_cache_images(self, doomed):
        """Remove the planned cache images (not in check mode); return their references."""
        for image in doomed:
            if not self.check_mode:
                self.docker.remove_image(image["ref"])
        return [image["ref"] for image in doomed]
