# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Runs immutable.infra.router in process on the controller (plugin_utils/_in_process.py), as a module elsewhere."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.router"

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import router

        return router
