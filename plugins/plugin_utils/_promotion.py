# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The promotion playbooks' settings, artifact records and module arguments (used by the promotion action).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Pure functions over plain data, so the rules the playbooks enforce (docs/promotion.md) are tested without Ansible.
The messages are the playbooks' own: each names what is wrong and how to fix it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import fingerprint_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import latest_path
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import records_dir
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import local_records
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import same_artifact_id
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import FileLock
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import LockedError
from ansible_collections.immutable.infra.plugins.module_utils.common._locks import iso_time

APP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
BACKENDS = ("docker", "aws", "swarm", "ecs", "none")
ACTIONS = ("deploy", "promote", "rollback")
LEDGER_CONNECTION = ("backend", "path", "prefix", "region", "endpoint_url")
AMI_ID = re.compile(r"^ami-[0-9a-f]{8,17}$")
# bg_swap (aws backend) options an environment of promotion_environments may set, and the ones with a promotion default
AWS_SWAP_OPTIONS = (
    "listener_arn",
    "load_balancer_name",
    "listener_port",
    "target_groups",
    "asg_names",
    "launch_templates",
    "desired_capacity",
    "instance_type",
    "step_pause",
    "health_checks_required",
    "verify_timeout",
    "old_colour_action",
    "lock_ttl",
)
AWS_SWAP_DEFAULTS = ("traffic_steps", "health_interval", "health_timeout")
DEFAULTS = {
    "backend": "docker",
    "environments": {},
    "env_tags": True,
    "health_path": "/healthz",
    "health_timeout": 60,
    "health_interval": 0.5,
    "traffic_steps": [100],
    "container_port": 8080,
    "manage_router": True,
    "manage_router_always": False,
    "aws_region": "",
    # fleets (docs/fleet.md): hosts switched at a time, and the failed hosts tolerated (percent) before a stop
    "batch": 1,
    "max_fail_percentage": 0,
}
BATCH = re.compile(r"^(?:[1-9][0-9]*|(?:[1-9][0-9]?|100)%)$")


class PromotionError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _boolean(value, name: str) -> bool:
    if value == "":
        return False
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise PromotionError(
            f"invalid settings: promotion_{name} {json.dumps(str(value))} is not a boolean: use true or false"
        ) from None


