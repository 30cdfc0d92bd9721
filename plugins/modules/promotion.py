#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: promotion
short_description: Check the promotion settings and gate, then switch, tag and record an environment in one step
version_added: 0.2.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - The step behind the C(deploy.yml), C(promote.yml), C(rollback.yml) and C(verify.yml) playbooks of the
    collection (C(docs/promotion.md)). It runs on the controller only, through its action plugin.
  - Resolves the promotion settings (the inventory's C(promotion_*) values), checks them and the environments of
    the run, and reads the app's artifact records. Any problem fails the step, named with its fix, before anything
    changes.
  - With O(step=gate) or O(step=apply), asks the M(immutable.infra.ledger) module whether the environment accepts
    the artifact (check mode, nothing is written), with the environment's soak time and approval rule
    (C(promotion_environments.<env>.soak_minutes) and C(approval), C(docs/promotion.md)) for a deploy or promotion.
  - The ledger record of the run keeps its evidence - bg_swap's analysis verdicts, the hooks' results
    (O(hook_results)), and the soak and approval the gate relied on. When bg_swap aborts on its analysis, the
    abort is recorded (action C(abort), with the verdicts) and the step fails; live and previous stay.
  - With O(step=apply) and the C(docker) backend, it then sets up the environment's router with
    M(immutable.infra.router) when it is not set up or not running (every time with C(manage_router_always); never
    with C(manage_router=false)), plans the environment tag (M(immutable.infra.push_image) in check mode, so wrong
    registry credentials or a tag held by another digest fail before anything changes), switches the environment
    with M(immutable.infra.bg_swap), adds the environment tag to the same digest and records the run in the ledger,
    in that order, each only after the one before succeeded. These are the same modules the playbooks would run as
    separate tasks; one task saves the start-up of each, which is most of a promotion's time beyond the health gate.
  - With O(step=apply) and the C(aws) backend, it takes the AMI of the environment's region from the artifact
    (refusing, before anything changes, an artifact without one), switches the environment with
    M(immutable.infra.bg_swap) (O(immutable.infra.bg_swap#module:backend=aws), run as a module with the AWS
    connection of O(aws)) and records the run in the ledger.
  - A rollback asks bg_swap for O(immutable.infra.bg_swap#module:state=rolled_back) with the rollback target, and
    bg_swap decides - an instant switch back when the kept colour still runs it, else a blue-green deploy of it.
  - With the C(none) backend, the step records in the ledger only.
options:
  step:
    description:
      - V(settings) checks the settings only; V(gate) also asks the ledger's gate; V(apply) also switches, tags and
        records when it can (see the description).
      - "Fleets (C(docs/fleet.md)): with the C(docker) backend, an environment whose inventory group
        (C(promotion_environments.<env>.hosts_group), default C(env_<env>)) has hosts is a fleet. V(plan) is
        V(apply) for an environment without hosts (the controller does everything, as before); for a fleet, it checks
        the settings and the gate, takes the environment's lock for the whole rollout (a lock file beside the file
        ledger, owned by the C(ansible-playbook) process; an SSM parameter with a ttl for the C(ssm) ledger; a second
        run stops with C(locked) before touching any host), plans the environment tag and returns C(fleet): the
        hosts, the batch, and the router and M(immutable.infra.bg_swap) arguments for each host. Nothing is switched."
      - "V(record) (fleets, after the hosts' play): every host of the group must have switched in this run (its
        registered C(fleet_swap) succeeded), else nothing is recorded; then adds the environment tag, records the run
        in the ledger with the hosts (C(hosts) of the history record) and releases the lock."
      - V(release) releases the rollout lock of this run (the fleet rescue path); with O(abort), it first records
        the abort of a rollout that a host's analysis stopped.
      - "V(revoke) (C(playbooks/revoke.yml)) records in the ledger that O(artifact) is revoked - an artifact ID, or a
        base image ID (every artifact whose record names it as C(base.id) is then refused) - with O(reason), O(by)
        and O(revoke_from) (C(docs/supply-chain.md), \"Revocation\"). V(revoked) (C(playbooks/verify.yml)) returns
        C(revoked) and C(problems): the environments of O(check_envs) whose live artifact is revoked."
    type: str
    choices: [settings, gate, apply, plan, record, release, revoke, revoked]
    default: apply
  lock_token:
    description:
      - The rollout lock's token returned by O(step=plan) in C(fleet.lock.token) (the C(ssm) ledger's lock), for
        O(step=record) and O(step=release). The file ledger's lock needs none (its owner is the C(ansible-playbook)
        process).
    type: str
  action:
    description: What the run does to O(env); the ledger records it under this name. Required unless O(step=settings).
    type: str
    choices: [deploy, promote, rollback]
  env:
    description: The environment that receives the artifact (or is rolled back). Empty means the command line lacks it.
    type: str
    default: ""
  from_env:
    description: The environment the artifact is live in (O(action=promote)). Empty means the command line lacks it.
    type: str
    default: ""
  check_envs:
    description:
      - The environments to check in the settings. Default O(env), with O(from_env) for O(action=promote).
    type: list
    elements: str
  usage:
    description: The message for an empty environment name, saying how to give it on the command line.
    type: str
    default: "give the environment: -e env=<environment>"
  artifact:
    description:
      - The artifact ID to deploy or promote, or to roll back to. Default for V(deploy), the ID in the newest bake's
        C(latest.json); for V(promote), the ID live in O(from_env); for V(rollback), the previous ID of O(env).
    type: raw
  force:
    description: Override the promotion gate. Needs O(reason); the override is recorded.
    type: bool
    default: false
  reason:
    description: Why; recorded in the ledger's history.
    type: str
  settings:
    description:
      - The promotion settings, as the playbooks pass them from the inventory
        (C(playbooks/vars/promotion_settings.yml)), with the keys C(app), C(chain), C(backend), C(artifacts_dir),
        C(environments), C(ledger), C(env_tags), C(health_path), C(health_timeout), C(health_interval),
        C(traffic_steps), C(container_port), C(manage_router), C(manage_router_always), C(aws_region).
        Missing ones take the defaults of C(docs/promotion.md).
    type: dict
    required: true
  aws:
    description:
      - The C(aws) backend's AWS connection (the inventory's C(promotion_aws)), any amazon.aws connection option such
        as C(region), C(profile), C(endpoint_url), C(access_key), C(secret_key), C(session_token). Checked as
        amazon.aws's options and passed to M(immutable.infra.bg_swap) only; the secret ones are never shown in the
        result or in a message. Not used by the other backends.
    type: dict
    default: {}
  hook_results:
    description:
      - "The results of the promotion hooks that ran before this step (C(docs/progressive.md)), as the playbooks pass
        them, each with C(hook) (V(pre), V(post) or V(rollback)), C(kind) (V(tasks) or V(webhook)), C(ok) and
        C(detail). Stored, shortened, in the C(evidence) of the ledger's history record of this run (C(hooks));
        nothing else uses them."
    type: list
    elements: dict
    default: []
  hooks:
    description:
      - "Whether the environment has promotion hooks (C(promotion_environments.<env>.hooks), C(docs/progressive.md));
        the playbooks pass it. With O(step=plan), an environment on the controller then stops after the gate (the
        playbook's hooks play runs the hooks around the switch), and a fleet's plan says so in C(fleet.hooks), so
        that the playbook's fleet hooks plays run: the pre-promotion hooks after the lock and before any host is
        switched, the post-promotion hooks once every host switched and before the record."
    type: bool
    default: false
  abort:
    description:
      - "With O(step=release), for a fleet whose rollout a host's M(immutable.infra.bg_swap) aborted on its analysis
        (C(failed_check=analysis)): C(host) (that host), C(msg) (bg_swap's message) and C(analysis) (its verdicts).
        Before the lock is released, the ledger records C(action=abort) for O(artifact) with those verdicts, each
        with the host, and the reason C(aborted by its analysis on <host>: <msg>); live and previous stay. Ignored
        for O(action=rollback) and in check mode."
    type: dict
  allow_unsigned_rollback:
    description:
      - With O(action=rollback), allow an artifact WITHOUT a signature or provenance where the environment's
        C(signature.required) is true (for IDs baked before signing); an invalid signature is still refused, and so
        is a revoked artifact (C(docs/supply-chain.md), \"Verification gate\").
    type: bool
    default: false
  by:
    description: With O(step=revoke), who revokes (default the user and host running the playbook).
    type: str
  revoke_from:
    description: With O(step=revoke), when the revocation takes effect (ISO-8601 with a zone); default now.
    type: str
  revoke_kind:
    description:
      - With O(step=revoke), what O(artifact) is. V(auto) - a digest reference C(<repository>@sha256:...) is an
        artifact (it must have a record), a bare image ID C(sha256:...) a base image, an AMI ID what the local records
        say it is.
    type: str
    choices: [auto, artifact, base]
    default: auto
  registry_username:
    description: User for the registry holding the artifact, for the environment tag.
    type: str
  registry_password:
    description: Password for O(registry_username). Never logged or returned.
    type: str
notes:
  - Runs on the controller only (the local connection of the collection's playbooks); it calls the collection's
    modules in process there, and as modules when they need their own process (the C(ssm) ledger).
attributes:
  check_mode:
    support: full
    description: Every module it calls runs in check mode.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: A promotion of the ID already live reports no change (bg_swap and the ledger are idempotent).
"""

EXAMPLES = r"""
- name: Check the settings and the gate, then switch, tag and record
  immutable.infra.promotion:
    action: promote
    env: "{{ to | default('') }}"
    from_env: "{{ from | default('') }}"
    usage: "give both environments: -e from=<environment> -e to=<the next one>"
    settings: "{{ promotion_settings_in }}"
  register: promotion_step
"""

RETURN = r"""
settings:
  description: The resolved settings (what the playbooks call C(promotion)).
  returned: always
  type: dict
records:
  description: The app's artifact records (C(path), C(id), C(kind), C(fingerprint), C(repository), C(version)).
  returned: always
  type: list
  elements: dict
artifact_id:
  description: The artifact the run puts live.
  returned: with step gate or apply
  type: raw
gate:
  description: The ledger's answer in check mode.
  returned: with step gate or apply
  type: dict
router:
  description: The result of M(immutable.infra.router) setting up the environment's router (docker backend).
  returned: when the router step ran
  type: dict
done:
  description: The environment was switched (if the backend switches) and the run recorded in the ledger.
  returned: with step apply
  type: bool
swap:
  description:
    - The result of M(immutable.infra.bg_swap). For a rollback, C(swap.rollback_method) says how bg_swap put the
      target live (V(switch_back) or V(deploy)).
  returned: when switched
  type: dict
tag:
  description: The result of M(immutable.infra.push_image) adding the environment tag; empty when none was added.
  returned: when done
  type: dict
recorded:
  description: The result of M(immutable.infra.ledger) recording the run.
  returned: when done
  type: dict
summary:
  description:
    - What the playbooks show at the end - the ID now live, the colour and how it got there, the gate, the signature
      check and the package diff from the artifact live before. With O(step=revoke), the revocation.
  returned: when done
  type: list
  elements: str
diff:
  description:
    - "The package diff between the artifact live in O(env) before and this one (deploy and promote): packages added,
      removed, upgraded with versions, the role inputs that changed (C(docs/supply-chain.md), \"Package diff at
      promotion\"); one line when an SBOM is missing. Also in the ledger record's C(evidence.diff)."
  returned: when O(env) ran another container artifact before
  type: list
  elements: str
revoked:
  description: With O(step=revoked), each environment whose live artifact is revoked (C(env), C(id), C(revocation)).
  returned: with step revoked
  type: list
  elements: dict
problems:
  description: With O(step=revoked), one sentence per environment of C(revoked).
  returned: with step revoked
  type: list
  elements: str
revocation:
  description: With O(step=revoke), the revocation that stands in the ledger.
  returned: with step revoke
  type: dict
timings:
  description:
    - Seconds per part of the step (C(ledger_check), C(router), C(env_tag_plan), C(swap), C(env_tag),
      C(ledger_record)) and in all (C(step)). bg_swap's own phases (its health gate included) are in C(swap.timings).
  returned: with step gate or apply
  type: dict
fleet:
  description:
    - With O(step=plan) or O(step=record), the environment's hosts (C(hosts)). For a fleet, O(step=plan) adds
      C(group), C(batch), C(max_fail_percentage), C(previous_id), C(hooks) (O(hooks)), C(manage_router), C(router)
      (the router module's arguments on a host), C(swap) (bg_swap's arguments on a host) and C(lock);
      O(step=record) adds C(swaps), each host's bg_swap result.
  returned: with step plan or record
  type: dict
released:
  description: With O(step=release), whether this run's rollout lock was released.
  returned: with step release
  type: bool
abort_msg:
  description:
    - With O(step=release) and O(abort), what became of the abort's ledger record (for the rescue's message); else
      empty.
  returned: with step release
  type: str
request:
  description: The run's action, environments, force and reason.
  returned: always
  type: dict
"""

ARGUMENT_SPEC = dict(
    step=dict(
        type="str",
        choices=["settings", "gate", "apply", "plan", "record", "release", "revoke", "revoked"],
        default="apply",
    ),
    lock_token=dict(type="str", no_log=False),
    action=dict(type="str", choices=["deploy", "promote", "rollback"]),
    env=dict(type="str", default=""),
    from_env=dict(type="str", default=""),
    check_envs=dict(type="list", elements="str"),
    usage=dict(type="str", default="give the environment: -e env=<environment>"),
    artifact=dict(type="raw"),
    force=dict(type="bool", default=False),
    reason=dict(type="str"),
    settings=dict(type="dict", required=True),
    aws=dict(type="dict", default={}, no_log=False),
    hook_results=dict(type="list", elements="dict", default=[]),
    hooks=dict(type="bool", default=False),
    abort=dict(type="dict"),
    allow_unsigned_rollback=dict(type="bool", default=False),
    by=dict(type="str"),
    revoke_from=dict(type="str"),
    revoke_kind=dict(type="str", choices=["auto", "artifact", "base"], default="auto"),
    registry_username=dict(type="str"),
    registry_password=dict(type="str", no_log=True),
)
MODULE_OPTIONS = dict(supports_check_mode=True)


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS)
    module.fail_json(
        msg="immutable.infra.promotion runs on the controller through its action plugin: run the task on the"
        " controller (connection: local) without delegate_to to another host"
    )


if __name__ == "__main__":
    main()
