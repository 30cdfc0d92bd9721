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

APP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
BACKENDS = ("docker", "aws", "none")
ACTIONS = ("deploy", "promote", "rollback")
LEDGER_CONNECTION = ("backend", "path", "prefix", "region", "endpoint_url")
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
    for path in sorted(glob.glob(os.path.join(glob.escape(artifacts_dir), glob.escape(app), "records", "*.json"))):
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
    path = os.path.join(artifacts_dir, app, "latest.json")
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


def router_is_up(router_dir: str, app: str, env: str) -> bool:
    """Whether the environment's router was set up (its two conf files) and its nginx master runs."""
    conf_d = os.path.join(router_dir, "conf.d")
    if not (
        os.path.isfile(os.path.join(conf_d, f"{app}-{env}.conf"))
        and os.path.isfile(os.path.join(conf_d, f"{app}-{env}.upstream.conf"))
    ):
        return False
    try:
        with open(os.path.join(router_dir, "nginx.pid"), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


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


def env_tag_args(settings: dict, env: str, record: dict) -> dict | None:
    """push_image's arguments for the environment tag on the artifact's digest; None when there is none to add."""
    if not (settings["env_tags"] and record.get("kind") == "container" and record.get("fingerprint")):
        return None
    fingerprint = record["fingerprint"]
    return {
        "repository": record["repository"],
        "fingerprint": fingerprint,
        "tags": [f"fp-{fingerprint.removeprefix('sha256:')}", env],
        "mutable_tags": list(settings["chain"]),
    }


def rollback_switch_state(bg_state: dict, previous_colour_artifact, target_id) -> str:
    """rolled_back (an instant switch back) when the kept previous colour still runs target_id, else deployed."""
    if (
        bg_state.get("previous_artifact") == target_id
        and bg_state.get("artifact") != target_id
        and previous_colour_artifact == target_id
    ):
        return "rolled_back"
    return "deployed"


def summary_lines(settings: dict, request: dict, swap: dict, switch_state: str, recorded: dict) -> list:
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
            if switch_state == "rolled_back"
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
