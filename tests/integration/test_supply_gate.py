"""The promotion's verification gate, revocation and package diff (issue 20, items 5, 6 and 2) end to end: real Docker,
the real registry with auth, real signatures, the real syft.

Two signed bakes for every case (module-scoped): A (probe-a 1.0-1) and B (probe-a 1.1-1, probe-b 2.0-1 added), both
signed with one key at bake time. Each refusal runs deploy.yml or promote.yml once against a chain with
signature.required, checks the message and that the ledger's bytes did not change, and restores the registry byte
for byte. Most chains use the `none` backend (the gate runs before any backend step); one uses `docker` to show that
a refused artifact starts no container.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import yaml
from conftest import COLLECTIONS_DIR
from conftest import run_playbook
from test_bake_container import Baker
from test_promotion import PLAYBOOKS
from test_promotion import Chain
from test_promotion import show
from test_supply_chain_sbom import write_package_role
from test_supply_signing import new_key

if str(COLLECTIONS_DIR) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS_DIR))

from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryClient
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import attestation_tag
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import signature_tag

pytestmark = [pytest.mark.docker, pytest.mark.registry]


@pytest.fixture(scope="module")
def signed_pair(registry, base_image, tmp_path_factory):
    work = tmp_path_factory.mktemp("gate")
    roles = work / "roles"
    app = f"gate{int(time.time()) % 100000}"
    pem, public, _key = new_key(work / "signing")
    _other_pem, other_public, _other = new_key(work / "other")
    baker = Baker(registry, app, work / "artifacts", roles_path=roles)
    records = []
    for packages in ({"probe-a": "1.0-1"}, {"probe-a": "1.1-1", "probe-b": "2.0-1"}):
        write_package_role(roles, packages)
        res = baker.run(extra={"bake_roles": ["pkgprobe"], "bake_signing_key": pem, "bake_sign": "required"})
        assert res.returncode == 0, show(res)
        records.append(baker.latest())
    client = RegistryClient(registry["address"], username=registry["username"], password=registry["password"])
    yield {"a": records[0], "b": records[1], "public": public, "other": other_public, "client": client, "app": app}
    subprocess.run(
        ["docker", "image", "rm", "-f", *[r["id"] for r in records]], capture_output=True, text=True, check=False
    )


@pytest.fixture
def gated(tmp_path, unique, signed_pair, registry):
    """A chain (backend none unless asked) with both artifacts' records (A the latest), where every environment
    requires a signature by the trusted key unless another policy is given."""
    made = []
    env = {"IMMUTABLE_REGISTRY_USER": registry["username"], "IMMUTABLE_REGISTRY_PASSWORD": registry["password"]}

    def make(backend="none", policy=None):
        records = [signed_pair["a"], signed_pair["b"]]
        c = Chain(tmp_path / f"c{len(made)}", f"gt{unique}{len(made)}", records, backend=backend, env=env)
        made.append(c)
        policy = policy or {"required": True, "public_keys": [str(signed_pair["public"])]}
        (c.inventory / "group_vars" / "all" / "signature.yml").write_text(json.dumps({"promotion_signature": policy}))
        return c

    try:
        yield make
    finally:
        for c in made:
            c.teardown()


def flat(res) -> str:
    """The output with Ansible's line wrapping undone (long messages are folded over several lines)."""
    return " ".join(res.stdout.split())


def refused(c, playbook, message, **extra):
    before = c.ledger_path.read_bytes() if c.ledger_path.exists() else None
    res = c.run(playbook, **extra)
    assert res.returncode != 0, show(res)
    assert message in flat(res), show(res)
    assert "Nothing was pulled, switched, tagged or recorded" in flat(res), show(res)
    assert (c.ledger_path.read_bytes() if c.ledger_path.exists() else None) == before
    return res


class Swapped:
    """Put other bytes under a tag of the registry for the duration of a `with`, then the original back, byte for
    byte (None: delete the tag's manifest)."""

    def __init__(self, client, repo, tag, replacement):
        self.client, self.repo, self.tag, self.replacement = client, repo, tag, replacement

    def __enter__(self):
        self.before = self.client.manifest(self.repo, self.tag)
        if self.replacement is None:
            self.client.delete_manifest(self.repo, self.before[0])
        else:
            self.client.put_manifest(self.repo, self.tag, self.replacement[2], self.replacement[1])

    def __exit__(self, *exc):
        self.client.put_manifest(self.repo, self.tag, self.before[2], self.before[1])
        assert self.client.manifest(self.repo, self.tag) == self.before


def staged(c, a, b) -> list:
    """A in staging (deployed to dev, promoted), then B deployed to dev over A; the three runs' results."""
    runs = []
    for playbook, extra in (
        ("deploy.yml", {"env": "dev", "artifact": a["id"]}),
        ("promote.yml", {"from": "dev", "to": "staging"}),
        ("deploy.yml", {"env": "dev", "artifact": b["id"]}),
    ):
        runs.append(c.run(playbook, **extra))
        assert runs[-1].returncode == 0, show(runs[-1])
    return runs


