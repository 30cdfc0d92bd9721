# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nginx router in front of the blue and green colours of one app/environment (bg_swap's docker backend).

PRIVATE to the collection: no compatibility promise outside immutable.infra.

One idempotent step: write the router's config (a self-contained nginx.conf when the router has its own directory,
the server config `<conf_dir>/<app>-<env>.conf`, and the upstream file `<app>-<env>.upstream.conf` only when none
exists, since bg_swap owns it afterwards), validate it with `nginx -t` when something changed or nginx must start,
start the self-contained nginx when it does not run, and reload it after a change. Nothing changed and nginx running
costs a few file reads and no process. A config nginx refuses is put back as it was, and nginx is not touched.

Used by the immutable.infra.router module (and through it by the role immutable.infra.router) and by the promotion
step before bg_swap.
"""

from __future__ import annotations

import os

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import ident
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import render_upstream

# what `{{ ansible_managed }}` gave in the role's templates, so routers it set up stay unchanged
MANAGED = "# Ansible managed\n"
SYSTEM_CONF_DIR = "/etc/nginx/conf.d"
SYSTEM_LOG_DIR = "/var/log/nginx"
# bg_swap's analysis reads this log (deploy/_analysis.py parse_log): one tab-separated line per request
ANALYSIS_LOG_FIELDS = ("$bg_colour_{name}", "$msec", "$status", "$request_time", "$upstream_addr")


def analysis_log_path(router_dir: str, app: str, env: str) -> str:
    """The analysis log of app/env: under the self-contained router's logs/, else under /var/log/nginx."""
    base = os.path.join(router_dir.rstrip("/"), "logs") if router_dir else SYSTEM_LOG_DIR
    return os.path.join(base, f"{app}-{env}.analysis.log")


class RouterError(Exception):
    pass


def render_nginx_conf(router_dir: str, conf_dir: str, worker_processes: int = 1) -> str:
    """The self-contained nginx.conf: everything (pid, logs, temp files) under router_dir."""
    return (
        MANAGED + f"# Self-contained nginx for immutable.infra.router: everything lives under {router_dir}.\n"
        f"worker_processes {worker_processes};\n"
        f"pid {router_dir}/nginx.pid;\n"
        f"error_log {router_dir}/logs/error.log warn;\n"
        "\n"
        "events {\n"
        "    worker_connections 1024;\n"
        "}\n"
        "\n"
        "http {\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {router_dir}/logs/access.log;\n"
        f"    client_body_temp_path {router_dir}/tmp/client_body;\n"
        f"    proxy_temp_path {router_dir}/tmp/proxy;\n"
        f"    fastcgi_temp_path {router_dir}/tmp/fastcgi;\n"
        f"    uwsgi_temp_path {router_dir}/tmp/uwsgi;\n"
        f"    scgi_temp_path {router_dir}/tmp/scgi;\n"
        f"    include {conf_dir}/*.conf;\n"
        "}\n"
    )


def render_server_conf(
    app: str,
    env: str,
    conf_dir: str,
    listen: str,
    server_name: str = "_",
    client_keepalive_timeout: str = "0",
    proxy_next_upstream: str = "off",
    router_dir: str = "",
) -> str:
    """The server of app/env: proxies to the upstream bg_swap switches and names the colour in X-Colour.

    Requests are logged twice: in the usual combined access log, and in the analysis log bg_swap's analysis reads
    (colour, time, status, request time, upstream address; tab-separated, written by nginx itself)."""
    name = ident(app, env)
    fields = "\\t".join(ANALYSIS_LOG_FIELDS).format(name=name)
    logs = os.path.join(router_dir.rstrip("/"), "logs") if router_dir else SYSTEM_LOG_DIR
    combined = os.path.join(logs, "access.log")
    return (
        MANAGED + f"# Router for {app}/{env}; the upstream {name} and the colour map live in\n"
        f"# {conf_dir}/{app}-{env}.upstream.conf (owned by immutable.infra.bg_swap).\n"
        f"log_format bg_analysis_{name} '{fields}';\n"
        "server {\n"
        f"    listen {listen};\n"
        f"    server_name {server_name};\n"
        f"    keepalive_timeout {client_keepalive_timeout};\n"
        f"    access_log {combined};\n"
        "    # bg_swap's analysis between weighted steps reads this one (docs/progressive.md, rotation included)\n"
        f"    access_log {analysis_log_path(router_dir, app, env)} bg_analysis_{name};\n"
        "\n"
        "    location / {\n"
        f"        proxy_pass http://{name};\n"
        "        proxy_http_version 1.1;\n"
        '        proxy_set_header Connection "";\n'
        "        proxy_set_header Host $host;\n"
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
        "        # Never replay a failed request on the other colour: it may not be idempotent.\n"
        f"        proxy_next_upstream {proxy_next_upstream};\n"
        f"        add_header X-Colour $bg_colour_{name} always;\n"
        "        add_header X-Upstream-Addr $upstream_addr always;\n"
        "    }\n"
        "}\n"
    )


