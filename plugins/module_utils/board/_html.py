# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion board as one self-contained HTML page: inline CSS, no script, no external asset.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Every value that comes from the ledger or a record goes through esc() (html.escape, quotes included), in text and
in attributes alike. The page carries data attributes for tools and tests: data-app, data-env, data-live,
data-verified, data-drift on each environment column, data-action on each history item (docs/board.md).
"""

from __future__ import annotations

import html
import json

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1f24;background:#f4f5f7}
header{padding:1rem 1.5rem;background:#1f2937;color:#f9fafb}
header h1{margin:0;font-size:1.4rem}
header p{margin:.25rem 0 0;font-size:.85rem;color:#d1d5db;overflow-wrap:anywhere}
main{padding:1rem 1.5rem;max-width:1400px;margin:0 auto}
h2{margin:1rem 0 .5rem;font-size:1.2rem}
code{font:13px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table.summary{border-collapse:collapse;width:100%;background:#fff;margin-bottom:1rem}
table.summary th,table.summary td{padding:.35rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left;
  vertical-align:top}
table.summary code{white-space:nowrap}
table.summary thead th{background:#f9fafb;font-size:.8rem;text-transform:uppercase;color:#4b5563}
.envs{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:1rem;align-items:start}
.env{background:#fff;border:1px solid #d1d5db;border-top:5px solid #9ca3af;border-radius:6px;padding:.75rem 1rem;
  min-width:0}
.env[data-verified="true"]{border-top-color:#15803d}
.env[data-drift="true"]{border-top-color:#b91c1c}
.env h3{margin:0 0 .5rem;font-size:1.1rem;display:flex;justify-content:space-between;gap:.5rem}
dl{margin:0;display:grid;grid-template-columns:6.5rem 1fr;gap:.2rem .6rem}
dt{color:#6b7280;font-size:.85rem}
dd{margin:0;min-width:0;overflow-wrap:anywhere}
.badge{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:.75rem;font-weight:600;
  background:#e5e7eb;color:#374151;max-width:100%;overflow-wrap:anywhere}
.ok{background:#dcfce7;color:#14532d}.bad{background:#fee2e2;color:#7f1d1d}.wait{background:#fef3c7;color:#78350f}
h4{margin:.9rem 0 .3rem;font-size:.85rem;color:#4b5563;text-transform:uppercase}
ol.history{list-style:none;margin:0;padding:0;border-left:2px solid #e5e7eb}
ol.history li{padding:.2rem 0 .35rem .6rem;font-size:.85rem;overflow-wrap:anywhere}
ol.history li .what{font-weight:600}
li[data-action="rollback"] .what{color:#b45309}
li[data-action="abort"] .what{color:#b91c1c}
li[data-forced="true"] .what{color:#b91c1c}
.muted{color:#6b7280}
.empty{background:#fff;border:1px solid #d1d5db;border-radius:6px;padding:1rem 1.25rem}
@media (max-width:600px){
  header,main{padding:.75rem}
  dl{grid-template-columns:5.5rem 1fr}
  table.summary .wide{display:none}
  table.summary th,table.summary td{padding:.3rem .3rem}
  table.summary{font-size:.85rem}
  table.summary code{font-size:11px}
}
"""


