"""The swarm backend's analysis log switch, against a fake docker CLI (a router whose nginx refuses the log is a fault
no real router here shows): the rollback after a failed turn-on must not ask for the log again."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import SwarmBackend

ROUTER = "127.0.0.1:5000/router@sha256:" + "a" * 64


class FakeDocker:
    """`docker ps` finds the router task; `docker exec ... sh -c <write script>` keeps the config written, failing
    (as `nginx -t` would) when refuse_log is set and the config asks for the analysis log; labels are accepted."""

    def __init__(self, refuse_log=False):
        self.refuse_log = refuse_log
        self.configs = []

    def __call__(self, cmd, data=None, binary_data=False, environ_update=None):
        args = cmd[1:]
        if args[:2] == ["service", "inspect"]:
            return 0, '[{"ID": "routerservice"}]', ""
        if args[0] == "ps":
            return 0, "routertask\n", ""
        if args[0] == "exec" and "cat > $c.new" in " ".join(args):
            text = data.decode()
            if self.refuse_log and "access_log" in text:
                return 3, "", 'nginx: [emerg] open() "/var/log/nginx/bg-analysis.log" failed (2: No such file)'
            self.configs.append(text)
            return 0, "", ""
        return 0, "", ""


def test_a_router_that_refuses_the_log_fails_the_window_and_the_rollback_config_has_no_log():
    docker = FakeDocker(refuse_log=True)
    backend = SwarmBackend(docker, "web", "prod", ROUTER)
    backend.set_traffic({"blue": 80, "green": 20})
    settings = validate({"window": 1}, "swarm")
    with pytest.raises(AnalysisError, match="could not turn on the router's analysis log"):
        backend.analysis_begin("green", settings)
    backend.set_traffic({"blue": 100})  # the rollback: written, without the log
    assert "access_log" not in docker.configs[-1] and '# weights: {"blue": 100}' in docker.configs[-1]
    backend.analysis_finish()  # nothing to turn off
    assert len(docker.configs) == 2


def test_the_log_is_on_from_the_first_window_to_the_end_of_the_rollout_then_off():
    docker = FakeDocker()
    backend = SwarmBackend(docker, "web", "prod", ROUTER)
    backend.set_traffic({"blue": 80, "green": 20})
    settings = validate({"window": 1}, "swarm")
    with pytest.raises(AnalysisError):  # the fake gives no window answer: the read fails, naming the log
        backend.analysis_begin("green", settings)
    assert "access_log /var/log/nginx/bg-analysis.log bg_analysis;" in docker.configs[-1]
    backend.set_traffic({"blue": 100})  # a step (here the rollback) while the log is on keeps it on
    assert "access_log" in docker.configs[-1]
    backend.analysis_finish()
    assert "access_log" not in docker.configs[-1] and '# weights: {"blue": 100}' in docker.configs[-1]
