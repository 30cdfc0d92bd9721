# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options of every module that talks to a container registry (argument spec: _registry.registry_argument_spec)."""

    DOCUMENTATION = r"""
options:
  registry_username:
    description:
      - User for the registry. Requires O(registry_password). Without both, the credentials for the registry in the
        docker config (O(docker_config), C($DOCKER_CONFIG) or C(~/.docker)) are used, if any.
    type: str
  registry_password:
    description: Password (or token) for the registry. Never logged or returned.
    type: str
  docker_config:
    description: Directory of a docker client config (holding C(config.json)) to take the credentials from.
    type: path
  registry_scheme:
    description: V(auto) uses HTTP for localhost and 127.0.0.0/8 and HTTPS for every other registry.
    type: str
    choices: [auto, http, https]
    default: auto
  validate_certs:
    description: Verify the registry's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Timeout of each registry HTTP request, in seconds.
    type: int
    default: 30
"""
