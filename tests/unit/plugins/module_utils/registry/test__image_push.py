"""Unit tests for push_image's logic (_image_push.py): config -> --change, identity, planner, applier.

The applier runs against small in-memory fakes of DockerCli and RegistryClient so every branch (nothing to do,
retag by manifest, cold push, conflict, check mode) can assert exactly what was and was not done.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_SOURCE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import MEDIA_DOCKER_MANIFEST
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import manifest_digest
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import OCI_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import OCI_REVISION
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import Identity
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import PushImageError
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import TemporaryDockerConfig
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import config_changes
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import identity_for
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import normalize_config
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import plan_push
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import run_push

# -- config -> docker commit --change ----------------------------------------------------------------------------


def test_config_changes_cover_every_key():
    changes = config_changes(
        {
            "cmd": ["nginx", "-g", "daemon off;"],
            "entrypoint": "/entry.sh",
            "env": {"B": "two words", "A": 'q"uote'},
            "ports": ["8080/tcp", "53/udp", "9000"],
            "user": "www-data",
            "workdir": "/srv",
            "healthcheck": {"test": ["CMD", "curl", "-f", "http://x/"], "interval": "10s", "timeout": 3, "retries": 2},
        },
        {"b": "2", "a": "1"},
    )
    assert changes == [
        "ENTRYPOINT /entry.sh",
        'CMD ["nginx", "-g", "daemon off;"]',
        'ENV A="q\\"uote"',
        'ENV B="two words"',
        "EXPOSE 8080/tcp",
        "EXPOSE 53/udp",
        "EXPOSE 9000",
        "USER www-data",
        "WORKDIR /srv",
        'HEALTHCHECK --interval=10s --timeout=3s --retries=2 CMD ["curl", "-f", "http://x/"]',
        'LABEL "a"="1" "b"="2"',
    ]


def test_dockers_spelling_maps_to_the_same_changes_as_ours():
    ours = {
        "cmd": ["nginx", "-g", "daemon off;"],
        "entrypoint": ["/entry"],
        "env": {"A": "1", "B": "x=y"},
        "ports": ["8080/tcp"],
        "user": "www-data",
        "workdir": "/srv",
        "volumes": ["/var/lib/app"],
        "healthcheck": {"test": ["CMD", "true"], "interval": "30s", "timeout": "500ms", "retries": 3},
        "labels": {"team": "web"},
    }
    docker = {
        "Cmd": ["nginx", "-g", "daemon off;"],
        "Entrypoint": ["/entry"],
        "Env": ["A=1", "B=x=y"],
        "ExposedPorts": {"8080/tcp": {}},
        "User": "www-data",
        "WorkingDir": "/srv",
        "Volumes": {"/var/lib/app": {}},
        "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30_000_000_000, "Timeout": 500_000_000, "Retries": 3},
        "Labels": {"team": "web"},
    }
    assert normalize_config(docker) == ours
    assert normalize_config(ours) == ours
    assert config_changes(docker, {}) == config_changes(ours, {})
    assert 'VOLUME ["/var/lib/app"]' in config_changes(ours, {})


def test_healthcheck_shell_and_none_forms():
    assert config_changes({"healthcheck": {"test": ["CMD-SHELL", "curl -f x || exit 1"]}}, {}) == [
        "HEALTHCHECK CMD curl -f x || exit 1"
    ]
    assert config_changes({"healthcheck": {"test": ["NONE"]}}, {}) == ["HEALTHCHECK NONE"]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"ports": ["80/http"]}, "config.ports entry '80/http' is invalid"),
        ({"workdir": "relative"}, "config.workdir 'relative' must be an absolute path"),
        ({"env": {"1BAD": "x"}}, "config.env name '1BAD' is invalid"),
        ({"env": {"A": "line\nbreak"}}, "config.env.A contains a line break"),
        ({"cmd": {"not": "a list"}}, "config.cmd must be a list of strings"),
        ({"healthcheck": {"interval": "10s"}}, "config.healthcheck.test is required"),
        ({"healthcheck": {"test": "true", "interval": "soon"}}, "config.healthcheck.interval 'soon' is not a duration"),
        ({"user": "a b"}, "config.user 'a b' is invalid"),
        ({"Volume": ["/x"]}, "config has unknown key(s) Volume: use cmd, entrypoint"),
        ({"volumes": "/x"}, "config.volumes '/x' must be a list of absolute paths"),
        ({"Cmd": ["a"], "cmd": ["b"]}, "config gives cmd twice"),
        ({"StopSignal": "SIGQUIT"}, "config.StopSignal cannot be set: docker commit does not support STOPSIGNAL"),
        ({"Env": ["NOVALUE"]}, "config.Env entry 'NOVALUE' is not NAME=value"),
        ({"healthcheck": {"test": "true", "StartInterval": 1}}, "config.healthcheck has unknown key(s) StartInterval"),
    ],
)
def test_bad_config_is_named(config, message):
    with pytest.raises(PushImageError) as err:
        config_changes(config, {})
    assert message in err.value.message


# -- identity -------------------------------------------------------------------------------------------------


def test_identity_kinds():
    assert identity_for({"fingerprint": "sha256:f", "container": "b"}, "cid").as_dict() == {
        "kind": "fingerprint",
        "value": "sha256:f",
    }
    assert identity_for({"image": "web:1"}, "sha256:img").as_dict() == {"kind": "image_id", "value": "sha256:img"}
    source = identity_for({"container": "b", "config": {"cmd": ["x"]}}, "cid")
    assert source.kind == "source"
    assert source.value != identity_for({"container": "b", "config": {"cmd": ["y"]}}, "cid").value
    assert source.value != identity_for({"container": "b", "config": {"cmd": ["x"]}}, "cid2").value
    assert source.value == identity_for({"container": "b", "config": {"cmd": ["x"]}}, "cid").value
    # an image with config is committed, so its identity is the source hash, not the (new) image ID
    assert identity_for({"image": "web:1", "oci_version": "1"}, "sha256:img").kind == "source"


def test_identity_matches_registry_state():
    remote = {"image_id": "sha256:img", "labels": {LABEL_FINGERPRINT: "sha256:f", LABEL_SOURCE: "sha256:s"}}
    assert Identity("fingerprint", "sha256:f").matches(remote)
    assert not Identity("fingerprint", "sha256:g").matches(remote)
    assert Identity("image_id", "sha256:img").matches(remote)
    assert Identity("source", "sha256:s").matches(remote)
    assert not Identity("fingerprint", "sha256:f").matches(None)


# -- planner (table) -------------------------------------------------------------------------------------------

SAME = {"digest": "sha256:same", "image_id": "sha256:i1", "labels": {LABEL_FINGERPRINT: "fp1"}}
OTHER = {"digest": "sha256:other", "image_id": "sha256:i2", "labels": {LABEL_FINGERPRINT: "fp0"}}
FP = Identity("fingerprint", "fp1")


@pytest.mark.parametrize(
    "case, tags, remote, mutable, force, expect",
    [
        ("all tags same content", ["1.0", "latest"], {"1.0": SAME, "latest": SAME}, ["latest"], False,
         dict(unchanged=["1.0", "latest"], push_tag=None, manifest_tags=[], commit=False, conflicts=[])),
        ("cold push", ["1.0", "fp-1", "latest"], {}, ["latest"], False,
         dict(unchanged=[], push_tag="1.0", manifest_tags=["fp-1", "latest"], commit=True, retag_from=None)),
        ("partial: missing tags added by manifest", ["1.0", "staging"], {"1.0": SAME}, ["latest"], False,
         dict(unchanged=["1.0"], push_tag=None, manifest_tags=["staging"], commit=False, retag_from="sha256:same")),
        ("immutable conflict", ["1.0", "latest"], {"1.0": OTHER}, ["latest"], False,
         dict(conflicts=[{"tag": "1.0", "digest": "sha256:other"}], push_tag=None, manifest_tags=[], commit=False)),
        ("force moves an immutable tag", ["1.0"], {"1.0": OTHER}, ["latest"], True,
         dict(conflicts=[], moves=["1.0"], push_tag="1.0", commit=True)),
        ("mutable tag moves to pushed content", ["1.0", "latest"], {"1.0": SAME, "latest": OTHER}, ["latest"], False,
         dict(conflicts=[], moves=["latest"], push_tag=None, manifest_tags=["latest"], retag_from="sha256:same")),
        ("mutable tag moves on cold push", ["2.0", "latest"], {"latest": OTHER}, ["latest"], False,
         dict(moves=["latest"], push_tag="2.0", manifest_tags=["latest"], commit=True)),
        ("conflict wins over partial", ["1.0", "1.1"], {"1.0": SAME, "1.1": OTHER}, [], False,
         dict(conflicts=[{"tag": "1.1", "digest": "sha256:other"}], manifest_tags=[], retag_from=None)),
    ],
)  # fmt: skip
def test_planner(case, tags, remote, mutable, force, expect):
    plan = plan_push(tags, remote, FP, mutable, force, commit_needed=True)
    for key, value in expect.items():
        assert plan[key] == value, f"{case}: {key}"


def test_planner_image_pushed_as_is_needs_no_commit():
    plan = plan_push(["1.0"], {}, Identity("image_id", "sha256:i"), [], False, commit_needed=False)
    assert plan["commit"] is False
    assert plan["push_tag"] == "1.0"


# -- applier with fakes ----------------------------------------------------------------------------------------


class FakeDocker:
    def __init__(self, containers=None, images=None):
        self.containers = containers or {}
        self.images = images or {}
        self.calls = []
        self.push_env = None

    def inspect(self, obj, kind=None):
        self.calls.append(("inspect", obj))
        return {"Id": self.containers[obj]} if obj in self.containers else None

    def image_id(self, ref):
        self.calls.append(("image_id", ref))
        return self.images.get(ref)

    def commit(self, container, changes=(), message=None):
        self.calls.append(("commit", container, list(changes)))
        return "sha256:committed"

    def create(self, image, labels=None):
        self.calls.append(("create", image))
        self.create_labels = labels
        return "tmpcontainer"

    def remove_container(self, name):
        self.calls.append(("rm", name))

    def tag(self, source, target):
        self.calls.append(("tag", source, target))

    def push(self, ref, env=None):
        self.calls.append(("push", ref))
        self.push_env = env
        config_dir = env["DOCKER_CONFIG"] if env else None
        if config_dir:
            self.config_seen = json.load(open(os.path.join(config_dir, "config.json")))
            self.mode_seen = oct(os.stat(config_dir).st_mode & 0o777)
        self.registry.store(ref.rsplit(":", 1)[1], self.last_labels())

    def last_labels(self):
        commits = [c for c in self.calls if c[0] == "commit"]
        labels = {}
        if commits:
            for change in commits[-1][2]:
                if change.startswith("LABEL "):
                    for pair in change[6:].split('" "'):
                        key, _sep, value = pair.strip('"').partition('"="')
                        labels[key] = value
        return labels


class FakeRegistry:
    def __init__(self):
        self.tags_ = {}  # tag -> (digest, body, labels)
        self.calls = []

    def store(self, tag, labels, image_id="sha256:committed"):
        body = json.dumps({"schemaVersion": 2, "mediaType": MEDIA_DOCKER_MANIFEST, "config": {"digest": image_id},
                           "labels-for-test": labels}, sort_keys=True).encode()  # fmt: skip
        self.tags_[tag] = (manifest_digest(body), body, labels)
        return manifest_digest(body)

    def manifest(self, repo, ref):
        self.calls.append(("manifest", ref))
        for tag, (digest, body, _labels) in self.tags_.items():
            if ref in (tag, digest):
                return digest, MEDIA_DOCKER_MANIFEST, body
        return None

    def config(self, repo, manifest):
        return {"config": {"Labels": manifest.get("labels-for-test")}, "created": "2026-01-01T00:00:00Z"}

    def put_manifest(self, repo, tag, body, media_type):
        self.calls.append(("put", tag))
        self.tags_[tag] = (manifest_digest(body), body, json.loads(body)["labels-for-test"])
        return manifest_digest(body)


def make(containers=None, images=None):
    docker = FakeDocker(containers or {"builder": "cid"}, images)
    registry = FakeRegistry()
    docker.registry = registry
    return docker, registry


BASE = {
    "container": "builder",
    "repository": "127.0.0.1:5000/web",
    "tags": ["1.0", "latest"],
    "mutable_tags": ["latest"],
    "force": False,
    "fingerprint": "sha256:fp1",
    "oci_revision": "abc123",
    "config": {"cmd": ["run"]},
    "registry_username": "bake",
    "registry_password": "pw-secret",
}


def mutations(docker, registry):
    return [c for c in docker.calls if c[0] in ("commit", "tag", "push", "create")] + [
        c for c in registry.calls if c[0] == "put"
    ]


def test_cold_push_commits_pushes_first_tag_and_retags_the_rest():
    docker, registry = make()
    result = run_push(docker, registry, dict(BASE))
    assert result["changed"] is True
    assert result["pushed"] == ["1.0"]
    assert result["retagged"] == ["latest"]
    digest = registry.tags_["1.0"][0]
    assert result["digest"] == digest == registry.tags_["latest"][0]
    assert result["image"] == "127.0.0.1:5000/web@" + digest
    assert result["image_id"] == "sha256:committed"
    commit = next(c for c in docker.calls if c[0] == "commit")
    assert 'CMD ["run"]' in commit[2]
    labels = registry.tags_["1.0"][2]
    assert labels[LABEL_FINGERPRINT] == "sha256:fp1"
    assert labels[OCI_REVISION] == "abc123"
    assert OCI_CREATED in labels
    assert ("tag", "sha256:committed", "127.0.0.1:5000/web:1.0") in docker.calls
    # credentials went to a private temporary DOCKER_CONFIG that is gone afterwards
    assert docker.mode_seen == "0o700"
    assert list(docker.config_seen["auths"]) == ["127.0.0.1:5000"]
    assert not os.path.exists(docker.push_env["DOCKER_CONFIG"])
    assert "pw-secret" not in json.dumps(result)


def test_second_run_is_unchanged_and_commits_nothing():
    docker, registry = make()
    first = run_push(docker, registry, dict(BASE))
    docker.calls.clear()
    registry.calls.clear()
    again = run_push(docker, registry, dict(BASE))
    assert again["changed"] is False
    assert again["digest"] == first["digest"]
    assert again["pushed"] == [] and again["retagged"] == []
    assert mutations(docker, registry) == []


def test_partial_adds_tags_by_manifest_without_commit_or_push():
    docker, registry = make()
    first = run_push(docker, registry, dict(BASE, tags=["1.0"]))
    docker.calls.clear()
    registry.calls.clear()
    result = run_push(docker, registry, dict(BASE, tags=["1.0", "staging"], mutable_tags=["staging"]))
    assert result["changed"] is True
    assert result["pushed"] == []
    assert result["retagged"] == ["staging"]
    assert result["digest"] == first["digest"] == registry.tags_["staging"][0]
    assert mutations(docker, registry) == [("put", "staging")]


def test_conflict_fails_naming_tag_and_digest_and_changes_nothing():
    docker, registry = make()
    old = registry.store("1.0", {LABEL_FINGERPRINT: "sha256:old"})
    with pytest.raises(PushImageError) as err:
        run_push(docker, registry, dict(BASE))
    message = err.value.message
    assert f"127.0.0.1:5000/web:1.0 already points at {old}" in message
    assert "force: true" in message and "Bump the version" in message
    assert err.value.plan["conflicts"] == [{"tag": "1.0", "digest": old}]
    assert mutations(docker, registry) == []
    assert registry.tags_["1.0"][0] == old


def test_force_moves_the_immutable_tag():
    docker, registry = make()
    old = registry.store("1.0", {LABEL_FINGERPRINT: "sha256:old"})
    result = run_push(docker, registry, dict(BASE, force=True))
    assert result["pushed"] == ["1.0"]
    assert registry.tags_["1.0"][0] != old
    assert result["plan"]["moves"] == ["1.0"]


def test_check_mode_cold_push_reports_plan_and_does_nothing():
    docker, registry = make()
    result = run_push(docker, registry, dict(BASE), check_mode=True)
    assert result["changed"] is True
    assert result["plan"]["commit"] is True
    assert result["plan"]["push_tag"] == "1.0"
    assert result["pushed"] == ["1.0"] and result["retagged"] == ["latest"]
    assert result["digest"] is None
    assert any(a.startswith("would commit") for a in result["actions"])
    assert mutations(docker, registry) == []
    assert registry.tags_ == {}


def test_check_mode_partial_does_not_put():
    docker, registry = make()
    run_push(docker, registry, dict(BASE, tags=["1.0"]))
    registry.calls.clear()
    result = run_push(docker, registry, dict(BASE, tags=["1.0", "2.0-rc"]), check_mode=True)
    assert result["changed"] is True and result["retagged"] == ["2.0-rc"]
    assert "2.0-rc" not in registry.tags_
    assert [c for c in registry.calls if c[0] == "put"] == []


def test_check_mode_conflict_fails_too():
    docker, registry = make()
    registry.store("1.0", {LABEL_FINGERPRINT: "sha256:old"})
    with pytest.raises(PushImageError, match="already points at"):
        run_push(docker, registry, dict(BASE), check_mode=True)


def test_missing_container_and_image_are_named():
    docker, registry = make()
    with pytest.raises(PushImageError, match="container 'ghost' not found"):
        run_push(docker, registry, dict(BASE, container="ghost"))
    with pytest.raises(PushImageError, match="local image 'web:9' not found"):
        run_push(docker, registry, dict(BASE, container=None, image="web:9"))
    assert registry.calls == []  # local problems are found before the registry is asked


def test_invalid_repository_and_tags_fail_before_anything():
    docker, registry = make()
    with pytest.raises(PushImageError, match="path component 'Web'"):
        run_push(docker, registry, dict(BASE, repository="127.0.0.1:5000/Web"))
    with pytest.raises(PushImageError, match="invalid tag 'bad tag'"):
        run_push(docker, registry, dict(BASE, tags=["bad tag"]))
    with pytest.raises(PushImageError, match="tags is empty"):
        run_push(docker, registry, dict(BASE, tags=[]))
    assert docker.calls == [] and registry.calls == []


def test_image_pushed_as_is_uses_image_id_identity_and_no_commit():
    docker, registry = make(containers={}, images={"web:local": "sha256:committed"})
    params = dict(BASE, container=None, image="web:local", fingerprint=None, oci_revision=None, config=None)
    result = run_push(docker, registry, params)
    assert result["plan"]["identity"] == {"kind": "image_id", "value": "sha256:committed"}
    assert not [c for c in docker.calls if c[0] in ("commit", "create")]
    assert ("tag", "sha256:committed", "127.0.0.1:5000/web:1.0") in docker.calls
    again = run_push(docker, registry, params)
    assert again["changed"] is False


def test_image_with_config_is_committed_from_a_temporary_container():
    docker, registry = make(containers={}, images={"web:local": "sha256:base"})
    run_push(docker, registry, dict(BASE, container=None, image="web:local"))
    names = [c[0] for c in docker.calls]
    assert names.index("create") < names.index("commit") < names.index("rm")
    assert ("rm", "tmpcontainer") in docker.calls
    # a run killed between create and rm leaves a container the builder sweep can find
    assert docker.create_labels["io.immutable-infra.kind"] == "builder"
    assert docker.create_labels["io.immutable-infra.created"].isdigit()


def test_temporary_docker_config_is_private_and_removed():
    with TemporaryDockerConfig("127.0.0.1:5000", "u", "p") as path:
        assert oct(os.stat(path).st_mode & 0o777) == "0o700"
        assert oct(os.stat(os.path.join(path, "config.json")).st_mode & 0o777) == "0o600"
    assert not os.path.exists(path)


def test_a_fingerprint_already_pushed_gets_new_tags_without_any_source():
    docker, registry = make()
    first = run_push(docker, registry, dict(BASE, tags=["fp-1"]))
    docker.calls.clear()
    registry.calls.clear()
    sourceless = {k: v for k, v in BASE.items() if k != "container"}
    result = run_push(docker, registry, dict(sourceless, tags=["fp-1", "1.1"]))
    assert result["changed"] is True and result["retagged"] == ["1.1"]
    assert result["digest"] == first["digest"] == registry.tags_["1.1"][0]
    assert docker.calls == []  # no inspect, commit or push: the builder may be long gone


def test_without_a_source_an_unknown_fingerprint_asks_for_one():
    docker, registry = make()
    sourceless = {k: v for k, v in BASE.items() if k != "container"}
    with pytest.raises(PushImageError, match="holds no image with fingerprint sha256:fp1.*give container or image"):
        run_push(docker, registry, dict(sourceless, tags=["2.0"]))
    assert mutations(docker, registry) == []
