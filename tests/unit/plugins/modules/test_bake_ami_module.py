"""Unit tests for plugins/modules/bake_ami.py: the documentation matches argument_spec, main() stays thin."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from ansible_collections.immutable.infra.plugins.modules import bake_ami

SOURCE = Path(bake_ami.__file__).read_text()


def argument_spec() -> dict:
    """The argument_spec dict literal of main(), evaluated without running the module."""
    tree = ast.parse(SOURCE)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assign = next(n for n in main.body if isinstance(n, ast.Assign) and n.targets[0].id == "argument_spec")
    return eval(compile(ast.Expression(assign.value), "spec", "eval"), {"dict": dict, "STATES": bake_ami.STATES})  # noqa: S307


def test_every_option_documented_with_matching_type_and_default():
    options = yaml.safe_load(bake_ami.DOCUMENTATION)["options"]
    spec = argument_spec()
    assert set(options) == set(spec)
    for name, arg in spec.items():
        doc = options[name]
        assert doc["type"] == arg["type"], name
        assert doc.get("default") == arg.get("default"), name
        assert doc.get("choices") == arg.get("choices"), name
        assert bool(doc.get("required", False)) == bool(arg.get("required", False)), name
        if "options" in arg:
            for sub, sub_arg in arg["options"].items():
                sub_doc = doc["suboptions"][sub]
                assert sub_doc["type"] == sub_arg["type"] and sub_doc.get("default") == sub_arg.get("default"), sub


def test_examples_and_return_are_yaml_and_examples_use_fqcn():
    examples = yaml.safe_load(bake_ami.EXAMPLES)
    assert all("immutable.infra.bake_ami" in task for task in examples)
    assert "amis" in yaml.safe_load(bake_ami.RETURN)


def test_known_regions_come_from_botocore():
    regions = bake_ami.known_regions()
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= regions
    assert "mars-1" not in regions


def test_main_is_thin():
    tree = ast.parse(SOURCE)
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.end_lineno - main.lineno < 90
