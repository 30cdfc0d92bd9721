# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that check and normalise the container bake's settings before anything starts (playbooks/bake.yml).

Documented in the sidecar files bake_settings_problems.yml and bake_image_config.yml. The rules live in
module_utils/bake/_settings.py (and the image config table in module_utils/registry/_push.py).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.immutable.infra.plugins.module_utils.bake._settings import image_config
from ansible_collections.immutable.infra.plugins.module_utils.bake._settings import settings_problems
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import PushImageError
from ansible_collections.immutable.infra.plugins.plugin_utils._roles import role_resolver


def bake_settings_problems(
    settings,
    playbook_dir=None,
    roles_path=None,
    hygiene_forbidden=None,
    hygiene_allow=None,
    change_listing="engine",
    integers=None,
    booleans=None,
):
    """Every problem of the resolved bake settings, one message each (empty: the settings are fine)."""
    if not isinstance(settings, dict):
        raise AnsibleFilterError(f"bake_settings_problems: expects the bake settings dictionary, got {settings!r}")
    resolver = role_resolver(playbook_dir, roles_path or []) if playbook_dir else None
    return settings_problems(
        settings,
        resolver=resolver,
        hygiene_forbidden=[] if hygiene_forbidden is None else hygiene_forbidden,
        hygiene_allow=[] if hygiene_allow is None else hygiene_allow,
        change_listing=change_listing,
        integers=integers,
        booleans=booleans,
    )


def bake_image_config(config):
    """bake_image_config with Docker's key spelling mapped to push_image's."""
    try:
        return image_config(config)
    except PushImageError as exc:
        raise AnsibleFilterError(exc.message) from None


class FilterModule:
    def filters(self):
        return {
            "bake_settings_problems": bake_settings_problems,
            "bake_image_config": bake_image_config,
        }
