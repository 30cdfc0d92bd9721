"""promotion_backend: swarm in the promotion settings (pure): what the step refuses before anything runs, and the
bg_swap arguments it builds from promotion_environments.<env>. The playbooks run live in
tests/integration/test_bg_swap_swarm.py."""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import resolve_settings
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import settings_problem
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import swarm_swap_args

ROUTER = "registry.example.com/immutable-infra/swarm-router@sha256:" + "b" * 64
DIGEST = "registry.example.com/web@sha256:" + "a" * 64


def settings(environments, backend="swarm"):
    raw = {"app": "web", "chain": ["dev", "prod"], "backend": backend, "artifacts_dir": "/srv/artifacts"}
    return resolve_settings(dict(raw, environments=environments), "/tmp")


def test_an_environment_without_router_image_is_refused_naming_the_fix():
    problem = settings_problem(settings({"dev": {"replicas": 2}}), ["dev"], "usage")
    assert "environment dev has no swarm settings" in problem and "router_image" in problem
    assert settings_problem(settings({"dev": {"router_image": ROUTER}}), ["dev"], "usage") is None


def test_an_unknown_backend_names_the_known_ones():
    problem = settings_problem(settings({"dev": {}}, backend="kubernetes"), ["dev"], "usage")
    assert '"kubernetes"' in problem and "swarm" in problem and "docker" in problem


def test_the_swap_arguments_carry_the_environments_swarm_settings_and_the_promotion_gate():
    s = settings({"prod": {"router_image": ROUTER, "replicas": 6, "docker_host": "ssh://deploy@m1", "network": ""}})
    args = swarm_swap_args(s, "prod", DIGEST, "rolled_back")
    assert args["backend"] == "swarm" and args["state"] == "rolled_back" and args["artifact"] == DIGEST
    assert args["swarm"] == {"router_image": ROUTER, "replicas": 6, "docker_host": "ssh://deploy@m1"}
    assert (args["health_path"], args["traffic_steps"]) == ("/healthz", [100])