def _number(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PromotionError(
            f"invalid settings: promotion_{name} {json.dumps(str(value))} is not a number of seconds"
        ) from None


def resolve_settings(raw: dict, pwd: str) -> dict:
    """The `promotion` settings from the inventory's promotion_* values (missing or None ones take defaults)."""
    given = {key: value for key, value in (raw or {}).items() if value is not None}
    settings = dict(DEFAULTS, **given)
    settings.setdefault("app", "web")
    settings.setdefault("chain", None)
    settings.setdefault("artifacts_dir", "")
    settings.setdefault("ledger", {"backend": "file", "path": os.path.join(pwd, "ledger", "ledger.json")})
    settings["app"] = str(settings["app"])
    settings["backend"] = str(settings["backend"])
    settings["artifacts_dir"] = str(settings["artifacts_dir"])
    for flag in ("env_tags", "manage_router", "manage_router_always"):
        settings[flag] = _boolean(settings[flag], flag)
    settings["health_timeout"] = _number(settings["health_timeout"], "health_timeout")
    settings["health_interval"] = _number(settings["health_interval"], "health_interval")
    if not isinstance(settings["environments"], dict):
        raise PromotionError(
            "invalid settings: promotion_environments must be a mapping of environment name to its settings"
        )
    if not isinstance(settings["ledger"], dict):
        raise PromotionError("invalid settings: promotion_ledger must be a mapping (backend, path or prefix, ...)")
    return settings


def settings_problem(settings: dict, check_envs: list, usage: str) -> str | None:
    """The first problem with the settings and the environments this run touches (None when there is none).

    An empty name in check_envs means the command line lacks it: `usage` says how to give it."""
    if any(env in ("", None) for env in check_envs):
        return usage
    chain = settings["chain"]
    if not (
        isinstance(chain, list)
        and chain
        and APP_PATTERN.match(settings["app"])
        and settings["backend"] in BACKENDS
        and settings["artifacts_dir"]
    ):
        return (
            f"invalid settings: app {json.dumps(settings['app'])} must be lower-case letters, digits, '.', '_' and"
            " '-'; promotion_chain must be a list such as [dev, staging, prod]; promotion_artifacts_dir must be set;"
            f" promotion_backend {json.dumps(settings['backend'])} must be {', '.join(BACKENDS[:-1])} or none"
            " (none: gate and record in the ledger only, see docs/promotion.md)"
        )
    environments = settings["environments"]
    for env in check_envs:
        envcfg = environments.get(env)
        if env not in chain:
            return (
                f"unknown environment {json.dumps(env)}: the chain is {' -> '.join(map(str, chain))}; use one of those"
                " or add it to promotion_chain in the inventory"
            )
        if settings["backend"] == "docker" and not isinstance(envcfg, dict):
            return (
                f"environment {env} has no settings in promotion_environments (router_port, blue_port, green_port,"
                " router_dir): add them to the inventory"
            )
        if settings["backend"] == "docker":
            missing = [key for key in ("router_port", "blue_port", "green_port", "router_dir") if not envcfg.get(key)]
            if missing:
                return (
                    f"environment {env} lacks {', '.join(missing)} in promotion_environments (router_port, blue_port,"
                    " green_port, router_dir): add them to the inventory"
                )
        if settings["backend"] == "swarm" and not (isinstance(envcfg, dict) and envcfg.get("router_image")):
            return (
                f"environment {env} has no swarm settings in promotion_environments: give it router_image (the digest"
                " of the swarm router image) and optionally router_port, replicas, network, docker_host"
                ' (docs/swarm.md, "Promotion")'
            )
        problem = analysis_problem(settings, env)
        if problem:
            return problem
        if settings["backend"] == "aws" and not names_a_listener(envcfg):
            return (
                f"environment {env} has no aws settings in promotion_environments: give it listener_arn (or"
                " load_balancer_name and listener_port), and optionally region, target_groups, asg_names,"
                ' launch_templates, desired_capacity (docs/promotion.md, "aws backend")'
            )
        if settings["backend"] == "ecs" and not (names_a_listener(envcfg) and envcfg.get("cluster")):
            return (
                f"environment {env} has no ecs settings in promotion_environments: give it cluster and listener_arn"
                " (or load_balancer_name and listener_port), and optionally region, service, task_family,"
                ' container_name, target_groups (docs/ecs.md, "Promotion")'
            )
    return None


def record_summary(where: str, record: dict) -> dict:
    """What the promotion uses of an artifact record; where: its file, or its reference in the registry."""
    return {
        "path": where,
        "id": record["id"],
        "kind": record.get("kind") or "container",
        "fingerprint": record.get("fingerprint") or "",
        "repository": record.get("repository") or "",
        "version": record.get("version") or "",
    }


def read_records(artifacts_dir: str, app: str) -> list:
    """The app's local artifact records (<artifacts_dir>/<app>/records/*.json), oldest first: the IDs the gate knows
    without asking the registry (module_utils/artifact/_remote.py)."""
    try:
        return [record_summary(path, record) for path, record in local_records(artifacts_dir, app)]
    except RecordError as exc:
        raise PromotionError(str(exc)) from None


def resolve_record(records: list, artifact_id, artifacts_dir: str, app: str, client_for, read_ami=None) -> dict:
    """The record of artifact_id: a local one (in records), else the one kept in the registry beside the image
    (added to records, so the ledger's check and the environment tag see it), or an AMI's tags (read_ami, see
    find_record). PromotionError when none exists or the registry's (the AMIs') is refused (altered, unreadable)."""
    known = record_of(records, artifact_id)
    if known:
        return known
    try:
        where, record = find_record(artifact_id, artifacts_dir, app, client_for, read_ami)
    except RecordError as exc:
        raise PromotionError(f"artifact {artifact_id}: {exc}") from None
    if record is None:
        if isinstance(artifact_id, str) and "@" in artifact_id:
            remote = f" nor in the registry ({split_id(artifact_id)[0]}:{record_tag(split_id(artifact_id)[3])})"
        else:
            remote = " nor in its AMIs' tags" if read_ami is not None else ""
        raise PromotionError(
            f"artifact id {artifact_id} is unknown to every artifact record: none in"
            f" {records_dir(artifacts_dir, app)}{remote}. Bake it first (playbooks/bake.yml writes the record to"
            " both), or pass the id of an existing record"
        )
    summary = record_summary(where, record)
    records.append(summary)
    return summary


def latest_artifact_id(artifacts_dir: str, app: str):
    """The ID in <artifacts_dir>/<app>/latest.json (the newest bake), for a deploy without an explicit artifact."""
    path = latest_path(artifacts_dir, app)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)["id"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PromotionError(
            f"no artifact record for {app} in {path}: bake it first (ansible-playbook playbooks/bake.yml"
            f" -e bake_name={app}) or give -e artifact=<id>"
        ) from None


def record_of(records: list, artifact_id) -> dict:
    return next((record for record in records if same_artifact_id(record["id"], artifact_id)), {})


def gate_policy(settings: dict, env: str) -> dict:
    """The environment's soak time and approval rule (promotion_environments.<env>.soak_minutes and .approval),
    checked: {soak_minutes, approval: {required, approvers}} (docs/promotion.md, "Soak time and approvals")."""
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._gate import check_policy
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError

    envcfg = settings["environments"].get(env)
    envcfg = envcfg if isinstance(envcfg, dict) else {}
    try:
        return check_policy({key: envcfg.get(key) for key in ("soak_minutes", "approval")}, env)
    except LedgerError as exc:
        raise PromotionError(f"invalid settings: {exc.message}") from None


def ledger_args(settings: dict, action: str, env: str, from_env: str, artifact_id, force: bool, reason) -> dict:
    """The ledger module's arguments for the gate (check mode) and for the record of this run."""
    args = {key: settings["ledger"][key] for key in LEDGER_CONNECTION if settings["ledger"].get(key) is not None}
    args.update(app=settings["app"], chain=settings["chain"], env=env, action=action)
    if action in ("deploy", "promote"):
        policy = gate_policy(settings, env)
        if policy["soak_minutes"]:
            args["soak_minutes"] = policy["soak_minutes"]
        if policy["approval"]["required"]:
            args["approval"] = policy["approval"]
    if artifact_id is not None:
        args["artifact_id"] = artifact_id
    if reason is not None:
        args["reason"] = reason
    if action != "rollback":
        args["force"] = force
        if action == "promote":
            args["from_env"] = from_env
    return args


def env_analysis(settings: dict, env: str) -> dict | None:
    """The environment's analysis between weighted steps: promotion_environments.<env>.analysis, else
    promotion_analysis; None (no analysis, nothing waited for) when neither is set (docs/progressive.md)."""
    envcfg = settings["environments"].get(env)
    envcfg = envcfg if isinstance(envcfg, dict) else {}
    analysis = envcfg["analysis"] if envcfg.get("analysis") is not None else settings.get("analysis")
    return analysis or None


def analysis_problem(settings: dict, env: str) -> str | None:
    """What is wrong with the environment's analysis settings, checked as bg_swap checks them (None when fine)."""
    from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
    from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate

    analysis = env_analysis(settings, env)
    if analysis is None or settings["backend"] == "none":
        return None
    envcfg = settings["environments"].get(env)
    own = isinstance(envcfg, dict) and envcfg.get("analysis") is not None
    where = f"promotion_environments.{env}.analysis" if own else "promotion_analysis"
    try:
        validate(_analysis_for(analysis, settings["backend"]), settings["backend"])
    except AnalysisError as exc:
        return f"invalid settings: {where}: {exc} (docs/progressive.md)"
    return None


def names_a_listener(envcfg) -> bool:
    """Whether an environment's settings name the ALB listener that switches its traffic (aws and ecs backends)."""
    return isinstance(envcfg, dict) and bool(
        envcfg.get("listener_arn") or (envcfg.get("load_balancer_name") and str(envcfg.get("listener_port") or ""))
    )


def analysis_secrets(settings) -> set:
    """The header values of analysis.prometheus (promotion_analysis and each environment's analysis), as given in
    the task's settings: secrets (an Authorization token) that the promotion's result must hide like no_log values
    (its `settings` echo them otherwise)."""
    found = set()
    if not isinstance(settings, dict):
        return found
    envs = settings.get("environments")
    candidates = [settings.get("analysis")] + [
        cfg.get("analysis") for cfg in (envs.values() if isinstance(envs, dict) else []) if isinstance(cfg, dict)
    ]
    for analysis in candidates:
        prometheus = analysis.get("prometheus") if isinstance(analysis, dict) else None
        headers = prometheus.get("headers") if isinstance(prometheus, dict) else None
        if isinstance(headers, dict):
            found |= {str(value) for value in headers.values() if value not in (None, "")}
    return found


def fleet_analysis_problem(settings: dict, env: str) -> str | None:
    """A fleet environment cannot pass analysis.prometheus.headers to its hosts: their bg_swap gets the analysis from
    the promotion's plan (a result, where the header values are hidden). Refused before the lock or any host."""
    analysis = env_analysis(settings, env)
    if not analysis_secrets({"analysis": analysis}):
        return None
    return (
        f"the analysis of {env} (a fleet: its hosts run bg_swap) has prometheus.headers, which cannot be passed to"
        " the hosts (the header values are secrets, hidden in the promotion's plan): use a Prometheus the hosts may"
        " query without headers, or leave analysis.prometheus out for this environment; nothing was changed"
    )


def _analysis_for(analysis, backend: str):
    """The keys of a shared analysis setting that apply to the backend (a mapping may hold both kinds). With
    `prometheus` (request figures from Prometheus, either backend) the thresholds apply to aws too."""
    from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import ALB_BACKENDS
    from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AWS_KEYS
    from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import REQUEST_KEYS

    if not isinstance(analysis, dict):
        return analysis
    if backend in ALB_BACKENDS:
        # with prometheus the log's own keys (count_4xx, access_log) are kept, so validate() refuses them by name
        drop = () if analysis.get("prometheus") else REQUEST_KEYS
    elif backend == "swarm":
        drop = AWS_KEYS + ("access_log",)  # the docker router's log path: a swarm router has its own, in its task
    else:
        drop = AWS_KEYS
    return {key: value for key, value in analysis.items() if key not in drop}


def router_args(settings: dict, env: str) -> dict:
    """The router module's arguments for the environment's self-contained nginx (what the role was given)."""
    envcfg = settings["environments"][env]
    return {
        "app": settings["app"],
        "env": env,
        "listen": f"127.0.0.1:{envcfg['router_port']}",
        "blue_port": envcfg["blue_port"],
        "green_port": envcfg["green_port"],
        "self_contained_dir": str(envcfg["router_dir"]),
    }


def swap_state(action: str) -> str:
    """bg_swap's state: a rollback lets bg_swap choose between the switch back and a deploy of the target."""
    return "rolled_back" if action == "rollback" else "deployed"


def swap_args(settings: dict, env: str, artifact_id, state: str = "deployed") -> dict:
    """bg_swap's arguments (docker backend) for putting artifact_id live in env behind its router."""
    envcfg = settings["environments"][env]
    router_dir = str(envcfg["router_dir"])
    return {
        "app": settings["app"],
        "env": env,
        "state": state,
        "artifact": artifact_id,
        "blue_port": envcfg["blue_port"],
        "green_port": envcfg["green_port"],
        "container_port": envcfg.get("container_port", settings["container_port"]),
        "router_url": f"http://127.0.0.1:{envcfg['router_port']}/",
        "nginx_conf_dir": os.path.join(router_dir, "conf.d"),
        "nginx_conf": os.path.join(router_dir, "nginx.conf"),
        "nginx_prefix": router_dir.rstrip("/") + "/",
        "health_path": settings["health_path"],
        "health_timeout": settings["health_timeout"],
        "health_interval": settings["health_interval"],
        "traffic_steps": settings["traffic_steps"],
        **({"analysis": _analysis_for(env_analysis(settings, env), "docker")} if env_analysis(settings, env) else {}),
    }


SWARM_OPTIONS = ("router_image", "router_port", "replicas", "network", "health_cmd", "docker_host")


def swarm_swap_args(settings: dict, env: str, artifact_id, state: str = "deployed") -> dict:
    """bg_swap's arguments (swarm backend, docs/swarm.md): the environment's swarm settings, the promotion's gate."""
    envcfg = settings["environments"][env]
    return {
        "backend": "swarm",
        "app": settings["app"],
        "env": env,
        "state": state,
        "artifact": artifact_id,
        "swarm": {key: envcfg[key] for key in SWARM_OPTIONS if envcfg.get(key) not in (None, "")},
        "container_port": envcfg.get("container_port", settings["container_port"]),
        "health_path": settings["health_path"],
        "health_timeout": settings["health_timeout"],
        "health_interval": settings["health_interval"],
        "traffic_steps": settings["traffic_steps"],
        **({"analysis": _analysis_for(env_analysis(settings, env), "swarm")} if env_analysis(settings, env) else {}),
    }


def env_region(settings: dict, env: str, environ) -> str:
    """The AWS region of an environment: its own, else promotion_aws.region, else AWS_REGION / AWS_DEFAULT_REGION."""
    envcfg = settings["environments"].get(env) or {}
    region = (
        envcfg.get("region") or settings["aws_region"] or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    )
    if not region:
        raise PromotionError(
            f"environment {env} has no AWS region: set region in promotion_environments.{env} or in promotion_aws (or"
            " AWS_REGION)"
        )
    return str(region)


def ami_for_region(artifact_id, region: str, env: str) -> str:
    """The AMI of `region` in the artifact (a region map, its JSON text, or an AMI ID). Promotion never rebakes or
    copies an AMI: an artifact without one for the environment's region is refused before anything changes."""
    parsed = artifact_id
    if isinstance(parsed, str) and parsed.strip().startswith("{"):
        try:
            parsed = json.loads(parsed)
        except ValueError:
            pass
    if isinstance(parsed, dict):
        ami = str(parsed.get(region) or "")
        if AMI_ID.match(ami):
            return ami
        raise PromotionError(
            f"artifact {json.dumps(parsed)} has no AMI for region {region} of environment {env} (it has:"
            f" {', '.join(sorted(parsed))}): promotion never rebakes or copies an AMI. Bake it with bake_ami and"
            f" {region} in copy_regions (its region map then holds that region) and deploy that ID, or set the"
            " environment's region to one the map holds."
        )
    if AMI_ID.match(str(parsed)):
        return str(parsed)
    raise PromotionError(
        f'artifact {json.dumps(parsed)} is not an AMI ID (ami-...) or a region map {{"<region>": "ami-..."}}: give'
        " the ID bake_ami recorded"
    )


def aws_swap_args(settings: dict, env: str, ami: str, region: str, state: str, connection: dict) -> dict:
    """bg_swap's arguments (aws backend): the AWS connection (promotion_aws), the environment's listener, names and
    gate settings, the AMI of its region."""
    envcfg = settings["environments"][env]
    args = dict(connection)
    args.update(backend="aws", app=settings["app"], env=env, state=state, artifact=ami, region=region)
    args.update({key: envcfg[key] for key in AWS_SWAP_OPTIONS if envcfg.get(key) is not None})
    args.update({key: envcfg.get(key, settings[key]) for key in AWS_SWAP_DEFAULTS})
    if env_analysis(settings, env):
        args["analysis"] = _analysis_for(env_analysis(settings, env), "aws")
    return args


# bg_swap (ecs backend, docs/ecs.md) options an environment of promotion_environments may set
ECS_SWAP_OPTIONS = (
    "cluster",
    "service",
    "task_family",
    "container_name",
    "listener_arn",
    "load_balancer_name",
    "listener_port",
    "target_groups",
    "step_pause",
    "health_checks_required",
    "verify_timeout",
    "old_colour_action",
    "lock_ttl",
)


def ecs_swap_args(settings: dict, env: str, artifact_id, region: str, state: str, connection: dict) -> dict:
    """bg_swap's arguments (ecs backend): the AWS connection (promotion_aws), the environment's cluster, service,
    listener and gate settings, the artifact's digest reference (bg_swap refuses anything else)."""
    envcfg = settings["environments"][env]
    args = dict(connection)
    args.update(backend="ecs", app=settings["app"], env=env, state=state, artifact=artifact_id, region=region)
    args.update({key: envcfg[key] for key in ECS_SWAP_OPTIONS if envcfg.get(key) is not None})
    args.update({key: envcfg.get(key, settings[key]) for key in AWS_SWAP_DEFAULTS})
    if env_analysis(settings, env):
        args["analysis"] = _analysis_for(env_analysis(settings, env), "ecs")
    return args


def env_tag_args(settings: dict, env: str, record: dict) -> dict | None:
    """push_image's arguments for the environment tag on the artifact's digest; None when there is none to add."""
    if not (settings["env_tags"] and record.get("kind") == "container" and record.get("fingerprint")):
        return None
    fingerprint = record["fingerprint"]
    return {
        "repository": record["repository"],
        "fingerprint": fingerprint,
        "tags": [fingerprint_tag(fingerprint), env],
        "mutable_tags": list(settings["chain"]),
    }


def summary_lines(settings: dict, request: dict, swap: dict, recorded: dict) -> list:
    """What the playbooks show at the end: the ID now live, the colour and how it got there, the gate."""
    app, env, action = settings["app"], request["env"], request["action"]
    head = f"{app}/{env} live: {recorded.get('artifact_id')}"
    if action == "promote":
        head += f" (promoted from {request['from_env']})"
    elif action == "rollback":
        head += " (rolled back)" if recorded.get("changed") else " (rolled back before: nothing to do)"
    if settings["backend"] == "none":
        colour = "backend none: recorded in the ledger only, nothing was switched"
    elif action == "rollback":
        how = (
            "instant switch back to the kept colour"
            if swap.get("rollback_method") == "switch_back"
            else "blue-green deploy of the previous ID"
        )
        colour = f"colour: {swap.get('live_colour')} ({how})"
    else:
        colour = f"colour: {swap.get('live_colour')} ({'switched' if swap.get('changed') else 'already live'})"
    lines = [head, colour]
    if action != "rollback":
        if recorded.get("forced"):
            lines.append(
                f"FORCED: {'; '.join(recorded.get('overridden') or [])} - reason: {request.get('reason') or ''}"
            )
        else:
            lines.append("gate: ok")
        lines.extend(evidence_lines(recorded.get("evidence") or {}))
    return lines


def evidence_lines(evidence: dict) -> list:
    """The soak and the approval the gate relied on, for the summary (docs/ledger.md, "Evidence")."""
    lines = []
    soak = evidence.get("soak")
    if isinstance(soak, dict):
        lines.append(
            f"soak: {soak.get('from_env')} ran it {soak.get('minutes')} min of {soak.get('required_min'):g}"
            f" (live there since {soak.get('live_since')})"
            + ("" if soak.get("ok") else " - not enough, overridden by force")
        )
    approval = evidence.get("approval")
    if isinstance(approval, dict):
        lines.append(f"approved by {approval.get('by')} at {approval.get('at')}")
    return lines


# -- fleets: an environment that is an inventory group of Docker hosts (docs/fleet.md) ------------------------------


def fleet_group(settings: dict, env: str) -> str:
    """The inventory group of the environment's hosts: promotion_environments.<env>.hosts_group, else env_<env>."""
    envcfg = settings["environments"].get(env) or {}
    return str(envcfg.get("hosts_group") or f"env_{env}")


def fleet_hosts(settings: dict, env: str, groups: dict) -> list:
    """The environment's hosts (inventory names, inventory order); empty: the environment runs on the controller."""
    if settings["backend"] != "docker":
        return []
    return [str(host) for host in (groups or {}).get(fleet_group(settings, env)) or []]


def fleet_batch(settings: dict, env: str) -> str:
    """The hosts switched at a time (serial): promotion_environments.<env>.batch, else promotion_batch (default 1).

    A number of hosts (2) or a percentage of the environment ("25%")."""
    envcfg = settings["environments"].get(env) or {}
    batch = envcfg.get("batch", settings["batch"])
    text = str(batch).strip()
    if isinstance(batch, bool) or not BATCH.match(text):
        raise PromotionError(
            f"invalid settings: the batch of environment {env} {json.dumps(str(batch))} must be a number of hosts"
            ' (1, 2, ...) or a percentage ("25%"): set promotion_batch or promotion_environments.'
            f"{env}.batch"
        )
    return text


def fleet_max_fail_percentage(settings: dict) -> int:
    value = settings["max_fail_percentage"]
    try:
        number = int(str(value).strip().rstrip("%"))
    except ValueError:
        number = -1
    if isinstance(value, bool) or not 0 <= number <= 100:
        raise PromotionError(
            f"invalid settings: promotion_max_fail_percentage {json.dumps(str(value))} must be a number from 0 to"
            " 100 (0: the first host that fails stops the rollout and every host switched goes back)"
        )
    return number


def fleet_router(settings: dict, env: str) -> dict:
    """bg_swap's `router` option on a fleet host: nginx listens on every address of the host (a front load balancer
    reaches it), in the environment's router_dir on the host. bg_swap sets it up in the same module run as the swap
    (one module run per host, not two)."""
    envcfg = settings["environments"][env]
    return {
        "listen": f"{envcfg.get('router_address', '0.0.0.0')}:{envcfg['router_port']}",
        "self_contained_dir": str(envcfg["router_dir"]),
    }


def fleet_lock_path(settings: dict, env: str) -> str:
    """The file ledger's environment lock for a fleet rollout: a file beside the ledger."""
    directory = os.path.dirname(os.path.abspath(str(settings["ledger"]["path"])))
    return os.path.join(directory, f".{settings['app']}-{env}.promotion.lock")


class RolloutLock(FileLock):
    """The file ledger's environment lock for a whole fleet rollout (plan -> hosts -> record), held on behalf of
    the ansible-playbook process (`pid`, the worker's parent): a run that died leaves a stale lock, taken over by
    the next one. Each step of the rollout runs in its own worker, so it checks the owner pid, not its own."""

    def __init__(self, path: str, what: str, pid: int):
        super().__init__(path, what, owner=f"ansible-playbook pid {pid} on {socket.gethostname()}")
        self.pid = pid

    def acquire(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)  # the ledger's directory, before its first write
        except OSError as exc:
            raise PromotionError(
                f"cannot create the directory of the environment lock {self.path} ({exc.strerror}): make the ledger's"
                " directory writable (promotion_ledger.path)"
            ) from None
        for _attempt in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.read_owner()
                if info is None:
                    continue
                if self.owns(info):
                    self.held = True  # this run took it already (a step run again)
                    return
                if self._is_stale(info):
                    self._remove_stale(info)
                    continue
                raise LockedError(
                    f"locked: a promotion of {self.what} is in progress by {info.get('owner') or 'an unknown owner'}"
                    f" since {info.get('since') or 'an unknown time'}; nothing was touched. Retry once it is done, or"
                    f" remove {self.path} if that run is dead"
                ) from None
            payload = {
                "owner": self.owner,
                "pid": self.pid,
                "host": socket.gethostname(),
                "since": iso_time(time.time()),
            }
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            self.held = True
            return
        raise LockedError(f"locked: could not take {self.path} for {self.what} after 3 attempts; retry later")

    def token_out(self):
        return None  # the owner pid identifies the run

    def owns(self, info: dict) -> bool:
        return bool(info) and info.get("pid") == self.pid and info.get("host") == socket.gethostname()

    def release(self) -> bool:
        """Remove the lock when this run holds it; whether it did."""
        if self.owns(self.read_owner() or {}):
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return False
            return True
        return False


def fleet_summary(settings: dict, request: dict, recorded: dict, hosts: list, swaps: dict) -> list:
    """What the playbooks show at the end of a fleet rollout: the ID live, on which hosts, how each got there."""
    app, env, action = settings["app"], request["env"], request["action"]
    head = f"{app}/{env} live: {recorded.get('artifact_id')}"
    if action == "promote":
        head += f" (promoted from {request['from_env']})"
    elif action == "rollback":
        head += " (rolled back)" if recorded.get("changed") else " (rolled back before: nothing to do)"
    lines = [head, f"hosts ({len(hosts)}): {', '.join(hosts)}"]
    for host in hosts:
        swap = swaps.get(host) or {}
        if action == "rollback":
            how = "instant switch back" if swap.get("rollback_method") == "switch_back" else "blue-green deploy"
        else:
            how = "switched" if swap.get("changed") else "already live"
        lines.append(f"  {host}: colour {swap.get('live_colour')} ({how})")
    if action != "rollback":
        if recorded.get("forced"):
            lines.append(
                f"FORCED: {'; '.join(recorded.get('overridden') or [])} - reason: {request.get('reason') or ''}"
            )
        else:
            lines.append("gate: ok")
        lines.extend(evidence_lines(recorded.get("evidence") or {}))
    return lines
