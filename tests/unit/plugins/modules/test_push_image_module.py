"""Unit tests for the push_image and registry_image_info module files: docs match argument_spec, main() errors.

The behaviour against Docker and the registry is covered in tests/integration/test_push_image.py.
"""

from __future__ import annotations

import json

import pytest
import yaml
from ansible.module_utils.testing import patch_module_args

from ansible_collections.immutable.infra.plugins.doc_fragments.registry import ModuleDocFragment as RegistryFragment
from ansible_collections.immutable.infra.plugins.modules import push_image
from ansible_collections.immutable.infra.plugins.modules import registry_image_info

PASSWORD = "unit-test-Pa55word"


def doc_options(module):
    """The module's documented options, with those of the doc fragments it extends."""
    doc = yaml.safe_load(module.DOCUMENTATION)
    options = dict(doc["options"])
    if "immutable.infra.registry" in doc.get("extends_documentation_fragment", []):
        options.update(yaml.safe_load(RegistryFragment.DOCUMENTATION)["options"])
    return options


def compare(spec, doc, path=""):
    assert set(spec) == set(doc), f"options differ at {path or 'top level'}"
    for name, option in spec.items():
        documented = doc[name]
        where = f"{path}{name}"
        assert documented.get("type", "str") == option.get("type", "str"), where
        assert documented.get("required", False) == option.get("required", False), where
        assert documented.get("default") == option.get("default"), where
        assert documented.get("elements") == option.get("elements"), where
        assert documented.get("choices") == option.get("choices"), where
        assert bool(documented.get("no_log")) is False  # no_log lives in the spec, not in docs
        if option.get("options"):
            compare(option["options"], documented["suboptions"], where + ".")


def test_push_image_docs_match_argument_spec():
    compare(push_image.argument_spec(), doc_options(push_image))
    assert push_image.argument_spec()["registry_password"]["no_log"] is True


def test_registry_image_info_docs_list_every_option():
    documented = doc_options(registry_image_info)
    assert set(documented) == {
        "repository", "tags", "digest", "registry_username", "registry_password", "docker_config",
        "registry_scheme", "validate_certs", "timeout",
    }  # fmt: skip


@pytest.mark.parametrize("module", [push_image, registry_image_info])
def test_examples_and_return_are_valid_yaml(module):
    assert yaml.safe_load(module.EXAMPLES)
    assert yaml.safe_load(module.RETURN)


def run_main(module, args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def test_invalid_repository_fails_with_the_bad_part(capsys):
    result = run_main(
        push_image,
        {"container": "b", "repository": "127.0.0.1:5000/Web", "tags": ["1"], "registry_username": "u",
         "registry_password": PASSWORD},
        capsys,
    )  # fmt: skip
    assert result["failed"] is True
    assert "path component 'Web'" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_container_and_image_are_exclusive(capsys):
    result = run_main(
        push_image, {"container": "b", "image": "i", "repository": "127.0.0.1:5000/w", "tags": ["1"]}, capsys
    )
    assert "mutually exclusive" in result["msg"]


def test_registry_info_unreachable_names_address_and_fix(capsys):
    result = run_main(
        registry_image_info,
        {"repository": "127.0.0.1:9/web", "tags": ["1"], "registry_username": "u", "registry_password": PASSWORD,
         "timeout": 2},
        capsys,
    )  # fmt: skip
    assert result["failed"] is True
    assert result["msg"].startswith("registry unreachable at 127.0.0.1:9")
    assert "start it or check the address" in result["msg"]
    assert PASSWORD not in json.dumps(result)


def test_registry_info_needs_tags_or_digest(capsys):
    result = run_main(registry_image_info, {"repository": "127.0.0.1:5000/web"}, capsys)
    assert "one of the following is required: tags, digest" in result["msg"]
