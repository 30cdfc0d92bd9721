"""The bake filters' own behaviour; the rules are tested in module_utils/bake/test__settings.py, the role search (it
needs Ansible's collection loader) in a real run by tests/integration/test_bake_settings.py."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.immutable.infra.plugins.filter import bake

SETTINGS = {
    "name": "web",
    "kinds": ["container"],
    "version": "",
    "roles": ["app", "immutable.infra.seal"],
    "vars": {},
    "image_config": {},
    "repository": "127.0.0.1:5000/web",
    "extra_tags": [],
}


def test_the_settings_must_be_a_dictionary():
    with pytest.raises(AnsibleFilterError, match="expects the bake settings dictionary"):
        bake.bake_settings_problems("web")


def test_dockers_spelling_is_mapped_and_an_unknown_key_is_a_filter_error():
    assert bake.bake_image_config({"Cmd": ["run"], "User": "app"}) == {"cmd": ["run"], "user": "app"}
    with pytest.raises(AnsibleFilterError, match="bake_image_config has unknown key.s. Comand"):
        bake.bake_image_config({"Comand": ["run"]})
