# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Content-addressed bake fingerprint: sha256 over the resolved inputs of a bake.

PRIVATE to the collection: used by the immutable.infra.bake_fingerprint lookup; no stability promise to others.

Inputs: the resolved base image ID, the content of every file of every role in the bake (and of the roles they
depend on), the rendered bake vars, the artifact-changing options and the collection version. Nothing that depends
on the machine or the checkout enters the hash: no mtimes, no absolute paths, no directory listing order.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import os
import re
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from collections.abc import Set

try:
    import yaml

    _YAML_LOADER = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader  # libyaml: ~10x faster
    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML ships with ansible-core on every controller
    HAS_YAML = False

SCHEMA = 1

IGNORED_DIR_NAMES = frozenset({"__pycache__", ".git", ".hg", ".svn"})
IGNORED_FILE_PATTERNS = ("*.pyc", "*.pyo", "*~", ".*.sw?", ".#*", "#*#", ".git")

META_FILES = ("main.yml", "main.yaml", "main.json", "main")

_IMMUTABLE_ID = re.compile(r"^(?:[^@\s]+@)?sha256:[0-9a-f]{64}$|^ami-[0-9a-f]{8,}$")


class FingerprintError(Exception):
    """A bake input cannot be fingerprinted; the message names the input and the fix."""


# --------------------------------------------------------------------------------------------------- canonical form


def to_plain(value, where="value"):
    """Return value as plain JSON data (dict/list/str/int/float/bool/None).

    Ansible's tagged/unsafe/lazy containers and strings become plain types (their subclasses must not leak
    into the hash); tuples become lists; sets become sorted lists; dates become ISO strings.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a plain str copy of tagged/unsafe subclasses
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, Mapping):
        plain = {}
        for key, item in value.items():
            skey = to_plain(key, where) if isinstance(key, str) else canonical_json(to_plain(key, where))
            if skey in plain:
                raise FingerprintError(f"{where}: two keys both serialise as {skey!r}: use distinct string keys")
            plain[skey] = to_plain(item, f"{where}.{skey}")
        return plain
    if isinstance(value, Set):
        return sorted((to_plain(item, where) for item in value), key=canonical_json)
    if isinstance(value, Sequence):
        return [to_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise FingerprintError(
        f"{where} has type {type(value).__name__}, which has no canonical form: pass strings, numbers, booleans, "
        "lists or dicts"
    )


def canonical_json(value):
    """JSON with sorted keys, no whitespace, UTF-8 text (not \\u escapes). value must already be plain."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_bytes(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest(value):
    """sha256 of the canonical serialisation of plain data."""
    return sha256_bytes(canonical_json(value).encode("utf-8", "surrogateescape"))


# ------------------------------------------------------------------------------------------------------ role files


def _ignored(name):
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED_FILE_PATTERNS)


def _file_sha256(path):
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def hash_role_files(role_dir):
    """Return {relative/posix/path: sha256} for every regular file under role_dir.

    Symlinks count by the content they point to (links to directories are walked, once). Caches, VCS data and
    editor backups are ignored. Only relative paths and bytes count: mtimes and listing order do not.
    """
    files = {}
    seen_dirs = set()
    for top, dirs, names in os.walk(role_dir, followlinks=True):
        real = os.path.realpath(top)
        if real in seen_dirs:  # a symlink loop, or a second link to a directory already walked
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIR_NAMES and not _ignored(d))
        for name in names:
            if _ignored(name):
                continue
            path = os.path.join(top, name)
            rel = os.path.relpath(path, role_dir).replace(os.sep, "/")
            if not os.path.exists(path):
                raise FingerprintError(
                    f"role file {rel} in {role_dir} is a broken symlink (-> {os.readlink(path)}): "
                    "fix or remove the link"
                )
            if not os.path.isfile(path):
                continue  # fifos, sockets, devices: not content
            files[rel] = _file_sha256(path)
    return dict(sorted(files.items()))


