"""The split capture's plan (which paths go to which layer, the kept layer's key) and its answers without an engine."""

from __future__ import annotations

from test__squash import BASE_ID
from test__squash import FakeRunner

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._files import CHANGES_FILE
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._manager import BuilderManager
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._split import kept_key
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._split import kept_ref
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._split import split_paths
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli

CACHE_ID = "sha256:" + "2" * 64
# what the cached roles changed: a package, a key they planted, a config and the change list itself
CACHED = [
    "/usr", "/usr/sbin", "/usr/sbin/nginx", "/opt", "/opt/app", "/opt/app/deploy_key", "/etc", "/etc/shop.ini",
    CHANGES_FILE,
]  # fmt: skip
# what the builder touched since: it removed the key, rewrote the config and wrote a page
TOUCHED = ["/opt", "/opt/app", "/opt/app/deploy_key", "/etc", "/etc/shop.ini", "/srv", "/srv/index.html"]


def test_a_touched_path_is_only_in_the_top_layer_and_the_kept_layer_has_the_rest_with_parents():
    kept, top = split_paths(CACHED, TOUCHED)
    assert kept == ["/usr", "/usr/sbin", "/usr/sbin/nginx"]
    assert top == sorted(TOUCHED)
    # the removed key and the rewritten config are in no kept path: what the seal or a later role changed or
    # removed is read from the builder as it is now, or not at all
    assert "/opt/app/deploy_key" not in kept and "/etc/shop.ini" not in kept
    assert CHANGES_FILE not in kept + top


def test_a_kept_path_under_a_touched_directory_keeps_its_parents_in_the_kept_layer():
    kept, _top = split_paths(["/srv", "/srv/shop", "/srv/shop/conf", "/srv/shop/www"], ["/srv", "/srv/shop/www"])
    assert kept == ["/srv", "/srv/shop", "/srv/shop/conf"]


def test_the_kept_key_depends_on_the_cache_layer_the_touched_cached_paths_and_the_removals_only():
    key = kept_key(CACHE_ID, CACHED, TOUCHED)
    # a base path the builder removed is removed in the kept layer too: another removal, another kept layer
    assert kept_key(CACHE_ID, CACHED, TOUCHED, ["/var/log/apt"]) != key
    # paths touched that the cache layers never changed (a page, a log) do not change what the kept layer holds
    assert kept_key(CACHE_ID, CACHED, TOUCHED + ["/var/log/new.log"]) == key
    assert kept_key(CACHE_ID, CACHED, [p for p in TOUCHED if p != "/etc/shop.ini"]) != key
    assert kept_key("sha256:" + "3" * 64, CACHED, TOUCHED) != key
    assert kept_ref("web", key) == f"immutable-infra-cache/web:kept-{key}"


def test_split_in_check_mode_would_capture_two_layers_and_nothing_runs():
    runner = FakeRunner(CACHE_ID)
    result = BuilderManager(DockerCli(runner), check_mode=True).squash("bld", "base:1", split_app="web")
    assert result == {
        "changed": True, "container": "bld-squash", "squashed": True, "split": True, "declared_config": [],
    }  # fmt: skip
    assert [call[:2] for call in runner.calls] == [["container", "inspect"], ["image", "inspect"]]


def test_split_of_a_builder_started_from_the_base_captures_it_as_it_is():
    runner = FakeRunner(BASE_ID)
    result = BuilderManager(DockerCli(runner)).squash("bld", "base:1", split_app="web", bake_id="b1")
    assert result == {"changed": False, "container": "bld", "squashed": False, "declared_config": [{"user": "svc"}]}
    assert not any(call[0] in ("create", "run", "commit") for call in runner.calls)
