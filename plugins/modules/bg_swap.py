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
  - Deploys an immutable artifact (a registry digest reference for O(backend=docker), an AMI ID for
    O(backend=aws)) to the idle colour of an application environment, waits until it passes a health gate,
    switches traffic to it (at once or in weighted steps), verifies the switch and keeps the old colour for an
    instant rollback.
  - The live colour is read from the traffic switch itself. For O(backend=docker) that is the nginx upstream file
    C(<nginx_conf_dir>/<app>-<env>.upstream.conf) written by the role M(immutable.infra.router) (its server config
    includes it) and rewritten atomically by this module.
  - When the health gate or the post-switch verification fails, traffic goes back to the old colour and the task
    fails with a message naming the failed check, the last result and how many good checks of N were seen.
  - O(state=rolled_back) puts the rollback target live. Without O(artifact) it switches traffic back to the previous
    colour; a stopped previous colour is started and gated first. With O(artifact) (the ID to roll back to) it
    switches back at once when the colour kept by the last deployment still runs that artifact, and otherwise (the
    kept colour was removed or replaced by a later deployment) deploys it blue-green like O(state=deployed).
    RV(rollback_method) says which. This is the only place the collection decides how to roll back.
  - For O(backend=aws) the traffic switch is the default action of an ALB listener that forwards to two target
    groups (C(<app>-<env>-blue) and C(<app>-<env>-green) unless O(target_groups) says otherwise), each fed by an
    Auto Scaling group pinned to a numbered launch template version. The listener is the only truth for the live
    colour. A deployment writes a new launch template version (the full data of the current one, only C(ImageId)
    replaced), pins the idle ASG to it, replaces its instances, gates on target health and on the C(ImageId) of every
    InService instance, then changes the listener's forward weights.
  - Two runs for the same O(app) and O(env) cannot overlap; the second fails at once with a C(locked) message
    naming the owner (docker - a lock file; aws - the SSM parameter C(/immutable-infra/locks/<app>/<env>), which
    expires after O(lock_ttl) seconds and may then be taken over).
author:
  - immutable.infra contributors (@immutable-infra)
