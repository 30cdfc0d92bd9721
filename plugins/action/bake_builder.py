# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Runs immutable.infra.bake_builder in process on the controller (plugin_utils/_in_process.py).

With start_channel, a started builder also gets the relay of the immutable.infra.builder connection, started in
the background: the first task over that connection then finds it (or waits for it) instead of starting it.
"""

from __future__ import annotations

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import ChannelError
from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import Client
from ansible_collections.immutable.infra.plugins.plugin_utils._in_process import InProcessModuleAction

display = Display()


class ActionModule(InProcessModuleAction):
    module_name = "immutable.infra.bake_builder"

    @staticmethod
    def module_file():
        from ansible_collections.immutable.infra.plugins.modules import bake_builder

        return bake_builder

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        if (
            boolean(args.get("start_channel", False), strict=False)
            and args.get("state", "started") == "started"
            and not result.get("failed")
            and not self._play_context.check_mode
            and result.get("container")
        ):
            try:
                Client(docker="docker", container=result["container"]).start_in_background()
            except (OSError, ChannelError) as exc:
                # only a head start: the connection starts the relay itself when this did not
                display.vvv(f"builder channel to {result['container']} not started ahead: {exc}")
        return result
