# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""nginx traffic switch for the bg_swap docker backend.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

The router (role immutable.infra.router) includes `<conf_dir>/<app>-<env>.upstream.conf`, which defines
`upstream <app>_<env>` and a map from $upstream_addr to the colour (sent back as the X-Colour header). A switch
writes the new file to a temp file in the same directory, renames it over the old one, runs `nginx -t` and
`nginx -s reload` with the router's -c/-p; a failed test restores the previous file.
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write

HEADER = "# Managed by immutable.infra.bg_swap: rewritten atomically at every switch, do not edit.\n"
SERVER_LINE = re.compile(r"^\s*server\s+(?P<addr>\S+?)(?P<params>(\s+[^;]*)?);", re.M)
MAP_LINE = re.compile(r'^\s*"(?P<addr>[^"]+)"\s+(?P<colour>blue|green)\s*;', re.M)


class SwitchError(Exception):
    pass


def ident(app: str, env: str) -> str:
    """nginx identifier for app/env: upstream name and part of the map variable (letters, digits, _)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"{app}_{env}")


def render_upstream(app: str, env: str, weights: dict, ports: dict, keepalive: int = 16) -> str:
    """The upstream include: servers for colours with weight > 0, and the addr -> colour map for both colours."""
    name = ident(app, env)
    lines = [HEADER, f"upstream {name} {{\n"]
    active = [(c, w) for c, w in sorted(weights.items()) if w > 0]
    if not active:
        lines.append("    server 127.0.0.1:9 down;  # no colour deployed yet\n")
    for colour, weight in active:
        lines.append(f"    server 127.0.0.1:{int(ports[colour])} weight={int(weight)} max_fails=0;  # {colour}\n")
    if keepalive:
        lines.append(f"    keepalive {int(keepalive)};\n")
    lines.append("}\n")
    lines.append(f'map $upstream_addr $bg_colour_{name} {{\n    default "";\n')
    for colour in sorted(ports):
        if ports[colour]:
            lines.append(f'    "127.0.0.1:{int(ports[colour])}" {colour};\n')
    lines.append("}\n")
    return "".join(lines)


def parse_upstream(text: str) -> tuple[dict, dict]:
    """Return (weights, ports) from an upstream file: weights only for servers not marked down."""
    ports = {}
    for match in MAP_LINE.finditer(text):
        ports[match.group("colour")] = int(match.group("addr").rsplit(":", 1)[1])
    by_addr = {f"127.0.0.1:{port}": colour for colour, port in ports.items()}
    weights = {}
    for match in SERVER_LINE.finditer(text):
        params = match.group("params") or ""
        if re.search(r"\bdown\b", params):
            continue
        colour = by_addr.get(match.group("addr"))
        if colour is None:
            continue
        weight = re.search(r"\bweight=(\d+)", params)
        weights[colour] = int(weight.group(1)) if weight else 1
    total = sum(weights.values())
    if total:
        weights = {c: round(100 * w / total) for c, w in weights.items()}
    return weights, ports


class NginxSwitch:
    def __init__(
        self,
        run_command,
        app: str,
        env: str,
        conf_dir: str,
        binary: str = "nginx",
        conf: str | None = None,
        prefix: str | None = None,
        keepalive: int = 16,
    ):
        self.run_command = run_command
        self.app = app
        self.env = env
        self.conf_dir = conf_dir
        self.binary = binary
        self.conf = conf
        self.prefix = prefix
        self.keepalive = keepalive
        base = os.path.join(conf_dir, f"{app}-{env}")
        self.upstream_path = base + ".upstream.conf"
        self.state_path = base + ".bg_state.json"
        self.lock_path = base + ".bg.lock"

    def _cmd(self, *extra: str) -> list[str]:
        cmd = [self.binary]
        if self.conf:
            cmd += ["-c", self.conf]
        if self.prefix:
            cmd += ["-p", self.prefix]
        return cmd + list(extra)

    def read(self) -> tuple[dict, dict]:
        try:
            with open(self.upstream_path, encoding="utf-8") as handle:
                text = handle.read()
        except FileNotFoundError:
            raise SwitchError(
                f"upstream file {self.upstream_path} does not exist: set up the router first "
                f"(role immutable.infra.router with the same app/env and conf dir) or fix nginx_conf_dir"
            ) from None
        return parse_upstream(text)

    def test(self) -> tuple[bool, str]:
        rc, out, err = self.run_command(self._cmd("-t"))
        return rc == 0, (err or out).strip()

    def switch(self, weights: dict, ports: dict) -> None:
        """Write the upstream for `weights`, test, reload; restore the old file when nginx -t fails."""
        with open(self.upstream_path, encoding="utf-8") as handle:
            old = handle.read()
        new = render_upstream(self.app, self.env, weights, ports, self.keepalive)
        if new == old:
            return
        atomic_write(self.upstream_path, new)
        ok, output = self.test()
        if not ok:
            atomic_write(self.upstream_path, old)
            raise SwitchError(
                f"nginx -t failed after writing {self.upstream_path}; the previous file was restored and nginx "
                f"was not reloaded. nginx -t said: {output}"
            )
        rc, out, err = self.run_command(self._cmd("-s", "reload"))
        if rc != 0:
            atomic_write(self.upstream_path, old)
            raise SwitchError(
                f"nginx -s reload failed (is the router's nginx master running with this -c/-p?); the previous "
                f"upstream file was restored. nginx said: {(err or out).strip()}"
            )

    def read_state(self) -> dict:
        try:
            with open(self.state_path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise SwitchError(f"state file {self.state_path} is not valid JSON ({exc}); fix or remove it") from None

    def write_state(self, state: dict) -> None:
        atomic_write(self.state_path, json.dumps(state, indent=2, sort_keys=True) + "\n")
