#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: router
short_description: Set up the nginx router in front of the blue and green colours of one app/environment
version_added: 0.2.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Writes the nginx config of the router M(immutable.infra.bg_swap) switches (docker backend) - with
    O(self_contained_dir) a self-contained C(nginx.conf) (pid, logs and temp files under that directory), the server
    config C(<conf_dir>/<app>-<env>.conf), and the upstream file C(<conf_dir>/<app>-<env>.upstream.conf) only when
    none exists (bg_swap owns it afterwards).
  - Validates the config with C(nginx -t) when a file changed or nginx must start; a config nginx refuses is put back
    as it was and nginx is not touched.
  - With O(self_contained_dir) and O(start), starts that nginx when it does not run and reloads it after a change.
    Without O(self_contained_dir) (the system nginx) it only writes and validates; a change tells the caller to
    reload the system nginx (the role M(immutable.infra.router) does).
  - The server logs every request in the combined C(access.log) and in C(<app>-<env>.analysis.log) (under
    O(self_contained_dir)C(/logs), else C(/var/log/nginx)) - tab-separated colour, time, status, request time and
    upstream address, which the analysis of M(immutable.infra.bg_swap) (O(immutable.infra.bg_swap#module:analysis))
    reads. Rotate both like any nginx log.
  - Reports no change, and runs no process, when every file is in place and nginx runs.
  - Used by the role M(immutable.infra.router) (which also installs nginx) and by the promotion step
    M(immutable.infra.promotion) before each switch. It does not install nginx.
options:
  app:
    description: Application name (the same as bg_swap's O(immutable.infra.bg_swap#module:app)).
    type: str
    required: true
  env:
    description: Environment name (the same as bg_swap's O(immutable.infra.bg_swap#module:env)).
    type: str
    required: true
  listen:
    description: nginx listen address of this app/env.
    type: str
    default: "127.0.0.1:8000"
  server_name:
    description: nginx server_name.
    type: str
    default: "_"
  blue_port:
    description: Host port of the blue colour (0 = not known yet), for the colour map of the initial upstream file.
    type: int
    default: 0
  green_port:
    description: Host port of the green colour (0 = not known yet), for the colour map of the initial upstream file.
    type: int
    default: 0
  self_contained_dir:
    description:
      - Empty for the system nginx (conf dir C(/etc/nginx/conf.d), included by Debian's C(nginx.conf)).
      - A directory for a self-contained nginx (own C(nginx.conf), prefix, pid, logs and temp dirs under it) that does
        not touch the system nginx. Pass C(nginx_conf=<dir>/nginx.conf), C(nginx_prefix=<dir>/) and
        C(nginx_conf_dir=<dir>/conf.d) to bg_swap.
    type: str
    default: ""
  conf_dir:
    description:
      - Directory of the server config, the upstream file and bg_swap's state and lock files. Default
        C(<self_contained_dir>/conf.d), or C(/etc/nginx/conf.d) for the system nginx.
    type: str
  nginx_binary:
    description: The nginx command.
    type: str
    default: nginx
  start:
    description: Start the self-contained nginx when it does not run, reload it after a change.
    type: bool
    default: true
  proxy_next_upstream:
    description: nginx proxy_next_upstream; V(off) so a failed request is never replayed on the other colour.
    type: str
    default: "off"
  upstream_keepalive:
    description: Idle keepalive connections per worker to the upstream (initial upstream file).
    type: int
    default: 16
  client_keepalive_timeout:
    description:
      - nginx keepalive_timeout for clients of this server. At every switch nginx reloads and closes idle keep-alive
        client connections; V(0) closes each connection after its response so no request is lost.
    type: str
    default: "0"
  worker_processes:
    description: worker_processes of the self-contained nginx.
    type: int
    default: 1
attributes:
  check_mode:
    support: full
    description: Reports what it would write or start, and changes nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: A second run reports no change.
notes:
  - Runs in process on the controller through its action plugin when the task runs there (local connection, no
    become); anywhere else it runs as a module.
seealso:
  - module: immutable.infra.bg_swap
  - module: immutable.infra.promotion
"""

EXAMPLES = r"""
- name: Set up and start the self-contained router of web/dev
  immutable.infra.router:
    app: web
    env: dev
    listen: 127.0.0.1:18080
    blue_port: 18081
    green_port: 18082
    self_contained_dir: /srv/routers/dev
"""

RETURN = r"""
files_changed:
  description: The files written (none when everything was in place).
  returned: always
  type: list
  elements: str
conf_dir:
  description:
    - The directory of the server config and the upstream file (bg_swap's
      O(immutable.infra.bg_swap#module:nginx_conf_dir)).
  returned: always
  type: str
upstream_file:
  description: The upstream file bg_swap switches.
  returned: always
  type: str
started:
  description: The self-contained nginx was started.
  returned: always
  type: bool
reloaded:
  description: The self-contained nginx was reloaded after a change.
  returned: always
  type: bool
command:
  description: The nginx command line of this router (with C(-c) and C(-p) for a self-contained one).
  returned: always
  type: list
  elements: str
"""

from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import Router
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import RouterError

ARGUMENT_SPEC = dict(
    app=dict(type="str", required=True),
    env=dict(type="str", required=True),
    listen=dict(type="str", default="127.0.0.1:8000"),
    server_name=dict(type="str", default="_"),
    blue_port=dict(type="int", default=0),
    green_port=dict(type="int", default=0),
    self_contained_dir=dict(type="str", default=""),
    conf_dir=dict(type="str"),
    nginx_binary=dict(type="str", default="nginx"),
    start=dict(type="bool", default=True),
    proxy_next_upstream=dict(type="str", default="off"),
    upstream_keepalive=dict(type="int", default=16),
    client_keepalive_timeout=dict(type="str", default="0"),
    worker_processes=dict(type="int", default=1),
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    p = module.params
    router = Router(
        module.run_command,
        p["app"],
        p["env"],
        p["listen"],
        {"blue": p["blue_port"], "green": p["green_port"]},
        router_dir=p["self_contained_dir"],
        conf_dir=p["conf_dir"] or "",
        nginx_binary=p["nginx_binary"],
        server_name=p["server_name"],
        client_keepalive_timeout=p["client_keepalive_timeout"],
        proxy_next_upstream=p["proxy_next_upstream"],
        upstream_keepalive=p["upstream_keepalive"],
        worker_processes=p["worker_processes"],
    )
    if module.get_bin_path(p["nginx_binary"]) is None:
        module.fail_json(
            msg=f"cannot find the nginx command {p['nginx_binary']!r}: install nginx (apt-get install nginx-light,"
            " or run the role immutable.infra.router, which installs it) or set nginx_binary"
        )
    try:
        result = router.ensure(start=p["start"], check_mode=module.check_mode)
    except (RouterError, OSError) as exc:
        module.fail_json(msg=f"router {p['app']}/{p['env']}: {exc}")
    module.exit_json(**result)


def main():
    from ansible.module_utils.basic import AnsibleModule

    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