def read_role_dependencies(role_dir):
    """Names of the roles listed under `dependencies` in meta/main.yml (in order)."""
    for meta_name in META_FILES:
        meta_path = os.path.join(role_dir, "meta", meta_name)
        if os.path.isfile(meta_path):
            break
    else:
        return []
    if not HAS_YAML:  # pragma: no cover
        raise FingerprintError("PyYAML is required to read role dependencies: install ansible-core's requirements")
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta = yaml.load(handle, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FingerprintError(f"cannot read {meta_path}: {exc}: fix the YAML of the role's meta/main.yml") from exc
    deps = (meta or {}).get("dependencies") or [] if isinstance(meta, dict) else []
    if not isinstance(deps, list):
        raise FingerprintError(f"{meta_path}: dependencies must be a list of role names or {{role: name}} dicts")
    return [role_name(dep, f"dependency of {role_dir}") for dep in deps]


def role_name(entry, where="bake_roles"):
    """A role reference as a name: 'ns.coll.role', 'role', {role: ...} or {name: ...}."""
    if isinstance(entry, Mapping):
        entry = entry.get("role") or entry.get("name")
    if not isinstance(entry, str) or not entry.strip():
        raise FingerprintError(f"{where}: {entry!r} is not a role name: give a string or a dict with a 'role' key")
    name = str.__str__(entry).strip()
    if "{{" in name or "{%" in name:
        raise FingerprintError(f"{where}: role name {name!r} is a template: use a literal role name")
    return name


# ------------------------------------------------------------------------------------------------- role resolution


def _is_fqcn(name):
    parts = name.split(".")
    return len(parts) >= 3 and "/" not in name and all(re.match(r"^\w+$", part) for part in parts)


def find_collection_role_on_disk(fqcn, collection_paths):
    """Filesystem lookup of ns.coll.role under <path>/ansible_collections/ns/coll/roles/role (no loader needed)."""
    namespace, collection, role = fqcn.split(".", 2)
    for base in collection_paths:
        for root in (base, os.path.join(base, "ansible_collections")):
            if os.path.basename(os.path.normpath(root)) != "ansible_collections":
                continue
            path = os.path.join(root, namespace, collection, "roles", *role.split("."))
            if os.path.isdir(path):
                return path
    return None


class RoleResolver:
    """Find role directories the way ansible-playbook does.

    FQCN -> the collection's roles/<role> (through collection_role_finder, e.g. Ansible's collection loader,
    then collection_paths on disk); plain names -> each of search_paths; a dependency of a collection role is
    first looked up in that role's collection; a dependency also looks next to the role that needs it.
    """

    def __init__(
        self,
        search_paths: Sequence[str] = (),
        collection_paths: Sequence[str] = (),
        collection_role_finder: Callable[[str], str | None] | None = None,
        base_dir: str | None = None,
    ):
        self.search_paths = [p for p in search_paths if p]
        self.collection_paths = [p for p in collection_paths if p]
        self.collection_role_finder = collection_role_finder
        self.base_dir = base_dir or os.getcwd()

    def _collection_role(self, fqcn):
        if self.collection_role_finder is not None:
            found = self.collection_role_finder(fqcn)
            if found and os.path.isdir(found):
                return found
        return find_collection_role_on_disk(fqcn, self.collection_paths)

    def resolve(self, name, parent_dir=None, parent_collection=None):
        """Return (path, collection or None) for role name; raise FingerprintError naming the places searched."""
        searched = []
        if _is_fqcn(name):
            found = self._collection_role(name)
            if found:
                return found, name.rsplit(".", 1)[0]
            searched.append(
                f"collection {name.rsplit('.', 1)[0]} (collections path: {':'.join(self.collection_paths)})"
            )
        elif parent_collection:
            candidate = f"{parent_collection}.{name}"
            found = self._collection_role(candidate)
            if found:
                return found, parent_collection
            searched.append(f"collection {parent_collection}")
        paths = list(self.search_paths)
        if parent_dir:
            paths.append(os.path.dirname(os.path.normpath(parent_dir)))
        for base in paths:
            candidate = os.path.join(base, name)
            if os.path.isdir(candidate):
                return candidate, None
            searched.append(base)
        as_path = name if os.path.isabs(name) else os.path.join(self.base_dir, name)
        if "/" in name and os.path.isdir(as_path):
            return as_path, None
        places = ", ".join(dict.fromkeys(searched)) or "no place (empty roles path)"
        raise FingerprintError(
            f"role '{name}' not found in {places}: check the name in bake_roles or add its directory to roles_path"
        )


def role_manifest(name, resolver, parent_dir=None, parent_collection=None, _chain=(), _cache=None):
    """{name, digest, files, dependencies} for one role and, recursively, the roles it depends on."""
    cache = {} if _cache is None else _cache
    path, collection = resolver.resolve(name, parent_dir, parent_collection)
    real = os.path.realpath(path)
    if real in _chain:
        raise FingerprintError(
            f"role '{name}' depends on itself through meta/main.yml dependencies: break the dependency loop"
        )
    if real not in cache:
        files = hash_role_files(path)
        deps = [
            role_manifest(dep, resolver, path, collection, _chain + (real,), cache)
            for dep in read_role_dependencies(path)
        ]
        role_digest = digest({"files": files, "dependencies": [[d["name"], d["digest"]] for d in deps]})
        cache[real] = {"digest": role_digest, "files": files, "dependencies": deps}
    return {"name": name, **cache[real]}


# ---------------------------------------------------------------------------------------------- collection version


def read_collection_version(collection_root):
    """Version of the collection at collection_root: MANIFEST.json (installed) or galaxy.yml (checkout)."""
    manifest = os.path.join(collection_root, "MANIFEST.json")
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding="utf-8") as handle:
                return str(json.load(handle)["collection_info"]["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FingerprintError(f"cannot read the version from {manifest}: {exc}: reinstall the collection") from exc
    galaxy = os.path.join(collection_root, "galaxy.yml")
    if os.path.isfile(galaxy):
        with open(galaxy, encoding="utf-8") as handle:
            text = handle.read()
        if HAS_YAML:
            data = yaml.load(text, Loader=_YAML_LOADER) or {}  # noqa: S506 - a safe loader
            version = data.get("version") if isinstance(data, dict) else None
        else:  # pragma: no cover
            match = re.search(r"^version:\s*['\"]?([^'\"\s#]+)", text, re.MULTILINE)
            version = match.group(1) if match else None
        if version:
            return str(version)
        raise FingerprintError(f"{galaxy} has no version: set `version:` in galaxy.yml")
    raise FingerprintError(
        f"neither MANIFEST.json nor galaxy.yml found in {collection_root}: install the collection with ansible-galaxy"
    )


# ------------------------------------------------------------------------------------------------------ fingerprint


def check_base_id(base_id):
    if not isinstance(base_id, str) or not _IMMUTABLE_ID.match(base_id.strip()):
        raise FingerprintError(
            f"base_id {base_id!r} is not an immutable image ID (expected sha256:<64 hex>, <repo>@sha256:<64 hex> or "
            "ami-<hex>): resolve the base first, e.g. the Id from `docker image inspect` or the image_id from "
            "amazon.aws.ec2_ami_info; a tag or name can move and would make the fingerprint lie"
        )
    return str.__str__(base_id).strip()


def compute_fingerprint(base_id, roles, bake_vars, options, collection_version, resolver):
    """Fingerprint a bake. Returns {fingerprint, short, layers, inputs, manifest}.

    layers[k] covers base + roles[0..k] + vars + collection version (not the options, which act at capture time),
    so a bake whose first k+1 roles are unchanged can start from the cached image of layer k. The vars count for
    every layer because any role may read any var.
    """
    base = check_base_id(base_id)
    if not isinstance(collection_version, str) or not collection_version:
        raise FingerprintError("collection_version must be a non-empty string")
    if isinstance(roles, (str, Mapping)) or not isinstance(roles, Sequence):
        raise FingerprintError("roles must be a list of role names: e.g. ['immutable.infra.baseline', 'web']")
    plain_vars = to_plain(bake_vars or {}, "vars")
    plain_options = to_plain(options or {}, "options")
    if not isinstance(plain_vars, dict) or not isinstance(plain_options, dict):
        raise FingerprintError("vars and options must be dicts")

    cache = {}
    role_entries = [role_manifest(role_name(entry), resolver, _cache=cache) for entry in roles]
    vars_digest = digest(plain_vars)
    options_digest = digest(plain_options)
    chain = [[r["name"], r["digest"]] for r in role_entries]

    layers = []
    for index, entry in enumerate(role_entries):
        layer = {
            "schema": SCHEMA,
            "kind": "layer",
            "base": base,
            "roles": chain[: index + 1],
            "vars": vars_digest,
            "collection_version": collection_version,
        }
        layers.append({"role": entry["name"], "fingerprint": digest(layer)})

    fingerprint = digest(
        {
            "schema": SCHEMA,
            "kind": "bake",
            "base": base,
            "roles": chain,
            "vars": vars_digest,
            "options": options_digest,
            "collection_version": collection_version,
        }
    )
    manifest = {
        "schema": SCHEMA,
        "base": base,
        "collection_version": collection_version,
        "roles": role_entries,
        "vars": {key: digest(value) for key, value in sorted(plain_vars.items())},
        "options": {key: digest(value) for key, value in sorted(plain_options.items())},
    }
    inputs = {
        "base": base,
        "roles": dict(chain),
        "vars": vars_digest,
        "options": options_digest,
        "collection_version": collection_version,
    }
    return {
        "fingerprint": fingerprint,
        "short": fingerprint.split(":", 1)[1][:12],
        "layers": layers,
        "inputs": inputs,
        "manifest": manifest,
    }


# ------------------------------------------------------------------------------------------------------- diff_inputs


def _diff_keyed(kind, old, new):
    changes = []
    for key in sorted(set(old) | set(new)):
        if key not in old:
            changes.append(f"{kind} {key} added")
        elif key not in new:
            changes.append(f"{kind} {key} removed")
        elif old[key] != new[key]:
            changes.append(f"{kind} {key} changed")
    return changes


def _diff_role(label, old, new):
    if old.get("digest") == new.get("digest"):
        return []
    if "files" not in old or "files" not in new:
        return [f"{label} changed"]
    changes = _diff_keyed(f"{label} file", old["files"], new["files"])
    old_deps = old.get("dependencies") or []
    new_deps = new.get("dependencies") or []
    old_names = [d["name"] for d in old_deps]
    new_names = [d["name"] for d in new_deps]
    if old_names != new_names:
        changes.append(f"{label} dependencies changed: {old_names} -> {new_names}")
    old_by_name = {d["name"]: d for d in old_deps}
    for dep in new_deps:
        if dep["name"] in old_by_name:
            changes.extend(_diff_role(f"{label} -> dependency {dep['name']}", old_by_name[dep["name"]], dep))
    return changes or [f"{label} changed"]


def _roles_as_list(roles):
    if isinstance(roles, Mapping):  # the `inputs` summary: {name: digest}
        return [{"name": name, "digest": value} for name, value in roles.items()]
    return list(roles or [])


def diff_inputs(old, new):
    """Name the inputs that differ between two fingerprint manifests (or results, or `inputs` summaries).

    Returns a list of sentences such as "base changed: sha256:a -> sha256:b", "role web file tasks/main.yml
    changed", "var web_port added", "option regions changed", "collection version changed: 0.1.0 -> 0.2.0".
    An empty list means the inputs are the same.
    """
    old = (old or {}).get("manifest", old) or {}
    new = (new or {}).get("manifest", new) or {}
    changes = []
    if old.get("schema", SCHEMA) != new.get("schema", SCHEMA):
        changes.append(f"fingerprint schema changed: {old.get('schema')} -> {new.get('schema')}")
    if old.get("base") != new.get("base"):
        changes.append(f"base changed: {old.get('base')} -> {new.get('base')}")
    old_roles = _roles_as_list(old.get("roles"))
    new_roles = _roles_as_list(new.get("roles"))
    old_names = [r["name"] for r in old_roles]
    new_names = [r["name"] for r in new_roles]
    if old_names != new_names:
        changes.append(f"role list changed: {old_names} -> {new_names}")
    old_by_name = {r["name"]: r for r in old_roles}
    for role in new_roles:
        if role["name"] in old_by_name:
            changes.extend(_diff_role(f"role {role['name']}", old_by_name[role["name"]], role))
    for kind, key in (("var", "vars"), ("option", "options")):
        old_value, new_value = old.get(key), new.get(key)
        if isinstance(old_value, Mapping) and isinstance(new_value, Mapping):
            changes.extend(_diff_keyed(kind, old_value, new_value))
        elif old_value != new_value:
            changes.append(f"{key} changed")
    if old.get("collection_version") != new.get("collection_version"):
        changes.append(
            f"collection version changed: {old.get('collection_version')} -> {new.get('collection_version')}"
        )
    return list(dict.fromkeys(changes))
