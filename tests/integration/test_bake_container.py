"""The container bake end to end: real Docker, the real registry with auth, the collection's real roles.

One cold bake of the default roles (baseline -> web -> seal) is shared by the module; the other bakes start from
its cache layers, so each test pays only for what it changes.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import read_valid_record
from conftest import run_playbook

BAKE = REPO_ROOT / "playbooks" / "bake.yml"


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout.strip()


def builder_containers(app: str) -> list[str]:
    out = docker(
        "ps",
        "-a",
        "--filter",
        "label=io.immutable-infra.kind=builder",
        "--filter",
        f"label=io.immutable-infra.app={app}",
        "--format",
        "{{.Names}}",
    )
    return [line for line in out.splitlines() if line]


def containers_created_since(since: float, until: float, app: str) -> list[str]:
    """Containers of this app created in the window (other tests may run containers on the same engine)."""
    out = docker(
        "events",
        "--since",
        f"{since:.3f}",
        "--until",
        f"{until:.3f}",
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--format",
        "{{.Actor.Attributes.name}}",
    )
    return [line for line in out.splitlines() if line and app in line]


def registry_tags(registry: dict, repo: str) -> list[str]:
    request = urllib.request.Request(f"{registry['url']}/v2/{repo}/tags/list")
    request.add_header("Authorization", basic_auth(registry))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response).get("tags") or []
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def registry_digest(registry: dict, repo: str, tag: str) -> str | None:
    request = urllib.request.Request(f"{registry['url']}/v2/{repo}/manifests/{tag}", method="HEAD")
    request.add_header("Authorization", basic_auth(registry))
    request.add_header(
        "Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers["Docker-Content-Digest"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def basic_auth(registry: dict) -> str:
    import base64

    token = base64.b64encode(f"{registry['username']}:{registry['password']}".encode()).decode()
    return f"Basic {token}"


class Baker:
    """Runs bake.yml for one app name with the registry credentials and a private artifacts dir."""

    def __init__(self, registry: dict, app: str, artifacts: Path, roles_path: Path | None = None):
        self.registry = registry
        self.app = app
        self.artifacts = artifacts
        self.roles_path = roles_path

    def run(self, *args: str, extra: dict | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        extra_vars = {
            "bake_name": self.app,
            "bake_registry": self.registry["address"],
            "bake_artifacts_dir": str(self.artifacts),
        }
        extra_vars.update(extra or {})
        run_env = {
            "IMMUTABLE_REGISTRY_USER": self.registry["username"],
            "IMMUTABLE_REGISTRY_PASSWORD": self.registry["password"],
        }
        if self.roles_path:
            run_env["ANSIBLE_ROLES_PATH"] = str(self.roles_path)
        run_env.update(env or {})
        return run_playbook(BAKE, extra_vars, *args, env=run_env)

    def latest(self) -> dict:
        """latest.json, after validating it and its bake's record against docs/artifact-record.schema.json."""
        return read_valid_record(self.artifacts, self.app)


def write_probe_role(roles_dir: Path, name: str, marker: str, remove_base_file: bool = True) -> None:
    """A small role of our own, used as the last role before the seal."""
    (roles_dir / name / "tasks").mkdir(parents=True, exist_ok=True)
    (roles_dir / name / "tasks" / "main.yml").write_text(
        "---\n"
        f"- name: Write the probe marker\n"
        f"  ansible.builtin.copy:\n"
        f"    dest: /etc/probe-marker\n"
        f'    content: "{marker}\\n"\n'
        f'    mode: "0644"\n'
        + (
            "- name: Remove a file of the base image (the squash must remove it from its copy of the base)\n"
            "  ansible.builtin.file:\n"
            "    path: /etc/motd\n"
            "    state: absent\n"
            if remove_base_file
            else ""
        )
    )