options:
  backend:
    description: Where the two colours run.
    type: str
    choices: [docker, aws, ecs, swarm]
    default: docker
  app:
    description:
      - Application name, part of the container names C(<app>-<env>-blue|green) and the nginx files (docker), and of
        the default target group, ASG and launch template names C(<app>-<env>-blue|green) (aws).
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
      - Required with O(state=deployed). With O(state=rolled_back) optional; when given, it is the rollback target - an
        instant switch back when the kept colour still runs it, else a blue-green deployment of it.
    type: str
  state:
    description:
      - V(deployed) makes the live colour run O(artifact) (no change when it already does).
      - V(rolled_back) switches traffic back to the previous colour recorded in the state file (docker) or the
        state parameter C(/immutable-infra/bg-state/<app>/<env>) (aws; the other colour when nothing is recorded),
        or with O(artifact) deploys that artifact when the previous colour no longer runs it.
    type: str
    choices: [deployed, rolled_back]
    default: deployed
  health_path:
    description:
      - HTTP path probed on the idle colour during the health gate; a 2xx answer is a good check (docker).
      - Not used by O(backend=aws), where the target group's own health check decides.
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
  analysis:
    description:
      - Analysis between weighted steps (docs/progressive.md). After each step of O(traffic_steps) below 100, and at
        100 % after the verification (before the state is recorded and the old colour stopped), the module waits
        O(analysis.window) seconds, then judges the new colour on what was measured in that window. A verdict
        other than C(passed) puts all traffic back on the old colour and fails with RV(failed_check=analysis) and
        the figures in RV(analysis).
      - O(backend=docker) measures from the router's analysis log (written by nginx itself, one line per request with
        the colour, status and request time; the role M(immutable.infra.router) sets it up). O(backend=swarm)
        measures from the same kind of log, written inside the router's task only while a rollout is analysed
        (bg_swap turns it on for the first window and off, the file removed, when the rollout ends) and read with
        C(docker exec). O(backend=aws) and O(backend=ecs) judge on the CloudWatch alarms named in
        O(analysis.cloudwatch_alarms) and the new target group's target health.
      - With O(analysis.prometheus) (any backend) the request figures come from the team's Prometheus instead of
        the router's log; an answer with no usable figure (no sample, an error, no answer) is C(inconclusive).
      - "Verdict: N = requests to the new colour in the window, E = those answered 5xx (also 4xx with
        O(analysis.count_4xx)); C(inconclusive) when N < O(analysis.min_requests); C(failed) when E/N >
        O(analysis.max_error_rate), or the O(analysis.latency_percentile) (nearest rank) of the request times >
        O(analysis.max_latency_ms), or an alarm was in ALARM, or a target was not healthy; C(passed) otherwise."
      - Not set (the default) - nothing is measured and nothing is waited for. A first deployment (no old colour)
        and O(state=rolled_back) are not analysed.
    type: dict
    suboptions:
      window:
        description: Seconds to observe the new colour after each step. Required.
        type: float
      min_requests:
        description:
          - Fewest requests the new colour must have answered in the window; fewer is C(inconclusive), so
            an idle window never passes by accident. V(0) lets an idle window pass. Default V(10). Docker and swarm, or
            any backend with O(analysis.prometheus).
        type: int
      max_error_rate:
        description:
          - Highest share of error answers (0..1) the new colour may give in the window (docker, swarm).
            Default V(0.05).
        type: float
      latency_percentile:
        description: Which percentile of the request times is reported and checked (1..100). Default V(95).
        type: float
      max_latency_ms:
        description:
          - Highest O(analysis.latency_percentile) of the request times, in ms (docker, swarm); unset - not checked.
        type: float
      count_4xx:
        description: Count 4xx answers as errors too (docker, swarm); by default only 5xx are errors. Default V(false).
        type: bool
      access_log:
        description:
          - The router's analysis log (docker only). Default - C(<nginx_prefix>/logs/<app>-<env>.analysis.log) (the
            self-contained router's), or C(/var/log/nginx/<app>-<env>.analysis.log) without O(nginx_prefix).
        type: path
      cloudwatch_alarms:
        description:
          - Names of CloudWatch alarms (aws), for example on the target group's C(HTTPCode_Target_5XX_Count) or
            C(TargetResponseTime); any of them in ALARM at a look during the window fails the step. They must exist.
        type: list
        elements: str
      target_health:
        description:
          - Fail the step when a target of the new colour's target group is not healthy (aws). Default V(true).
        type: bool
      prometheus:
        description:
          - Take the new colour's request figures from Prometheus's HTTP API instead of the router's log (docker), or
            besides the alarms (aws). Each query is evaluated once at the window's end
            (C(GET <url>/api/v1/query?query=...&time=<end>)) and must give one number. In the queries,
            C({colour}), C({app}), C({env}), C({window}) (the measured window, e.g. C(30s)) and C({quantile})
            (O(analysis.latency_percentile)/100, e.g. C(0.95)) are replaced, so one setting serves both colours.
          - Before any change, each query is run once, so an unreachable Prometheus, a refused header or a PromQL
            error fails early; during the rollout the same faults, or a query without a sample, make the window
            C(inconclusive), which rolls back. O(analysis.count_4xx) and O(analysis.access_log) do not apply.
        type: dict
        suboptions:
          url:
            description: Prometheus's base URL, e.g. C(http://prometheus.example.com:9090). No credentials in it.
            type: str
            required: true
          requests:
            description: PromQL giving the new colour's request count in the window, e.g.
              C(sum(increase(http_requests_total{colour="{colour}"}[{window}]))).
            type: str
            required: true
          error_rate:
            description: PromQL giving the new colour's error share in the window, 0..1 (the ratio of the 5xx
              increase to the total increase).
            type: str
            required: true
          latency_ms:
            description:
              - PromQL giving the new colour's request time percentile in ms, e.g. C(1000 * histogram_quantile(
                {quantile}, sum by (le) (rate(http_request_duration_seconds_bucket{colour="{colour}"}[{window}]))))
                (docs/progressive.md). Needed for O(analysis.max_latency_ms).
            type: str
          headers:
            description: HTTP headers sent with each query (e.g. C(Authorization)). The values are secrets, never
              shown in output or results.
            type: dict
          timeout:
            description: Seconds to wait for each answer. Default V(10).
            type: float
  old_colour_action:
    description:
      - What happens to the old colour after the new one passed the gate and the verification.
      - V(keep) leaves it running for an instant rollback. V(stop) stops it (docker) without removing it, or scales
        its ASG to 0 (aws) keeping the pinned launch template version, so a rollback can start it again.
    type: str
    choices: [keep, stop]
    default: keep
  recreate:
    description:
      - Deploy fresh even when the live colour already runs O(artifact) (normally no change). The idle colour gets a
        new container from O(artifact) (an existing one is removed first, even when it runs the same artifact), the
        health gate runs, then traffic switches to it. C(playbooks/repair.yml) uses it to replace a drifted live
        container with a fresh one from the same digest. Always C(changed=true) with O(state=deployed).
      - O(backend=docker) only.
    type: bool
    default: false
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
  router:
    description:
      - Set up the environment's self-contained nginx router first, as M(immutable.infra.router) does with the same
        O(app), O(env), O(blue_port) and O(green_port) - write what differs, C(nginx -t), start it when it is not
        running - then swap. Idempotent; the upstream file stays this module's once it exists.
      - One module run per host instead of two - the fleet playbooks (C(tasks/fleet_switch.yml)) use it.
      - O(backend=docker) only. Without it the router must already run (the role M(immutable.infra.router)).
    type: dict
    suboptions:
      listen:
        description: The router's C(listen) address and port, for example V(0.0.0.0:8080).
        type: str
        required: true
      self_contained_dir:
        description: The router's directory (its own C(nginx.conf), C(conf.d), logs and pid file).
        type: path
        required: true
  swarm:
    description:
      - O(backend=swarm) (docs/swarm.md) - run bg_swap on a manager of the swarm. Each colour is a service
        C(<app>-<env>-blue|green) pinned to O(artifact) (a digest reference) with endpoint mode C(dnsrr) on the
        attachable overlay network O(swarm.network); the router service C(<app>-<env>-router) (nginx, one task on this
        manager, O(swarm.router_port) published in host mode) reaches their tasks by Docker's DNS and is what a switch
        rewrites. O(container_port), O(health_path), O(container_env), O(registry_username) and
        O(registry_password) apply as for docker; the health gate asks every task of the new service from the router.
      - State (live, previous) is a label of the router service; the lock is the swarm config C(<app>-<env>-bg-lock).
    type: dict
    suboptions:
      router_image:
        description:
          - Digest reference of the router image, built from C(extensions/swarm-router) on the collection's base image
            and pushed to your registry (never pulled from Docker Hub). Mutable tags are refused.
        type: str
        required: true
      router_port:
        description: Port the router publishes (mode host) on this manager.
        type: int
        default: 8000
      replicas:
        description: Tasks per colour; the gate waits until every one is running and answers 2xx at O(health_path).
        type: int
        default: 2
      network:
        description: The attachable overlay network of the colours and the router (created when missing).
        type: str
      health_cmd:
        description:
          - A container healthcheck command for the colours' tasks (C(--health-cmd)); without it the image's own
            C(HEALTHCHECK), if any, applies. Swarm holds a task in C(starting) until it is healthy.
        type: str
      update_parallelism:
        description: The services' C(--update-parallelism).
        type: int
        default: 1
      update_order:
        description: The services' C(--update-order).
        type: str
        choices: [start-first, stop-first]
        default: start-first
      restart_condition:
        description: The services' C(--restart-condition).
        type: str
        choices: [any, on-failure, none]
        default: any
      docker_host:
        description:
          - The manager's Docker Engine (C(DOCKER_HOST), for example V(ssh://deploy@manager1)) when bg_swap does not
            run on the manager itself (the promotion playbooks run it on the controller).
        type: str
  docker_binary:
    description: The docker CLI command.
    type: str
    default: docker
  registry_username:
    description:
      - User for the registry of O(artifact) (docker backend), when the image must be pulled. The pull then goes
        through the Engine API on the local daemon's socket with this login in the request's C(X-Registry-Auth) header
        only (where the docker CLI is used instead - another O(docker_binary), C(DOCKER_HOST) or context - through a
        temporary C(DOCKER_CONFIG) directory holding only this login, removed right after, as
        M(immutable.infra.push_image) pushes), so no credentials stay on the host. Without it, C(docker pull) uses
        the host's own docker login, if any.
    type: str
  registry_password:
    description: Password for O(registry_username). Never logged or returned.
    type: str
  listener_arn:
    description:
      - ARN of the ALB listener whose default action switches traffic (aws, ecs). Give it, or O(load_balancer_name) and
        O(listener_port).
    type: str
  load_balancer_name:
    description: Name of the ALB, to find the listener on O(listener_port) (aws, ecs).
    type: str
  listener_port:
    description: Port of the production listener on O(load_balancer_name) (aws, ecs).
    type: int
  target_groups:
    description:
      - Target group names per colour, a dict with the keys C(blue) and C(green) (aws, ecs). Unset colours default to
        C(<app>-<env>-blue) and C(<app>-<env>-green).
    type: dict
  asg_names:
    description:
      - Auto Scaling group names per colour, a dict with the keys C(blue) and C(green) (aws). Unset colours default to
        C(<app>-<env>-blue) and C(<app>-<env>-green). Each ASG must feed the target group of its colour.
    type: dict
  launch_templates:
    description:
      - Launch template names per colour, a dict with the keys C(blue) and C(green) (aws). Unset colours default to
        C(<app>-<env>-blue) and C(<app>-<env>-green). A deployment adds a numbered version to the idle colour's
        template.
    type: dict
  desired_capacity:
    description:
      - Number of instances the idle colour runs before traffic moves to it (aws). The gate needs this many healthy
        targets. Defaults to the live colour's desired capacity (1 when nothing runs).
    type: int
  instance_type:
    description: Instance type written into the new launch template version (aws); by default the current one is kept.
    type: str
  lock_ttl:
    description:
      - Seconds after which the SSM deploy lock of an unfinished run (aws) counts as expired and may be taken over by
        the next run. Keep it longer than a whole deployment (replacement, gate, steps and pauses).
    type: int
    default: 1800
  cluster:
    description:
      - Name or ARN of the ECS cluster of the service (ecs). Required with O(backend=ecs).
      - O(backend=ecs) deploys ECS task sets behind the ALB listener (O(listener_arn), or O(load_balancer_name) and
        O(listener_port)) and its two target groups (O(target_groups)); the lock, the state parameter and the
        analysis are the aws backend's. See C(docs/ecs.md).
    type: str
  service:
    description:
      - The ECS service (ecs), created with the C(EXTERNAL) deployment controller; each colour is one of its task
        sets (C(externalId) blue or green). Default C(<app>-<env>).
    type: str
  task_family:
    description:
      - Task definition family (ecs) a first deployment starts from (its latest revision); later deployments start
        from the live colour's task definition. A new revision differs only by the container's image, O(artifact)
        (a digest reference; mutable tags are refused). Default the service name.
    type: str
  container_name:
    description:
      - The container of the task definition that gets O(artifact) and serves the target group (ecs). Needed when
        the task definition has more than one container. Its first port mapping is registered in the target group.
    type: str
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
  - With O(backend=aws) the module changes only the listener's default action (not listener rules), the two ASGs'
    launch template and capacity, the idle colour's launch template (a new version) and two SSM parameters (lock and
    state). It never uses C(SourceVersion), instance refresh or C(TargetGroup.LoadBalancerArns).
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