def esc(value) -> str:
    """Text for HTML, quotes included (also safe inside an attribute); None is empty."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    return html.escape(str(value), quote=True)


def _badge(text, kind="") -> str:
    return f'<span class="badge {kind}">{esc(text)}</span>'


def _artifact(shown) -> str:
    if not shown:
        return '<span class="muted">nothing</span>'
    version = f" {_badge(shown['version'])}" if shown.get("version") else ""
    return f'<code title="{esc(shown["id"])}">{esc(shown["short"])}</code>{version}'


def _drift(drift) -> tuple:
    """(data-drift value, HTML)"""
    if not drift:
        return "unknown", '<span class="muted">not checked yet (playbooks/verify.yml)</span>'
    if not drift["checked"]:
        return "unknown", f'<span class="muted">not checked at {esc(drift["at"])}</span>'
    if drift["drift"]:
        items = "".join(f"<li>{esc(item)}</li>" for item in drift["mismatches"])
        return "true", f"{_badge('DRIFT', 'bad')} at {esc(drift['at'])}<ul>{items}</ul>"
    return "false", f"{_badge('no drift', 'ok')} at {esc(drift['at'])}"


def _incoming(incoming) -> str:
    if not incoming:
        return '<span class="muted">-</span>'
    if incoming["state"] == "current":
        return _badge(f"same as {incoming['from_env']}", "ok")
    kind = {"waiting": "wait", "soaking": "wait", "needs approval": "wait", "refused": "bad"}.get(incoming["state"], "")
    source = f" from {esc(incoming['from_env'])}" if incoming.get("from_env") else ""
    return (
        f"{_badge(incoming['state'], kind)} {_artifact(incoming['artifact'])}{source}"
        f'<br><span class="muted">{esc(incoming["why"])}</span>'
    )


def _history_item(item) -> str:
    shown = item["artifact"]
    parts = [
        f'<span class="what">{esc(item.get("label") or item["action"])}</span>',
        _artifact(shown),
        f'<span class="muted">{esc(item["at"])}</span>',
    ]
    if item.get("from_env"):
        parts.append(f"from {esc(item['from_env'])}")
    if item.get("by"):
        parts.append(f"by {esc(item['by'])}")
    if item["forced"]:
        parts.append(_badge("forced", "bad"))
    if not item["verified"] and item["action"] != "abort":  # an abort is never verified: "aborted" says it
        parts.append(_badge("not verified", "wait"))
    if item.get("reason"):
        parts.append(f"reason: {esc(item['reason'])}")
    if item["hosts"]:
        parts.append(f"hosts: {esc(', '.join(item['hosts']))}")
    if item.get("evidence"):
        parts.append(f'<span class="muted">evidence: {esc(item["evidence"])}</span>')
    for key, value in sorted(item["extra"].items()):
        parts.append(f"{esc(key)}: {esc(value)}")
    return (
        f'<li data-action="{esc(item["action"])}" data-forced="{str(item["forced"]).lower()}"'
        f' data-id="{esc(shown.get("id"))}">{" ".join(parts)}</li>'
    )


def _column(app, env) -> str:
    live = env["live"]
    drift_attr, drift_html = _drift(env["drift"])
    verified = _badge("verified", "ok") if env["verified"] else _badge(env["verdict"] or "nothing live", "wait")
    promoted = '<span class="muted">-</span>'
    if live:
        how = esc(env["action"] or "")
        if env.get("from_env"):
            how += f" from {esc(env['from_env'])}"
        promoted = f"{how}, {esc(env['age'])} ago<br>{esc(env['since'])}<br>by {esc(env['by'])}"
    rows = [
        ("live", _artifact(live)),
        ("since", promoted),
        ("verified", verified),
        ("previous", _artifact(env["previous"])),
        ("next in", _incoming(env["incoming"])),
        ("drift", drift_html),
    ]
    if env["hosts"]:
        rows.append(("hosts", esc(", ".join(env["hosts"]))))
    dl = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    history = "".join(_history_item(item) for item in env["history"]) or '<li class="muted">no history</li>'
    return (
        f'<article class="env" data-app="{esc(app["name"])}" data-env="{esc(env["name"])}"'
        f' data-live="{esc((live or {}).get("id"))}" data-verified="{str(env["verified"]).lower()}"'
        f' data-drift="{drift_attr}">'
        f"<h3><span>{esc(env['name'])}</span>{verified}</h3><dl>{dl}</dl>"
        f'<h4>History, newest first</h4><ol class="history">{history}</ol></article>'
    )


def _summary(app) -> str:
    rows = []
    for env in app["environments"]:
        live = env["live"]
        drift = env["drift"]
        drift_text = "-" if not drift or not drift["checked"] else ("DRIFT" if drift["drift"] else "ok")
        rows.append(
            f'<tr data-env="{esc(env["name"])}"><th scope="row">{esc(env["name"])}</th>'
            f'<td><code title="{esc((live or {}).get("id"))}">{esc((live or {}).get("short") or "nothing")}</code></td>'
            f'<td class="wide">{esc((live or {}).get("version"))}</td>'
            f"<td class='wide'>{esc(env['age']) if live else ''}</td>"
            f'<td class="wide">{esc(env["by"]) if live else ""}</td>'
            f"<td>{'yes' if env['verified'] else 'no'}</td><td>{drift_text}</td></tr>"
        )
    return (
        '<div class="scroll"><table class="summary"><thead><tr><th>env</th><th>live</th>'
        '<th class="wide">version</th><th class="wide">age</th>'
        '<th class="wide">by</th><th>verified</th><th>drift</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _app(app) -> str:
    hint = f'<p class="empty" data-hint="app">{esc(app["hint"])}</p>' if app["hint"] else ""
    columns = "".join(_column(app, env) for env in app["environments"])
    return (
        f'<section class="app" data-app="{esc(app["name"])}"><h2>{esc(app["name"])}</h2>{hint}'
        f'{_summary(app)}<div class="envs">{columns}</div></section>'
    )


def render_html(board: dict) -> str:
    """The page: the board's data, every value escaped."""
    body = []
    if board["empty"]:
        first = board["chain"][0] if board["chain"] else "dev"
        body.append(
            '<section class="empty" data-empty="true"><h2>Nothing is live yet</h2>'
            f"<p>{esc(board['hint'])}</p><ol>"
            "<li><code>ansible-playbook playbooks/bake.yml</code> bakes the artifact</li>"
            f"<li><code>ansible-playbook playbooks/deploy.yml -e env={esc(first)}</code> deploys it</li>"
            "<li><code>ansible-playbook playbooks/board.yml</code> writes this page again</li></ol></section>"
        )
    else:
        body.extend(_app(app) for app in board["apps"])
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Promotion board</title><style>{CSS}</style></head>"
        f'<body data-generated="{esc(board["generated"])}"><header><h1>Promotion board</h1>'
        f"<p>ledger {esc(board['location'])} &middot; chain {esc(' → '.join(board['chain']))}"
        f" &middot; generated {esc(board['generated'])}</p></header>"
        f"<main>{''.join(body)}</main></body></html>\n"
    )
