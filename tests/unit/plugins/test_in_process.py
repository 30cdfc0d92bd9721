"""plugin_utils/_in_process.py: validation and no_log values as AnsibleModule has them, without its private parts.

tests/integration/test_in_process_parity.py runs the modules both ways through ansible-playbook; these tests pin
the pieces on their own.
"""

from __future__ import annotations

import importlib

import pytest

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import ModuleDone
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import add_path_info
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import module_result
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import no_log_values
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import validate_args

IN_PROCESS_MODULES = [
    "artifact_record",
    "artifact_sbom",
    "artifact_sign",
    "artifact_verify",
    "bake_builder",
    "bg_swap",
    "ledger",
    "ledger_info",
    "promotion",
    "push_image",
    "registry_image_info",
]
WARNING_OPTIONS = ("aliases", "deprecated_aliases", "removed_in_version", "removed_at_date")


def options_of(spec, prefix=""):
    for name, option in spec.items():
        yield f"{prefix}{name}", option
        if option.get("options"):
            yield from options_of(option["options"], f"{prefix}{name}.")


@pytest.mark.parametrize("name", IN_PROCESS_MODULES)
def test_modules_run_in_process_declare_no_option_whose_validation_warns(name):
    # ArgumentSpecValidator keeps alias and deprecation warnings private; AnsibleModule would report them
    module_file = importlib.import_module(f"ansible_collections.immutable.infra.plugins.modules.{name}")
    warned = [path for path, option in options_of(module_file.ARGUMENT_SPEC) if set(option) & set(WARNING_OPTIONS)]
    assert warned == [], f"{name}: options with aliases or deprecations cannot run in process: {warned}"


def test_no_log_values_cover_suboptions_containers_and_numbers():
    spec = {
        "password": {"type": "str", "no_log": True},
        "env": {"type": "dict", "no_log": True},
        "pin": {"type": "int", "no_log": True},
        "flag": {"type": "bool", "no_log": True},
        "empty": {"type": "str", "no_log": True},
        "plain": {"type": "str"},
        "nested": {"type": "list", "elements": "dict", "options": {"token": {"type": "str", "no_log": True}}},
    }
    params = {
        "password": "s3cret",
        "env": {"A": "one", "B": ["two", 3]},
        "pin": 1234,
        "flag": True,
        "empty": "",
        "plain": "visible",
        "nested": [{"token": "t1"}, {"token": "t2"}],
    }
    assert no_log_values(spec, params) == {"s3cret", "one", "two", "3", "1234", "t1", "t2"}


def test_a_refused_argument_fails_as_ansible_module_does_with_the_secret_hidden():
    from ansible_collections.immutable.infra.plugins.modules import registry_image_info

    args = {
        "repository": "127.0.0.1:5000/x",
        "tags": ["1"],
        "registry_username": "u",
        "registry_password": "s3cret-pw",
        "bogus": 1,
    }
    params, hidden, failed = validate_args("immutable.infra.registry_image_info", registry_image_info, args)
    assert params is None and "s3cret-pw" in hidden
    assert failed["failed"] is True
    assert failed["msg"].startswith("Unsupported parameters for (immutable.infra.registry_image_info) module: bogus.")
    assert failed["invocation"]["module_args"]["registry_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert "s3cret-pw" not in repr(failed)


def test_module_result_hides_values_but_keeps_top_level_booleans():
    result = module_result({"changed": True, "failed": None, "msg": "pw=True", "nested": {"ok": "True"}}, {"True"})
    assert result["changed"] is True and result["failed"] is None
    assert "True" not in result["msg"] and result["nested"]["ok"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


def test_a_result_naming_a_file_gets_its_attributes(tmp_path):
    target = tmp_path / "record.json"
    target.write_text("{}")
    target.chmod(0o640)
    result = add_path_info({"path": str(target)})
    assert result["mode"] == "0640" and result["state"] == "file" and result["size"] == 2
    assert {"uid", "gid", "owner", "group"} <= set(result)
    assert add_path_info({"path": str(tmp_path / "missing")}) == {"path": str(tmp_path / "missing")}


def test_module_done_carries_the_result():
    assert ModuleDone({"msg": "m", "changed": False}).result == {"msg": "m", "changed": False}
