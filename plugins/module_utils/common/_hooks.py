# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Promotion hooks (docs/progressive.md): the settings check, the JSON a webhook receives, and the POST.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The settings are `promotion_environments.<env>.hooks: {pre: [...], post: [...], on_rollback: [...]}`, each item
either `{tasks: <file>}` (a task file of the user's, included by the playbook on the controller) or
`{webhook: <url>, timeout: <s>, headers: {...}, validate_certs: <bool>}`. Header values may be secrets: nothing
here returns or prints them, and a URL is shown without its user:password part and its query string.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.parse

from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url

PHASES = ("pre", "post", "on_rollback")
PHASE_NAMES = {"pre": "pre-promotion", "post": "post-promotion", "on_rollback": "on-rollback"}
SCHEMA = "immutable.infra/promotion-hook/1"
ACTIONS = ("deploy", "promote", "rollback")
TASKS_KEYS = {"tasks", "name"}
WEBHOOK_KEYS = {"webhook", "timeout", "headers", "validate_certs", "name"}
PAYLOAD_KEYS = (
    "schema",
    "hook",
    "action",
    "app",
    "env",
    "from_env",
    "artifact",
    "previous_artifact",
    "forced",
    "reason",
    "hosts",
)
DEFAULT_TIMEOUT = 10.0
DETAIL_MAX = 300


class HookError(Exception):
    """A hook setting or a webhook call that failed; the message is safe to show (no header values)."""


def safe_url(url) -> str:
    """The URL for messages: without user:password@, the query string and the path beyond its first segment: any of
    them may hold a token (chat webhooks such as https://hooks.slack.com/services/<team>/<bot>/<token> carry it in
    the path), so https://hooks.example.com/services/T0/B0/XYZ?x=1 shows as https://hooks.example.com/services/…?…"""
    try:
        parts = urllib.parse.urlsplit(str(url))
    except ValueError:
        return "<an invalid URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    first, rest = (parts.path.lstrip("/").split("/", 1) + [""])[:2]
    path = ("/" + first if parts.path.startswith("/") else first) + ("/…" if rest else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "…" if parts.query else "", ""))


def hook_label(phase: str, index: int, item: dict) -> str:
    """'pre-promotion hook 1 (webhook http://host/path)': how messages and the ledger evidence name a hook."""
    what = f"tasks {item['tasks']}" if "tasks" in item else f"webhook {safe_url(item.get('webhook'))}"
    name = f" {item['name']}" if item.get("name") else ""
    return f"{PHASE_NAMES.get(phase, phase)} hook {index + 1}{name} ({what})"


def check_hooks(hooks, env: str, base_dir: str) -> dict:
    """The hooks of one environment checked and listed per phase, without secrets.

    Returns {phase: [{"phase", "index", "kind", "label", "tasks"?}]} for every phase (empty lists for the phases
    not set); task files are made absolute against base_dir and must exist. Raises HookError naming the setting."""
    where = f"promotion_environments.{env}.hooks"
    out = {phase: [] for phase in PHASES}
    if hooks is None:
        return out
    if not isinstance(hooks, dict):
        raise HookError(f"{where} must be a mapping {{pre: [...], post: [...], on_rollback: [...]}}")
    unknown = sorted(str(key) for key in hooks if key not in PHASES)
    if unknown:
        raise HookError(f"{where} has unknown key(s) {', '.join(unknown)}: use pre, post and on_rollback")
    for phase in PHASES:
        items = hooks.get(phase)
        if items is None:
            continue
        if not isinstance(items, list):
            raise HookError(f"{where}.{phase} must be a list of hooks ({{tasks: <file>}} or {{webhook: <url>}})")
        for index, item in enumerate(items):
            out[phase].append(_check_item(item, f"{where}.{phase}[{index}]", phase, index, base_dir))
    return out


