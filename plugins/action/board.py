# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Runs immutable.infra.board in process on the controller (plugin_utils/_in_process.py) but for SSM."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.board"
    in_process_only_when = {"backend": ("file", ("file",))}

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import board

        return board
