# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The promotion board as plain text for terminals and CI logs: aligned columns, no line longer than WIDTH (92).

PRIVATE to the collection: no compatibility promise outside immutable.infra.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.board._model import FIRST_STEPS

# at most 92 characters a line: printed by board.yml's debug task (indented by 8), a line still fits 100
WIDTH = 92
# (header, key, at most this wide); the last column takes what is left of WIDTH
COLUMNS = (
    ("ENV", "env", 12),
    ("LIVE", "live", 19),
    ("VERSION", "version", 10),
    ("AGE", "age", 4),
    ("VERIFIED", "verified", 8),
    ("DRIFT", "drift", 5),
    ("BY", "by", 14),
    ("NEXT IN", "next", WIDTH),
)


def cut(line: str, width: int = WIDTH) -> str:
    """The line, or its first width characters ending with '...' (ASCII: CI logs and YAML output keep it as is)."""
    return line if len(line) <= width else line[: max(0, width - 3)] + "..."


def fit(text, width: int) -> str:
    """A value on one line of at most width characters (newlines and runs of spaces become one space)."""
    return cut(" ".join(str(text if text is not None else "").split()), width)


def _row(env) -> dict:
    live = env["live"] or {}
    drift = env["drift"]
    incoming = env["incoming"]
    nxt = "-"
    if incoming:
        source = f" from {incoming['from_env']}" if incoming.get("from_env") else " (newest bake)"
        nxt = f"{incoming['state']}{source}"
    return {
        "env": env["name"],
        "live": live.get("short") or "nothing",
        "version": live.get("version") or "-",
        "age": env["age"] or "-",
        "verified": "yes" if env["verified"] else "no",
        "drift": "-" if not drift or not drift["checked"] else ("DRIFT" if drift["drift"] else "ok"),
        "by": env["by"] or "-",
        "next": nxt,
    }


def _table(rows: list) -> list:
    widths = []
    used = 0
    for index, (header, key, cap) in enumerate(COLUMNS):
        natural = max([len(header)] + [len(fit(row[key], cap)) for row in rows])
        if index == len(COLUMNS) - 1:
            natural = max(len(header), WIDTH - used)
        widths.append(min(natural, cap))
        used += widths[-1] + 2
    lines = []
    for values in [{key: header for header, key, _cap in COLUMNS}] + rows:
        pairs = zip(COLUMNS, widths, strict=True)
        cells = [fit(values[key], width).ljust(width) for (_header, key, _cap), width in pairs]
        lines.append(cut("  ".join(cells).rstrip()))
    return lines


def _history_lines(env_name: str, item: dict, env_width: int) -> list:
    shown = item["artifact"]
    label = item.get("label") or item["action"]
    words = [fit(item["at"] or "-", 20), fit(label, 10).ljust(8), fit(shown.get("short") or "-", 40)]
    if item["forced"]:
        words.append("FORCED")
    if not item["verified"] and item["action"] != "abort":  # an abort is never verified: "aborted" says it
        words.append("NOT-VERIFIED")
    if shown.get("version"):
        words.append(fit(shown["version"], 20))
    if item.get("from_env"):
        words.append(f"from {item['from_env']}")
    if item.get("by"):
        words.append(f"by {fit(item['by'], 40)}")
    if item.get("reason"):
        words.append(f"reason: {fit(item['reason'], WIDTH)}")
    if item["hosts"]:
        words.append(fit(f"hosts: {','.join(item['hosts'])}", WIDTH))
    for key, value in sorted(item["extra"].items()):
        words.append(fit(f"{key}: {value}", WIDTH))
    lines = [cut(f"  {env_name.ljust(env_width)} " + " ".join(words))]
    if item.get("evidence"):
        # on a line of its own, under the record: the figures of an abort must not be cut off by a long reason
        lines.append(fit(f"  {' ' * env_width} evidence: {item['evidence']}", WIDTH))
    return lines


def render_text(board: dict) -> str:
    lines = [fit(f"Promotion board - ledger {board['location']} - generated {board['generated']}", WIDTH)]
    if board["empty"]:
        first = board["chain"][0] if board["chain"] else "dev"
        steps = [fit("  " + step.format(first=first), WIDTH) for step in FIRST_STEPS]
        lines += ["", fit(f"Nothing is live yet ({board['location']}). Run first:", WIDTH)] + steps
        return "\n".join(lines) + "\n"
    for app in board["apps"]:
        lines += ["", fit(f"{app['name']} (chain {' -> '.join(env['name'] for env in app['environments'])})", WIDTH)]
        if app["hint"]:
            lines += wrap(app["hint"], WIDTH)
        lines += _table([_row(env) for env in app["environments"]])
        mismatches = [
            f"DRIFT {item}" for env in app["environments"] if env["drift"] for item in env["drift"]["mismatches"]
        ]
        lines += [fit(item, WIDTH) for item in mismatches]
        for env in app["environments"]:
            incoming = env["incoming"]
            if incoming and incoming["state"] != "current":
                what = f"{env['name']} {incoming['state']}: {incoming['artifact']['short']}"
                lines.append(fit(f"{what} - {incoming['why']}", WIDTH))
        env_width = max(len(env["name"]) for env in app["environments"])
        history = [
            line
            for env in app["environments"]
            for item in env["history"]
            for line in _history_lines(env["name"], item, env_width)
        ]
        if history:
            lines += ["History, newest first:"] + history
    return "\n".join(lines) + "\n"


def wrap(text: str, width: int) -> list:
    """Words into lines of at most width characters (a longer word is cut)."""
    lines, current = [], ""
    for word in str(text).split():
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    if current:
        lines.append(fit(current, width))
    return [fit(line, width) for line in lines]