- name: Deploy an AMI behind an ALB listener, 10% then 50% then all, and scale the old ASG to 0 afterwards
  immutable.infra.bg_swap:
    backend: aws
    region: eu-west-1
    app: web
    env: prod
    artifact: ami-0123456789abcdef0
    load_balancer_name: web-prod
    listener_port: 443
    desired_capacity: 4
    traffic_steps: [10, 50, 100]
    step_pause: 60
    health_checks_required: 3
    health_interval: 10
    health_timeout: 900
    old_colour_action: stop

- name: Deploy with an analysis of the new colour after each step (abort and roll back on errors)
  immutable.infra.bg_swap:
    app: web
    env: prod
    artifact: "127.0.0.1:5000/web@sha256:0d5f0b8f1c7f3e4b7f4a3d2c1b0a99887766554433221100ffeeddccbbaa9988"
    blue_port: 8101
    green_port: 8102
    router_url: http://127.0.0.1:8000/
    nginx_conf_dir: /srv/routers/prod/conf.d
    nginx_conf: /srv/routers/prod/nginx.conf
    nginx_prefix: /srv/routers/prod/
    traffic_steps: [10, 50, 100]
    analysis:
      window: 60
      min_requests: 50
      max_error_rate: 0.01
      latency_percentile: 95
      max_latency_ms: 300