@pytest.fixture(scope="module")
def bake_env(tmp_path_factory, registry, base_image):
    work = tmp_path_factory.mktemp("bake")
    roles = work / "roles"
    app = f"itest{int(time.time()) % 100000}"
    baker = Baker(registry, app, work / "artifacts", roles_path=roles)
    write_probe_role(roles, "probe", "one")
    extra = {"bake_roles": ["immutable.infra.baseline", "immutable.infra.web", "probe"], "bake_version": "1.0.0"}
    started = time.time()
    result = baker.run(extra=extra)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    yield {
        "baker": baker,
        "extra": extra,
        "roles": roles,
        "cold": result,
        "cold_seconds": time.time() - started,
        "work": work,
    }
    docker("image", "rm", "-f", *docker("image", "ls", "-q", f"immutable-infra-cache/{app}").split(), check=False)
    for name in builder_containers(app):
        docker("rm", "-f", name, check=False)


def test_a_cold_bake_pushes_a_digest_and_writes_its_record(bake_env, registry):
    baker = bake_env["baker"]
    record = baker.latest()
    repo = f"{baker.app}"
    assert record["kind"] == "container" and record["cached"] is False
    assert record["id"] == f"{registry['address']}/{repo}@{record['digest']}"
    assert record["fingerprint"].startswith("sha256:")
    assert set(record["tags"]) == {"1.0.0", "fp-" + record["fingerprint"].split(":")[1]}
    for tag in record["tags"]:
        assert registry_digest(registry, repo, tag) == record["digest"]
    assert [role["name"] for role in record["roles"]] == [
        "immutable.infra.baseline",
        "immutable.infra.web",
        "probe",
        "immutable.infra.seal",
    ]
    assert record["base"]["id"].startswith("sha256:")
    assert record["durations"]["total"] > 0
    # the last lines name the artifact and the record
    assert record["id"] in bake_env["cold"].stdout and "record: " in bake_env["cold"].stdout
    assert builder_containers(baker.app) == []
    assert registry["password"] not in bake_env["cold"].stdout + json.dumps(record)


def pull_from_registry(registry: dict, image: str, tmp_path: Path) -> None:
    """Drop the local copy and pull the artifact back by digest, through a private docker config."""
    docker("image", "rm", image, check=False)
    config = str(tmp_path / "docker-config")
    subprocess.run(
        ["docker", "--config", config, "login", "-u", registry["username"], "--password-stdin", registry["address"]],
        input=registry["password"],
        capture_output=True,
        text=True,
        check=True,
    )
    docker("--config", config, "pull", image)


def assert_no_bake_files(image: str) -> None:
    found = docker(
        "run", "--rm", image, "sh", "-c",
        "ls -d /.immutable-infra-changes /.immutable-infra-code /dev/shm/.immutable-infra-code-* 2>/dev/null; true",
    )  # fmt: skip
    assert found == "", f"{image} holds the bake's own files: {found}"


