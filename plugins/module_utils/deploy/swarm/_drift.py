# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift of a swarm environment (drift_info backend=swarm, docs/swarm.md): what runs vs the ledger. Read only.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

The live colour is read from the router's own file; every running task of the live service, and the service's spec,
must carry the ledger's digest; the idle colour may only run a digest the environment has known; a service named
`<app>-<env>-*` other than the two colours and the router, or a container on the environment's network that is no
task of them (started beside it by hand), is drift.
"""

from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ARTIFACT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_prefix
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import SwarmBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import digest_of


def swarm_findings(backend: SwarmBackend, expected, known_ids) -> dict:
    """One environment: {backend, expected, live_colour, service, tasks, mismatches, ...}. Raises BlueGreenError when
    the swarm cannot be read (not a manager, engine unreachable)."""
    app, env = backend.app, backend.env
    mismatches = []
    known = {digest_of(i) for i in (known_ids or []) if isinstance(i, str) and digest_of(i)}
    want = digest_of(expected) if isinstance(expected, str) else None
    if want:
        known.add(want)
    backend.swarm_manager()
    router = backend.inspect_service(backend.router)
    colour = None
    if router is not None:
        weights = backend.router_weights(router, heal=False)
        colour = max(weights, key=lambda c: weights[c]) if weights else None
    services = {c: backend.inspect_service(backend.service(c)) for c in COLOURS}
    result = {
        "backend": "swarm",
        "expected": expected,
        "live_colour": colour,
        "service": backend.service(colour) if colour else None,
        "task_images": [],
        "extra_services": [],
        "extra_containers": [],
        "mismatches": mismatches,
    }
    _rc, out, _err = backend.run_docker(["service", "ls", "--format", "{{.Name}}"])
    ours = {backend.service(c) for c in COLOURS} | {backend.router}
    extra = sorted(n for n in out.split() if n.startswith(colour_prefix(app, env)) and n not in ours)
    result["extra_services"] = extra
    for name in extra:
        mismatches.append(
            f"extra service {name} runs for {app}/{env}: bg_swap only runs the two colours and the router"
        )
    result["extra_containers"] = _foreign_containers(backend)
    for name in result["extra_containers"]:
        mismatches.append(
            f"container {name} is on the network {backend.network} of {app}/{env} but is no task of its services "
            "(started beside them by hand?): remove it"
        )
    if expected is None:
        if colour or any(services.values()):
            mismatches.append(f"the ledger records nothing live for {app}/{env}, but its swarm services exist")
        return result
    if colour is None:
        mismatches.append(f"the ledger says {expected} is live in {env}, but the router {backend.router} sends traffic "
                          "to no colour (no router service, or it was never switched)")  # fmt: skip
        return result
    name = backend.service(colour)
    info = services.get(colour)
    if info is None:
        mismatches.append(f"live colour {colour} has no service {name} (the ledger says {expected} is live)")
        return result
    spec_image = backend.spec_image(info)
    if digest_of(spec_image) != want:
        mismatches.append(
            f"live service {name} is set to run {spec_image} (docker service update by hand?), the ledger says "
            f"{expected}: deploy the ledger's artifact again (bg_swap, playbooks/repair.yml)"
        )
    label = backend.labels(info).get(DEPLOY_LABEL_ARTIFACT)
    if digest_of(label) != want:
        mismatches.append(f"live service {name} is labelled with artifact {label}, the ledger says {expected}")
    tasks = backend.tasks(name)
    result["task_images"] = sorted({t["image"] or "" for t in tasks})
    for task in tasks:
        if digest_of(task["image"]) != want:
            mismatches.append(
                f"task {task['id']} of live service {name} runs {task['image']}, the ledger says {expected}"
            )
    replicas = (((info.get("Spec") or {}).get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0)
    running = [t for t in tasks if t["state"] == "running"]
    if len(running) < replicas:
        mismatches.append(f"live service {name} runs {len(running)} of its {replicas} tasks")
    idle = "green" if colour == "blue" else "blue"
    idle_info = services.get(idle)
    if idle_info is not None and digest_of(backend.spec_image(idle_info)) not in known:
        mismatches.append(
            f"idle colour {idle} ({backend.service(idle)}) runs {backend.spec_image(idle_info)}, which the ledger "
            f"never recorded in {env}"
        )
    return result


def _foreign_containers(backend: SwarmBackend) -> list:
    """Containers on this node attached to the environment's network that are no task of its services."""
    rc, out, _err = backend.run_docker(
        ["network", "inspect", "--format", "{{json .Containers}}", backend.network], check=False
    )
    if rc != 0:
        return []
    try:
        containers = json.loads(out or "{}") or {}
    except ValueError:
        return []
    ours = tuple(f"{name}." for name in [backend.service(c) for c in COLOURS] + [backend.router])
    names = [(c or {}).get("Name") or cid for cid, c in containers.items() if not cid.startswith("lb-")]
    return sorted(n for n in names if not n.startswith(ours) and not n.startswith("lb-"))


def check_swarm(run_command, app: str, environments: list, docker_binary: str = "docker") -> dict:
    """drift_info's swarm environments ({name, expected, known_ids, docker_host, network}) -> findings per name."""
    out = {}
    for env in environments:
        backend = SwarmBackend(
            run_command,
            app,
            env["name"],
            router_image="",
            network=env.get("network"),
            docker_binary=docker_binary,
            docker_host=env.get("docker_host"),
        )
        try:
            out[env["name"]] = swarm_findings(backend, env.get("expected"), env.get("known_ids") or [])
        except BlueGreenError as exc:
            raise BlueGreenError(f"environment {env['name']} (swarm): {exc.msg}") from None
    return out
