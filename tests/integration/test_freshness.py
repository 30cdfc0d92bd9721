"""The freshness report end to end: a real bake (real syft SBOM kept in the real registry with auth), recorded live in
dev through deploy.yml (promotion_backend none: gate and ledger only), and a Debian-style repository served over HTTP
from loopback whose Packages.xz indexes the test writes (the mirror's state under the test's control).

One bake of a small role that installs a real Debian package with dpkg (probe-a 1.0-1, no network), shared by the
tests; the SBOM comes from the registry (the chain's artifacts directory holds only the record).
"""

from __future__ import annotations

import json
import lzma
import threading
import time
from http.server import SimpleHTTPRequestHandler
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from conftest import run_playbook
from test_bake_container import Baker
from test_bake_container import docker
from test_promotion import Chain
from test_promotion import show
from test_supply_chain_sbom import write_package_role

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slow]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        return


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """A Debian-style repository on loopback: <url>/dists/<suite>/main/binary-amd64/Packages.xz, as publish() writes."""
    root = tmp_path_factory.mktemp("mirror")
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: QuietHandler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"root": root, "url": f"http://127.0.0.1:{server.server_address[1]}/debian"}
    finally:
        server.shutdown()
        server.server_close()


def publish(mirror: dict, suite: str, packages: dict[str, str]) -> str:
    """Write the suite's index (replacing the previous one); returns its freshness source line."""
    index = Path(mirror["root"]) / "debian" / "dists" / suite / "main" / "binary-amd64"
    index.mkdir(parents=True, exist_ok=True)
    text = "".join(
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\nDescription: probe\n\n"
        for name, version in packages.items()
    )
    (index / "Packages.xz").write_bytes(lzma.compress(text.encode()))
    return f"{mirror['url']} {suite} main"


@pytest.fixture(scope="module")
def live(tmp_path_factory, registry, base_image):
    work = tmp_path_factory.mktemp("freshness")
    app = f"fresh{int(time.time()) % 100000}"
    baker = Baker(registry, app, work / "artifacts", roles_path=work / "roles")
    write_package_role(work / "roles", {"probe-a": "1.0-1"})
    baked = baker.run(extra={"bake_roles": ["pkgprobe"]})
    assert baked.returncode == 0, show(baked)
    record = baker.latest()
    sbom = json.loads((baker.artifacts / app / record["sbom"]["path"]).read_text())
    installed = {c["name"]: c["version"] for c in sbom["components"] if c.get("purl", "").startswith("pkg:deb/")}
    registry_env = {
        "IMMUTABLE_REGISTRY_USER": registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": registry["password"],
    }
    chain = Chain(work / "chain", app, [record], backend="none", env=registry_env)
    deployed = chain.run("deploy.yml", env="dev")
    assert deployed.returncode == 0, show(deployed)
    assert chain.entry("dev")["live"] == record["id"]
    try:
        yield {"chain": chain, "record": record, "installed": installed}
    finally:
        chain.teardown()
        docker("image", "rm", "-f", *docker("image", "ls", "-q", f"immutable-infra-cache/{app}").split(), check=False)


def freshness(chain: Chain, sources: list[str], now: str | None = None, **extra):
    env = dict(chain.extra_env, **({"IMMUTABLE_NOW": now} if now else {}))
    return run_playbook(
        REPO_ROOT / "playbooks" / "freshness.yml",
        dict(extra, freshness_sources=sources),
        "-i",
        str(chain.inventory),
        env=env,
    )


def test_the_report_names_packages_with_a_newer_version_in_the_mirror(live, mirror, registry):
    chain, record, installed = live["chain"], live["record"], live["installed"]
    base_files = installed["base-files"]
    sources = [
        # the release suite has a newer probe-a; the security suite a newer base-files; libc6 as installed
        publish(mirror, "bookworm", {"probe-a": "1.0-2", "libc6": installed["libc6"], "other": "9.9-1"}),
        publish(mirror, "bookworm-security", {"base-files": base_files + "+sec1"}),
    ]
    res = freshness(chain, sources, max_age_days=30, max_outdated=2)
    assert res.returncode == 0, show(res)
    flat = " ".join(res.stdout.split())
    assert f"dev: {record['id']} 0 days old, 2 of {len(installed)} packages outdated" in flat, show(res)
    assert "probe-a 1.0-1 -> 1.0-2 (bookworm)" in flat
    assert f"base-files {base_files} -> {base_files}+sec1 (bookworm-security)" in flat
    assert "staging: nothing live" in flat and "prod: nothing live" in flat
    assert registry["password"] not in res.stdout + res.stderr


def test_more_outdated_packages_than_max_outdated_fails_naming_env_artifact_and_threshold(live, mirror):
    chain, record = live["chain"], live["record"]
    sources = [publish(mirror, "bookworm", {"probe-a": "1:0.1-1"}), publish(mirror, "bookworm-security", {})]
    res = freshness(chain, sources, env="dev", max_outdated=0)
    assert res.returncode != 0
    flat = " ".join(res.stdout.split())
    assert f"dev: {record['id']} has 1 outdated package, more than max_outdated 0" in flat, show(res)
    # the report is printed before the failure
    assert "probe-a 1.0-1 -> 1:0.1-1 (bookworm)" in flat


def test_an_up_to_date_artifact_has_none_outdated_and_an_old_one_fails_on_its_age(live, mirror):
    chain, record, installed = live["chain"], live["record"], live["installed"]
    sources = [publish(mirror, "bookworm", installed), publish(mirror, "bookworm-security", {"probe-a": "1.0-1~sec"})]
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 40 * 86400 + 3600))
    res = freshness(chain, sources, now=later, env="dev", max_age_days=30, max_outdated=0)
    assert res.returncode != 0
    flat = " ".join(res.stdout.split())
    assert f"dev: {record['id']} 40 days old, 0 of {len(installed)} packages outdated" in flat, show(res)
    assert f"dev: {record['id']} is 40 days old (baked {record['created']}), older than max_age_days 30" in flat
    assert "more than max_outdated" not in flat