def _check_item(item, where: str, phase: str, index: int, base_dir: str) -> dict:
    if not isinstance(item, dict) or ("tasks" in item) == ("webhook" in item):
        raise HookError(
            f"{where}: give either tasks: <a task file> or webhook: <an http(s) URL> (with optional timeout, headers,"
            " validate_certs)"
        )
    if item.get("name") is not None and not isinstance(item["name"], str):
        raise HookError(f"{where}.name must be a string")
    if "tasks" in item:
        unknown = sorted(str(key) for key in item if key not in TASKS_KEYS)
        if unknown:
            raise HookError(f"{where} has unknown key(s) {', '.join(unknown)}: a task-file hook takes tasks and name")
        path = item["tasks"]
        if not isinstance(path, str) or not path.strip():
            raise HookError(f"{where}.tasks must be the path of a task file")
        path = os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))
        if not os.path.isfile(path):
            raise HookError(f"{where}.tasks: no such task file {path} (a relative path is taken from {base_dir})")
        normal = {"phase": phase, "index": index, "kind": "tasks", "tasks": path, "name": item.get("name")}
    else:
        unknown = sorted(str(key) for key in item if key not in WEBHOOK_KEYS)
        if unknown:
            raise HookError(
                f"{where} has unknown key(s) {', '.join(unknown)}: a webhook hook takes webhook, timeout, headers,"
                " validate_certs and name"
            )
        webhook_problem(item.get("webhook"), item.get("headers"), item.get("timeout", DEFAULT_TIMEOUT), where)
        normal = {"phase": phase, "index": index, "kind": "webhook", "name": item.get("name")}
    normal["label"] = hook_label(phase, index, item)
    return normal


