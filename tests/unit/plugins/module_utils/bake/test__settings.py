"""The bake settings check: every rule a later step applies, each broken rule named, all at once."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import RoleResolver
from ansible_collections.immutable.infra.plugins.module_utils.bake._settings import image_config
from ansible_collections.immutable.infra.plugins.module_utils.bake._settings import settings_problems
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import PushImageError

GOOD = {
    "name": "web",
    "kinds": ["container"],
    "version": "",
    "roles": ["app", "immutable.infra.seal"],
    "vars": {},
    "image_config": {},
    "repository": "127.0.0.1:5000/web",
    "extra_tags": [],
}


def problems(**changes):
    return settings_problems(dict(GOOD, **changes))


def test_good_settings_have_no_problem():
    assert problems() == []
    assert problems(version="1.4.0", extra_tags=["latest"], image_config={"cmd": ["run"]}) == []


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("WebApp", "has upper-case letters 'A', 'W': it breaks the rule \"only lower-case letters, digits"),
        ("web app", "has ' ': it breaks the rule \"only lower-case letters"),
        ("-web", "starts with '-': it breaks the rule \"starts with a lower-case letter or digit\""),
        ("w" * 64, 'has 64 characters: it breaks the rule "at most 63 characters"'),
        ("", "bake_name is empty"),
    ],
)
def test_a_bad_name_gets_one_message_naming_the_rule_it_breaks(name, rule):
    found = problems(name=name, repository=f"127.0.0.1:5000/{name}")
    assert len(found) == 1, found  # not every rule at once, and not again as the repository
    assert rule in found[0]


def test_a_bad_name_suggests_a_good_one():
    assert "(e.g. 'webapp')" in problems(name="WebApp", repository="127.0.0.1:5000/WebApp")[0]


def test_dockers_spelling_of_the_image_config_is_accepted_and_mapped():
    docker = {"Cmd": ["nginx"], "Env": ["A=1"], "ExposedPorts": {"8080/tcp": {}}, "WorkingDir": "/srv"}
    assert problems(image_config=docker) == []
    assert image_config(docker) == {"cmd": ["nginx"], "env": {"A": "1"}, "ports": ["8080/tcp"], "workdir": "/srv"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"Cmd": ["x"], "Foo": 1}, "bake_image_config has unknown key(s) Foo: use cmd, entrypoint, env"),
        ({"Cmdd": ["x"]}, "(or Docker's spelling: Cmd, Entrypoint, Env, ExposedPorts"),
        ({"StopSignal": "SIGQUIT"}, "bake_image_config.StopSignal cannot be set"),
        ({"ports": ["http"]}, "bake_image_config: config.ports entry 'http' is invalid"),
        ("cmd: run", "bake_image_config must be a dictionary"),
    ],
)
def test_a_bad_image_config_is_named_before_the_push(config, message):
    found = problems(image_config=config)
    assert len(found) == 1 and message in found[0], found
    if isinstance(config, dict) and "Foo" in config:
        with pytest.raises(PushImageError, match="unknown key"):
            image_config(config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": "1.0/beta"}, "bake_version: invalid tag '1.0/beta'"),
        ({"version": "fp-1"}, "bake_version 'fp-1' starts with 'fp-'"),
        ({"extra_tags": ["ok", "-bad"]}, "bake_extra_tags: invalid tag '-bad'"),
        ({"version": "1.0", "extra_tags": ["1.0"]}, "bake_extra_tags lists a tag twice or repeats bake_version"),
        ({"extra_tags": "latest"}, "bake_extra_tags 'latest' breaks the rule \"a list of tags\""),
        ({"repository": "127.0.0.1:5000/web:1.0"}, "bake_repository (or bake_registry/bake_name): invalid repository"),
        ({"roles": ["app", "immutable.infra.seal", "seal"]}, "bake_roles must not contain the seal role"),
        ({"kinds": ["vm"]}, "bake_kinds ['vm'] breaks the rule"),
        ({"vars": ["a"]}, "bake_vars must be a dictionary"),
    ],
)
def test_each_later_rule_is_applied_now(changes, message):
    found = problems(**changes)
    assert len(found) == 1 and message in found[0], found


def test_hygiene_globs_and_change_listing_are_checked():
    found = settings_problems(GOOD, hygiene_forbidden=["etc/x"], hygiene_allow="/etc/*", change_listing="fast")
    assert found == [
        "bake_hygiene_forbidden entry 'etc/x' is not an absolute path glob: write it as on the builder, e.g. "
        "/etc/app/secret-*.pem",
        "bake_hygiene_allow '/etc/*' breaks the rule \"a list of absolute path globs\"",
        "bake_change_listing 'fast' breaks the rule \"one of engine, overlay2\"",
    ]


def test_numbers_and_booleans_are_checked_as_given_before_int_and_bool_hide_a_typo():
    good = settings_problems(
        GOOD, integers={"bake_cache_keep": "6", "bake_sweep_min_age": 0}, booleans={"bake_cache": "yes", "f": False}
    )
    assert good == []
    found = settings_problems(GOOD, integers={"bake_cache_keep": "six", "n": -1}, booleans={"bake_force": "maybe"})
    assert found == [
        "bake_cache_keep 'six' breaks the rule \"a whole number of 0 or more\"",
        'n -1 breaks the rule "a whole number of 0 or more"',
        "bake_force 'maybe' breaks the rule \"true or false\"",
    ]


def test_roles_are_looked_up_where_the_fingerprint_looks_and_a_missing_one_is_one_line(tmp_path):
    (tmp_path / "app" / "tasks").mkdir(parents=True)
    (tmp_path / "seal" / "tasks").mkdir(parents=True)
    resolver = RoleResolver(search_paths=[str(tmp_path)])
    assert settings_problems(dict(GOOD, roles=["app", "seal"]), resolver=resolver) == []
    found = settings_problems(dict(GOOD, roles=["app", "missing", "seal"]), resolver=resolver)
    assert found == [
        f"role 'missing' not found in {tmp_path}: check the name in bake_roles or add its directory to roles_path"
    ]


def test_every_problem_is_reported_at_once():
    found = problems(name="Web", version="fp-x", image_config={"Bogus": 1}, extra_tags=["a", "a"])
    assert [p.split(" ", 1)[0] for p in found] == ["bake_name", "bake_image_config", "bake_version", "bake_extra_tags"]


@pytest.mark.parametrize("value", [None, "", 1, 30, "30"])
def test_bake_max_age_unset_or_a_whole_number_of_days_is_fine(value):
    assert problems(max_age=value) == []


@pytest.mark.parametrize("value", ["thirty", 0, "0", -1, 1.5, True])
def test_a_bad_bake_max_age_names_the_rule(value):
    assert problems(max_age=value) == [
        f'bake_max_age {value!r} breaks the rule "a whole number of days of 1 or more (unset: a cached artifact is'
        ' reused whatever its age)"'
    ]