def test_the_pushed_image_serves_healthz_with_the_declared_config(bake_env, registry, unique, tmp_path):
    record = bake_env["baker"].latest()
    image = record["id"]
    pull_from_registry(registry, image, tmp_path)
    # a cold bake saves cache layers (with the kept module code) and commits its builder as it is
    assert_no_bake_files(image)
    inspect = json.loads(docker("image", "inspect", image))[0]
    config = inspect["Config"]
    assert config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["Healthcheck"]["Test"][0] in ("CMD", "CMD-SHELL")
    labels = config["Labels"]
    assert labels["io.immutable-infra.fingerprint"] == record["fingerprint"]
    assert labels["org.opencontainers.image.version"] == "1.0.0"
    assert "org.opencontainers.image.created" in labels and "org.opencontainers.image.revision" in labels
    name = f"bake-serve-{unique}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1::8080", image)
    try:
        port = docker("port", name, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except (OSError, urllib.error.URLError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.headers["X-Release"]
        # the seal ran last: no host keys, no history, an empty machine-id
        assert docker("exec", name, "sh", "-c", "ls /etc/ssh/ssh_host_* 2>/dev/null | wc -l") == "0"
        assert docker("exec", name, "sh", "-c", "wc -c < /etc/machine-id") == "0"
    finally:
        docker("rm", "-f", name, check=False)


def test_an_unchanged_rebake_is_cached_and_starts_no_container(bake_env):
    baker = bake_env["baker"]
    app = baker.app
    first = baker.latest()
    since = time.time()
    result = baker.run(extra=bake_env["extra"])
    until = time.time()
    assert result.returncode == 0, result.stdout[-3000:]
    record = baker.latest()
    assert record["cached"] is True
    assert record["id"] == first["id"]
    assert "cached (nothing built)" in result.stdout
    assert containers_created_since(since, until, app) == []


def test_changing_the_last_role_reruns_only_that_role_and_squashes_the_reused_layers(bake_env, registry, tmp_path):
    baker = bake_env["baker"]
    first = baker.latest()
    write_probe_role(bake_env["roles"], "probe", "two")
    try:
        result = baker.run(extra={**bake_env["extra"], "bake_version": "1.0.1"})
        assert result.returncode == 0, result.stdout[-3000:]
        record = baker.latest()
        assert record["cached"] is False
        assert record["digest"] != first["digest"]
        assert record["reused_roles"] == ["immutable.infra.baseline", "immutable.infra.web"]
        assert "immutable.infra.baseline :" not in result.stdout  # no baseline task ran
        assert "immutable.infra.web :" not in result.stdout
        assert any("probe" in change for change in record["changes"])
        # the old version tag still points at the old digest
        assert registry_digest(registry, baker.app, "1.0.0") == first["digest"]
        # squashed: one layer above the base, not the cache layers, in which the apt lists the seal removed would
        # still be inside a blob
        pull_from_registry(registry, record["id"], tmp_path)
        image = json.loads(docker("image", "inspect", record["id"]))[0]
        base = json.loads(docker("image", "inspect", record["base"]["id"]))[0]
        assert image["RootFS"]["Layers"][:-1] == base["RootFS"]["Layers"]
        assert len(image["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
        assert docker("run", "--rm", record["id"], "cat", "/etc/probe-marker") == "two"
        assert docker("run", "--rm", record["id"], "sh", "-c", "test -e /etc/motd || echo removed") == "removed"
        assert docker("run", "--rm", record["base"]["id"], "sh", "-c", "test -e /etc/motd && echo kept") == "kept"
        assert docker("run", "--rm", record["id"], "sh", "-c", "command -v nginx") == "/usr/sbin/nginx"
        # the bake's own files stay out: the cache layer's change list and the module code it kept for this builder
        assert_no_bake_files(record["id"])
        # the builder's labels did not travel: a container of the artifact is never taken for a builder
        labels = image["Config"]["Labels"]
        assert labels["io.immutable-infra.kind"] == "artifact" and labels["io.immutable-infra.owner"] == ""
        assert not [name for name in docker("ps", "-a", "--format", "{{.Names}}").split() if name.endswith("-squash")]

        # a last role that removes nothing of the base (the seal may still): the base file stays in the artifact
        write_probe_role(bake_env["roles"], "probe", "three", remove_base_file=False)
        result = baker.run(extra={**bake_env["extra"], "bake_version": "1.0.2"})
        assert result.returncode == 0, result.stdout[-3000:]
        third = baker.latest()
        assert third["cached"] is False and third["reused_roles"] == record["reused_roles"]
        pull_from_registry(registry, third["id"], tmp_path)
        assert docker("run", "--rm", third["id"], "cat", "/etc/probe-marker") == "three"
        assert docker("run", "--rm", third["id"], "sh", "-c", "test -e /etc/motd && echo kept") == "kept"
        assert_no_bake_files(third["id"])
    finally:
        write_probe_role(bake_env["roles"], "probe", "one")


def test_an_immutable_version_tag_is_not_moved(bake_env, registry):
    baker = bake_env["baker"]
    before = registry_digest(registry, baker.app, "1.0.0")
    write_probe_role(bake_env["roles"], "probe", "three")
    try:
        result = baker.run(extra=bake_env["extra"])
        assert result.returncode != 0
        assert "version tag 1.0.0" in result.stdout and "immutable" in result.stdout
        assert registry_digest(registry, baker.app, "1.0.0") == before
        assert builder_containers(baker.app) == []
    finally:
        write_probe_role(bake_env["roles"], "probe", "one")


def test_a_failing_role_removes_the_builder_and_pushes_nothing(bake_env, registry):
    baker = bake_env["baker"]
    failing = bake_env["roles"] / "failing" / "tasks"
    failing.mkdir(parents=True, exist_ok=True)
    (failing / "main.yml").write_text(
        "---\n- name: Break the bake on purpose\n  ansible.builtin.command: /bin/false\n  changed_when: false\n"
    )
    tags_before = registry_tags(registry, baker.app)
    result = baker.run(extra={"bake_roles": ["immutable.infra.baseline", "failing"], "bake_version": "9.9.9"})
    assert result.returncode != 0
    assert "bake of " in result.stdout and "The builder was removed and nothing was pushed" in result.stdout
    assert builder_containers(baker.app) == []
    assert registry_tags(registry, baker.app) == tags_before


def test_check_mode_on_a_cold_bake_starts_and_pushes_nothing(registry, tmp_path, unique):
    app = f"check{unique}"
    baker = Baker(registry, app, tmp_path / "artifacts")
    since = time.time()
    result = baker.run("--check")
    until = time.time()
    assert result.returncode == 0, result.stdout[-3000:]
    assert "would start a builder" in result.stdout
    assert containers_created_since(since, until, app) == []
    assert registry_tags(registry, app) == []
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ({"bake_roles": ["no_such_role_anywhere"]}, {}, "role 'no_such_role_anywhere' not found"),
        ({"bake_base_image": "immutable-infra/missing:none"}, {}, "base image immutable-infra/missing:none not found"),
        ({"bake_registry": "127.0.0.1:1"}, {}, "unreachable"),
        ({"bake_repository": "127.0.0.1:5000/Not_Valid"}, {}, "Not_Valid"),
        ({}, {"IMMUTABLE_REGISTRY_PASSWORD": "wrong-password-for-test"}, "wrong username or password"),
        ({"bake_roles": ["immutable.infra.seal"]}, {}, "bake_roles must not contain the seal role"),
    ],
    ids=[
        "unknown-role",
        "missing-base",
        "registry-unreachable",
        "invalid-repository",
        "wrong-password",
        "seal-in-roles",
    ],
)
def test_bad_input_fails_before_anything_starts(registry, tmp_path, unique, extra, env, expected):
    app = f"bad{unique}"
    baker = Baker(registry, app, tmp_path / "artifacts")
    since = time.time()
    result = baker.run(extra=extra, env=env)
    until = time.time()
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert containers_created_since(since, until, app) == []
    assert "wrong-password-for-test" not in result.stdout + result.stderr


def test_both_change_listings_give_the_same_changes(base_image, unique):
    """The Engine API's list (the default), the CLI's `docker diff` and the overlay2 accelerator's walk of the upper
    directory give the same changes of the same container: added, changed and removed paths, replaced directories,
    symlinks. Where the walk cannot tell (an opaque directory) the accelerator takes the engine's list."""
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import EngineChanges
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import Overlay2Changes
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import change_listing
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._overlay2 import container_upper_changes
    from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
    from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import run_locally
    from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine

    engine = docker_engine(run_locally)
    warnings = []
    accelerator = change_listing(engine, "overlay2", warn=warnings.append)
    if warnings:
        pytest.fail(f"the overlay2 accelerator is refused on this machine: {warnings[0]}")
    assert accelerator.__class__ is Overlay2Changes
    listings = {"engine": EngineChanges(engine), "cli": EngineChanges(DockerCli(run_locally)), "overlay2": accelerator}

    def diff(name):
        return {line[2:] for line in docker("diff", name).splitlines() if line[1:2] == " "}

    name = f"walk-{unique}"
    docker("run", "--detach", "--name", name, base_image, "sleep", "infinity")
    try:
        changes = (
            "set -e; mkdir -p /opt/app/conf/deep; echo x > /opt/app/conf/deep/file; echo more >> /etc/issue;"
            " rm /etc/motd; rm -rf /usr/share/doc/apt && mkdir /usr/share/doc/apt && touch /usr/share/doc/apt/new;"
            " ln -s /opt/app /srv/app; chmod 700 /usr/bin/env; mkfifo /tmp/fifo; touch '/tmp/odd name'"
        )
        docker("exec", name, "sh", "-c", changes)
        expected = diff(name)
        assert {"/opt/app/conf/deep/file", "/etc/issue", "/etc/motd", "/srv/app", "/usr/bin/env"} <= expected
        # a directory removed and made again is opaque: its hidden lower entries are in the engine's list only
        assert "/usr/share/doc/apt/copyright" in expected
        info = json.loads(docker("container", "inspect", name))[0]
        assert container_upper_changes(info) is None  # the walk declines ...
        for kind, listing in listings.items():  # ... and the accelerator gives the engine's list
            assert set(listing.container_changes(name)[0]) == expected, kind

        docker("exec", name, "sh", "-c", "rm -rf /usr/share/doc/apt")  # a whiteout now, no opaque directory
        expected = diff(name)
        assert "/usr/share/doc/apt" in expected and "/usr/share/doc/apt/copyright" not in expected
        info = json.loads(docker("container", "inspect", name))[0]
        assert container_upper_changes(info) is not None  # read from the upper directory this time
        for kind, listing in listings.items():
            paths, removed = listing.container_changes(name, info)
            assert set(paths) == expected, kind
            assert set(removed) == {"/etc/motd", "/usr/share/doc/apt"}, kind
    finally:
        docker("rm", "--force", name, check=False)


@pytest.mark.parametrize("listing", ["engine", "overlay2"])
def test_the_squash_starts_its_copy_only_to_remove_a_base_path(base_image, unique, listing):
    """The squash's copy of the base is only created (no start, no exec) unless a path the base has was removed:
    by the builder itself or by a cache layer (in the layer's list: the copy starts once that is read). Either way
    the copy holds exactly the builder's files, with either change listing."""
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import change_listing
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import CHANGES_FILE
    from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._manager import BuilderManager
    from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import run_locally
    from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine

    engine = docker_engine(run_locally)
    manager = BuilderManager(engine, listing=change_listing(engine, listing))
    made, images = [], []
    cases = [  # (what the cache layer's role does, what the builder then does, started, files left)
        ("", "", False, ["one", "two", "issue", "motd"]),
        ("", " && rm /etc/motd", True, ["one", "two", "issue"]),
        (" && rm /etc/issue", "", True, ["one", "two", "motd"]),
    ]
    try:
        for index, (layer_script, builder_script, started, expected) in enumerate(cases):
            # a "cache layer": one role's changes, with the list of paths it changed since the base
            seed, layer_image = f"squash-seed-{unique}-{index}", f"squash-layer-{unique}:{index}"
            changed = ["/opt/app", "/opt/app/one", "/opt/app/old"] + (["/etc/issue"] if layer_script else [])
            docker("run", "--name", seed, base_image, "sh", "-c",
                   f"mkdir -p /opt/app && echo one > /opt/app/one && echo old > /opt/app/old{layer_script}"
                   f" && printf '%s' '{json.dumps(changed)}' > {CHANGES_FILE}")  # fmt: skip
            made.append(seed)
            docker("commit", seed, layer_image)
            images.append(layer_image)
            builder = f"squash-{unique}-{index}"
            docker("run", "--detach", "--name", builder, layer_image, "sleep", "infinity")
            made += [builder, f"{builder}-squash"]
            docker("exec", builder, "sh", "-c", "rm /opt/app/old && echo two > /opt/app/two" + builder_script)
            result = manager.squash(builder, base_image)
            copy = result["container"]
            assert copy == f"{builder}-squash" and result["squashed"] is True
            state = json.loads(docker("container", "inspect", copy))[0]["State"]["Status"]
            assert state == ("running" if started else "created"), (index, state)
            image = f"squash-out-{unique}:{index}"
            docker("commit", copy, image)
            images.append(image)
            probe = (
                "ls /opt/app; test -e /etc/issue && echo issue; test -e /etc/motd && echo motd;"
                f" test -e {CHANGES_FILE} && echo list; true"
            )
            assert docker("run", "--rm", image, "sh", "-c", probe).split() == expected, index
    finally:
        docker("rm", "--force", *made, check=False)
        docker("image", "rm", "-f", *images, check=False)