def webhook_problem(url, headers, timeout, where: str = "webhook") -> None:
    """Raise HookError when the URL, headers or timeout cannot be used (the header values are never shown)."""
    if not isinstance(url, str) or not url:
        raise HookError(f"{where}.webhook must be an http:// or https:// URL")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        raise HookError(f"{where}.webhook is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HookError(f"{where}.webhook must be an http:// or https:// URL with a host, not {safe_url(url)}")
    if headers is not None:
        if not isinstance(headers, dict):
            raise HookError(f"{where}.headers must be a mapping of header names to values")
        for name, value in headers.items():
            if not isinstance(name, str) or not name or any(ch in name for ch in " :\r\n"):
                raise HookError(f"{where}.headers: {name!r} is not a header name")
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise HookError(f"{where}.headers.{name} must be a string (its value is not shown)")
            if any(ch in str(value) for ch in "\r\n"):
                raise HookError(f"{where}.headers.{name} has a line break (its value is not shown)")
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        raise HookError(f"{where}.timeout must be a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise HookError(f"{where}.timeout must be a number of seconds more than 0")


def payload_problem(payload) -> str | None:
    """What is wrong with a hook payload (the documented schema), or None."""
    if not isinstance(payload, dict):
        return "the hook payload must be a mapping"
    missing = [key for key in PAYLOAD_KEYS if key not in payload]
    extra = sorted(str(key) for key in payload if key not in PAYLOAD_KEYS)
    if missing or extra:
        return (
            f"the hook payload must have exactly the keys {', '.join(PAYLOAD_KEYS)}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(extra)}" if extra else "")
        )
    if payload["schema"] != SCHEMA:
        return f"the hook payload's schema must be {SCHEMA}"
    if payload["hook"] not in PHASES:
        return f"the hook payload's hook must be one of {', '.join(PHASES)}"
    if payload["action"] not in ACTIONS:
        return f"the hook payload's action must be one of {', '.join(ACTIONS)}"
    for key in ("app", "env"):
        if not isinstance(payload[key], str) or not payload[key]:
            return f"the hook payload's {key} must be a non-empty string"
    for key in ("from_env", "reason"):
        if payload[key] is not None and not isinstance(payload[key], str):
            return f"the hook payload's {key} must be a string or null"
    for key in ("artifact", "previous_artifact"):
        value = payload[key]
        if value is not None and not isinstance(value, (str, dict)):
            return f"the hook payload's {key} must be an artifact ID (a string, or an AMI region map) or null"
    if payload["artifact"] is None:
        return "the hook payload's artifact must be given"
    if not isinstance(payload["forced"], bool):
        return "the hook payload's forced must be true or false"
    hosts = payload["hosts"]
    if hosts is not None and not (isinstance(hosts, list) and all(isinstance(host, str) and host for host in hosts)):
        return "the hook payload's hosts must be a list of host names (a fleet) or null (on the controller)"
    return None


def make_payload(phase: str, promotion: dict) -> dict:
    """The documented JSON for one phase, from the promotion's facts (missing optional ones are null)."""
    payload = {key: promotion.get(key) for key in PAYLOAD_KEYS}
    payload.update(schema=SCHEMA, hook=phase, forced=bool(promotion.get("forced")))
    for key in ("from_env", "reason", "previous_artifact"):
        if payload[key] == "":
            payload[key] = None
    return payload


def post_webhook(url: str, payload: dict, headers=None, timeout=DEFAULT_TIMEOUT, validate_certs=True) -> dict:
    """POST the payload as JSON. Returns {"status", "url"} for a 2xx answer; raises HookError otherwise, with the
    URL (no credentials), the status and the start of the answer's body."""
    webhook_problem(url, headers, timeout)
    problem = payload_problem(payload)
    if problem:
        raise HookError(problem)
    shown = safe_url(url)
    request_headers = {"Content-Type": "application/json", "User-Agent": "immutable.infra-promotion-hook/1"}
    request_headers.update({name: str(value) for name, value in (headers or {}).items()})
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:
        import base64

        token = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
        request_headers.setdefault("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
        netloc = parts.hostname if ":" not in (parts.hostname or "") else f"[{parts.hostname}]"
        netloc += f":{parts.port}" if parts.port else ""
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    body = json.dumps(payload, sort_keys=True).encode()
    try:
        with open_url(
            url,
            data=body,
            headers=request_headers,
            method="POST",
            timeout=float(timeout),
            validate_certs=validate_certs,
            follow_redirects="none",
            unredirected_headers=["Authorization"],
        ) as resp:
            status = resp.status
            resp.read(65536)
    except urllib.error.HTTPError as exc:
        try:
            text = exc.read(DETAIL_MAX * 2).decode("utf-8", "replace")
        except OSError:
            text = ""
        text = " ".join(text.split())[:DETAIL_MAX]
        reason = f" {exc.reason}" if exc.reason else ""
        raise HookError(f"webhook {shown} answered HTTP {exc.code}{reason}" + (f": {text}" if text else "")) from None
    except TimeoutError:
        raise HookError(f"webhook {shown} did not answer within {float(timeout):g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise HookError(f"webhook {shown} did not answer within {float(timeout):g} s") from None
        raise HookError(f"webhook {shown} cannot be reached: {reason}") from None
    except OSError as exc:
        raise HookError(f"webhook {shown} cannot be reached: {exc}") from None
    return {"status": status, "url": shown}


def call_webhook(params: dict, check_mode: bool = False) -> dict:
    """The webhook call of immutable.infra.promotion_hook (module and action alike): params are the module's
    options (webhook, headers, timeout, validate_certs, payload, label). The result: {changed, url, status} or
    {failed, msg, url}; the URL as safe_url() shows it, never a header value."""
    label = params.get("label") or "webhook"
    shown = safe_url(params["webhook"])
    try:
        webhook_problem(params["webhook"], params.get("headers"), params.get("timeout", DEFAULT_TIMEOUT), label)
    except HookError as exc:
        return {"failed": True, "msg": str(exc), "url": shown}
    problem = payload_problem(params.get("payload"))
    if problem:
        return {"failed": True, "msg": f"{label}: {problem}", "url": shown}
    if check_mode:
        return {"changed": False, "url": shown, "msg": "check mode: the webhook was not called"}
    try:
        answer = post_webhook(
            params["webhook"],
            params["payload"],
            params.get("headers"),
            params.get("timeout", DEFAULT_TIMEOUT),
            params.get("validate_certs", True),
        )
    except HookError as exc:
        return {"failed": True, "msg": f"{label} failed: {exc}", "url": shown}
    return dict(answer, changed=True)