- name: Roll the AWS environment back to the previous colour (scaled up and gated first if it was stopped)
  immutable.infra.bg_swap:
    backend: aws
    region: eu-west-1
    app: web
    env: prod
    state: rolled_back
    listener_arn: "{{ prod_listener_arn }}"

- name: Deploy a container image to ECS task sets behind an ALB listener, in weighted steps (docs/ecs.md)
  immutable.infra.bg_swap:
    backend: ecs
    region: eu-west-1
    app: web
    env: prod
    cluster: web-prod
    artifact: "{{ record.id }}"
    load_balancer_name: web-prod
    listener_port: 443
    traffic_steps: [10, 50, 100]
    step_pause: 60

- name: Deploy to a Docker Swarm as two services behind the swarm router (run on a manager; docs/swarm.md)
  immutable.infra.bg_swap:
    backend: swarm
    app: web
    env: prod
    artifact: "{{ record.id }}"
    swarm:
      router_image: "registry.example.com/immutable-infra/swarm-router@sha256:{{ router_digest }}"
      router_port: 8080
      replicas: 3
    traffic_steps: [10, 50, 100]
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
rollback_method:
  description:
    - How O(state=rolled_back) put the target live - V(switch_back) (an instant switch back to the kept colour) or
      V(deploy) (a blue-green deployment of O(artifact), because the kept colour no longer runs it).
  returned: with state rolled_back, on success
  type: str
  sample: switch_back
