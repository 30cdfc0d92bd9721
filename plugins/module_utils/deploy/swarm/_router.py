# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Swarm router's configuration (bg_swap backend=swarm): render and parse, pure.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

The router is an nginx service on the app's overlay network (image: extensions/swarm-router). Its
/etc/nginx/bg/router.conf picks a colour per request with split_clients (the weights), and proxies to the colour's
service by name: Docker's DNS (resolver 127.0.0.11) answers every task's address (endpoint mode dnsrr) and nginx
goes round-robin over them. The first line after the header holds the weights as JSON, so the live colour is read
back from the file the router runs with.

With analysis (bg_swap's `analysis`, docs/progressive.md) nginx also writes ANALYSIS_LOG inside the router task, the
docker router's tab-separated line per request, only while a rollout is being analysed: bg_swap turns it on for the
first window and off again (the file removed) when the rollout ends, so a router never fills its task's disk.
"""

from __future__ import annotations

import json
import re

from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import SWARM_ANALYSIS_LOG

HEADER = "# Managed by immutable.infra.bg_swap (backend=swarm): rewritten at every switch, do not edit.\n"
WEIGHTS_LINE = re.compile(r"^# weights: (?P<json>\{.*\})$", re.M)
CONF_PATH = "/etc/nginx/bg/router.conf"
ROUTER_PORT = 80  # the port nginx listens on inside the router task
ANALYSIS_LOG = SWARM_ANALYSIS_LOG
# the docker router's fields (deploy/_analysis.py parse_log reads both): colour, time, status, request time, upstream
ANALYSIS_LOG_FORMAT = "$bg_colour\\t$msec\\t$status\\t$request_time\\t$upstream_addr"

# Run with `python3 -c` inside the router task (plain http.client: this is the router's Python, not Ansible's).
# PROBE: every address the colour's name resolves to (one per running task, endpoint mode dnsrr), each asked for the
# health path; one JSON line.
PROBE_SCRIPT = r"""
import http.client, json, socket, sys
name, port, path, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
out = {"addresses": [], "results": {}}
try:
    out["addresses"] = sorted({a[4][0] for a in socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_STREAM)})
except OSError as exc:
    out["dns_error"] = str(exc)
for addr in out["addresses"]:
    try:
        conn = http.client.HTTPConnection(addr, port, timeout=timeout)
        conn.request("GET", path)
        out["results"][addr] = conn.getresponse().status
        conn.close()
    except Exception as exc:
        out["results"][addr] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""

# VERIFY: GET the router itself from inside its task: status and X-Colour, one JSON line.
VERIFY_SCRIPT = r"""
import http.client, json, sys
port, path, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
try:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    print(json.dumps({"status": resp.status, "colour": resp.getheader("X-Colour", "")}))
except Exception as exc:
    print(json.dumps({"status": None, "error": f"{type(exc).__name__}: {exc}"}))
"""

# WINDOW: the router's clock, then the log's inode and size; with an offset given, then the log from that offset when
# it is still the file of that inode and no shorter, else all of it (made, replaced or truncated during the window).
WINDOW_SCRIPT = r"""
log=$1 inode=$2 offset=$3
date +%s.%N
set -- $(stat -c '%i %s' "$log" 2>/dev/null)
echo "${1:-none} ${2:-0}"
[ -n "$offset" ] && [ -n "$1" ] || exit 0
if [ "$1" = "$inode" ] && [ "$2" -ge "$offset" ]; then tail -c +$((offset + 1)) "$log"; else cat "$log"; fi
"""


def parse_window(output: str) -> tuple:
    """WINDOW_SCRIPT's answer: (the router's clock, the log's inode or None, its size, the log's bytes after them)."""
    clock, _sep, rest = output.partition("\n")
    stat, _sep, data = rest.partition("\n")
    inode, size = (stat.split() + ["none", "0"])[:2]
    return float(clock), (None if inode == "none" else inode), int(size), data.encode()


def render(
    services: dict, weights: dict, container_port: int, resolver_valid: str = "1s", analysis_log: bool = False
) -> str:
    """router.conf for weights ({colour: percent}); services maps colour -> service name. With analysis_log, nginx
    writes ANALYSIS_LOG too."""
    active = [(c, int(w)) for c, w in sorted(weights.items()) if int(w) > 0]
    lines = [HEADER, f"# weights: {json.dumps(dict(active), sort_keys=True)}\n"]
    if not active:
        lines += ["server {\n", f"    listen {ROUTER_PORT};\n", "    location / {\n", "        return 503;\n"]
        lines += ["    }\n", "}\n"]
        return "".join(lines)
    lines.append(f"resolver 127.0.0.11 valid={resolver_valid} ipv6=off;\n")
    lines.append("resolver_timeout 2s;\n")
    lines.append('split_clients "${request_id}" $bg_colour {\n')
    total = sum(w for _c, w in active)
    for colour, weight in active[:-1]:
        lines.append(f"    {100 * weight / total:.2f}% {colour};\n")
    lines.append(f"    * {active[-1][0]};\n")
    lines.append("}\n")
    lines.append("map $bg_colour $bg_service {\n")
    for colour, name in sorted(services.items()):
        lines.append(f"    {colour} {name};\n")
    lines.append("}\n")
    if analysis_log:
        lines.append(f"log_format bg_analysis '{ANALYSIS_LOG_FORMAT}';\n")
    lines += [
        "server {\n",
        f"    listen {ROUTER_PORT};\n",
        *([f"    access_log {ANALYSIS_LOG} bg_analysis;\n"] if analysis_log else []),
        "    # no client keep-alive: a reload's old workers then never close a connection a client is about to reuse\n",
        "    keepalive_timeout 0;\n",
        "    location / {\n",
        f"        proxy_pass http://$bg_service:{int(container_port)};\n",
        "        proxy_http_version 1.1;\n",
        '        proxy_set_header Connection "";\n',
        "        proxy_set_header Host $host;\n",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n",
        "        # Never replay a failed request on the other colour: it may not be idempotent.\n",
        "        proxy_next_upstream off;\n",
        "        add_header X-Colour $bg_colour always;\n",
        "    }\n",
        "}\n",
    ]
    return "".join(lines)


def parse_weights(text: str | None) -> dict | None:
    """The weights a router.conf was rendered with; None when the file is not one bg_swap wrote (a fresh task)."""
    match = WEIGHTS_LINE.search(text or "")
    if not match:
        return None
    try:
        weights = json.loads(match.group("json"))
    except ValueError:
        return None
    return {str(c): int(w) for c, w in weights.items() if int(w) > 0}
