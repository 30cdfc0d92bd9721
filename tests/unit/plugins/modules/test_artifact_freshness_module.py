"""Unit tests for the artifact_freshness module: its input checks (before anything is read), the report from local
records and SBOMs against a file:// mirror, and the thresholds (fail, or report with fail_on_threshold=false).
The module runs in-process through ansible's patch_module_args; the integration test covers the registry and HTTP."""

from __future__ import annotations

import json
import lzma

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.modules import artifact_freshness

DIGEST = "sha256:" + "e" * 64
IMAGE = "127.0.0.1:5000/web@" + DIGEST


def run(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit) as info:
        artifact_freshness.main()
    out = json.loads(capsys.readouterr().out)
    out["rc"] = info.value.code
    return out


@pytest.fixture
def local(tmp_path):
    """artifacts/web with a record and an SBOM of IMAGE (probe 1.0-1), a file:// mirror with probe 1.0-2."""
    artifacts = tmp_path / "artifacts"
    (artifacts / "web" / "records").mkdir(parents=True)
    (artifacts / "web" / "records" / "b1.json").write_text(json.dumps({"id": IMAGE, "created": "2026-11-01T00:00:00Z"}))
    (artifacts / "web" / "sbom").mkdir()
    document = {
        "bomFormat": "CycloneDX",
        "metadata": {"component": {"name": "127.0.0.1:5000/web", "version": DIGEST}},
        "components": [
            {"name": "probe", "version": "1.0-1", "purl": "pkg:deb/debian/probe@1.0-1?arch=amd64"},
            {
                "name": "libc6",
                "version": "2.36-9+deb12u10",
                "purl": "pkg:deb/debian/libc6@2.36-9%2Bdeb12u10?arch=amd64",
            },
        ],
    }
    (artifacts / "web" / "sbom" / f"{DIGEST.replace(':', '-')}.cdx.json").write_text(json.dumps(document))
    index = tmp_path / "mirror" / "dists" / "bookworm" / "main" / "binary-amd64"
    index.mkdir(parents=True)
    packages = b"Package: probe\nVersion: 1.0-2\n\nPackage: libc6\nVersion: 2.36-9+deb12u10\n\n"
    (index / "Packages.xz").write_bytes(lzma.compress(packages))
    return {
        "artifacts": [{"env": "dev", "id": None}, {"env": "prod", "id": IMAGE}],
        "artifacts_dir": str(artifacts),
        "app": "web",
        "sources": [f"file://{tmp_path / 'mirror'} bookworm main"],
    }


def test_the_report_names_the_outdated_package_with_both_versions(local, capsys, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T00:00:00Z")
    out = run(local, capsys)
    assert out["rc"] == 0 and not out["changed"] and out["problems"] == []
    assert out["summary"] == [
        "dev: nothing live",
        f"prod: {IMAGE} 33 days old, 1 of 2 packages outdated",
        "  probe 1.0-1 -> 1.0-2 (bookworm)",
    ]
    prod = out["artifacts"][1]
    assert prod["age_days"] == 33.0 and prod["arch"] == "amd64"
    assert prod["outdated"] == [
        {"name": "probe", "installed": "1.0-1", "candidate": "1.0-2", "suite": "bookworm", "arch": "amd64"}
    ]


def test_past_a_threshold_it_fails_naming_env_artifact_and_threshold(local, capsys, monkeypatch):
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T00:00:00Z")
    out = run(dict(local, max_age_days=30, max_outdated=0), capsys)
    assert out["failed"] and out["rc"] != 0
    assert f"prod: {IMAGE} is 33 days old (baked 2026-11-01T00:00:00Z), older than max_age_days 30" in out["msg"]
    assert f"prod: {IMAGE} has 1 outdated package, more than max_outdated 0" in out["msg"]
    assert len(out["problems"]) == 2 and out["summary"]
    # the playbook reports and decides itself
    out = run(dict(local, max_age_days=40, max_outdated=0, fail_on_threshold=False), capsys)
    assert out["rc"] == 0 and len(out["problems"]) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_age_days": -1}, "max_age_days -1 is negative"),
        ({"artifacts": [{"id": IMAGE}]}, "artifacts[0] has no env"),
        ({"sources": ["http://mirror/debian bookworm"]}, "needs a URL, a suite and at least one component"),
        ({"sources": None, "apt_dir": "/nonexistent"}, "no Debian mirror to compare with"),
        ({"artifacts": [{"env": "prod", "id": "web:latest"}]}, "prod: artifact id 'web:latest' is not immutable"),
    ],
)
def test_bad_input_fails_early_naming_it(local, capsys, change, message):
    out = run(dict(local, **change), capsys)
    assert out["failed"] and message in out["msg"], out["msg"]