switched:
  description:
    - Whether this run changed what serves traffic (a colour put live, traffic moved back). C(changed) is also true
      when only the router's files changed; the fleet playbooks put back exactly the hosts with RV(switched).
  returned: success
  type: bool
  sample: true
router:
  description: What setting up the router did (as M(immutable.infra.router) returns it).
  returned: when O(router) is given
  type: dict
  sample: {changed: false, files_changed: [], started: false, reloaded: false}
timings:
  description: Seconds spent per phase (router, deploy, gate, switch, verify).
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
  description:
    - In check mode, what would be done. With O(analysis), C(analysis_steps) lists the steps that would be analysed.
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
  description: On failure, which check failed (lock, deploy, health_gate, switch, verify, analysis).
  returned: failure
  type: str
analysis:
  description:
    - One item per analysed step (the weighted steps and 100), in order; empty when O(analysis) is not set. On an
      abort (RV(failed_check=analysis)) the last item is the step that failed.
    - C(requests), C(errors) and C(error_rate) are null for O(backend=aws) (not measured there), which adds
      C(alarms) (seen in ALARM) and C(unhealthy_targets).
  returned: always
  type: list
  elements: dict
  sample:
    - {step: 20, verdict: passed, requests: 61, errors: 0, error_rate: 0.0, latency_ms: {p: 95, value: 3.0},
       window_s: 2.0, detail: "61 requests to green in 2.0 s, error rate 0.0%, p95 latency 3 ms"}
services:
  description: The service of each colour (swarm backend).
  returned: when backend is swarm
  type: dict
  sample: {blue: web-prod-blue, green: web-prod-green}
router_service:
  description: The router service, whose C(router.conf) each switch rewrites (swarm backend).
  returned: when backend is swarm
  type: str
  sample: web-prod-router
router_port:
  description: The port the router publishes in host mode on the manager (swarm backend).
  returned: when backend is swarm
  type: int
  sample: 8080
network:
  description: The overlay network of the colours and the router (swarm backend).
  returned: when backend is swarm
  type: str
  sample: web-prod
replicas:
  description: Tasks per colour (swarm backend).
  returned: when backend is swarm
  type: int
  sample: 3
listener_arn:
  description: The listener that switches traffic (aws and ecs backends).
  returned: when backend is aws or ecs
  type: str
target_groups:
  description: Target group ARN per colour (aws and ecs backends).
  returned: when backend is aws or ecs
  type: dict
asg_names:
  description: Auto Scaling group name per colour (aws backend).
  returned: when backend is aws
  type: dict
launch_templates:
  description: Launch template name per colour (aws backend).
  returned: when backend is aws
  type: dict
launch_template_versions:
  description: Launch template version this run pinned, per colour (aws backend; empty when nothing was pinned).
  returned: when backend is aws
  type: dict
  sample: {green: 3}
lock_parameter:
  description: The SSM parameter used as deploy lock (aws and ecs backends).
  returned: when backend is aws or ecs
  type: str
  sample: /immutable-infra/locks/web/prod
state_parameter:
  description: The SSM parameter recording the last deployment or rollback (aws and ecs backends).
  returned: when backend is aws or ecs
  type: str
  sample: /immutable-infra/bg-state/web/prod
cluster:
  description: The ECS cluster (ecs backend).
  returned: when backend is ecs
  type: str
  sample: web-prod
service:
  description: The ECS service whose task sets are the colours (ecs backend).
  returned: when backend is ecs
  type: str
  sample: web-prod
task_definitions:
  description: Task definition ARN this run put on a colour, per colour (ecs backend; empty when none).
  returned: when backend is ecs
  type: dict
  sample: {green: "arn:aws:ecs:eu-west-1:123456789012:task-definition/web-prod:7"}