def nginx_runs(router_dir: str) -> bool:
    """Whether the self-contained nginx master of router_dir runs (its pid file names a live process)."""
    try:
        with open(os.path.join(router_dir, "nginx.pid"), encoding="ascii") as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A master that exited but was not reaped yet (a container whose init reaps late) still answers kill(pid, 0)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def router_is_up(router_dir: str, app: str, env: str) -> bool:
    """Whether the router of app/env was set up (its two conf files and the analysis log its nginx writes) and its
    self-contained nginx runs. A router set up by a version without the analysis log is not: the promotion's router
    step then runs once and adds it."""
    conf_dir = os.path.join(router_dir, "conf.d")
    return (
        os.path.isfile(os.path.join(conf_dir, f"{app}-{env}.conf"))
        and os.path.isfile(os.path.join(conf_dir, f"{app}-{env}.upstream.conf"))
        and os.path.isfile(analysis_log_path(router_dir, app, env))
        and nginx_runs(router_dir)
    )


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


class Router:
    """The router of app/env: a self-contained nginx under router_dir, or the system nginx when router_dir is ''.

    run_command(args) -> (rc, out, err) is injected (AnsibleModule.run_command or the in-process twin)."""

    def __init__(
        self,
        run_command,
        app: str,
        env: str,
        listen: str,
        ports: dict,
        router_dir: str = "",
        conf_dir: str = "",
        nginx_binary: str = "nginx",
        server_name: str = "_",
        client_keepalive_timeout: str = "0",
        proxy_next_upstream: str = "off",
        upstream_keepalive: int = 16,
        worker_processes: int = 1,
    ):
        self.run_command = run_command
        self.app = app
        self.env = env
        self.router_dir = router_dir.rstrip("/") if router_dir else ""
        self.conf_dir = (conf_dir or "").rstrip("/") or (
            os.path.join(self.router_dir, "conf.d") if self.router_dir else SYSTEM_CONF_DIR
        )
        self.nginx_binary = nginx_binary
        self.files = {}  # path -> (content, only_when_missing)
        if self.router_dir:
            self.files[self.main_conf] = (
                render_nginx_conf(self.router_dir, self.conf_dir, worker_processes),
                False,
            )
        self.files[self.server_conf] = (
            render_server_conf(
                app,
                env,
                self.conf_dir,
                listen,
                server_name,
                client_keepalive_timeout,
                proxy_next_upstream,
                self.router_dir,
            ),
            False,
        )
        # the upstream file is bg_swap's once it exists: written only when there is none
        self.files[self.upstream_conf] = (render_upstream(app, env, {}, ports, upstream_keepalive), True)

    @property
    def main_conf(self) -> str:
        return os.path.join(self.router_dir, "nginx.conf")

    @property
    def server_conf(self) -> str:
        return os.path.join(self.conf_dir, f"{self.app}-{self.env}.conf")

    @property
    def upstream_conf(self) -> str:
        return os.path.join(self.conf_dir, f"{self.app}-{self.env}.upstream.conf")

    def command(self, *extra: str) -> list:
        cmd = [self.nginx_binary]
        if self.router_dir:
            cmd += ["-c", self.main_conf, "-p", self.router_dir + "/"]
        return cmd + list(extra)

    def _nginx(self, what: str, *extra: str) -> None:
        rc, out, err = self.run_command(self.command(*extra))
        if rc != 0:
            raise RouterError(f"{what} failed: {(err or out).strip() or f'nginx exited with {rc}'}")

    def plan(self) -> list:
        """The files to write (in order), with their current content (None when missing)."""
        changes = []
        for path, (content, only_when_missing) in self.files.items():
            current = _read(path)
            if current == content or (only_when_missing and current is not None):
                continue
            changes.append((path, content, current))
        return changes

    def ensure(self, start: bool = True, check_mode: bool = False) -> dict:
        """Write what differs, validate, start or reload (self-contained). Returns the result for exit_json."""
        changes = self.plan()
        running = bool(self.router_dir) and nginx_runs(self.router_dir)
        must_start = bool(self.router_dir) and start and not running
        result = {
            "changed": bool(changes) or must_start,
            "files_changed": [path for path, _content, _old in changes],
            "conf_dir": self.conf_dir,
            "upstream_file": self.upstream_conf,
            "started": False,
            "reloaded": False,
            "command": self.command(),
        }
        if check_mode or not result["changed"]:
            return result
        if self.router_dir:
            for path in (self.router_dir, os.path.join(self.router_dir, "logs"), os.path.join(self.router_dir, "tmp")):
                os.makedirs(path, mode=0o755, exist_ok=True)
        os.makedirs(self.conf_dir, mode=0o755, exist_ok=True)
        for path, content, _old in changes:
            atomic_write(path, content, mode=0o644)
        try:
            self._nginx("nginx -t", "-t")
        except RouterError as exc:
            for path, _content, old in changes:  # nothing half-done: the config nginx ran with before
                if old is None:
                    os.unlink(path)
                else:
                    atomic_write(path, old, mode=0o644)
            raise RouterError(
                f"{exc}; the router's previous files were put back and nginx was not touched (check listen, ports and"
                f" the other files in {self.conf_dir})"
            ) from None
        if must_start:
            self._nginx(f"starting nginx ({' '.join(self.command())})")
            result["started"] = True
        elif changes and running and start:
            self._nginx("nginx -s reload", "-s", "reload")
            result["reloaded"] = True
        return result
