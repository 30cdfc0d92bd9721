# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Runs immutable.infra.artifact_sbom in process on the controller (plugin_utils/_in_process.py)."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.artifact_sbom"

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import artifact_sbom

        return artifact_sbom