api_calls:
  description: Number of AWS API calls this run made (aws and ecs backends; retries of throttled calls are not
    counted).
  returned: when backend is aws or ecs
  type: int
  sample: 31
api_calls_by_operation:
  description: The AWS API calls of this run per C(service.operation) (aws and ecs backends).
  returned: when backend is aws or ecs
  type: dict
  sample: {elbv2.modify_listener: 1, autoscaling.update_auto_scaling_group: 2}
"""


import time

from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import AnalysisError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._analysis import validate as validate_analysis
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreen
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import BlueGreenError
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import Options
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import validate_artifact
from ansible_collections.immutable.infra.plugins.module_utils.deploy._bluegreen import validate_steps
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._backend import DockerBackend
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._nginx_switch import NginxSwitch
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import Router
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import RouterError
from ansible_collections.immutable.infra.plugins.module_utils.deploy.docker._router import analysis_log_path
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine


def argument_spec():
    return dict(
        backend=dict(type="str", choices=["docker", "aws", "ecs", "swarm"], default="docker"),
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
        analysis=dict(
            type="dict",
            options=dict(
                window=dict(type="float"),
                min_requests=dict(type="int"),
                max_error_rate=dict(type="float"),
                latency_percentile=dict(type="float"),
                max_latency_ms=dict(type="float"),
                count_4xx=dict(type="bool"),
                access_log=dict(type="path"),
                cloudwatch_alarms=dict(type="list", elements="str"),
                target_health=dict(type="bool"),
                prometheus=dict(
                    type="dict",
                    options=dict(
                        url=dict(type="str", required=True),
                        requests=dict(type="str", required=True),
                        error_rate=dict(type="str", required=True),
                        latency_ms=dict(type="str"),
                        headers=dict(type="dict", no_log=True),
                        timeout=dict(type="float"),
                    ),
                ),
            ),
        ),
        recreate=dict(type="bool", default=False),
        blue_port=dict(type="int"),
        green_port=dict(type="int"),
        container_port=dict(type="int", default=8080),
        container_env=dict(type="dict", default={}, no_log=True),
        router_url=dict(type="str", default="http://127.0.0.1:8000/"),
        nginx_conf_dir=dict(type="path", default="/etc/nginx/conf.d"),
        nginx_binary=dict(type="str", default="nginx"),
        nginx_conf=dict(type="path"),
        nginx_prefix=dict(type="path"),
        router=dict(
            type="dict",
            options=dict(listen=dict(type="str", required=True), self_contained_dir=dict(type="path", required=True)),
        ),
        swarm=dict(
            type="dict",
            options=dict(
                router_image=dict(type="str", required=True),
                router_port=dict(type="int", default=8000),
                replicas=dict(type="int", default=2),
                network=dict(type="str"),
                health_cmd=dict(type="str"),
                update_parallelism=dict(type="int", default=1),
                update_order=dict(type="str", choices=["start-first", "stop-first"], default="start-first"),
                restart_condition=dict(type="str", choices=["any", "on-failure", "none"], default="any"),
                docker_host=dict(type="str"),
            ),
        ),
        docker_binary=dict(type="str", default="docker"),
        registry_username=dict(type="str"),
        registry_password=dict(type="str", no_log=True),
        listener_arn=dict(type="str"),
        load_balancer_name=dict(type="str"),
        listener_port=dict(type="int"),
        target_groups=dict(type="dict"),
        asg_names=dict(type="dict"),
        launch_templates=dict(type="dict"),
        desired_capacity=dict(type="int"),
        instance_type=dict(type="str"),
        lock_ttl=dict(type="int", default=1800),
        cluster=dict(type="str"),
        service=dict(type="str"),
        task_family=dict(type="str"),
        container_name=dict(type="str"),
    )


def docker_backend(module):
    p = module.params
    missing = [name for name in ("blue_port", "green_port") if not p[name]]
    if missing:
        raise BlueGreenError(f"backend=docker needs {' and '.join(missing)}: one free 127.0.0.1 port per colour")

    def run(args, environ_update=None, **kwargs):
        # environ_update: e.g. the temporary DOCKER_CONFIG of a pull with registry_username
        return module.run_command(args, environ_update=dict(environ_update or {}, LC_ALL="C"), **kwargs)

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
        engine=docker_engine(module.run_command, p["docker_binary"]),
        recreate=p["recreate"],
        registry_auth=(p["registry_username"], p["registry_password"] or "") if p["registry_username"] else None,
        analysis_log=analysis_log_path(
            p["router"]["self_contained_dir"] if p["router"] else (p["nginx_prefix"] or ""), p["app"], p["env"]
        ),
    )


def ensure_router(module) -> dict:
    """The environment's self-contained router, set up as the router module does (O(router))."""
    p = module.params
    router = Router(
        module.run_command,
        p["app"],
        p["env"],
        p["router"]["listen"],
        {"blue": p["blue_port"], "green": p["green_port"]},
        router_dir=p["router"]["self_contained_dir"],
        nginx_binary=p["nginx_binary"],
    )
    if module.get_bin_path(p["nginx_binary"]) is None:
        raise BlueGreenError(
            f"cannot find the nginx command {p['nginx_binary']!r} for the router: install nginx (apt-get install"
            " nginx-light) on this host or set nginx_binary"
        )
    try:
        return router.ensure(start=True, check_mode=module.check_mode)
    except (RouterError, OSError) as exc:
        raise BlueGreenError(f"router {p['app']}/{p['env']}: {exc}; nothing was switched") from None


