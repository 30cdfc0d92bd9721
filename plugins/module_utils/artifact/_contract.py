# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The artifact contract: the names every part of the collection agrees on, defined once.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

- the content-addressed tag of an artifact (``fp-<hex>``) and the tags a bake gives it; the tag of its record in
  the registry (``sha256-<hex>.record``) and of its SBOM (``sha256-<hex>.sbom``);
- the labels a bake writes on images and builders, and the labels bg_swap writes on the containers it runs;
- the names of the two colours of an app in an environment (``<app>-<env>-blue|green``);
- where artifact records live (``<artifacts_dir>/<app>/records/<bake_id>.json`` and ``latest.json``).

The record schema itself is documented in docs/artifact-record.md with its JSON Schema in
docs/artifact-record.schema.json.
"""

from __future__ import annotations

import os
import re

# -- tags ----------------------------------------------------------------------------------------------------

FINGERPRINT_TAG_PREFIX = "fp-"


def fingerprint_tag(fingerprint: str) -> str:
    """The registry tag naming an artifact by its content: fp-<hex of the sha256 fingerprint>."""
    return FINGERPRINT_TAG_PREFIX + str(fingerprint).removeprefix("sha256:")


def is_fingerprint_tag(tag: str) -> bool:
    return str(tag).startswith(FINGERPRINT_TAG_PREFIX)


RECORD_TAG_SUFFIX = ".record"


def record_tag(digest: str) -> str:
    """The registry tag of the artifact record of the image with this digest: sha256:<hex> -> sha256-<hex>.record
    (the OCI referrers tag schema's form, docs/artifact-record.md "In the registry")."""
    algorithm, _sep, hexdigest = str(digest).partition(":")
    return f"{algorithm}-{hexdigest}{RECORD_TAG_SUFFIX}"


def is_record_tag(tag: str) -> bool:
    return str(tag).endswith(RECORD_TAG_SUFFIX)


def record_subject(tag: str) -> str:
    """The digest of the image a record tag belongs to (the inverse of record_tag)."""
    algorithm, _sep, hexdigest = str(tag).removesuffix(RECORD_TAG_SUFFIX).partition("-")
    return f"{algorithm}:{hexdigest}"


SBOM_TAG_SUFFIX = ".sbom"


def sbom_tag(digest: str) -> str:
    """The registry tag of the SBOM of the image with this digest: sha256:<hex> -> sha256-<hex>.sbom."""
    algorithm, _sep, hexdigest = str(digest).partition(":")
    return f"{algorithm}-{hexdigest}{SBOM_TAG_SUFFIX}"


def is_sbom_tag(tag: str) -> bool:
    return str(tag).endswith(SBOM_TAG_SUFFIX)


# every tag sha256-<64 hex>.<kind> is something kept beside the image of that digest (its record, its SBOM, its
# signature...), never an artifact of its own
_REFERRER_TAG = re.compile(r"^(sha256)-([0-9a-f]{64})\.([a-z][a-z0-9-]*)$")


def is_referrer_tag(tag: str) -> bool:
    """A tag of the referrers tag schema (sha256-<hex>.<kind>): something kept beside an image, not an artifact."""
    return _REFERRER_TAG.match(str(tag)) is not None


def referrer_subject(tag: str) -> str:
    """The digest of the image a referrer tag (sha256-<hex>.<kind>) belongs to."""
    match = _REFERRER_TAG.match(str(tag))
    return f"{match.group(1)}:{match.group(2)}" if match else ""


def sbom_path(artifacts_dir: str, app: str, digest: str) -> str:
    """Where a bake keeps the SBOM of an image: <artifacts_dir>/<app>/sbom/sha256-<hex>.cdx.json."""
    return os.path.join(artifacts_dir, app, sbom_relative_path(digest))


def sbom_relative_path(digest: str) -> str:
    """The SBOM's path relative to <artifacts_dir>/<app> (what the record's sbom.path holds)."""
    algorithm, _sep, hexdigest = str(digest).partition(":")
    return f"sbom/{algorithm}-{hexdigest}.cdx.json"


def provenance_relative_path(digest: str) -> str:
    """The provenance envelope's path relative to <artifacts_dir>/<app> (the record's signature.provenance): named
    after the image's attestation tag, sha256-<hex>.att."""
    algorithm, _sep, hexdigest = str(digest).partition(":")
    return f"provenance/{algorithm}-{hexdigest}.att.json"


def local_evidence_paths(artifacts_dir: str, app: str, digest: str) -> list:
    """What a bake keeps on its machine beside the records about one image: its SBOM and its provenance envelope
    (gc.yml removes them with the image)."""
    relative = (sbom_relative_path(digest), provenance_relative_path(digest))
    return [os.path.join(artifacts_dir, app, path) for path in relative]


def artifact_tags(fingerprint: str, version: str = "", extra_tags=()) -> list:
    """The tags a bake pushes, the content-addressed one first (a run killed after it leaves a findable image)."""
    return [fingerprint_tag(fingerprint)] + ([version] if version else []) + list(extra_tags)


# -- labels --------------------------------------------------------------------------------------------------

# on baked images and on builders / cache images (bake side)
BAKE_LABEL_PREFIX = "io.immutable-infra"
LABEL_FINGERPRINT = f"{BAKE_LABEL_PREFIX}.fingerprint"
LABEL_SOURCE = f"{BAKE_LABEL_PREFIX}.source"
LABEL_KIND = f"{BAKE_LABEL_PREFIX}.kind"
LABEL_APP = f"{BAKE_LABEL_PREFIX}.app"
LABEL_BAKE_ID = f"{BAKE_LABEL_PREFIX}.bake-id"
LABEL_CREATED = f"{BAKE_LABEL_PREFIX}.created"
LABEL_LAYER = f"{BAKE_LABEL_PREFIX}.layer"
LABEL_ROLE = f"{BAKE_LABEL_PREFIX}.role"
LABEL_OWNER = f"{BAKE_LABEL_PREFIX}.owner"

# on the containers bg_swap runs (deploy side)
DEPLOY_LABEL_PREFIX = "immutable.infra"
DEPLOY_LABEL_APP = f"{DEPLOY_LABEL_PREFIX}.app"
DEPLOY_LABEL_ENV = f"{DEPLOY_LABEL_PREFIX}.env"
DEPLOY_LABEL_COLOUR = f"{DEPLOY_LABEL_PREFIX}.colour"
DEPLOY_LABEL_ARTIFACT = f"{DEPLOY_LABEL_PREFIX}.artifact"

# -- colours -------------------------------------------------------------------------------------------------

COLOURS = ("blue", "green")


def colour_prefix(app: str, env: str) -> str:
    """What the names of both colours of app in env start with."""
    return f"{app}-{env}-"


def colour_name(app: str, env: str, colour: str) -> str:
    """The container (docker) or resource name of one colour of app in env."""
    return f"{colour_prefix(app, env)}{colour}"


# -- records -------------------------------------------------------------------------------------------------

RECORD_SCHEMA_VERSION = 1


def records_dir(artifacts_dir: str, app: str) -> str:
    return os.path.join(artifacts_dir, app, "records")


def record_path(artifacts_dir: str, app: str, bake_id: str) -> str:
    return os.path.join(records_dir(artifacts_dir, app), f"{bake_id}.json")


def latest_path(artifacts_dir: str, app: str) -> str:
    """The copy of the newest record of app (what a deploy without an explicit artifact takes)."""
    return os.path.join(artifacts_dir, app, "latest.json")
