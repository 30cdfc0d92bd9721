# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The promotion playbooks' settings, artifact records and module arguments (used by the promotion action).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Pure functions over plain data, so the rules the playbooks enforce (docs/promotion.md) are tested without Ansible.
The messages are the playbooks' own: each names what is wrong and how to fix it.
"""

from __future__ import annotations

import glob
import json
import os
import re

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import fingerprint_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import latest_path
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import records_dir

APP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
BACKENDS = ("docker", "aws", "none")
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
}


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
            f" promotion_backend {json.dumps(settings['backend'])} must be docker, aws or none (none: gate and"
            " record in the ledger only, see docs/promotion.md)"
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
        if settings["backend"] == "aws" and not (
            isinstance(envcfg, dict)
            and (
                envcfg.get("listener_arn")
                or (envcfg.get("load_balancer_name") and str(envcfg.get("listener_port") or ""))
            )
        ):
            return (
                f"environment {env} has no aws settings in promotion_environments: give it listener_arn (or"
                " load_balancer_name and listener_port), and optionally region, target_groups, asg_names,"
                ' launch_templates, desired_capacity (docs/promotion.md, "aws backend")'
            )
    return None


def read_records(artifacts_dir: str, app: str) -> list:
    """The app's artifact records (<artifacts_dir>/<app>/records/*.json), oldest first: the IDs the gate knows."""
    records = []
    for path in sorted(glob.glob(os.path.join(glob.escape(records_dir(artifacts_dir, app)), "*.json"))):
        try:
            with open(path, encoding="utf-8") as handle:
                record = json.load(handle)
            artifact_id = record["id"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PromotionError(
                f"artifact record {path} is unreadable ({type(exc).__name__}: {exc}): restore it from the bake's"
                " output or remove it"
            ) from None
        records.append(
            {
                "path": path,
                "id": artifact_id,
                "kind": record.get("kind") or "container",
                "fingerprint": record.get("fingerprint") or "",
                "repository": record.get("repository") or "",
                "version": record.get("version") or "",
            }
        )
    return records


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
    return next((record for record in records if record["id"] == artifact_id), {})


def ledger_args(settings: dict, action: str, env: str, from_env: str, artifact_id, force: bool, reason) -> dict:
    """The ledger module's arguments for the gate (check mode) and for the record of this run."""
    args = {key: settings["ledger"][key] for key in LEDGER_CONNECTION if settings["ledger"].get(key) is not None}
    args.update(app=settings["app"], chain=settings["chain"], env=env, action=action)
    if artifact_id is not None:
        args["artifact_id"] = artifact_id
    if reason is not None:
        args["reason"] = reason
    if action != "rollback":
        args["force"] = force
        if action == "promote":
            args["from_env"] = from_env
    return args


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
    return lines
