#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: board
short_description: The promotion board - which artifact runs where, how it got there, what changed
version_added: 0.2.0
description:
  - Builds the promotion board from the ledger (a local JSON file or AWS SSM Parameter Store), the artifact records
    and the last result of C(playbooks/verify.yml), and returns its data.
  - Per app, one column per environment of O(chain) - the live artifact (short ID, version, age, who made it live and
    how, verified or not), the previous one, what the environment would accept next (the promotion gate decides),
    the drift the last verify found, the fleet's hosts, and the history newest first.
  - With O(dest), writes the board there as a self-contained HTML page (inline CSS, no script, no external asset),
    as plain text (aligned columns, at most 100 characters a line) or as JSON (O(format)).
  - Every value from the ledger or a record is escaped in the page. Reading never changes the ledger.
  - An empty ledger gives a board that says what to run first.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  backend:
    description:
      - Where the ledger lives. V(file) needs O(path); V(ssm) needs O(prefix), boto3 and AWS credentials.
    type: str
    choices: [file, ssm]
    default: file
  path:
    description: The ledger JSON file. Required when O(backend=file). A missing file reads as an empty ledger.
    type: path
  prefix:
    description: The SSM parameter path of the ledger. Required when O(backend=ssm).
    type: str
  app:
    description: Only this app. Without it, every app of the ledger.
    type: str
  chain:
    description:
      - The environments in promotion order; the board's columns. Environments the ledger has outside the chain
        come after them.
    type: list
    elements: str
    required: true
  artifacts_dir:
    description:
      - The artifacts directory of C(playbooks/bake.yml). The board reads C(<artifacts_dir>/<app>/records/*.json)
        (versions and bake times of the IDs) and C(<artifacts_dir>/<app>/verify.json) (the last verify's drift).
      - Without it, the board shows IDs without versions and no drift.
    type: path
  environments:
    description:
      - The promotion settings' environments (C(promotion_environments), as C(playbooks/board.yml) passes them). The
        board reads each one's C(soak_minutes) and C(approval) (C(docs/progressive.md)), so that "next in" says when
        an artifact the chain allows still soaks in the environment before (with the time left) or needs an approval
        (with who may give it and the command); other keys are ignored. Without it, neither is shown.
    type: dict
    default: {}
  format:
    description: What O(dest) gets - V(html) the page, V(text) the text board, V(json) the data (RV(board)).
    type: str
    choices: [html, text, json]
    default: html
  dest:
    description: Write the board to this file (its directory is created). Without it, nothing is written.
    type: path
extends_documentation_fragment:
  - amazon.aws.common.modules
  - amazon.aws.region.modules
  - amazon.aws.boto3
notes:
  - The AWS options and boto3 matter only for O(backend=ssm).
  - The board's data and the page's data attributes are documented in C(docs/board.md).
attributes:
  check_mode:
    support: full
    description: Builds the board and says whether O(dest) would change, without writing it.
  diff_mode:
    support: none
    description: No diff is shown.
  idempotent:
    support: partial
    description: The board carries the time it was made and the ages of the artifacts, so O(dest) changes each run.
seealso:
  - module: immutable.infra.ledger_info
"""

EXAMPLES = r"""
- name: Write the promotion board of every app as one HTML page
  immutable.infra.board:
    path: "{{ playbook_dir }}/../ledger/ledger.json"
    chain: [dev, staging, prod]
    artifacts_dir: "{{ playbook_dir }}/../artifacts"
    dest: "{{ playbook_dir }}/../artifacts/board.html"

- name: Print the board of web from the team ledger on SSM
  immutable.infra.board:
    backend: ssm
    prefix: /immutable-infra/ledger
    region: eu-west-1
    app: web
    chain: [dev, staging, prod]
  register: web_board

- name: Show it
  ansible.builtin.debug:
    msg: "{{ web_board.text }}"
"""

RETURN = r"""
board:
  description: The board's data (docs/board.md), what the page and the text show.
  returned: always
  type: dict
  contains:
    schema:
      description: The version of this data's layout.
      type: int
      sample: 1
    generated:
      description: When the board was made (UTC).
      type: str
      sample: "2026-12-02T18:30:00Z"
    location:
      description: The ledger file or SSM prefix.
      type: str
    chain:
      description: The environments in promotion order.
      type: list
      elements: str
    empty:
      description: Nothing is live in any environment; RV(board.hint) says what to run first.
      type: bool
    hint:
      description: What to run first when the board is empty, else null.
      type: str
    apps:
      description:
        - Per app - name, hint (null once something is live), verified_at (the last verify) and environments, each
          with name, live and previous (id, short, version, created, bake_id, kind), since, age, by, action,
          from_env, verified, verdict, hosts, incoming (state waiting, current or refused, artifact, from_env, why),
          drift (at, checked, drift, mismatches) and history (newest first).
      type: list
      elements: dict
text:
  description: The board as plain text (aligned columns, at most 100 characters a line).
  returned: always
  type: str
dest:
  description: The file written (or that would be written in check mode).
  returned: when O(dest) is given
  type: str
  sample: /srv/deploy/artifacts/board.html
location:
  description: The ledger file path or the SSM prefix.
  returned: always
  type: str
  sample: /srv/deploy/ledger/ledger.json
"""

import json
import os

from ansible_collections.immutable.infra.plugins.module_utils.aws._args import with_hidden_access_key
from ansible_collections.immutable.infra.plugins.module_utils.board._html import render_html
from ansible_collections.immutable.infra.plugins.module_utils.board._model import build_board
from ansible_collections.immutable.infra.plugins.module_utils.board._read import read_records
from ansible_collections.immutable.infra.plugins.module_utils.board._read import read_verify
from ansible_collections.immutable.infra.plugins.module_utils.board._text import render_text
from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.ledger._file import FileLedger
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_chain
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import check_name

ARGUMENT_SPEC = dict(
    backend=dict(type="str", choices=["file", "ssm"], default="file"),
    path=dict(type="path"),
    prefix=dict(type="str"),
    app=dict(type="str"),
    chain=dict(type="list", elements="str", required=True),
    artifacts_dir=dict(type="path"),
    environments=dict(type="dict", default={}),
    format=dict(type="str", choices=["html", "text", "json"], default="html"),
    dest=dict(type="path"),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    check_boto3=False,
    required_if=[("backend", "file", ["path"]), ("backend", "ssm", ["prefix"])],
)
# AnsibleAWSModule adds the common AWS options; the in-process action adds them too
AWS_COMMON_OPTIONS = True


def _ledger(module):
    params = module.params
    if params["backend"] == "file":
        return FileLedger(params["path"])
    # imported here: the file ledger runs in process on the controller and must not import boto3
    from ansible_collections.amazon.aws.plugins.module_utils.botocore import check_sdk_version_supported
    from ansible_collections.amazon.aws.plugins.module_utils.exceptions import AnsibleBotocoreError

    try:
        check_sdk_version_supported(warn=module.warn)
    except AnsibleBotocoreError as exc:
        module.fail_json(msg=f"backend=ssm needs boto3 and botocore where the module runs: {exc.message}")
    from ansible_collections.immutable.infra.plugins.module_utils.ledger._ssm import SsmLedger

    return SsmLedger(module.client("ssm"), params["prefix"])


def _render(board, fmt) -> str:
    if fmt == "html":
        return render_html(board)
    if fmt == "text":
        return render_text(board)
    return json.dumps(board, indent=1, sort_keys=True) + "\n"


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    try:
        chain = check_chain(params["chain"])
        if params["app"] is not None:
            check_name("app", params["app"])
        ledger = _ledger(module)
        state = ledger.read(params["app"])
    except LedgerError as exc:
        if exc.original is not None:
            module.fail_json_aws(exc.original, msg=exc.context)
        module.fail_json(msg=exc.message)
    apps = [params["app"]] if params["app"] else sorted(state.get("apps") or {})
    problems, records, verify = [], {}, {}
    if params["artifacts_dir"]:
        for app in apps:
            records[app] = read_records(params["artifacts_dir"], app, problems)
            verify[app] = read_verify(params["artifacts_dir"], app, problems)
    for problem in problems:
        module.warn(problem)
    board = build_board(state, chain, apps, records, verify, location=ledger.location, policies=params["environments"])
    result = dict(changed=False, board=board, text=render_text(board), location=ledger.location)
    if params["dest"]:
        dest = params["dest"]
        content = _render(board, params["format"])
        try:
            with open(dest, encoding="utf-8") as handle:
                result["changed"] = handle.read() != content
        except FileNotFoundError:
            result["changed"] = True
        except (OSError, UnicodeDecodeError) as exc:
            module.fail_json(msg=f"dest {dest} cannot be read ({exc}): give a writable file path (dest=...)")
        if result["changed"] and not module.check_mode:
            try:
                atomic_write(dest, content)
            except OSError as exc:
                module.fail_json(
                    msg=f"cannot write the board to {dest} ({exc.strerror or exc}): give a writable path (dest=...)"
                )
        result["dest"] = os.path.abspath(dest)
    module.exit_json(**result)


def main():
    from ansible_collections.amazon.aws.plugins.module_utils.modules import AnsibleAWSModule

    run_module(AnsibleAWSModule(argument_spec=with_hidden_access_key(ARGUMENT_SPEC), **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
