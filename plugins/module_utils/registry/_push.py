# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Logic of immutable.infra.push_image: content identity, planner and applier.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The planner compares what the registry has for every requested tag with the identity of the content to push and
decides, before anything is committed or pushed: nothing to do, add tags by manifest (no layer push), or commit +
push + add the other tags by manifest. Immutable tags that hold other content are conflicts: nothing happens.
The applier runs the plan through an injected Docker engine (docker/_interface.py) and RegistryClient and skips
every mutation in check mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from base64 import b64encode
from datetime import datetime
from datetime import timezone

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_KIND
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_SOURCE
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_tag

OCI_CREATED = "org.opencontainers.image.created"
OCI_REVISION = "org.opencontainers.image.revision"
OCI_SOURCE = "org.opencontainers.image.source"
OCI_TITLE = "org.opencontainers.image.title"
OCI_VERSION = "org.opencontainers.image.version"
# the push_image options that set an OCI label (they win over config.labels and over what the image inherits)
OCI_OPTIONS = (
    ("oci_revision", OCI_REVISION),
    ("oci_source", OCI_SOURCE),
    ("oci_title", OCI_TITLE),
    ("oci_version", OCI_VERSION),
)

_PORT = re.compile(r"^\d{1,5}(?:-\d{1,5})?(?:/(?:tcp|udp|sctp))?$")
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class PushImageError(Exception):
    """push_image cannot proceed; message names the problem and the fix. plan is reported when known."""

    def __init__(self, message, plan=None):
        super().__init__(message)
        self.message = message
        self.plan = plan


# -- image config -> docker commit --change ------------------------------------------------------------------


def _quote(value, what):
    text = str(value)
    if "\n" in text or "\r" in text:
        raise PushImageError(f"{what} contains a line break: image config values must be single-line")
    return json.dumps(text)


def _exec_or_shell(value, what):
    if isinstance(value, str):
        if "\n" in value:
            raise PushImageError(f"{what} contains a line break: give a list of arguments instead")
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float)) for v in value):
        return json.dumps([str(v) for v in value])
    raise PushImageError(f"{what} must be a list of strings (exec form) or a string (shell form), got {value!r}")


def _duration(value, what):
    if value is None:
        return None
    if isinstance(value, bool):
        raise PushImageError(f"{what} must be a duration like '30s' or a number of seconds")
    if isinstance(value, (int, float)):
        return f"{value}s"
    text = str(value).strip()
    if text.isdigit():
        return f"{text}s"
    if not _DURATION.match(text):
        raise PushImageError(f"{what} '{text}' is not a duration: use e.g. '30s', '1m30s' or a number of seconds")
    return text


# The image config keys, ours and Docker's spelling of the same (docker image inspect's Config), in one table.
# StopSignal has no key of ours: docker commit cannot set it (STOPSIGNAL is not a valid --change command).
CONFIG_KEYS = ("cmd", "entrypoint", "env", "ports", "user", "workdir", "volumes", "healthcheck", "labels")
DOCKER_CONFIG_KEYS = {
    "Cmd": "cmd",
    "Entrypoint": "entrypoint",
    "Env": "env",
    "ExposedPorts": "ports",
    "User": "user",
    "WorkingDir": "workdir",
    "Volumes": "volumes",
    "Healthcheck": "healthcheck",
    "Labels": "labels",
    "StopSignal": None,
}
DOCKER_HEALTHCHECK_KEYS = {
    "Test": "test",
    "Interval": "interval",
    "Timeout": "timeout",
    "Retries": "retries",
    "StartPeriod": "start_period",
}


def _docker_duration(value):
    """Docker's healthcheck durations are nanoseconds; ours are durations or seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value % 1_000_000_000 == 0:
            return f"{value // 1_000_000_000}s"
        return f"{value // 1_000_000}ms" if value % 1_000_000 == 0 else f"{value}ns"
    return value


def _from_docker(key, value, what):
    """The value of Docker's key in our form: Env ['K=V'] -> {K: V}; ExposedPorts, Volumes {k: {}} -> [k]."""
    if key == "Env" and isinstance(value, (list, tuple)):
        env = {}
        for item in value:
            name, sep, text = str(item).partition("=")
            if not sep or not name:
                raise PushImageError(f"{what}.Env entry {item!r} is not NAME=value")
            env[name] = text
        return env
    if key in ("ExposedPorts", "Volumes") and isinstance(value, dict):
        return list(value)
    if key == "Healthcheck" and isinstance(value, dict):
        health = {}
        for name, item in value.items():
            ours = DOCKER_HEALTHCHECK_KEYS.get(name, name)
            health[ours] = item if ours in ("test", "retries") else _docker_duration(item)
        return health
    return value


