"""registry_gc planner and applier against an in-memory registry (the real one is in tests/integration/test_gc.py)."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import sbom_tag
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import GcError
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import plan_gc
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import protected_digests
from ansible_collections.immutable.infra.plugins.module_utils.registry._gc import run_gc


def dg(n):
    return "sha256:" + f"{n:064x}"


class FakeRegistry:
    """tags -> digest, digest -> created; delete removes every tag of a digest."""

    def __init__(self, images, delete_status=None):
        self.tagmap = {}
        self.created = {}
        for digest, created, tags in images:
            self.created[digest] = created
            for tag in tags:
                self.tagmap[tag] = digest
        self.deleted = []
        self.delete_status = delete_status

    def tags(self, repo):
        return list(self.tagmap)

    def manifest(self, repo, ref):
        digest = self.tagmap.get(ref)
        return (digest, "application/vnd.docker.distribution.manifest.v2+json", json.dumps({"d": digest}).encode())

    def config(self, repo, body):
        digest = json.loads(body)["d"]
        return {"created": "1970", "config": {"Labels": {"org.opencontainers.image.created": self.created[digest]}}}

    def delete_manifest(self, repo, digest):
        if self.delete_status:
            raise RegistryError("registry answered HTTP 405: UNSUPPORTED", status=self.delete_status)
        self.deleted.append(digest)
        self.tagmap = {t: d for t, d in self.tagmap.items() if d != digest}
        return True


IMAGES = [
    (dg(1), "2026-01-01T00:00:00Z", ["fp-1", "1.0.0"]),
    (dg(2), "2026-01-02T00:00:00Z", ["fp-2"]),
    (dg(3), "2026-01-03T00:00:00Z", ["fp-3", "1.1.0"]),
    (dg(4), "2026-01-04T00:00:00Z", ["fp-4"]),
    (dg(5), "2026-01-05T00:00:00Z", ["fp-5", "1.2.0"]),
    (dg(9), "2025-01-01T00:00:00Z", ["handmade"]),  # not a bake artifact
]


def test_keeps_newest_and_protected_deletes_the_rest_and_never_touches_unmanaged():
    registry = FakeRegistry(IMAGES)
    result = run_gc(registry, "127.0.0.1:5000/web", 2, ["127.0.0.1:5000/web@" + dg(1)], dry_run=False)
    assert [d["digest"] for d in result["deleted"]] == [dg(3), dg(2)]
    assert registry.deleted == [dg(3), dg(2)]
    reasons = {k["digest"]: k["reason"] for k in result["kept"]}
    assert reasons == {
        dg(5): "one of the 2 newest",
        dg(4): "one of the 2 newest",
        dg(1): "live or previous in the ledger",
        dg(9): "not a bake artifact (no fp-* tag): never collected",
    }
    assert sorted(registry.tagmap) == ["1.0.0", "1.2.0", "fp-1", "fp-4", "fp-5", "handmade"]
    assert result["changed"] is True
    again = run_gc(registry, "127.0.0.1:5000/web", 2, [dg(1)], dry_run=False)
    assert again["changed"] is False and again["deleted"] == []


@pytest.mark.parametrize(("dry_run", "check_mode"), [(True, False), (False, True), (True, True)])
def test_dry_run_and_check_mode_delete_nothing(dry_run, check_mode):
    registry = FakeRegistry(IMAGES)
    result = run_gc(registry, "127.0.0.1:5000/web", 1, [], dry_run=dry_run, check_mode=check_mode)
    assert registry.deleted == [] and result["deleted"] == []
    assert [d["digest"] for d in result["would_delete"]] == [dg(4), dg(3), dg(2), dg(1)]
    assert result["dry_run"] is True
    assert result["changed"] is (not dry_run)  # check mode of a real run reports the change it would make


@pytest.mark.parametrize("keep", [0, -1, True])
def test_keep_below_one_is_refused(keep):
    with pytest.raises(GcError, match="keep must be a whole number of at least 1"):
        plan_gc([], keep, set())


@pytest.mark.parametrize("entry", ["1.2.0", "fp-3", "sha256:abc", "web@latest", "ami-0123456789abcdef0", "x" + dg(1)])
def test_protected_entries_must_be_digests_or_digest_references(entry):
    with pytest.raises(GcError, match="neither a digest"):
        protected_digests([entry])


def test_protected_entries_that_are_not_strings_are_refused():
    with pytest.raises(GcError, match="is not a string"):
        protected_digests([{"eu-west-1": "ami-0123456789abcdef0"}])


def test_protection_is_by_digest_whatever_the_repository():
    assert protected_digests(["other:5000/api@" + dg(1), dg(2)]) == {dg(1), dg(2)}


def test_deletion_disabled_names_the_setting():
    registry = FakeRegistry(IMAGES, delete_status=405)
    with pytest.raises(GcError, match="deletion disabled.*REGISTRY_STORAGE_DELETE_ENABLED=true"):
        run_gc(registry, "127.0.0.1:5000/web", 1, [], dry_run=False)


def test_an_invalid_repository_is_refused_before_any_request():
    with pytest.raises(GcError, match="does not start with a registry host"):
        run_gc(FakeRegistry(IMAGES), "web", 1, [])


def test_an_artifact_record_kept_beside_an_image_is_not_an_artifact_and_goes_with_its_image():
    records = [(dg(102), "", [record_tag(dg(2))]), (dg(105), "", [record_tag(dg(5))])]
    registry = FakeRegistry(IMAGES + records)
    result = run_gc(registry, "127.0.0.1:5000/web", 2, [dg(1)], dry_run=False)
    assert [(d["digest"], d.get("record")) for d in result["deleted"]] == [(dg(3), None), (dg(2), dg(102))]
    assert registry.deleted == [dg(3), dg(2), dg(102)]
    assert dg(102) not in {k["digest"] for k in result["kept"]} and dg(105) not in {k["digest"] for k in result["kept"]}
    assert record_tag(dg(5)) in registry.tagmap and record_tag(dg(2)) not in registry.tagmap


def test_an_sbom_kept_beside_an_image_is_not_an_artifact_and_goes_with_its_image():
    kept_beside = [
        (dg(102), "", [record_tag(dg(2))]),
        (dg(202), "", [sbom_tag(dg(2))]),
        (dg(205), "", [sbom_tag(dg(5))]),
    ]
    registry = FakeRegistry(IMAGES + kept_beside)
    result = run_gc(registry, "127.0.0.1:5000/web", 2, [dg(1)], dry_run=False)
    deleted = {d["digest"]: d for d in result["deleted"]}
    assert set(deleted) == {dg(3), dg(2)}
    assert deleted[dg(2)]["referrers"] == [
        {"tag": record_tag(dg(2)), "digest": dg(102)},
        {"tag": sbom_tag(dg(2)), "digest": dg(202)},
    ]
    assert registry.deleted == [dg(3), dg(2), dg(102), dg(202)]
    listed = {k["digest"] for k in result["kept"]}
    assert not listed & {dg(102), dg(202), dg(205)}
    assert sbom_tag(dg(5)) in registry.tagmap and sbom_tag(dg(2)) not in registry.tagmap