def aws_clients(module, backend, services, extra_retry_codes=()):
    """The checks both AWS backends make before any call (the listener, lock_ttl, boto3 on this host), then their
    clients, retried with jittered backoff (also on extra_retry_codes), CloudWatch's when the analysis reads alarms."""
    p = module.params
    if not p["listener_arn"] and not (p["load_balancer_name"] and p["listener_port"]):
        raise BlueGreenError(
            f"backend={backend} needs the listener that switches traffic: listener_arn, or load_balancer_name and "
            "listener_port"
        )
    if p["lock_ttl"] < 60:
        raise BlueGreenError(f"lock_ttl must be at least 60 seconds, got {p['lock_ttl']}")
    # imported here, not at the top: the docker backend runs in process on the controller and must not pay for
    # importing (and, through ansible's collection loader, compiling) the aws code and boto3
    from ansible_collections.amazon.aws.plugins.module_utils.botocore import check_sdk_version_supported
    from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleBotocoreError
    from ansible_collections.amazon.aws.plugins.module_utils.retries import AWSRetry

    try:
        check_sdk_version_supported(warn=module.warn)
    except AnsibleBotocoreError as exc:
        raise BlueGreenError(
            f"backend={backend} needs boto3 and botocore on the host running the module: {exc.message}"
        ) from None
    retry = AWSRetry.jittered_backoff(retries=10, catch_extra_error_codes=list(extra_retry_codes) or None)
    if (p["analysis"] or {}).get("cloudwatch_alarms"):
        services = [*services, "cloudwatch"]
    return {name: module.client(name, retry_decorator=retry) for name in services}


def aws_backend(module):
    p = module.params
    clients = aws_clients(module, "aws", ["ec2", "autoscaling", "elbv2", "ssm"])
    # after the check: it imports botocore
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.aws._backend import AwsBackend

    return AwsBackend(
        clients,
        p["app"],
        p["env"],
        listener_arn=p["listener_arn"],
        load_balancer_name=p["load_balancer_name"],
        listener_port=p["listener_port"],
        target_groups=p["target_groups"],
        asg_names=p["asg_names"],
        launch_templates=p["launch_templates"],
        desired_capacity=p["desired_capacity"],
        instance_type=p["instance_type"],
        lock_ttl=p["lock_ttl"],
        poll_interval=p["health_interval"],
        drain_timeout=max(p["health_timeout"], 60.0),
        region=module.region,
    )


def ecs_backend(module):
    """backend=ecs (docs/ecs.md): the aws backend's listener, target groups, lock and retries, ECS task sets."""
    p = module.params
    if not p["cluster"]:
        raise BlueGreenError("backend=ecs needs cluster: the name of the ECS cluster that runs the service")
    validate_artifact("docker", p["artifact"])  # a digest reference, never a mutable tag, before any AWS call
    # importable without botocore (its botocore imports are guarded); aws_clients() then checks boto3 is there
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.ecs import _backend as ecs

    clients = aws_clients(module, "ecs", ["ecs", "elbv2", "ssm"], ecs.EXTRA_RETRY_CODES)
    return ecs.EcsBackend(
        clients,
        p["app"],
        p["env"],
        cluster=p["cluster"],
        service=p["service"],
        task_family=p["task_family"],
        container_name=p["container_name"],
        wait_timeout=max(p["health_timeout"], 60.0),
        listener_arn=p["listener_arn"],
        load_balancer_name=p["load_balancer_name"],
        listener_port=p["listener_port"],
        target_groups=p["target_groups"],
        lock_ttl=p["lock_ttl"],
        poll_interval=p["health_interval"],
        region=module.region,
    )


