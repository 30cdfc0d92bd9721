# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift check: compare what actually runs in each environment with the artifact the ledger says is live.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Readers (I/O, client injected): DockerInspector (the Docker engine interface), AwsInspector (boto3 clients).
Planner (pure): docker_findings / aws_findings turn what was read + the ledger's expectation into mismatches.
The rules are documented in docs/promotion.md ("Drift").
"""

from __future__ import annotations

import json
import os

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ARTIFACT
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_COLOUR
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_ENV
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_name
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import colour_prefix
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import parse_upstream
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError

DEFAULT_WRITABLE = ("/var/log/nginx", "/run", "/tmp", "/var/lib/nginx", "/var/cache/nginx")
DIFF_KINDS = {"A": "added", "C": "changed", "D": "deleted"}


class DriftError(Exception):
    """The drift check itself could not run (docker unreachable, a bad option); the message names the fix."""


def digest_of(ref) -> str | None:
    """`repo@sha256:abc` -> `sha256:abc` (lower case); None for anything else."""
    if isinstance(ref, str) and "@" in ref:
        return ref.split("@", 1)[1].strip().lower()
    return None


def path_allowed(path: str, writable) -> bool:
    """A `docker diff` path is allowed inside a writable path, or when it is a parent directory of one (docker lists
    /var and /var/log as changed when something under /var/log/nginx changed)."""
    path = "/" + path.strip("/")
    for root in writable:
        root = "/" + root.strip("/")
        if root == "/" or path == root or path.startswith(root + "/") or root.startswith(path + "/"):
            return True
    return False


def live_colour_from_upstream(text: str | None) -> str | None:
    if not text:
        return None
    weights, _ports = parse_upstream(text)
    weights = {colour: weight for colour, weight in weights.items() if weight > 0}
    return max(weights, key=lambda colour: weights[colour]) if weights else None


# ---------------------------------------------------------------------------------------------------------------
# docker
# ---------------------------------------------------------------------------------------------------------------


class DockerInspector:
    """Reads containers, image digests and filesystem changes through the Docker engine interface (docker)."""

    def __init__(self, docker):
        self.docker = docker

    def _ask(self, what, call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except DockerError as exc:
            raise DriftError(
                f"could not read {what}: {exc}; check that the Docker Engine runs and this user may use it"
            ) from None

    def containers(self, app: str, env: str) -> list:
        """Every container (running or not) named <app>-<env>-* or labelled with this app and env, inspected."""
        names = set()
        for found in (
            self._ask("the containers", self.docker.list_containers, name=f"^{colour_prefix(app, env)}"),
            self._ask("the containers", self.docker.list_containers, label=f"{DEPLOY_LABEL_APP}={app}"),
        ):
            names.update(item["name"] for item in found)
        keep = []
        for name in sorted(names):
            info = self._ask(f"container {name}", self.docker.inspect, name, kind="container")
            if info is None:
                continue  # removed since it was listed
            labels = (info.get("Config") or {}).get("Labels") or {}
            if name.startswith(colour_prefix(app, env)) or labels.get(DEPLOY_LABEL_ENV) == env:
                keep.append(info)
        return keep

    def all_containers(self) -> list:
        """Every container of the engine (running or not): [(name, image, status)]."""
        out = []
        for item in self._ask("the containers", self.docker.list_containers):
            info = self._ask(f"container {item['name']}", self.docker.inspect, item["name"], kind="container")
            if info is None:
                continue  # removed since it was listed
            state = info.get("State") or {}
            out.append((item["name"], (info.get("Config") or {}).get("Image"), state.get("Status") or "unknown"))
        return sorted(out)

    def repo_digests(self, image_id: str) -> list:
        try:
            info = self.docker.inspect(image_id, kind="image")
        except DockerError:
            return []
        return (info or {}).get("RepoDigests") or []

    def diff(self, name: str) -> list:
        return self._ask(f"the changes of container {name}", self.docker.changes, name)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def docker_findings(
    inspector, app: str, env: str, expected, known_ids, upstream_text, writable=DEFAULT_WRITABLE, check_diff=True
) -> dict:
    """What runs in one docker environment vs. the ledger: {live_colour, container, running, mismatches, ...}."""
    mismatches = []
    known = {digest_of(item) for item in (known_ids or []) if digest_of(item)}
    expected_digest = digest_of(expected)
    if expected_digest:
        known.add(expected_digest)
    colour = live_colour_from_upstream(upstream_text)
    containers = inspector.containers(app, env)
    by_name = {(info.get("Name") or "").lstrip("/"): info for info in containers}
    colour_names = {colour_name(app, env, c): c for c in COLOURS}
    result = {
        "backend": "docker",
        "expected": expected,
        "live_colour": colour,
        "container": None,
        "running": None,
        "image_digests": [],
        "filesystem_changes": [],
        # containers named <app>-<env>-* other than the two colours (repair.yml removes them)
        "extra_containers": sorted(name for name in by_name if name not in colour_names),
        "mismatches": mismatches,
    }

    # Containers that bg_swap did not start: extra names, or colour names without bg_swap's labels.
    for name, info in sorted(by_name.items()):
        labels = (info.get("Config") or {}).get("Labels") or {}
        if name not in colour_names:
            mismatches.append(
                f"extra container {name} (image {(info.get('Config') or {}).get('Image')}) runs for {app}/{env}: "
                "bg_swap only runs the blue and green colours; playbooks/repair.yml removes it"
            )
            continue
        if labels.get(DEPLOY_LABEL_ARTIFACT) is None or labels.get(DEPLOY_LABEL_COLOUR) != colour_names[name]:
            mismatches.append(
                f"container {name} has no bg_swap labels (started by hand?): it runs "
                f"{(info.get('Config') or {}).get('Image')}; playbooks/repair.yml replaces it"
            )

    if expected is None:
        if colour or by_name:
            mismatches.append(
                f"the ledger records nothing live for {app}/{env}, but "
                + (f"traffic goes to {colour}" if colour else f"containers exist: {', '.join(sorted(by_name))}")
            )
        return result
    if colour is None:
        mismatches.append(
            f"the ledger says {expected} is live in {env}, but the router sends traffic to no colour "
            "(no upstream file, or every server is down)"
        )
        return result

    name = colour_name(app, env, colour)
    result["container"] = name
    info = by_name.get(name)
    if info is None:
        mismatches.append(f"live colour {colour} has no container {name} (the ledger says {expected} is live)")
        return result
    state = info.get("State") or {}
    result["running"] = bool(state.get("Running"))
    if not state.get("Running"):
        mismatches.append(f"live container {name} is {state.get('Status') or 'not running'}")
    config = info.get("Config") or {}
    started_with = config.get("Image") or ""
    repo_digests = inspector.repo_digests(info.get("Image") or "")
    digests = sorted({d for d in (digest_of(r) for r in repo_digests) if d})
    result["image_digests"] = digests
    result["started_with"] = started_with
    # The container's .Image is the local config ID: compare through the reference it was started with and the
    # RepoDigests of that image (both hold the manifest digest the registry gave).
    if expected_digest not in digests and digest_of(started_with) != expected_digest:
        mismatches.append(
            f"live container {name} runs {started_with or info.get('Image')} "
            f"(digests: {', '.join(digests) or 'none'}), the ledger says {expected}"
        )
    elif digest_of(started_with) not in (None, expected_digest):
        mismatches.append(f"live container {name} was started with {started_with}, the ledger says {expected}")
    label = config.get("Labels", {}).get(DEPLOY_LABEL_ARTIFACT) if config.get("Labels") else None
    if label is not None and digest_of(label) != expected_digest:
        mismatches.append(f"live container {name} is labelled with artifact {label}, the ledger says {expected}")

    # The idle colour may run an older artifact (kept for rollback), but only one this environment has known.
    for other_name, other_colour in colour_names.items():
        other = by_name.get(other_name)
        if other_colour == colour or other is None:
            continue
        other_ref = (other.get("Config") or {}).get("Image") or ""
        other_digests = {digest_of(r) for r in inspector.repo_digests(other.get("Image") or "")} | {
            digest_of(other_ref)
        }
        if not (other_digests - {None}) & known:
            mismatches.append(
                f"idle colour {other_colour} ({other_name}) runs {other_ref}, which the ledger never recorded in {env}"
            )

    if check_diff:
        changes = [(kind, path) for kind, path in inspector.diff(name) if not path_allowed(path, writable)]
        result["filesystem_changes"] = [f"{kind} {path}" for kind, path in changes]
        if changes:
            shown = ", ".join(f"{DIFF_KINDS.get(kind, kind)} {path}" for kind, path in changes[:10])
            more = f" and {len(changes) - 10} more" if len(changes) > 10 else ""
            mismatches.append(
                f"live container {name} was changed after it started outside the writable paths "
                f"({', '.join(writable)}): {shown}{more}; an immutable host is replaced, never patched: "
                "playbooks/repair.yml"
            )
    return result


def check_docker(docker, environments: list, writable=DEFAULT_WRITABLE, check_diff=True, only_colours=False) -> dict:
    """docker: the Docker engine interface (docker/_engine.docker_engine()).

    only_colours: the engine belongs to the checked environments (a fleet host): any other container is drift."""
    inspector = DockerInspector(docker)
    out = {}
    for env in environments:
        upstream = read_text(os.path.join(env["nginx_conf_dir"], f"{env['app']}-{env['name']}.upstream.conf"))
        out[env["name"]] = docker_findings(
            inspector,
            env["app"],
            env["name"],
            env.get("expected"),
            env.get("known_ids") or [],
            upstream,
            writable=writable,
            check_diff=check_diff,
        )
    if only_colours:
        allowed = {colour_name(env["app"], env["name"], c) for env in environments for c in COLOURS}
        # containers named <app>-<env>-* are reported by docker_findings already
        prefixes = tuple(colour_prefix(env["app"], env["name"]) for env in environments)
        foreign = [
            item for item in inspector.all_containers() if item[0] not in allowed and not item[0].startswith(prefixes)
        ]
        for env in environments:
            found = out[env["name"]]
            found["foreign_containers"] = [name for name, _image, _status in foreign]
            for name, image, status in foreign:
                found["mismatches"].append(
                    f"container {name} (image {image}, {status}) runs on this host, which belongs to "
                    f"{env['app']}/{env['name']}: only its blue and green colours may run here (started by hand?); "
                    "remove it (playbooks/repair.yml does)"
                )
    return out


# ---------------------------------------------------------------------------------------------------------------
# aws
# ---------------------------------------------------------------------------------------------------------------


def expected_ami(expected, region: str) -> str | None:
    if isinstance(expected, str) and expected.strip().startswith("{"):
        expected = json.loads(expected)
    if isinstance(expected, dict):
        return expected.get(region)
    return expected


class AwsInspector:
    """InService instances of auto scaling groups and their ImageId (clients injected)."""

    def __init__(self, autoscaling, ec2):
        self.autoscaling = autoscaling
        self.ec2 = ec2

    def instances(self, groups: list) -> list:
        found = []
        paginator = self.autoscaling.get_paginator("describe_auto_scaling_groups")
        seen_groups = set()
        for page in paginator.paginate(AutoScalingGroupNames=list(groups)):
            for group in page.get("AutoScalingGroups", []):
                seen_groups.add(group["AutoScalingGroupName"])
                for inst in group.get("Instances", []):
                    found.append((group["AutoScalingGroupName"], inst["InstanceId"], inst.get("LifecycleState")))
        missing = sorted(set(groups) - seen_groups)
        in_service = [item for item in found if item[2] == "InService"]
        images = {}
        ids = [item[1] for item in in_service]
        for start in range(0, len(ids), 100):
            resp = self.ec2.describe_instances(InstanceIds=ids[start : start + 100])
            for reservation in resp.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    images[inst["InstanceId"]] = inst.get("ImageId")
        return [
            {"group": group, "instance_id": iid, "image_id": images.get(iid)} for group, iid, _state in in_service
        ], missing


def aws_findings(instances: list, missing_groups: list, expected, region: str) -> dict:
    mismatches = []
    want = expected_ami(expected, region)
    for group in missing_groups:
        mismatches.append(f"auto scaling group {group} does not exist in {region}")
    if expected is None:
        if instances:
            mismatches.append(f"the ledger records nothing live, but {len(instances)} instance(s) are InService")
    elif want is None:
        mismatches.append(f"the ledger's artifact {json.dumps(expected, sort_keys=True)} has no AMI for {region}")
    else:
        if not instances and not missing_groups:
            mismatches.append(f"no InService instance runs; the ledger says {want} is live")
        for inst in instances:
            if inst["image_id"] != want:
                mismatches.append(
                    f"instance {inst['instance_id']} of {inst['group']} runs {inst['image_id']}, the ledger says {want}"
                )
    return {
        "backend": "aws",
        "expected": expected,
        "region": region,
        "instances": instances,
        "mismatches": mismatches,
    }
