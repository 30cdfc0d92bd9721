#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ledger
short_description: Record a deploy, promotion or rollback of an immutable artifact in the promotion ledger
version_added: 0.1.0
description:
  - Keeps, for every app and environment, the live artifact ID, the previous one and the history (who, when,
    from which environment, which artifact record, why, forced or not, verified or not).
  - Enforces the promotion gate. Environments form an ordered O(chain) (for example V(dev) -> V(staging) ->
    V(prod)); a deploy goes to the first environment, and every other environment accepts only an artifact that is
    live (or was live and verified, and not rolled back) in the environment before it. O(force=true) with a
    O(reason) overrides the gate; the override is recorded.
  - An environment can also require a soak time upstream (O(soak_minutes)) and an approval (O(approval),
    O(action=approve)); every decision takes its time from one clock, which C(IMMUTABLE_NOW) sets for tests and
    what-if runs (C(docs/ledger.md)).
  - Refuses, with nothing written, an unknown environment, a O(from_env) without a live artifact, a promotion that
    skips the chain, an artifact ID that is not immutable (a tag or a name) or that no artifact record knows
    (when O(known_ids) is given), and a corrupt ledger.
  - Two backends behind one interface. V(file) is a local JSON file (the default; no boto3 needed), written
    atomically under an exclusive lock, with a C(.bak) copy of the previous version. V(ssm) is AWS SSM Parameter
    Store, one parameter per app and environment, for teams.
  - The schema is documented in C(docs/ledger.md) of the collection.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  backend:
    description:
      - Where the ledger lives.
      - V(file) needs O(path); V(ssm) needs O(prefix), boto3 and AWS credentials.
    type: str
    choices: [file, ssm]
    default: file
  path:
    description:
      - "The ledger JSON file on the host the module runs on (usually the controller, with C(delegate_to: localhost))."
      - Created with its directory when missing. C(<path>.lock) and C(<path>.bak) are kept next to it.
      - Required when O(backend=file).
    type: path
  prefix:
    description:
      - SSM parameter path under which each app/environment gets a parameter C(<prefix>/<app>/<env>).
      - Required when O(backend=ssm).
    type: str
  app:
    description: The application name (letters, digits, C(.), C(_), C(-)).
    type: str
    required: true
  env:
    description:
      - The environment that receives the artifact (or is rolled back). Must be in O(chain).
      - Required for every O(action) but V(revoke) (a revocation is for the app, in every environment).
    type: str
  chain:
    description:
      - The environments in promotion order, first to last, usually from inventory or group vars.
    type: list
    elements: str
    required: true
  action:
    description:
      - V(deploy) puts a new artifact into the first environment of the chain.
      - V(promote) puts the artifact live in O(from_env) into O(env), the next environment.
      - V(rollback) returns O(env) to the previous artifact (or O(artifact_id), which must have been live there);
        the live and previous IDs swap. Without O(artifact_id), a rollback right after a rollback changes nothing.
      - V(repair) records that the containers of O(env) were replaced with fresh ones from the ID already live there
        (C(playbooks/repair.yml) after drift). O(artifact_id) defaults to the live ID and must be it; live and
        previous stay. Each repair is an event - it is recorded every time (never C(changed=false)).
      - V(abort) records that the rollout of O(artifact_id) into O(env) was aborted by its analysis (the promotion
        step records it when bg_swap fails with C(failed_check=analysis), with the verdicts in O(evidence)). Nothing
        went live - live and previous stay; the record says C(verified=false), so O(env) does not vouch for that
        artifact (a promotion onwards from O(env) is refused). Recorded every time, like V(repair).
      - V(approve) records an approval of O(artifact_id) for O(env) by O(by) (C(playbooks/approve.yml)), in the
        entry's C(approvals), with the time. A name outside O(approval.approvers) (when listed) is refused. An
        approval is for one artifact and one environment, and void once another artifact is approved for O(env) or
        goes live there; the same name approving the same artifact again changes nothing. Nothing goes live.
      - V(revoke) records that O(artifact_id) (an artifact ID, or a base image ID with O(revocation.kind=base)) is
        revoked for O(app), by O(by), with O(reason) (required) and the time, in effect from O(revocation.from)
        (default now). The promotion step refuses a revoked artifact in every environment, and an artifact whose
        record's base image is revoked (C(docs/supply-chain.md), "Revocation"). A second revocation of the same ID
        changes nothing. Nothing goes live.
    type: str
    choices: [deploy, promote, rollback, repair, abort, approve, revoke]
    default: deploy
  artifact_id:
    description:
      - The immutable artifact ID, as in the artifact record.
      - "A container digest reference C(repo@sha256:<64 hex>), an AMI ID C(ami-...), or a region map
        C({\"eu-west-1\": \"ami-...\"}). Compared canonically (key order and digest case do not matter)."
      - Required for V(deploy), V(abort) and V(approve). For V(promote) it defaults to the ID live in O(from_env); for
        V(rollback), to the previous ID.
    type: raw
  from_env:
    description:
      - The environment the artifact is promoted from. Required for O(action=promote); stored with O(action=abort)
        when given (the aborted promotion's source); refused with O(action=deploy).
    type: str
  record:
    description: A reference to the artifact record (its path or digest), stored in the history.
    type: str
  reason:
    description: Why; stored in the history. Required when O(force=true).
    type: str
  force:
    description:
      - Override the promotion gate (skipping the chain, an artifact not verified in the environment before).
      - Needs a non-empty O(reason). The history records C(forced=true) when the gate was actually overridden.
    type: bool
    default: false
  verified:
    description:
      - Whether the artifact passed its checks in O(env). Only verified artifacts can be promoted onwards.
      - Recording the same live artifact again with another value appends a history record.
    type: bool
    default: true
  known_ids:
    description:
      - The artifact IDs that artifact records know. When given, an O(artifact_id) outside this list is refused.
    type: list
    elements: raw
  hosts:
    description:
      - The hosts that run O(artifact_id) (an environment that is a fleet of hosts, C(docs/fleet.md)). Stored in the
        history record as C(hosts); recording the same live ID again with another host list appends a record.
    type: list
    elements: str
  soak_minutes:
    description:
      - O(env)'s soak time (C(promotion_environments.<env>.soak_minutes)). A promotion from O(from_env) needs the
        artifact live there for at least this many minutes since it became live there (a later promotion of it
        further down the chain never resets that), with no rollback away from it since, and verified there.
      - Refused with the time left; O(force) with a O(reason) overrides it (recorded). The time is the ledger's
        clock (C(IMMUTABLE_NOW), C(docs/ledger.md)).
      - V(0) or not given, no soak time. Does not apply to an artifact already live in O(env).
    type: float
  approval:
    description:
      - O(env)'s approval rule (C(promotion_environments.<env>.approval)). With O(approval.required), a deploy or
        promotion into O(env) needs a valid approval of the artifact (O(action=approve)); refused without, naming
        who may approve and the command. O(force) does not override it. Does not apply to an artifact already live
        in O(env).
      - With O(action=approve), O(approval.approvers) is the list the approver must be in.
    type: dict
    suboptions:
      required:
        description: Whether O(env) requires an approval.
        type: bool
        default: false
      approvers:
        description: The names that may approve. Empty or not given, any name counts.
        type: list
        elements: str
  revocation:
    description: What O(action=revoke) records beside O(artifact_id), O(by) and O(reason).
    type: dict
    suboptions:
      kind:
        description: V(artifact) (O(artifact_id) is an artifact ID) or V(base) (a base image ID, a C(base.id)).
        type: str
        choices: [artifact, base]
        default: artifact
      from:
        description: When the revocation takes effect, ISO-8601 with a zone (C(2026-12-04T10:00:00Z)); default now.
        type: str
      artifacts:
        description: For V(base), the artifacts known to be baked from it (shown; the gate reads the records).
        type: list
        elements: raw
  evidence:
    description:
      - What the run relied on, stored in its history record as C(evidence) (C(docs/ledger.md), "Evidence"), for
        example C(analysis) (the analysis verdicts per traffic step) and C(hooks) (the promotion hooks' results).
        The gate adds C(soak) and C(approval) when O(env) requires them.
      - Kept small for the V(ssm) backend's 4 KB parameters - lists of at most 12 items, strings of at most 120
        characters, details dropped beyond 2000 bytes.
    type: dict
  by:
    description:
      - Who did it. Defaults to C(user@host) of the process running the module.
      - With O(action=approve), the approver's name (required).
    type: str
  lock_timeout:
    description: Seconds to wait for another writer's lock before failing.
    type: int
    default: 60
  max_history:
    description:
      - V(ssm) only. The newest history records kept in the entry parameter; fewer when needed to fit the Standard
        tier (4 KB). Older records are kept too, in numbered parameters C(<prefix>/<app>/<env>/history/0001), ...,
        so the whole history is kept, as the V(file) backend keeps it.
    type: int
    default: 20
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - The AWS options and boto3 matter only for O(backend=ssm); the V(file) backend runs without boto3.
  - "Concurrency: V(file) holds an exclusive C(fcntl) lock on C(<path>.lock) across read-modify-write and replaces
    the file atomically; V(ssm) creates a lock parameter C(<prefix>/<app>/<env>.lock) without Overwrite and deletes
    it after the write."
attributes:
  check_mode:
    support: full
    description: Reports the entry that would be written (RV(after)) and writes nothing.
  diff_mode:
    support: none
    description: Not supported; RV(before) and RV(after) show the change.
  idempotent:
    support: full
    description: Recording the artifact already live with the same action and verified flag is C(changed=false).
seealso:
  - module: immutable.infra.ledger_info
  - plugin: immutable.infra.ledger
    plugin_type: lookup
"""

EXAMPLES = r"""
- name: Record the deploy of a freshly pushed image to dev
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: dev
    action: deploy
    artifact_id: "127.0.0.1:5000/web@sha256:{{ digest }}"
    record: artifacts/web/1.4.0.json
  delegate_to: localhost

- name: Promote whatever is live in staging to prod
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: prod
    action: promote
    from_env: staging
  delegate_to: localhost

- name: Hotfix straight to prod (recorded as forced)
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: prod
    artifact_id: "127.0.0.1:5000/web@sha256:{{ hotfix_digest }}"
    force: true
    reason: "CVE-2026-0001 hotfix, approved in CHG-42"
  delegate_to: localhost

- name: Record an AMI rollout in a team ledger on SSM
  immutable.infra.ledger:
    backend: ssm
    prefix: /immutable-infra/ledger
    region: eu-west-1
    chain: [dev, staging, prod]
    app: api
    env: staging
    action: promote
    from_env: dev
    artifact_id: {"eu-west-1": "ami-0123456789abcdef0", "us-east-1": "ami-0fedcba9876543210"}

- name: Approve an artifact for prod (what playbooks/approve.yml does)
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: prod
    action: approve
    artifact_id: "127.0.0.1:5000/web@sha256:{{ digest }}"
    by: alice
    approval:
      required: true
      approvers: [alice, bob]
  delegate_to: localhost

- name: Promote to prod once staging ran it for 30 minutes and it was approved
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: prod
    action: promote
    from_env: staging
    soak_minutes: 30
    approval:
      required: true
    evidence:
      hooks: [{hook: pre, kind: tasks, ok: true, detail: smoke test passed}]
  delegate_to: localhost

- name: Record a rollback of prod to the previous artifact
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    env: prod
    action: rollback
    reason: health check failed after the switch
  delegate_to: localhost

- name: Revoke every artifact baked from a base image (playbooks/revoke.yml does this through the promotion step)
  immutable.infra.ledger:
    path: "{{ playbook_dir }}/ledger/ledger.json"
    chain: [dev, staging, prod]
    app: web
    action: revoke
    artifact_id: sha256:2379c9ff4b3b0bd0a3f5e5c1b1f4a6e9d1f1c0b6a8e3d2f7c4b5a6d7e8f9a0b1
    revocation:
      kind: base
    reason: CVE-2026-1234 in the base image's openssl
    by: alice
  delegate_to: localhost
"""

RETURN = r"""
before:
  description: The ledger entry of the app and environment before the call; null when there was none.
  returned: always
  type: dict
  sample: {"live": "127.0.0.1:5000/web@sha256:aaa...", "previous": null, "history": []}
after:
  description:
    - The entry after the call (in check mode, the entry that would be written).
    - With O(backend=ssm), the history as stored (bounded).
  returned: always
  type: dict
  contains:
    live:
      description: The live artifact ID (a string or a region map).
      type: raw
    previous:
      description: The artifact ID live before it, for rollback; null when none.
      type: raw
    history:
      description:
        - Records, oldest first, with id, at, by, action, from_env, record, reason, forced, verified; C(hosts) for a
          fleet; C(evidence) when the run gave or the gate relied on some (C(analysis), C(soak), C(approval),
          C(hooks)).
      type: list
      elements: dict
    approvals:
      description:
        - The approvals still valid for this environment, each with id, by and at (absent when none). They are all
          for one artifact - approving another or making another live voids them.
      type: list
      elements: dict
  sample:
    live: "127.0.0.1:5000/web@sha256:bbb..."
    previous: "127.0.0.1:5000/web@sha256:aaa..."
    history:
      - id: "127.0.0.1:5000/web@sha256:bbb..."
        at: "2026-01-02T03:04:05Z"
        by: "deploy@ci-runner"
        action: promote
        from_env: staging
        record: artifacts/web/1.4.0.json
        reason: null
        forced: false
        verified: true
artifact_id:
  description: The artifact ID recorded (resolved from O(from_env) or the previous ID when not given).
  returned: always
  type: raw
  sample: {"eu-west-1": "ami-0123456789abcdef0"}
action:
  description: The action recorded.
  returned: always
  type: str
  sample: promote
forced:
  description: Whether O(force) overrode the promotion gate.
  returned: always
  type: bool
  sample: false
overridden:
  description: The gate refusals that O(force) overrode (empty when none).
  returned: always
  type: list
  elements: str
  sample: []
evidence:
  description:
    - What the gate relied on - C(soak) (C(from_env), C(required_min), C(live_since), C(minutes), C(left_min), C(ok))
      when O(env) has a soak time and C(approval) (C(by), C(at)) when it requires an approval, each null otherwise.
      With O(action=approve), C(approval) is the approval recorded (C(id), C(by), C(at)).
  returned: always
  type: dict
  sample: {"soak": null, "approval": {"by": "alice", "at": "2026-12-04T10:00:00Z"}}
revocations:
  description:
    - The app's revocations after the call (C(id), C(kind), C(reason), C(by), C(at), C(from), and C(artifacts) for a
      base image), oldest first; the promotion step refuses what they cover.
  returned: unless O(action=approve) or O(action=abort)
  type: list
  elements: dict
  sample: [{"id": "127.0.0.1:5000/web@sha256:aaa...", "kind": "artifact", "reason": "CVE-2026-1234", "by": "alice",
            "at": "2026-12-04T10:00:00Z", "from": "2026-12-04T10:00:00Z"}]
revocation:
  description: With O(action=revoke), the revocation that stands (this one, or the earlier one of the same ID).
  returned: when O(action=revoke)
  type: dict
location:
  description: The ledger file path or the SSM prefix.
  returned: always
  type: str
  sample: /srv/deploy/ledger/ledger.json
"""


from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import default_by
from ansible_collections.immutable.infra.plugins.module_utils.ledger._store import run_record


def open_ledger(module):
    params = module.params
    if params["backend"] == "file":
        return FileLedger(params["path"], lock_timeout=params["lock_timeout"])
    # imported here, not at the top: the file ledger and the docker backend run in process on the controller
    # (plugin_utils/_in_process.py) and must not pay for importing boto3
    from ansible_collections.amazon.aws.plugins.module_utils.botocore import check_sdk_version_supported
    from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleBotocoreError

    try:
        check_sdk_version_supported(warn=module.warn)
    except AnsibleBotocoreError as exc:
        module.fail_json(msg=f"backend=ssm needs boto3 and botocore on the host running the module: {exc.message}")
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

    return SsmLedger(
        module.client("ssm"),
        params["prefix"],
        lock_timeout=params["lock_timeout"],
        max_history=params["max_history"],
        owner=params["by"] or default_by(),
    )


ARGUMENT_SPEC = dict(
    backend=dict(type="str", choices=["file", "ssm"], default="file"),
    path=dict(type="path"),
    prefix=dict(type="str"),
    app=dict(type="str", required=True),
    env=dict(type="str"),
    chain=dict(type="list", elements="str", required=True),
    action=dict(
        type="str", choices=["deploy", "promote", "rollback", "repair", "abort", "approve", "revoke"], default="deploy"
    ),
    artifact_id=dict(type="raw"),
    from_env=dict(type="str"),
    record=dict(type="str"),
    reason=dict(type="str"),
    force=dict(type="bool", default=False),
    verified=dict(type="bool", default=True),
    known_ids=dict(type="list", elements="raw"),
    hosts=dict(type="list", elements="str"),
    soak_minutes=dict(type="float"),
    approval=dict(
        type="dict",
        options=dict(
            required=dict(type="bool", default=False),
            approvers=dict(type="list", elements="str"),
        ),
    ),
    revocation=dict(
        type="dict",
        options={
            "kind": dict(type="str", choices=["artifact", "base"], default="artifact"),
            "from": dict(type="str"),
            "artifacts": dict(type="list", elements="raw"),
        },
    ),
    evidence=dict(type="dict"),
    by=dict(type="str"),
    lock_timeout=dict(type="int", default=60),
    max_history=dict(type="int", default=20),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    check_boto3=False,
    required_if=[
        ("backend", "file", ["path"]),
        ("backend", "ssm", ["prefix"]),
        ("action", "deploy", ["artifact_id"]),
    ],
)
# AnsibleAWSModule adds the common AWS options; the in-process action adds them too
AWS_COMMON_OPTIONS = True


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    try:
        result = run_record(open_ledger(module), module.params, module.check_mode)
    except LedgerError as exc:
        if exc.original is not None:
            module.fail_json_aws(exc.original, msg=exc.context)
        module.fail_json(msg=exc.message)
    module.exit_json(**result)


def main():
    from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

    run_module(AnsibleAWSModule(argument_spec=with_hidden_access_key(ARGUMENT_SPEC), **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
