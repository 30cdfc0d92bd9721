# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: builder
short_description: Run tasks in a bake's builder container over one persistent channel
version_added: 0.2.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - The connection C(immutable.infra.bake) uses for its builder container. It reaches the same container as
    C(community.docker.docker) would, with the same result for every task, but faster.
  - The first task starts one C(docker exec -i <container> python3) agent and a small relay on the controller that
    listens on a unix socket in a private 0700 directory under the temporary directory. Every later task sends its
    commands and files through that socket, so a task costs no C(docker exec), no docker CLI start-up and no
    shell per command (the SSH ControlPersist idea for containers).
  - The relay stops when the builder is removed, after O(idle_timeout) seconds without a request, or on any error.
    It logs only start and stop events, never commands or data, next to its socket.
  - When the container has no Python for the agent, every command falls back to one C(docker exec) each, so
    C(ansible.builtin.raw) still works to install one.
  - Privilege escalation that asks for a password is not supported (builders run as root).
options:
  remote_addr:
    description: The name or ID of the container.
    default: inventory_hostname
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_docker_host
  remote_user:
    description: The user to run as inside the container; by default the container's own user.
    type: str
    vars:
      - name: ansible_user
      - name: ansible_docker_user
  docker_binary:
    description: The docker CLI used to start the agent (it honours C(DOCKER_HOST) and C(DOCKER_CONTEXT)).
    type: str
    default: docker
    vars:
      - name: ansible_builder_docker_binary
  agent_python:
    description: The Python in the container that runs the agent.
    type: str
    default: python3
    vars:
      - name: ansible_builder_agent_python
  idle_timeout:
    description: Seconds without a request after which the relay and its agent stop (the next task starts them again).
    type: int
    default: 60
    vars:
      - name: ansible_builder_idle_timeout
notes:
  - Check it against C(community.docker.docker) with the collection's integration tests; the bake benchmark
    (C(bench/bake_container.py)) shows what it saves.
"""

import contextlib
import os
import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure
from ansible.errors import AnsibleError
from ansible.errors import AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import ChannelError
from ansible_collections.immutable.infra.plugins.plugin_utils._builder_channel import Client

display = Display()


class Connection(ConnectionBase):
    """Tasks in a builder container through one agent per builder (see DOCUMENTATION)."""

    transport = "immutable.infra.builder"
    has_pipelining = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._client = None
        self._direct = False

    def _connect(self):
        if self._connected:
            return self
        container = self.get_option("remote_addr")
        self._client = Client(
            docker=self.get_option("docker_binary"),
            container=container,
            user=self.get_option("remote_user"),
            python=self.get_option("agent_python"),
            idle_timeout=self.get_option("idle_timeout"),
        )
        try:
            answer, _unused = self._client.request({"op": "ping"})
            display.vvv(f"builder channel to {container}: agent pid {answer.get('pid')}", host=container)
        except ChannelError as exc:
            # no Python in the container yet (raw tasks install it): one docker exec per command
            display.vvv(f"builder channel to {container} not available ({exc}): using docker exec", host=container)
            self._direct = True
        self._connected = True
        return self

    def _direct_argv(self, cmd):
        user = self.get_option("remote_user")
        return (
            [self.get_option("docker_binary"), "exec", "-i"]
            + (["-u", user] if user else [])
            + [self.get_option("remote_addr"), "/bin/sh", "-c", cmd]
        )

    def exec_command(self, cmd, in_data=None, sudoable=True):
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if self.become and self.become.expect_prompt() and sudoable:
            raise AnsibleError(
                "the immutable.infra.builder connection cannot answer a privilege escalation password prompt:"
                " run the builder's tasks as root (the default) or use a become method without a password"
            )
        display.vvv(f"EXEC {cmd}", host=self.get_option("remote_addr"))
        data = to_bytes(in_data) if in_data else b""
        if self._direct:
            proc = subprocess.run(self._direct_argv(cmd), input=data, capture_output=True, check=False)
            return proc.returncode, proc.stdout, proc.stderr
        try:
            answer, output = self._client.request({"op": "exec", "cmd": cmd}, data)
        except ChannelError as exc:
            raise AnsibleConnectionFailure(str(exc)) from exc
        split = int(answer.get("out", 0))
        return int(answer["rc"]), output[:split], output[split:]

    def put_file(self, in_path, out_path):
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        if not os.path.exists(to_bytes(in_path)):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(to_bytes(in_path), "rb") as source:
            content = source.read()
        if self._direct:
            self._direct_copy(f"cat > {shlex.quote(out_path)}", content, out_path)
            return
        self._file_request({"op": "put", "path": out_path}, content)

    def fetch_file(self, in_path, out_path):
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("remote_addr"))
        if self._direct:
            content = self._direct_copy(f"cat {shlex.quote(in_path)}", b"", in_path)
        else:
            content = self._file_request({"op": "fetch", "path": in_path})
        with open(to_bytes(out_path), "wb") as target:
            target.write(content)

    def _file_request(self, header, content=b""):
        try:
            answer, output = self._client.request(header, content)
        except ChannelError as exc:
            raise AnsibleConnectionFailure(str(exc)) from exc
        if answer.get("error"):
            raise AnsibleError(answer["error"])
        return output

    def _direct_copy(self, cmd, content, path):
        proc = subprocess.run(self._direct_argv(cmd), input=content, capture_output=True, check=False)
        if proc.returncode != 0:
            raise AnsibleError(f"cannot transfer {path} in the builder: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def reset(self):
        if self._client:
            with contextlib.suppress(ChannelError, OSError):
                self._client.stop()
        self._connected = False

    def close(self):
        # the relay outlives the task on purpose: the next task reuses it
        self._connected = False
