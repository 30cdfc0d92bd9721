# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Where a bake's roles are found, the way ansible-playbook looks for them (controller side).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Used by the bake_fingerprint lookup (which hashes the roles) and the bake_settings_problems filter (which checks
that they exist before anything starts), so both search the same places.
"""

from __future__ import annotations

import importlib
import os

from ansible import constants as C

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import RoleResolver

try:
    from ansible.utils.collection_loader import AnsibleCollectionConfig
except ImportError:  # pragma: no cover - present in every supported ansible-core
    AnsibleCollectionConfig = None


def _loader_role_path(fqcn):
    """Where ns.coll.role lives: roles/<role> of the collection package Ansible's collection loader imports as
    ansible_collections.<ns>.<coll> (None when the collection or the role does not exist)."""
    parts = fqcn.split(".")
    if len(parts) != 3:
        return None
    try:
        package = importlib.import_module(f"ansible_collections.{parts[0]}.{parts[1]}")
    except ImportError:
        return None
    for root in getattr(package, "__path__", None) or []:
        path = os.path.join(root, "roles", parts[2])
        if os.path.isdir(path):
            return path
    return None


def role_resolver(playbook_dir, roles_path=()):
    """A RoleResolver searching <playbook_dir>/roles, roles_path, the configured roles path, then playbook_dir;
    collection roles through Ansible's collection loader and the collections path."""
    playbook_dir = str(playbook_dir)
    search_paths = [os.path.join(playbook_dir, "roles")]
    search_paths += [str(p) for p in roles_path or []]
    search_paths += list(C.DEFAULT_ROLES_PATH or [])
    search_paths.append(playbook_dir)
    collection_paths = list(AnsibleCollectionConfig.collection_paths or []) if AnsibleCollectionConfig else []
    return RoleResolver(
        search_paths=search_paths,
        collection_paths=collection_paths,
        collection_role_finder=_loader_role_path,
        base_dir=playbook_dir,
    )
