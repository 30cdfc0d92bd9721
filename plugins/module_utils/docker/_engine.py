# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""docker_engine(): the one place that decides how the collection reaches Docker.

PRIVATE to the collection: do not import it from other collections, it may change without notice.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.docker._api import EngineApi
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import DockerCli
from ansible_collections.immutable.infra.plugins.module_utils.docker._cli import run_locally
from ansible_collections.immutable.infra.plugins.module_utils.docker._socket import engine_socket


def docker_engine(run_command=None, docker_bin="docker", secrets=None, environ=None):
    """The Docker engine interface (_interface.DockerEngine) for this machine.

    The rule: the Engine API on the local unix socket exactly where the docker CLI would use that socket (the CLI
    is `docker`, DOCKER_HOST unset or unix://, the default context: engine_socket()); the CLI everywhere else. The
    Engine API implementation itself asks the CLI whenever the socket gives anything but a clear answer.
    run_command: AnsibleModule.run_command or a callable of that shape, for the CLI; run_locally() when not given
    (controller-side code without a module).
    """
    cli = DockerCli(run_command or run_locally, docker_bin=docker_bin, secrets=secrets)
    socket = engine_socket(docker_bin, environ)
    return EngineApi(socket, cli) if socket is not None else cli
