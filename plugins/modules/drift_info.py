#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: drift_info
short_description: Compare what actually runs in each environment with the artifact the ledger says is live
version_added: 0.1.0
description:
  - For each environment, reads what runs and compares it with the expected (ledger) artifact ID; returns every
    mismatch. Changes nothing; drift is a result (RV(drift)), not a failure, so a playbook decides what to do
    (C(playbooks/verify.yml) fails on it).
  - "V(docker): the live colour is read from the nginx upstream file of M(immutable.infra.bg_swap). The live
    container C(<app>-<env>-<colour>) must run, and the manifest digest of its image (through the reference it was
    started with and the image's RepoDigests; a container's own image field is the local config ID) must be the
    ledger's. C(docker diff) of the live container must show no change outside O(writable_paths). A container
    named C(<app>-<env>-*) other than the two colours, a colour container without bg_swap's labels, and an idle
    colour running a digest the ledger never recorded in that environment are reported too."
  - "V(aws): every InService instance of O(environments[].auto_scaling_groups) must run the ledger's AMI for
    O(region) (an AMI ID, or the region's entry of a region map)."
  - "V(ecs): the PRIMARY task set of the ECS service (the live colour of M(immutable.infra.bg_swap) with
    O(immutable.infra.bg_swap#module:backend=ecs)) must run the ledger's digest reference in its task definition's
    container; a service changed by hand to a task definition with another image, and a task set without a
    blue/green C(externalId), are reported (docs/ecs.md)."
author:
  - immutable.infra contributors (@immutable-infra)
options:
  app:
    description: The application name, as in the ledger and in the container names C(<app>-<env>-<colour>).
    type: str
    required: true
  environments:
    description: The environments to check.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The environment name.
        type: str
        required: true
      backend:
        description: How the environment runs its artifact.
        type: str
        choices: [docker, aws, ecs, swarm]
        default: docker
      expected:
        description:
          - The artifact ID the ledger says is live (C(repo@sha256:...), C(ami-...) or a region map); null when the
            ledger records nothing.
        type: raw
      known_ids:
        description: Every artifact ID the ledger history of this environment holds (an idle colour may run one).
        type: list
        elements: raw
        default: []
      nginx_conf_dir:
        description: V(docker) only. The router's conf dir holding C(<app>-<env>.upstream.conf).
        type: path
      auto_scaling_groups:
        description: V(aws) only. The auto scaling groups whose InService instances serve the environment.
        type: list
        elements: str
        default: []
      cluster:
        description: V(ecs) only. The ECS cluster of the service.
        type: str
      service:
        description: V(ecs) only. The ECS service whose task sets are the colours. Default C(<app>-<name>).
        type: str
      container_name:
        description: V(ecs) only. The container that runs the artifact, when the task definition has several.
        type: str
      region:
        description:
          - V(ecs) only. The AWS region of this environment's cluster when it is not the module's O(region) (each
            environment of a chain may live in its own region).
        type: str
      docker_host:
        description:
          - V(swarm) only. The swarm manager's Docker Engine (C(DOCKER_HOST)) when the module does not run on it.
          - The live colour is read from the router service's file; every task of the live service must run the
            expected digest; an extra C(<app>-<env>-*) service or a container beside the tasks on the environment's
            network is drift (docs/swarm.md).
        type: str
      network:
        description: V(swarm) only. The environment's overlay network. Default C(<app>-<name>).
        type: str
  writable_paths:
    description:
      - V(docker) only. Paths the live container may change at run time; C(docker diff) entries under them (and
        their parent directories) are not drift.
    type: list
    elements: str
    default: [/var/log/nginx, /run, /tmp, /var/lib/nginx, /var/cache/nginx]
  check_filesystem:
    description: V(docker) only. Run C(docker diff) on the live container.
    type: bool
    default: true
  only_colours:
    description:
      - V(docker) only. The Docker Engine belongs to the checked environments (a fleet host of an environment group) -
        every container other than their blue and green colours (running or not) is drift, reported with its name,
        image and status (RV(environments) C(foreign_containers)).
      - Off by default, for an engine shared with other applications (the single-controller environments).
    type: bool
    default: false
  docker_binary:
    description: The docker CLI.
    type: str
    default: docker
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - The AWS options and boto3 matter only for environments with O(environments[].backend=aws).
attributes:
  check_mode:
    support: full
    description: Reads only; the same result in check mode.
  diff_mode:
    support: none
    description: Not applicable.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.ledger_info
  - module: immutable.infra.bg_swap
"""

EXAMPLES = r"""
- name: Read the ledger entry of prod
  immutable.infra.ledger_info:
    path: ledger/ledger.json
    app: web
    env: prod
  register: prod_ledger

- name: Compare prod with the ledger
  immutable.infra.drift_info:
    app: web
    environments:
      - name: prod
        expected: "{{ prod_ledger.entry.live }}"
        known_ids: "{{ prod_ledger.entry.history | map(attribute='id') | list }}"
        nginx_conf_dir: /srv/routers/prod/conf.d
  register: drift

- name: Fail on drift
  ansible.builtin.assert:
    that: not drift.drift
    fail_msg: "{{ drift.mismatches }}"

- name: AMI environments
  immutable.infra.drift_info:
    app: api
    region: eu-west-1
    environments:
      - name: prod
        backend: aws
        expected: {"eu-west-1": "ami-0123456789abcdef0"}
        auto_scaling_groups: [api-prod-blue, api-prod-green]
"""

RETURN = r"""
drift:
  description: Whether any environment differs from the ledger.
  returned: always
  type: bool
  sample: true
mismatches:
  description: Every mismatch, each prefixed with its environment.
  returned: always
  type: list
  elements: str
  sample: ["prod: live container web-prod-green was changed after it started outside the writable paths ..."]
environments:
  description:
    - Per environment, what was found. Keys depend on the backend; C(mismatches) is always there.
    - "V(docker): C(live_colour), C(container), C(running), C(started_with), C(image_digests),
      C(filesystem_changes), C(extra_containers) (named C(<app>-<env>-*) but not a colour), and with
      O(only_colours) C(foreign_containers) (the names of the other containers).
      V(aws): C(region), C(instances) (group, instance_id, image_id).
      V(ecs): C(cluster), C(service), C(task_sets) (id, external_id, status, task_definition, image)."
  returned: always
  type: dict
  sample: {prod: {backend: docker, live_colour: green, container: web-prod-green, mismatches: []}}
"""

from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import AwsInspector
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import DriftError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import aws_findings
from ansible_collections.immutable.infra.plugins.module_utils.deploy._drift import check_docker
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine


def main():
    argument_spec = dict(
        app=dict(type="str", required=True),
        environments=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                name=dict(type="str", required=True),
                backend=dict(type="str", choices=["docker", "aws", "ecs", "swarm"], default="docker"),
                expected=dict(type="raw"),
                known_ids=dict(type="list", elements="raw", default=[]),
                nginx_conf_dir=dict(type="path"),
                auto_scaling_groups=dict(type="list", elements="str", default=[]),
                cluster=dict(type="str"),
                service=dict(type="str"),
                container_name=dict(type="str"),
                region=dict(type="str"),
                docker_host=dict(type="str"),
                network=dict(type="str"),
            ),
        ),
        writable_paths=dict(
            type="list",
            elements="str",
            default=["/var/log/nginx", "/run", "/tmp", "/var/lib/nginx", "/var/cache/nginx"],
        ),
        check_filesystem=dict(type="bool", default=True),
        only_colours=dict(type="bool", default=False),
        docker_binary=dict(type="str", default="docker"),
    )
    module = AnsibleAWSModule(
        argument_spec=with_hidden_access_key(argument_spec), supports_check_mode=True, check_boto3=False
    )
    app = module.params["app"]
    docker_envs, aws_envs, ecs_envs, swarm_envs = [], [], [], []
    for env in module.params["environments"]:
        if env["backend"] == "docker":
            if not env.get("nginx_conf_dir"):
                module.fail_json(
                    msg=f"environment {env['name']!r} (docker) needs nginx_conf_dir: the router's conf dir with "
                    f"{app}-{env['name']}.upstream.conf"
                )
            docker_envs.append(dict(env, app=app))
        elif env["backend"] == "ecs":
            if not env.get("cluster"):
                module.fail_json(msg=f"environment {env['name']!r} (ecs) needs cluster: the ECS cluster of its service")
            ecs_envs.append(env)
        elif env["backend"] == "swarm":
            swarm_envs.append(env)
        else:
            aws_envs.append(env)

    results = {}
    try:
        if docker_envs:
            results.update(
                check_docker(
                    docker_engine(module.run_command, module.params["docker_binary"]),
                    docker_envs,
                    writable=module.params["writable_paths"],
                    check_diff=module.params["check_filesystem"],
                    only_colours=module.params["only_colours"],
                )
            )
    except DriftError as exc:
        module.fail_json(msg=str(exc))
    if aws_envs:
        region = module.region
        if not region:
            module.fail_json(msg="aws environments need region (or AWS_REGION / AWS_DEFAULT_REGION)")
        inspector = AwsInspector(module.client("autoscaling"), module.client("ec2"))
        for env in aws_envs:
            try:
                instances, missing = inspector.instances(env["auto_scaling_groups"])
            except Exception as exc:  # pylint: disable=broad-exception-caught  # botocore errors, reported as such
                module.fail_json_aws(exc, msg=f"could not read the instances of environment {env['name']!r}")
            results[env["name"]] = aws_findings(instances, missing, env.get("expected"), region)

    if ecs_envs:
        unplaced = [env["name"] for env in ecs_envs if not (env.get("region") or module.region)]
        if unplaced:
            module.fail_json(
                msg=f"ecs environment(s) {', '.join(unplaced)} need a region: the environment's region, the module's "
                "region, or AWS_REGION / AWS_DEFAULT_REGION"
            )
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._drift import EcsInspector
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs._drift import ecs_findings

        inspectors = {}
        for env in ecs_envs:
            region = env.get("region") or module.region
            if region not in inspectors:
                inspectors[region] = EcsInspector(module.client("ecs", region=region))
            inspector = inspectors[region]
            service = env.get("service") or f"{app}-{env['name']}"
            try:
                found = inspector.read(env["cluster"], service, env.get("container_name"))
            except Exception as exc:  # pylint: disable=broad-exception-caught  # botocore errors, reported as such
                module.fail_json_aws(exc, msg=f"could not read ECS service {service} of environment {env['name']!r}")
            results[env["name"]] = ecs_findings(found, env["cluster"], service, env.get("expected"))

    if swarm_envs:
        from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
        from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._drift import check_swarm

        try:
            results.update(check_swarm(module.run_command, app, swarm_envs, module.params["docker_binary"]))
        except BlueGreenError as exc:
            module.fail_json(msg=exc.msg)

    mismatches = [f"{name}: {item}" for name, res in results.items() for item in res["mismatches"]]
    module.exit_json(changed=False, drift=bool(mismatches), mismatches=mismatches, environments=results)


if __name__ == "__main__":
    main()
