"""The layer cache's names and plans (pure functions)."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import cache_ref
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import plan_prune
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import plan_start_layer
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import validate_app

FP = ["sha256:" + (c * 64) for c in "abcd"]
LAYERS = [{"role": f"r{i}", "fingerprint": fp} for i, fp in enumerate(FP)]


def hexes(*idx):
    return {FP[i].split(":")[1] for i in idx}


@pytest.mark.parametrize(
    ("available", "expected"),
    [(set(), 0), (hexes(0), 1), (hexes(0, 1, 2), 3), (hexes(0, 1, 2, 3), 4), (hexes(1, 2), 0), (hexes(0, 2), 1)],
)
def test_only_a_contiguous_prefix_of_layers_is_reused(available, expected):
    assert plan_start_layer(LAYERS, available) == expected


def test_a_layer_fingerprint_must_be_a_digest():
    with pytest.raises(BuilderError, match="not a sha256 digest"):
        plan_start_layer([{"role": "x", "fingerprint": "latest"}], set())


def test_cache_images_are_named_by_app_and_layer_fingerprint():
    assert cache_ref("web", FP[0]) == "immutable-infra-cache/web:" + "a" * 64
    assert cache_ref("web", "b" * 64) == "immutable-infra-cache/web:" + "b" * 64


def test_invalid_app_names_are_refused():
    with pytest.raises(BuilderError, match="app name 'Web App' is invalid"):
        validate_app("Web App")
    validate_app("web.api_2")


def test_prune_keeps_the_current_path_and_the_newest_others():
    images = [{"tag": h, "ref": f"c:{h}", "created": 1000 + i} for i, h in enumerate(sorted(hexes(0, 1, 2, 3)))]
    doomed = plan_prune(images, keep_fingerprints=[FP[0]], keep_newest=1)
    kept = {img["tag"] for img in images} - {img["tag"] for img in doomed}
    assert FP[0].split(":")[1] in kept
    assert len(kept) == 2  # the current path + the newest other
    newest_other = max((img for img in images if img["tag"] != FP[0].split(":")[1]), key=lambda i: i["created"])
    assert newest_other["tag"] in kept
