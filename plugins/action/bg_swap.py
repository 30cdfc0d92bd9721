# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Runs immutable.infra.bg_swap in process on the controller (plugin_utils/_in_process.py) but for AWS."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.bg_swap"
    in_process_only_when = {"backend": ("docker", ("docker",))}

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import bg_swap

        return bg_swap
