# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Engine API implementation of the Docker engine interface (_interface.py), over the local daemon's socket.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

A `docker inspect` costs 30-40 ms of CLI start-up on a small machine, the API answer 1-3 ms; bg_swap's health gate
and the bake's cache look-ups inspect many times. So the reads (inspect, changes, listings, path checks, info) ask
the socket; anything but a clear answer (200, or 404 where "not there" is an answer) goes to the docker CLI, so
errors read the same either way. Commands that change things, stream a tar or need registry credentials run
through the CLI.
"""

from __future__ import annotations

import json
from urllib.parse import quote
from urllib.parse import urlencode

from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import CHANGE_KINDS
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerEngine


def _name(obj):
    return quote(str(obj), safe="/:@")


def _filters(**filters):
    wanted = {key: [value] for key, value in filters.items() if value}
    return f"&{urlencode({'filters': json.dumps(wanted)})}" if wanted else ""


def inspect_through_socket(socket, obj, kind):
    """(True, the inspected container or image or None when missing), or (False, None) when the socket did not
    answer clearly (or kind is not "container" or "image") and the CLI must be asked."""
    if kind not in ("container", "image"):
        return False, None
    answer = socket.get_json(f"/{kind}s/{_name(obj)}/json")
    if answer is not None and answer[0] == 404:
        return True, None
    if answer is not None and answer[0] == 200 and isinstance(answer[1], dict):
        return True, answer[1]
    return False, None


class EngineApi(DockerEngine):
    """Docker through the Engine API on the local unix socket (socket: an EngineSocket), the CLI (cli: a DockerCli)
    for what the socket does not answer and for the commands listed in the module docstring."""

    local_daemon = True

    def __init__(self, socket, cli):
        self.socket = socket
        self.cli = cli
        self.docker_bin = cli.docker_bin

    def add_secret(self, value):
        self.cli.add_secret(value)

    def mask(self, text):
        return self.cli.mask(text)

    def run(self, args, data=None, env=None, check=True):
        return self.cli.run(args, data=data, env=env, check=check)

    # -- reading -------------------------------------------------------------------------------------------------

    def inspect(self, obj, kind=None):
        answered, data = inspect_through_socket(self.socket, obj, kind)
        return data if answered else self.cli.inspect(obj, kind=kind)

    def changes(self, container):
        answer = self.socket.get_json(f"/containers/{_name(container)}/changes")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], (list, type(None))):
            return self.cli.changes(container)
        return [(CHANGE_KINDS.get(item.get("Kind"), "C"), item["Path"]) for item in answer[1] or []]

    def list_containers(self, label=None, name=None):
        answer = self.socket.get_json(f"/containers/json?all=1{_filters(label=label, name=name)}")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], list):
            return self.cli.list_containers(label=label, name=name)
        return [
            {"name": (row.get("Names") or ["/"])[0].lstrip("/"), "labels": row.get("Labels") or {}} for row in answer[1]
        ]

    def list_images(self, label=None, reference=None):
        answer = self.socket.get_json(f"/images/json?{_filters(label=label, reference=reference).lstrip('&')}")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], list):
            return self.cli.list_images(label=label, reference=reference)
        rows = []
        for image in answer[1]:
            for repo_tag in image.get("RepoTags") or []:
                repository, _sep, tag = repo_tag.rpartition(":")
                if not repository or tag in ("", "<none>"):
                    continue
                if reference and "*" not in reference and ":" not in reference.rpartition("/")[2]:
                    if repository != reference:
                        continue  # another name of the same image
                rows.append(
                    {"id": image.get("Id"), "repository": repository, "tag": tag, "created": image.get("Created", 0)}
                )
        return rows

    def path_exists(self, container, path):
        answer = self.socket.head(f"/containers/{_name(container)}/archive?{urlencode({'path': path})}")
        if answer is None or answer[0] not in (200, 404):
            return None
        return answer[0] == 200

    def info(self):
        answer = self.socket.get_json("/info")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            return self.cli.info()
        return answer[1]

    # -- changing: through the CLI -------------------------------------------------------------------------------

    def run_container(self, image, command=(), name=None, labels=None, entrypoint=None, network=None, start=True):
        return self.cli.run_container(
            image, command, name=name, labels=labels, entrypoint=entrypoint, network=network, start=start
        )

    def start(self, container):
        self.cli.start(container)

    def exec(self, container, argv, data=None):
        return self.cli.exec(container, argv, data=data)

    def exec_to_file(self, container, argv, path, timeout=None):
        self.cli.exec_to_file(container, argv, path, timeout=timeout)

    def copy_paths(self, source, paths, target):
        self.cli.copy_paths(source, paths, target)

    def commit(self, container, changes=(), message=None, pause=True):
        return self.cli.commit(container, changes=changes, message=message, pause=pause)

    def create(self, image, name=None, labels=None):
        return self.cli.create(image, name=name, labels=labels)

    def remove_container(self, name, force=True):
        self.cli.remove_container(name, force=force)

    def remove_containers(self, names):
        self.cli.remove_containers(names)

    def tag(self, source, target):
        self.cli.tag(source, target)

    def remove_image(self, ref, force=False):
        self.cli.remove_image(ref, force=force)

    def push(self, ref, env=None):
        return self.cli.push(ref, env=env)