def test_signed_artifacts_pass_and_a_promotion_prints_and_records_the_package_diff(gated, signed_pair):
    a, b = signed_pair["a"], signed_pair["b"]
    c = gated()
    for res in staged(c, a, b):
        assert "signature: valid (sha256:" in res.stdout and "provenance: valid" in res.stdout, show(res)
    # the deploy over A already showed the diff; the promotion over staging's A shows it and records it
    assert "+ probe-b 2.0-1" in res.stdout and "^ probe-a 1.0-1 -> 1.1-1" in res.stdout, show(res)
    res = c.run("promote.yml", **{"from": "dev", "to": "staging"})
    assert res.returncode == 0, show(res)
    assert f"changes from {a['id']}:" in res.stdout, show(res)
    assert "packages: 1 added, 0 removed, 1 upgraded, 0 downgraded" in res.stdout, show(res)
    assert "+ probe-b 2.0-1" in res.stdout and "^ probe-a 1.0-1 -> 1.1-1" in res.stdout, show(res)
    assert "inputs: role pkgprobe" in res.stdout, show(res)
    evidence = c.entry("staging")["history"][-1]["evidence"]
    assert evidence["diff"]["from"] == a["id"]
    assert evidence["diff"]["counts"] == {"added": 1, "removed": 0, "upgraded": 1, "downgraded": 0}
    assert set(evidence["diff"]["changes"]) == {"+ probe-b 2.0-1", "^ probe-a 1.0-1 -> 1.1-1"}
    assert evidence["verification"] == {"signature": "valid", "provenance": "valid"}


def test_unsigned_wrongly_signed_and_tampered_artifacts_are_refused(gated, signed_pair, registry):
    a, b, client = signed_pair["a"], signed_pair["b"], signed_pair["client"]
    repo = b["repository"].split("/", 1)[1]
    c = gated()
    res = c.run("deploy.yml", env="dev", artifact=a["id"])
    assert res.returncode == 0, show(res)
    deploy_b = {"env": "dev", "artifact": b["id"]}
    with Swapped(client, repo, signature_tag(b["digest"]), None):
        res = refused(c, "deploy.yml", "signature check failed: no signature", **deploy_b)
        assert "bake_signing_key" in res.stdout and b["digest"] in res.stdout
    # the .sig tag moved to other content (A's signature)
    with Swapped(client, repo, signature_tag(b["digest"]), client.manifest(repo, signature_tag(a["digest"]))):
        refused(c, "deploy.yml", "tampered: sha256-", **deploy_b)
    # the provenance of another digest (A's .att under B's tag)
    with Swapped(client, repo, attestation_tag(b["digest"]), client.manifest(repo, attestation_tag(a["digest"]))):
        refused(c, "deploy.yml", f"is about {a['digest']}, not {b['digest']}", **deploy_b)
    # not signed by a trusted key: the policy trusts another key only (extra vars override group vars)
    other = {"promotion_signature": {"required": True, "public_keys": [str(signed_pair["other"])]}}
    res = refused(c, "deploy.yml", "is not signed by a trusted key", **deploy_b, **other)
    assert "trusted here: sha256:" in res.stdout
    # never baked: no record anywhere (the record check's message)
    res = c.run("deploy.yml", env="dev", artifact=b["repository"] + "@sha256:" + "0" * 64)
    assert res.returncode != 0 and "is unknown to every artifact record" in res.stdout, show(res)
    # bad policy input fails early, naming the setting
    missing = {"promotion_signature": {"required": True, "public_keys": ["/nonexistent/signing.pub"]}}
    res = c.run("deploy.yml", **deploy_b, **missing)
    assert res.returncode != 0, show(res)
    assert "invalid settings: promotion_signature.public_keys[0] (/nonexistent/signing.pub)" in res.stdout, show(res)
    assert c.entry("dev")["live"] == a["id"]


def test_a_refused_artifact_starts_nothing_on_a_docker_environment(gated, signed_pair):
    b, client = signed_pair["b"], signed_pair["client"]
    c = gated(backend="docker")
    with Swapped(client, b["repository"].split("/", 1)[1], signature_tag(b["digest"]), None):
        refused(c, "deploy.yml", "signature check failed: no signature", env="dev", artifact=b["id"])
    for colour in ("blue", "green"):
        found = subprocess.run(
            ["docker", "container", "inspect", c.name("dev", colour)], capture_output=True, check=False
        )
        assert found.returncode != 0, colour
    assert not (c.root / "routers" / "dev" / "nginx.pid").exists()