def normalize_config(config, what="config"):
    """The image config with Docker's key spelling (Cmd, Env, ExposedPorts, ...) mapped to ours; keys of ours pass
    unchanged. Raises PushImageError naming an unknown key, a key given in both spellings, or StopSignal."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise PushImageError(f"{what} must be a dictionary of image config keys ({', '.join(CONFIG_KEYS)})")
    result, unknown = {}, []
    for key, value in config.items():
        if key in CONFIG_KEYS:
            ours = key
        elif key in DOCKER_CONFIG_KEYS:
            ours = DOCKER_CONFIG_KEYS[key]
            if ours is None:
                raise PushImageError(
                    f"{what}.{key} cannot be set: docker commit does not support STOPSIGNAL; give the stop signal "
                    "when the container is run (docker run --stop-signal) or in a Dockerfile, and remove it here"
                )
            value = _from_docker(key, value, what)
        else:
            unknown.append(str(key))
            continue
        if ours in result:
            raise PushImageError(f"{what} gives {ours} twice (as {ours} and as Docker's spelling): keep one")
        result[ours] = value
    if unknown:
        docker = ", ".join(k for k, v in DOCKER_CONFIG_KEYS.items() if v)
        raise PushImageError(
            f"{what} has unknown key(s) {', '.join(sorted(unknown))}: use {', '.join(CONFIG_KEYS)} "
            f"(or Docker's spelling: {docker})"
        )
    return result


def config_changes(config, labels):
    """docker commit --change instructions for the image config dict and the labels (dict) to set."""
    config = {k: v for k, v in normalize_config(config).items() if v is not None}
    changes = []
    if config.get("entrypoint") is not None:
        changes.append("ENTRYPOINT " + _exec_or_shell(config["entrypoint"], "config.entrypoint"))
    if config.get("cmd") is not None:
        changes.append("CMD " + _exec_or_shell(config["cmd"], "config.cmd"))
    env = config.get("env") or {}
    if not isinstance(env, dict):
        raise PushImageError("config.env must be a dict of NAME: value")
    for key in sorted(env):
        if not _ENV_KEY.match(str(key)):
            raise PushImageError(f"config.env name '{key}' is invalid: use letters, digits and '_'")
        changes.append(f"ENV {key}={_quote(env[key], f'config.env.{key}')}")
    for port in config.get("ports") or []:
        port = str(port)
        if not _PORT.match(port):
            raise PushImageError(f"config.ports entry '{port}' is invalid: use PORT[/PROTOCOL], e.g. '8080/tcp'")
        changes.append(f"EXPOSE {port}")
    if config.get("user") is not None:
        user = str(config["user"])
        if not user or " " in user:
            raise PushImageError(f"config.user '{user}' is invalid: give a user name or UID[:GID] without spaces")
        changes.append(f"USER {user}")
    if config.get("workdir") is not None:
        workdir = str(config["workdir"])
        if not workdir.startswith("/") or "\n" in workdir:
            raise PushImageError(f"config.workdir '{workdir}' must be an absolute path")
        changes.append(f"WORKDIR {workdir}")
    volumes = config.get("volumes") or []
    if isinstance(volumes, str) or not all(isinstance(v, str) and v.startswith("/") for v in volumes):
        raise PushImageError(f"config.volumes {volumes!r} must be a list of absolute paths, e.g. ['/var/lib/app']")
    if volumes:
        changes.append("VOLUME " + json.dumps(list(volumes)))
    health = config.get("healthcheck")
    if health:
        changes.append(_healthcheck(health))
    if labels:
        changes.append(
            "LABEL "
            + " ".join(f"{_quote(k, 'label name')}={_quote(v, f'label {k}')}" for k, v in sorted(labels.items()))
        )
    return changes


def _healthcheck(health):
    if not isinstance(health, dict):
        raise PushImageError("config.healthcheck must be a dict with test, interval, timeout, retries, start_period")
    unknown = sorted(str(k) for k, v in health.items() if v is not None and k not in DOCKER_HEALTHCHECK_KEYS.values())
    if unknown:
        raise PushImageError(
            f"config.healthcheck has unknown key(s) {', '.join(unknown)}: use "
            f"{', '.join(DOCKER_HEALTHCHECK_KEYS.values())} (or Docker's {', '.join(DOCKER_HEALTHCHECK_KEYS)})"
        )
    test = health.get("test")
    if test is None:
        raise PushImageError("config.healthcheck.test is required, e.g. ['CMD', 'curl', '-f', 'http://localhost/']")
    if isinstance(test, (list, tuple)) and test and str(test[0]).upper() == "NONE":
        return "HEALTHCHECK NONE"
    opts = []
    for key, flag in (("interval", "interval"), ("timeout", "timeout"), ("start_period", "start-period")):
        value = _duration(health.get(key), f"config.healthcheck.{key}")
        if value:
            opts.append(f"--{flag}={value}")
    if health.get("retries") is not None:
        try:
            retries = int(health["retries"])
        except (TypeError, ValueError):
            raise PushImageError("config.healthcheck.retries must be a whole number") from None
        opts.append(f"--retries={retries}")
    if isinstance(test, str):
        command = "CMD " + _exec_or_shell(test, "config.healthcheck.test")
    elif isinstance(test, (list, tuple)) and test:
        kind = str(test[0]).upper()
        if kind == "CMD":
            command = "CMD " + _exec_or_shell(list(test[1:]), "config.healthcheck.test")
        elif kind == "CMD-SHELL":
            command = "CMD " + _exec_or_shell(" ".join(str(t) for t in test[1:]), "config.healthcheck.test")
        else:
            command = "CMD " + _exec_or_shell(list(test), "config.healthcheck.test")
    else:
        raise PushImageError("config.healthcheck.test must be a string or a non-empty list")
    return "HEALTHCHECK " + " ".join(opts + [command])


# -- identity --------------------------------------------------------------------------------------------------


def canonical_hash(data):
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class Identity:
    """What 'same content' means for this push.

    kind: 'fingerprint' (label io.immutable-infra.fingerprint), 'source' (label io.immutable-infra.source: hash of
    the source object ID and the requested config, for commits without fingerprint) or 'image_id' (config digest of
    an image pushed as is).
    """

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value

    def matches(self, remote):
        if remote is None:
            return False
        if self.kind == "image_id":
            return remote.get("image_id") == self.value
        label = LABEL_FINGERPRINT if self.kind == "fingerprint" else LABEL_SOURCE
        return (remote.get("labels") or {}).get(label) == self.value

    def as_dict(self):
        return {"kind": self.kind, "value": self.value}


def user_labels(params):
    labels = {}
    labels.update(((params.get("config") or {}).get("labels")) or {})
    for option, label in OCI_OPTIONS:
        if params.get(option) is not None:
            labels[label] = str(params[option])
    if params.get("fingerprint"):
        labels[LABEL_FINGERPRINT] = params["fingerprint"]
    return {str(k): str(v) for k, v in labels.items()}


def needs_commit(params):
    """A container is always committed; an image only when config, OCI options or a fingerprint change it."""
    if params.get("container"):
        return True
    config = {k: v for k, v in (params.get("config") or {}).items() if v not in (None, {}, [])}
    return bool(config or params.get("fingerprint") or any(params.get(option) for option, _label in OCI_OPTIONS))


def identity_for(params, source_id):
    if params.get("fingerprint"):
        return Identity("fingerprint", params["fingerprint"])
    if needs_commit(params):
        config = dict(params.get("config") or {})
        return Identity(
            "source",
            canonical_hash({"source": source_id, "config": config, "labels": user_labels(params)}),
        )
    return Identity("image_id", source_id)


# -- planner ---------------------------------------------------------------------------------------------------


def plan_push(tags, remote, identity, mutable_tags, force, commit_needed, refresh=False):
    """Decide what to do. remote: {tag: None or {'digest', 'image_id', 'labels', 'media_type'}}.

    refresh: the content is rebuilt on purpose (bake_max_age): tags holding the same identity move to the new commit.

    Returns a dict: unchanged (tags already right), conflicts ([{tag, digest}]), moves (tags that will move),
    retag_from (digest to copy the manifest of, or None), push_tag (tag pushed with layers, or None),
    manifest_tags (tags added by manifest), commit (bool).
    """
    unchanged, conflicts, moves, needed = [], [], [], []
    source_digest = None
    for tag in tags:
        current = remote.get(tag)
        if current is None:
            needed.append(tag)
        elif identity.matches(current) and refresh and commit_needed:
            moves.append(tag)
            needed.append(tag)
        elif identity.matches(current):
            unchanged.append(tag)
            if source_digest is None:
                source_digest = current["digest"]
        elif tag in mutable_tags or force:
            moves.append(tag)
            needed.append(tag)
        else:
            conflicts.append({"tag": tag, "digest": current["digest"]})
    plan = {
        "identity": identity.as_dict(),
        "unchanged": unchanged,
        "conflicts": conflicts,
        "moves": moves,
        "commit": False,
        "push_tag": None,
        "manifest_tags": [],
        "retag_from": None,
    }
    if conflicts or not needed:
        return plan
    if source_digest is not None:
        plan["retag_from"] = source_digest
        plan["manifest_tags"] = needed
    else:
        plan["commit"] = commit_needed
        plan["push_tag"] = needed[0]
        plan["manifest_tags"] = needed[1:]
    return plan


def conflict_message(repository, plan):
    parts = [f"{repository}:{c['tag']} already points at {c['digest']} with other content" for c in plan["conflicts"]]
    tags = ", ".join(c["tag"] for c in plan["conflicts"])
    return (
        "; ".join(parts)
        + f": tag(s) {tags} are immutable, nothing was pushed or moved. Bump the version tag, add the tag to "
        "mutable_tags, or set force: true to move it on purpose"
    )


# -- applier ---------------------------------------------------------------------------------------------------


def remote_state(registry, repo, tag):
    found = registry.manifest(repo, tag)
    if found is None:
        return None
    digest, media_type, body = found
    manifest = json.loads(body)
    config = registry.config(repo, manifest)
    image_id = (manifest.get("config") or {}).get("digest")
    return {
        "digest": digest,
        "media_type": media_type,
        "image_id": image_id,
        "labels": (config.get("config") or {}).get("Labels") or {},
        "created": config.get("created"),
    }


class TemporaryDockerConfig:
    """A 0700 DOCKER_CONFIG directory holding only the credentials for one registry; removed on exit."""

    def __init__(self, registry, username, password):
        self.registry = registry
        self.username = username
        self.password = password
        self.path = None

    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="immutable-infra-docker-")
        os.chmod(self.path, 0o700)
        auth = b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        config_path = os.path.join(self.path, "config.json")
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"auths": {self.registry: {"auth": auth}}}, handle)
        return self.path

    def __exit__(self, *exc):
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)
        return False


class ImagePusher:
    """Resolve, plan and apply one push_image call. docker: the Docker engine interface; registry: RegistryClient."""

    def __init__(self, docker, registry, params, check_mode=False, now=None):
        self.docker = docker
        self.registry = registry
        self.params = params
        self.check_mode = check_mode
        self.now = now or (lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))  # noqa: UP017
        try:
            self.registry_host, self.repo = parse_repository(params["repository"])
            self.tags = [validate_tag(t) for t in params["tags"]]
            self.mutable_tags = [validate_tag(t) for t in params.get("mutable_tags") or []]
        except ImageReferenceError as exc:
            raise PushImageError(str(exc)) from None
        if not self.tags:
            raise PushImageError("tags is empty: give at least one tag, e.g. tags: ['1.0.0']")
        if len(set(self.tags)) != len(self.tags):
            raise PushImageError("tags lists a tag twice: give each tag once")
        self.repository = params["repository"]
        self.actions = []

    # -- steps

    def _source_id(self):
        params = self.params
        if params.get("container"):
            data = self.docker.inspect(params["container"], kind="container")
            if data is None:
                raise PushImageError(
                    f"container '{params['container']}' not found: give the name or ID of an existing builder "
                    "container (docker ps -a), or use image to push a local image"
                )
            return data["Id"]
        image_id = self.docker.image_id(params["image"])
        if image_id is None:
            raise PushImageError(
                f"local image '{params['image']}' not found: build or load it first (docker image ls), or use "
                "container to commit a builder container"
            )
        return image_id

    def _commit(self, source_id):
        params = self.params
        labels = user_labels(params)
        labels[OCI_CREATED] = self.now()
        identity = self.identity
        if identity.kind == "source":
            labels[LABEL_SOURCE] = identity.value
        changes = config_changes(params.get("config"), labels)
        if params.get("container"):
            self.actions.append(f"commit container {params['container']}")
            return self.docker.commit(params["container"], changes=changes, message="immutable.infra.push_image")
        # labelled like a builder, so the age-based sweep finds it if this run is killed before removing it
        temp = self.docker.create(
            source_id,
            labels={
                LABEL_KIND: "builder",
                LABEL_APP: "push-image",
                LABEL_CREATED: str(int(time.time())),
            },
        )
        try:
            self.actions.append(f"commit image {params['image']} with the requested config")
            return self.docker.commit(temp, changes=changes, message="immutable.infra.push_image")
        finally:
            self.docker.remove_container(temp)

    def _push_env(self):
        params = self.params
        if params.get("registry_username") is not None:
            return TemporaryDockerConfig(self.registry_host, params["registry_username"], params["registry_password"])
        return _FixedConfig(params.get("docker_config"))

    def run(self):
        params = self.params
        if self.params.get("docker_config") and not os.path.isdir(os.path.expanduser(params["docker_config"])):
            raise PushImageError(
                f"docker_config '{params['docker_config']}' is not a directory: give the directory that holds "
                "config.json (e.g. ~/.docker)"
            )
        # With a fingerprint the identity needs no source: tags may be added to what the registry holds already.
        has_source = bool(params.get("container") or params.get("image"))
        source_id = self._source_id() if has_source else None
        # Validate the config before talking to the registry, so a typo fails fast.
        config_changes(params.get("config"), user_labels(params))
        commit_needed = needs_commit(params)
        self.identity = identity_for(params, source_id)
        remote = {tag: remote_state(self.registry, self.repo, tag) for tag in self.tags}
        plan = plan_push(
            self.tags,
            remote,
            self.identity,
            self.mutable_tags,
            params.get("force"),
            commit_needed,
            refresh=bool(params.get("refresh")),
        )
        result = {
            "changed": False,
            "repository": self.repository,
            "tags": list(self.tags),
            "pushed": [],
            "retagged": [],
            "plan": plan,
            "actions": self.actions,
            "digest": None,
            "image": None,
            "image_id": None,
        }
        if plan["conflicts"]:
            raise PushImageError(conflict_message(self.repository, plan), plan=plan)
        if plan["push_tag"] is None and not plan["manifest_tags"]:
            first = remote[plan["unchanged"][0]]
            return self._finish(result, first["digest"], first["image_id"])
        result["changed"] = True
        if plan["retag_from"]:
            digest = plan["retag_from"]
            image_id = next(r["image_id"] for r in remote.values() if r and r["digest"] == digest)
            if self.check_mode:
                result["retagged"] = list(plan["manifest_tags"])
                self.actions += [f"would add tag {t} by manifest" for t in plan["manifest_tags"]]
                return self._finish(result, digest, image_id)
            self._retag(digest, plan["manifest_tags"], result)
            return self._finish(result, digest, image_id)
        # cold push
        if not has_source:
            raise PushImageError(
                f"{self.repository} holds no image with fingerprint {params['fingerprint']} under "
                f"{', '.join(self.tags)}: give container or image to push it"
            )
        if self.check_mode:
            if plan["commit"]:
                self.actions.append("would commit " + ("container" if params.get("container") else "image"))
            self.actions.append(f"would push {self.repository}:{plan['push_tag']}")
            self.actions += [f"would add tag {t} by manifest" for t in plan["manifest_tags"]]
            result["pushed"] = [plan["push_tag"]]
            result["retagged"] = list(plan["manifest_tags"])
            return self._finish(result, None, None if plan["commit"] else source_id)
        image_id = self._commit(source_id) if plan["commit"] else source_id
        target = f"{self.repository}:{plan['push_tag']}"
        self.docker.tag(image_id, target)
        with self._push_env() as config_dir:
            env = {"DOCKER_CONFIG": config_dir} if config_dir else None
            self.actions.append(f"push {target}")
            self.docker.push(target, env=env)
        found = self.registry.manifest(self.repo, plan["push_tag"])
        if found is None:
            raise PushImageError(
                f"docker push reported success but {target} is not in the registry: check the registry's storage"
            )
        digest = found[0]
        result["pushed"] = [plan["push_tag"]]
        self._retag(digest, plan["manifest_tags"], result, manifest=found)
        return self._finish(result, digest, image_id)

    def _retag(self, digest, tags, result, manifest=None):
        if not tags:
            return
        found = manifest or self.registry.manifest(self.repo, digest)
        if found is None:
            raise PushImageError(f"manifest {digest} vanished from {self.repository} while adding tags: run again")
        _digest, media_type, body = found
        for tag in tags:
            self.actions.append(f"add tag {tag} by manifest")
            self.registry.put_manifest(self.repo, tag, body, media_type)
            result["retagged"].append(tag)

    def _finish(self, result, digest, image_id):
        result["digest"] = digest
        result["image"] = f"{self.repository}@{digest}" if digest else None
        result["image_id"] = image_id
        return result


class _FixedConfig:
    """Context manager yielding the user's docker config dir (or None: the docker CLI default)."""

    def __init__(self, path):
        self.path = os.path.expanduser(path) if path else None

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        return False


def run_push(docker, registry, params, check_mode=False):
    """Entry point for the module: returns the result dict or raises PushImageError (with plan when known)."""
    try:
        return ImagePusher(docker, registry, params, check_mode=check_mode).run()
    except (RegistryError, DockerError) as exc:
        raise PushImageError(exc.message) from None