def swarm_backend(module):
    """backend=swarm (docs/swarm.md): two services and an nginx router service, through the docker CLI."""
    p = module.params
    if not p["swarm"]:
        raise BlueGreenError(
            "backend=swarm needs the swarm option with at least router_image: the digest reference of the router image "
            "built from extensions/swarm-router (docs/swarm.md)"
        )
    validate_artifact("docker", p["artifact"])  # a digest reference, never a mutable tag, before anything is read
    from ansible_collections.immutable.infra.plugins.module_utils.deploy.swarm._backend import SwarmBackend

    s = p["swarm"]

    def run(args, environ_update=None, **kwargs):
        return module.run_command(args, environ_update=dict(environ_update or {}, LC_ALL="C"), **kwargs)

    return SwarmBackend(
        run,
        p["app"],
        p["env"],
        s["router_image"],
        router_port=s["router_port"],
        replicas=s["replicas"],
        network=s["network"],
        container_port=p["container_port"],
        health_path=p["health_path"],
        health_cmd=s["health_cmd"],
        update_parallelism=s["update_parallelism"],
        update_order=s["update_order"],
        restart_condition=s["restart_condition"],
        container_env=p["container_env"],
        docker_binary=p["docker_binary"],
        registry_auth=(p["registry_username"], p["registry_password"] or "") if p["registry_username"] else None,
        docker_host=s["docker_host"],
    )


ARGUMENT_SPEC = argument_spec()
MODULE_OPTIONS = dict(
    required_if=[("state", "deployed", ["artifact"])],
    mutually_exclusive=[("listener_arn", "load_balancer_name")],
    required_together=[("load_balancer_name", "listener_port"), ("registry_username", "registry_password")],
    supports_check_mode=True,
    check_boto3=False,
)
# AnsibleAWSModule adds the common AWS options; the in-process action adds them too
AWS_COMMON_OPTIONS = True


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    p = module.params
    backend = None
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
            recreate=p["recreate"],
        )
        try:
            options.analysis = validate_analysis(p["analysis"], p["backend"])
        except AnalysisError as exc:
            raise BlueGreenError(f"{exc}; nothing was changed", failed_check="analysis") from None
        if p["recreate"] and p["backend"] != "docker":
            raise BlueGreenError("recreate is for backend=docker only: leave it out (or false) for backend=aws")
        if options.health_checks_required < 1:
            raise BlueGreenError("health_checks_required must be at least 1")
        if p["router"] and p["backend"] != "docker":
            raise BlueGreenError("router is for backend=docker only: leave it out for backend=aws")
        if p["backend"] == "ecs":
            backend = ecs_backend(module)
        elif p["backend"] == "swarm":
            backend = swarm_backend(module)
        else:
            backend = aws_backend(module) if p["backend"] == "aws" else docker_backend(module)
        router = None
        if p["router"]:
            started = time.monotonic()
            router = ensure_router(module)
            router_seconds = round(time.monotonic() - started, 3)
        if options.analysis is not None and p["state"] == "deployed" and not (module.check_mode and p["router"]):
            backend.analysis_preflight(options.analysis)  # the router log / the alarms exist, before any change
        flow = BlueGreen(backend, options, check_mode=module.check_mode)
        if p["state"] == "deployed":
            result = flow.deploy(p["artifact"])
        else:
            result = flow.rollback(p["artifact"])
        result["switched"] = bool(result.get("changed"))
        if router is not None:
            result["router"] = {key: router[key] for key in ("changed", "files_changed", "started", "reloaded")}
            result["timings"] = dict(result.get("timings") or {}, router=router_seconds)
            result["changed"] = bool(result.get("changed")) or router["changed"]
        if p["backend"] in ("aws", "ecs"):
            # counted again after the lock was released, so its calls are included
            result.update(
                api_calls=backend.api_calls(), api_calls_by_operation=backend.details()["api_calls_by_operation"]
            )
    except BlueGreenError as exc:
        extra = dict(exc.extra)
        if p["backend"] in ("aws", "ecs") and backend is not None:
            extra.setdefault("api_calls", backend.api_calls())
        module.fail_json(msg=exc.msg, **extra)
    module.exit_json(**result)


def main():
    from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

    run_module(AnsibleAWSModule(argument_spec=with_hidden_access_key(ARGUMENT_SPEC), **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