def test_revoked_artifacts_and_descendants_of_a_revoked_base_are_refused_and_flagged(gated, signed_pair):
    a, b = signed_pair["a"], signed_pair["b"]
    c = gated()
    staged(c, a, b)
    # revoke A, which staging runs: verify flags staging, promote and rollback refuse it
    res = c.run("revoke.yml", artifact=a["id"], reason="CVE-2026-1234 in probe-a", by="alice")
    assert res.returncode == 0, show(res)
    assert f"revoked {a['id']} (artifact) by alice" in flat(res), show(res)
    stored = c.ledger()["revocations"][c.app]
    assert [(r["id"], r["kind"], r["by"], r["reason"]) for r in stored] == [
        (a["id"], "artifact", "alice", "CVE-2026-1234 in probe-a")
    ]
    res = c.run("verify.yml")
    assert res.returncode != 0, show(res)
    assert f"staging: runs a REVOKED artifact: {a['id']} is revoked (by alice at" in flat(res), show(res)
    assert "dev: runs a REVOKED" not in flat(res)
    refused(c, "rollback.yml", "CVE-2026-1234 in probe-a", env="dev")  # dev's previous ID is A
    # a second revocation of A changes nothing
    res = c.run("revoke.yml", artifact=a["id"], reason="again")
    assert res.returncode == 0 and "revoked before: nothing changed" in flat(res), show(res)
    # revoking the base image both were baked from: B (dev) is refused too, naming the base
    base = b["base"]["id"]
    assert a["base"]["id"] == base
    res = c.run("revoke.yml", artifact=base, reason="base image with a broken libc")
    assert res.returncode == 0, show(res)
    assert "baked from it (local records):" in flat(res) and b["id"] in flat(res), show(res)
    refused(c, "promote.yml", f"it was baked from the revoked base image {base}", **{"from": "dev", "to": "staging"})
    refused(c, "deploy.yml", "base image with a broken libc", env="dev", artifact=b["id"])
    res = c.run("verify.yml")
    assert res.returncode != 0 and "dev: runs a REVOKED artifact" in flat(res), show(res)


def test_a_revocation_from_a_later_date_is_not_in_effect_before_it(gated, signed_pair):
    a = signed_pair["a"]
    c = gated(policy={"required": False, "public_keys": []})
    res = c.run("revoke.yml", artifact=a["id"], reason="end of support", **{"from": "2099-01-01T00:00:00Z"})
    assert res.returncode == 0, show(res)
    assert "in effect from 2099-01-01T00:00:00Z" in flat(res), show(res)
    res = c.run("deploy.yml", env="dev", artifact=a["id"])
    assert res.returncode == 0, show(res)
    assert "signature:" not in flat(res)  # no keys: nothing checked, as before the gate
    res = run_playbook(
        PLAYBOOKS / "deploy.yml",
        {"env": "dev", "artifact": a["id"]},
        "-i",
        str(c.inventory),
        env=dict(c.extra_env, IMMUTABLE_NOW="2099-01-02T00:00:00Z"),
    )
    assert res.returncode != 0 and "end of support" in flat(res), show(res)


def test_a_refused_artifact_leaves_every_host_of_a_fleet_untouched(fleet, signed_pair, tmp_path, unique):
    """dev is the fleet group env_dev (h4, h5 of the session fleet): the plan step refuses the artifact (signed by a
    key this environment does not trust) before its lock and before any host: no image pulled, no container, no
    router, no lock left, no ledger."""
    b = signed_pair["b"]
    app = f"gf{unique}"
    hosts = [fleet.hosts[4], fleet.hosts[5]]
    ledger = tmp_path / "ledger" / "ledger.json"
    records = tmp_path / "artifacts" / app / "records"
    records.mkdir(parents=True)
    (records / "b.json").write_text(json.dumps(b))
    inventory = fleet.inventory(
        groups={"env_dev": hosts},
        vars={
            "promotion_chain": ["dev"],
            "promotion_app": app,
            "promotion_backend": "docker",
            "promotion_artifacts_dir": str(tmp_path / "artifacts"),
            "promotion_ledger": {"backend": "file", "path": str(ledger)},
            "promotion_environments": {
                "dev": {"router_port": 18501, "blue_port": 8501, "green_port": 8502, "router_dir": "/srv/routers/gf"}
            },
            "promotion_signature": {"required": True, "public_keys": [str(signed_pair["other"])]},
        },
        path=tmp_path / "inventory.yml",
    )
    data = yaml.safe_load(inventory.read_text())
    data["all"]["hosts"]["localhost"] = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    env = {
        "IMMUTABLE_REGISTRY_USER": fleet.registry["username"],
        "IMMUTABLE_REGISTRY_PASSWORD": fleet.registry["password"],
    }
    res = run_playbook(PLAYBOOKS / "deploy.yml", {"env": "dev", "artifact": b["id"]}, "-i", str(inventory), env=env)
    assert res.returncode != 0, show(res)
    assert "is not signed by a trusted key" in flat(res) and "Nothing was pulled" in flat(res), show(res)
    assert not ledger.exists() and not list(ledger.parent.glob(".*.promotion.lock"))
    for host in hosts:
        assert host.docker("ps", "-aq", "--filter", f"name={app}-").stdout.strip() == "", host
        assert host.docker("image", "ls", "-q", b["repository"]).stdout.strip() == "", host
        assert host.sh("test -e /srv/routers/gf && echo yes || echo no").stdout.strip() == "no", host
