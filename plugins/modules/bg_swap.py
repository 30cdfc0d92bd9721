#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: bg_swap
short_description: Blue-green deployment of an immutable artifact with a health gate and automatic rollback
version_added: 0.1.0
description:
  - Deploys an immutable artifact (a registry digest reference for O(backend=docker)) to the idle colour of an
    application environment, waits until it passes a health gate, switches traffic to it (at once or in weighted
    steps), verifies the switch and keeps the old colour for an instant rollback.
  - The live colour is read from the traffic switch itself. For O(backend=docker) that is the nginx upstream file
    C(<nginx_conf_dir>/<app>-<env>.upstream.conf) written by the role M(immutable.infra.router) (its server config
    includes it) and rewritten atomically by this module.
  - When the health gate or the post-switch verification fails, traffic goes back to the old colour and the task
    fails with a message naming the failed check, the last result and how many good checks of N were seen.
  - O(state=rolled_back) switches traffic back to the previous colour; a stopped previous container is started and
    gated first.
  - Two runs for the same O(app) and O(env) cannot overlap; the second fails at once with a C(locked) message
    naming the owner and the lock file.
  - The O(backend=aws) backend (ALB listener across two target groups fed by two ASGs) is not implemented yet and
    fails with a clear message.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  backend:
    description: Where the two colours run.
    type: str
    choices: [docker, aws]
    default: docker
  app:
    description: Application name, part of the container names C(<app>-<env>-blue|green) and the nginx files.
    type: str
    required: true
  env:
    description: Environment name, for example C(dev), C(staging) or C(prod).
    type: str
    required: true
  artifact:
    description:
      - The immutable artifact to deploy. For O(backend=docker) a digest reference C(repository@sha256:<64 hex>);
        mutable tags such as C(web:1.0) are refused. For O(backend=aws) an AMI ID.
      - Required with O(state=deployed). With O(state=rolled_back) optional; when given, the previous colour must
        run exactly this artifact.
    type: str
  state:
    description:
      - V(deployed) makes the live colour run O(artifact) (no change when it already does).
      - V(rolled_back) switches traffic back to the previous colour recorded in the state file.
    type: str
    choices: [deployed, rolled_back]
    default: deployed
  health_path:
    description: HTTP path probed on the idle colour during the health gate; a 2xx answer is a good check.
    type: str
    default: /healthz
  health_checks_required:
    description: Number of consecutive good checks the idle colour needs before traffic moves.
    type: int
    default: 3
  health_interval:
    description: Seconds between two health checks.
    type: float
    default: 1.0
  health_timeout:
    description: Seconds the health gate may take in total before it fails.
    type: float
    default: 60.0
  traffic_steps:
    description:
      - Percentages of traffic the new colour gets in turn, for example V([10, 50, 100]). Each step is a whole
        number in 1..100, the list is strictly increasing and ends at 100. The default moves all traffic at once.
      - The first deployment of an environment (no live colour yet) always switches at once.
    type: list
    elements: raw
    default: [100]
  step_pause:
    description: Seconds to wait after each weighted step before the next one.
    type: float
    default: 0.0
  verify_timeout:
    description: Seconds the post-switch verification may take before traffic is rolled back.
    type: float
    default: 15.0
  old_colour_action:
    description:
      - What happens to the old colour after the new one passed the gate and the verification.
      - V(keep) leaves it running for an instant rollback. V(stop) stops it (docker) without removing it, so a
        rollback can start it again.
    type: str
    choices: [keep, stop]
    default: keep
  blue_port:
    description: Host port on 127.0.0.1 for the blue container. Required with O(backend=docker).
    type: int
  green_port:
    description: Host port on 127.0.0.1 for the green container. Required with O(backend=docker).
    type: int
  container_port:
    description: Port the application listens on inside the container.
    type: int
    default: 8080
  container_env:
    description: Environment variables for the containers. Values are not logged.
    type: dict
    default: {}
  router_url:
    description:
      - URL of the nginx router used for the post-switch verification; the answer must be 2xx and carry the
        C(X-Colour) header of the new colour (added by M(immutable.infra.router)).
    type: str
    default: http://127.0.0.1:8000/
  nginx_conf_dir:
    description:
      - Directory holding the upstream file C(<app>-<env>.upstream.conf), the state file C(<app>-<env>.bg_state.json)
        and the lock file C(<app>-<env>.bg.lock). Must match the router role's conf dir.
    type: path
    default: /etc/nginx/conf.d
  nginx_binary:
    description: The nginx command used for C(nginx -t) and C(nginx -s reload).
    type: str
    default: nginx
  nginx_conf:
    description: Main nginx config passed as C(-c) (the router's self-contained C(nginx.conf)); omitted when unset.
    type: path
  nginx_prefix:
    description: nginx prefix passed as C(-p); omitted when unset.
    type: path
  docker_binary:
    description: The docker CLI command.
    type: str
    default: docker
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
attributes:
  check_mode:
    support: full
    description: Returns the plan (colour, artifact, steps) and changes nothing.
  diff_mode:
    support: none
    description: No diff is produced.
notes:
  - The old colour is never stopped before the new one passed the gate and the verification.
  - The AWS connection options only matter for O(backend=aws); boto3 is only required for it.
seealso:
  - module: immutable.infra.push_image
"""

EXAMPLES = r"""
- name: Deploy a digest to prod with a weighted switch
  immutable.infra.bg_swap:
    app: web
    env: prod
    artifact: "127.0.0.1:5000/web@sha256:0d5f0b8f1c7f3e4b7f4a3d2c1b0a99887766554433221100ffeeddccbbaa9988"
    blue_port: 8101
    green_port: 8102
    router_url: http://127.0.0.1:8000/
    traffic_steps: [10, 50, 100]
    step_pause: 5

- name: Roll prod back to the previous colour
  immutable.infra.bg_swap:
    app: web
    env: prod
    state: rolled_back
    blue_port: 8101
    green_port: 8102
"""

RETURN = r"""
live_colour:
  description: Colour receiving all traffic at the end (on failure, the colour traffic was left on).
  returned: always
  type: str
  sample: green
previous_colour:
  description: The colour that served before; kept for rollback.
  returned: success
  type: str
  sample: blue
artifact:
  description: Artifact the live colour runs.
  returned: success
  type: str
  sample: 127.0.0.1:5000/web@sha256:0d5f0b8f1c7f3e4b7f4a3d2c1b0a99887766554433221100ffeeddccbbaa9988
previous_artifact:
  description: Artifact the previous colour runs.
  returned: success
  type: str
timings:
  description: Seconds spent per phase (deploy, gate, switch, verify).
  returned: always
  type: dict
  sample: {deploy: 0.8, gate: 2.1, switch: 0.05, verify: 0.02}
ports:
  description: Host ports of the colours (docker backend).
  returned: when backend is docker
  type: dict
  sample: {blue: 8101, green: 8102}
containers:
  description: Container names of the colours (docker backend).
  returned: when backend is docker
  type: dict
upstream_file:
  description: The nginx upstream file the module switches (docker backend).
  returned: when backend is docker
  type: str
state_file:
  description: The state file with live/previous colour and artifact (docker backend).
  returned: when backend is docker
  type: str
plan:
  description: In check mode, what would be done.
  returned: check mode with changes
  type: dict
traffic_steps:
  description: The weighted steps applied.
  returned: when traffic was switched by a deployment
  type: list
  elements: int
rolled_back:
  description: On failure, whether traffic was put back on the old colour automatically.
  returned: failure after the gate or switch started
  type: bool
failed_check:
  description: On failure, which check failed (lock, deploy, health_gate, switch, verify).
  returned: failure
  type: str
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.immutable.infra.plugins.module_utils._bg_docker import DockerBackend
from ansible_collections.immutable.infra.plugins.module_utils._bluegreen import BlueGreen
from ansible_collections.immutable.infra.plugins.module_utils._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils._bluegreen import Options
from ansible_collections.immutable.infra.plugins.module_utils._bluegreen import validate_artifact
from ansible_collections.immutable.infra.plugins.module_utils._bluegreen import validate_steps
from ansible_collections.immutable.infra.plugins.module_utils._nginx_switch import NginxSwitch


def argument_spec():
    return dict(
        backend=dict(type="str", choices=["docker", "aws"], default="docker"),
        app=dict(type="str", required=True),
        env=dict(type="str", required=True),
        artifact=dict(type="str"),
        state=dict(type="str", choices=["deployed", "rolled_back"], default="deployed"),
        health_path=dict(type="str", default="/healthz"),
        health_checks_required=dict(type="int", default=3),
        health_interval=dict(type="float", default=1.0),
        health_timeout=dict(type="float", default=60.0),
        traffic_steps=dict(type="list", elements="raw", default=[100]),
        step_pause=dict(type="float", default=0.0),
        verify_timeout=dict(type="float", default=15.0),
        old_colour_action=dict(type="str", choices=["keep", "stop"], default="keep"),
        blue_port=dict(type="int"),
        green_port=dict(type="int"),
        container_port=dict(type="int", default=8080),
        container_env=dict(type="dict", default={}, no_log=True),
        router_url=dict(type="str", default="http://127.0.0.1:8000/"),
        nginx_conf_dir=dict(type="path", default="/etc/nginx/conf.d"),
        nginx_binary=dict(type="str", default="nginx"),
        nginx_conf=dict(type="path"),
        nginx_prefix=dict(type="path"),
        docker_binary=dict(type="str", default="docker"),
    )


def docker_backend(module):
    p = module.params
    missing = [name for name in ("blue_port", "green_port") if not p[name]]
    if missing:
        raise BlueGreenError(f"backend=docker needs {' and '.join(missing)}: one free 127.0.0.1 port per colour")

    def run(args):
        return module.run_command(args, environ_update={"LC_ALL": "C"})

    switch = NginxSwitch(
        run, p["app"], p["env"], p["nginx_conf_dir"], p["nginx_binary"], p["nginx_conf"], p["nginx_prefix"]
    )
    return DockerBackend(
        run,
        switch,
        p["app"],
        p["env"],
        {"blue": p["blue_port"], "green": p["green_port"]},
        container_port=p["container_port"],
        health_path=p["health_path"],
        router_url=p["router_url"],
        container_env=p["container_env"],
        docker_binary=p["docker_binary"],
    )


def main():
    module = AnsibleAWSModule(
        argument_spec=argument_spec(),
        required_if=[("state", "deployed", ["artifact"])],
        supports_check_mode=True,
        check_boto3=False,
    )
    p = module.params
    try:
        validate_artifact(p["backend"], p["artifact"])
        options = Options(
            health_checks_required=p["health_checks_required"],
            health_interval=p["health_interval"],
            health_timeout=p["health_timeout"],
            traffic_steps=validate_steps(p["traffic_steps"]),
            step_pause=p["step_pause"],
            verify_timeout=p["verify_timeout"],
            old_colour_action=p["old_colour_action"],
        )
        if options.health_checks_required < 1:
            raise BlueGreenError("health_checks_required must be at least 1")
        if p["backend"] == "aws":
            raise BlueGreenError("backend=aws is not implemented yet in this version of immutable.infra.bg_swap")
        backend = docker_backend(module)
        flow = BlueGreen(backend, options, check_mode=module.check_mode)
        if p["state"] == "deployed":
            result = flow.deploy(p["artifact"])
        else:
            result = flow.rollback(p["artifact"])
    except BlueGreenError as exc:
        module.fail_json(msg=exc.msg, **exc.extra)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
