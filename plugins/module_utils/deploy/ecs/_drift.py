# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift of an ECS environment (backend=ecs, docs/ecs.md): the live task set's image is the ledger's digest.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Reader (boto3 ECS client injected): EcsInspector.read -> the service's task sets and task definition images.
Planner (pure): ecs_findings -> mismatches against the ledger's expectation. The live task set is the PRIMARY one
(bg_swap makes the colour with the most traffic primary). A service whose own task definition was changed by hand
(update-service) to another image, or a task set bg_swap did not make (no blue/green externalId), is drift.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import COLOURS


def _image(task_definition: dict, container: str | None) -> str | None:
    containers = task_definition.get("containerDefinitions") or []
    for item in containers:
        if item.get("name") == container or (container is None and len(containers) == 1):
            return item.get("image")
    return None


class EcsInspector:
    """The service, its task sets and the images of their task definitions (one describe per task definition)."""

    def __init__(self, ecs):
        self.ecs = ecs
        self._images = {}

    def _image_of(self, ref: str | None, container: str | None) -> str | None:
        if not ref:
            return None
        if ref not in self._images:
            found = self.ecs.describe_task_definition(taskDefinition=ref)["taskDefinition"]
            self._images[ref] = _image(found, container)
        return self._images[ref]

    def read(self, cluster: str, service: str, container: str | None = None) -> dict | None:
        """None when the service does not exist; a ClusterNotFoundException is the caller's to report."""
        answer = self.ecs.describe_services(cluster=cluster, services=[service])
        services = [s for s in answer.get("services") or [] if s.get("status") != "INACTIVE"]
        if not services:
            return None
        found = services[0]
        task_sets = [
            {
                "id": ts.get("id"),
                "external_id": ts.get("externalId"),
                "status": ts.get("status"),
                "task_definition": ts.get("taskDefinition"),
                "image": self._image_of(ts.get("taskDefinition"), container),
            }
            for ts in found.get("taskSets") or []
            if ts.get("status") in ("PRIMARY", "ACTIVE")
        ]
        return {
            "task_definition": found.get("taskDefinition"),
            "image": self._image_of(found.get("taskDefinition"), container),
            "task_sets": task_sets,
        }


def ecs_findings(found: dict | None, cluster: str, service: str, expected) -> dict:
    mismatches = []
    if found is None:
        mismatches.append(f"ECS service {service} does not exist in cluster {cluster}")
        found = {"task_sets": []}
    else:
        primary = [ts for ts in found["task_sets"] if ts["status"] == "PRIMARY"]
        if expected is None:
            if primary:
                mismatches.append(f"the ledger records nothing live, but task set {primary[0]['id']} is primary")
        elif not primary:
            mismatches.append(f"no task set of {service} is primary; the ledger says {expected} is live")
        for ts in primary:
            if expected is not None and ts["image"] != expected:
                mismatches.append(
                    f"the live task set {ts['id']} ({ts['external_id']}) runs {ts['image']}, the ledger says {expected}"
                )
        live_definitions = {ts["task_definition"] for ts in primary}
        if (
            expected is not None
            and found.get("task_definition")
            and found["task_definition"] not in live_definitions
            and found.get("image") != expected
        ):
            mismatches.append(
                f"ECS service {service} was changed by hand to task definition {found['task_definition']} running "
                f"{found.get('image')}, the ledger says {expected}"
            )
        for ts in found["task_sets"]:
            if ts["external_id"] not in COLOURS:
                mismatches.append(
                    f"task set {ts['id']} of {service} runs {ts['image']} and was not made by bg_swap (externalId "
                    f"{ts['external_id']!r})"
                )
    return {
        "backend": "ecs",
        "expected": expected,
        "cluster": cluster,
        "service": service,
        "task_sets": found["task_sets"],
        "mismatches": mismatches,
    }
