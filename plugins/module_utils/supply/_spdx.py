# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""An artifact's SBOM in SPDX 2.3 JSON, made by syft from the CycloneDX SBOM the bake keeps, deterministic.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The bake keeps one SBOM per artifact, CycloneDX (_sbom.py). Who needs SPDX gets it from that document with
``syft convert`` (the same syft, offline, about 0.2 s): every package with its version, licences and purl
(``externalRefs``). syft writes a random ``documentNamespace`` and the time of the conversion; both are made
deterministic here (a ``urn:uuid`` derived from the image ID, ``created`` = the image's creation label), packages and
relationships sorted, keys sorted, compact: the same artifact always gives the same SPDX bytes.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid

from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SYFT_FIX
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import find_syft
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import syft_output

SPDX_FORMAT = "spdx-json"
CREATED_PROPERTY = "syft:image:labels:org.opencontainers.image.created"
NO_TIME = "1970-01-01T00:00:00Z"


def _created(cyclonedx):
    for prop in (cyclonedx.get("metadata") or {}).get("properties") or []:
        if prop.get("name") == CREATED_PROPERTY and prop.get("value"):
            return prop["value"]
    return NO_TIME


def normalise_spdx(raw, cyclonedx, image_id) -> bytes:
    """The same artifact always gives the same SPDX bytes (see the module's docstring)."""
    try:
        document = json.loads(raw)
    except ValueError:
        raise SbomError(f"syft convert wrote no JSON for {image_id}: {SYFT_FIX}") from None
    if not isinstance(document, dict) or not str(document.get("spdxVersion", "")).startswith("SPDX-"):
        raise SbomError(f"syft convert wrote something else than an SPDX document for {image_id}")
    document["documentNamespace"] = "urn:uuid:" + str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"immutable-infra:spdx:{image_id}")
    )
    creation = dict(document.get("creationInfo") or {})
    creation["created"] = _created(cyclonedx)
    document["creationInfo"] = creation
    document["packages"] = sorted(document.get("packages") or [], key=lambda p: str(p.get("SPDXID", "")))
    document["relationships"] = sorted(
        document.get("relationships") or [],
        key=lambda r: (
            str(r.get("spdxElementId", "")),
            str(r.get("relationshipType", "")),
            str(r.get("relatedSpdxElement", "")),
        ),
    )
    if isinstance(document.get("hasExtractedLicensingInfos"), list):
        document["hasExtractedLicensingInfos"] = sorted(
            document["hasExtractedLicensingInfos"], key=lambda info: str(info.get("licenseId", ""))
        )
    return (json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def spdx_from_cyclonedx(data: bytes, image_id, syft=None, timeout=300) -> bytes:
    """The SPDX 2.3 JSON bytes of an artifact from its CycloneDX SBOM bytes (syft convert, offline, normalised)."""
    syft = syft or find_syft()
    with tempfile.TemporaryDirectory(prefix="immutable-infra-spdx-") as work:
        source = os.path.join(work, "sbom.cdx.json")
        out = os.path.join(work, "sbom.spdx.json")
        with open(source, "wb") as handle:
            handle.write(data)
        args = ["convert", "-q", source, "-o", f"{SPDX_FORMAT}={out}"]
        env = dict(os.environ, SYFT_CHECK_FOR_APP_UPDATE="false")
        raw = syft_output(syft, args, out, env, timeout, f"syft could not convert the SBOM of {image_id} to SPDX")
    return normalise_spdx(raw, json.loads(data), image_id)
