# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The per-role layer cache of the container bake: names and plans (pure).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Cache images live in their own repository (``immutable-infra-cache/<app>``), are tagged with the layer fingerprint
and carry ``io.immutable-infra.kind=cache``, so they are never confused with released artifacts, which live in a
registry repository and are addressed by digest.
"""

from __future__ import annotations

import re

CACHE_REPOSITORY_PREFIX = "immutable-infra-cache/"
APP_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class BuilderError(Exception):
    """A builder or cache operation failed; the message names the problem and the fix."""


def validate_app(app):
    if not APP_NAME.match(app or ""):
        raise BuilderError(
            f"app name {app!r} is invalid: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a"
            " letter or digit"
        )


def cache_repository(app):
    return CACHE_REPOSITORY_PREFIX + app


def fingerprint_hex(fingerprint):
    value = str(fingerprint)
    value = value.split(":", 1)[1] if value.startswith("sha256:") else value
    if not re.match(r"^[0-9a-f]{64}$", value):
        raise BuilderError(
            f"layer fingerprint {fingerprint!r} is not a sha256 digest: pass the bake_fingerprint layers"
        )
    return value


def cache_ref(app, fingerprint):
    return f"{cache_repository(app)}:{fingerprint_hex(fingerprint)}"


def plan_start_layer(layers, available):
    """How many leading layers can be reused: the longest prefix whose cache images all exist.

    layers: [{"role": ..., "fingerprint": ...}] in bake order; available: set of fingerprint hex strings present.
    A gap ends the prefix: layer k's image contains layers 0..k, so only a contiguous prefix is meaningful, and the
    deepest image of that prefix is where the builder starts.
    """
    reused = 0
    for layer in layers:
        if fingerprint_hex(layer["fingerprint"]) not in available:
            break
        reused += 1
    return reused


def plan_prune(images, keep_fingerprints, keep_newest):
    """Which cache images to remove: all but the ones on the current path and the newest `keep_newest` others."""
    keep = {fingerprint_hex(fp) for fp in keep_fingerprints}
    others = sorted((img for img in images if img["tag"] not in keep), key=lambda img: img["created"], reverse=True)
    return list(others[keep_newest:])
