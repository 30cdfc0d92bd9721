"""Finding the router's task when a router service of the same name was removed moments ago, against a fake docker
CLI (the live race is in tests/integration/test_bg_swap_swarm.py; its timing cannot be forced there): the old
container, still stopping, is never used, and a new task held back by the swarm scheduler is named with its reason."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import SwarmBackend

ROUTER = "127.0.0.1:5000/router@sha256:" + "a" * 64
PENDING = "no suitable node (scheduling constraints not satisfied on 2 nodes; host-mode port already in use on 1 node)"


class FakeDocker:
    """The router service `web-prod-router` is the new one (ID new-service); the manager still runs the container
    of the removed one (same service name label, ID old-service). The new task runs once `started` is set."""

    def __init__(self):
        self.started = False
        self.execs = []

    def __call__(self, cmd, data=None, binary_data=False, environ_update=None):
        args = cmd[1:]
        if args[:2] == ["service", "inspect"]:
            return 0, '[{"ID": "new-service", "Spec": {"Labels": {}}}]', ""
        if args[:2] == ["service", "ps"]:
            return 0, "" if self.started else PENDING + "\n", ""
        if args[0] == "ps":
            wanted = next(a for a in args if a.startswith("label="))
            containers = {"label=com.docker.swarm.service.name=web-prod-router": "oldcontainer"}
            if self.started:
                containers["label=com.docker.swarm.service.id=new-service"] = "newcontainer"
            return 0, containers.get(wanted, ""), ""
        if args[0] == "exec":
            self.execs.append(args[2])
            return 0, "", ""
        return 0, "", ""


def test_the_stopping_container_of_a_removed_router_of_the_same_name_is_never_used():
    docker = FakeDocker()
    backend = SwarmBackend(docker, "web", "prod", ROUTER)
    with pytest.raises(BlueGreenError) as raised:
        backend._router_exec(["cat", "/etc/nginx/bg/router.conf"], wait=0.5)
    assert docker.execs == []
    assert f"task errors: {PENDING}" in raised.value.msg and "port" in raised.value.msg
    docker.started = True
    rc, _out, _err = backend._router_exec(["cat", "/etc/nginx/bg/router.conf"], wait=0.5)
    assert rc == 0 and docker.execs == ["newcontainer"]
