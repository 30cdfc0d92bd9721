#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_freshness
short_description: How old live artifacts are and which of their Debian packages are outdated in the mirror
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - For each artifact given (an environment's live artifact, as C(playbooks/freshness.yml) reads them from the
    ledger), its age in days, from its artifact record's C(created) (else the image's
    C(org.opencontainers.image.created) label in its SBOM), on the collection's clock (C(IMMUTABLE_NOW) when set).
  - And the Debian packages of its SBOM (C(pkg:deb) purls; the local copy under O(artifacts_dir), else the one kept in
    the registry beside the image) that have a newer version in the mirror's package indexes,
    C(<url>/dists/<suite>/<component>/binary-<arch>/Packages.xz) (or C(.gz), or plain), compared with dpkg's rules.
    Each index is read once per run.
  - Fails, naming the environment, the artifact and the threshold, when an artifact is older than O(max_age_days) or
    has more than O(max_outdated) outdated packages (unless O(fail_on_threshold=false), when RV(problems) says it).
    Without thresholds it only reports.
  - Read only, never changes anything. An AMI's packages come from the SBOM its local record names (the bake's local
    copy, else the S3 object, read with the usual C(AWS_*) environment; both checked against the record's sha256);
    an AMI without a local record, or baked without C(bake_ami_evidence_bucket), gets its age only.
options:
  artifacts:
    description:
      - The artifacts to check, C({env, id}); C(id) is C(<repository>@sha256:<64 hex>), an AMI ID or region map, or
        null (nothing live, reported as such).
    type: list
    elements: dict
    required: true
  sources:
    description:
      - The mirror the artifacts were built from, one item per suite, C("<url> <suite> <component>...") (for example
        the release, its C(-updates) and its C(-security) suites). C(http://), C(https://) and C(file://) URLs; a
        leading C(deb) is accepted, so a C(sources.list) line can be pasted.
      - Default the machine's own apt sources (C(sources.list), C(sources.list.d/*.list) and C(*.sources) under
        O(apt_dir)).
    type: list
    elements: str
  apt_dir:
    description: Where the machine's apt sources are read when O(sources) is not given.
    type: path
    default: /etc/apt
  arch:
    description: The Debian architecture of the indexes read; default the most frequent one of the SBOM's packages.
    type: str
  artifacts_dir:
    description: The bakes' artifacts directory; its records and SBOMs are read first, then the registry's.
    type: path
  app:
    description: The artifact name (C(bake_name)) whose directory under O(artifacts_dir) holds records and SBOMs.
    type: str
  max_age_days:
    description: Fail when an artifact is older than this many days. Unset, ages are only reported.
    type: int
  max_outdated:
    description: Fail when an artifact has more than this many outdated packages. Unset, they are only reported.
    type: int
  fail_on_threshold:
    description: Fail the task when a threshold is passed; V(false) returns RV(problems) and lets the play decide.
    type: bool
    default: true
  limit:
    description: At most this many outdated packages per artifact in RV(summary) (the rest are counted).
    type: int
    default: 10
  mirror_timeout:
    description: Timeout of each request to the mirror, in seconds.
    type: int
    default: 60
extends_documentation_fragment:
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Reads in check mode too.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.artifact_sbom
  - module: immutable.infra.artifact_diff
"""

EXAMPLES = r"""
- name: How fresh is what prod runs (fail past 30 days or 5 outdated packages)
  immutable.infra.artifact_freshness:
    artifacts:
      - env: prod
        id: "{{ lookup('immutable.infra.ledger', 'web/prod', field='live', path=ledger_path) }}"
    artifacts_dir: "{{ playbook_dir }}/artifacts"
    app: web
    sources:
      - "http://deb.example.org/debian bookworm main"
      - "http://deb.example.org/debian bookworm-updates main"
      - "http://deb.example.org/debian-security bookworm-security main"
    max_age_days: 30
    max_outdated: 5
  register: prod_freshness

- name: Print it
  ansible.builtin.debug:
    msg: "{{ prod_freshness.summary }}"
"""

RETURN = r"""
artifacts:
  description: One item per artifact given, in order.
  returned: success
  type: list
  elements: dict
  contains:
    env:
      description: The environment.
      type: str
    id:
      description: The artifact ID (null when nothing is live).
      type: raw
    created:
      description: When it was baked (ISO-8601 UTC), null when unknown.
      type: str
    created_from:
      description: Where RV(artifacts[].created) comes from, C(record) or C(image label).
      type: str
    age_days:
      description: Its age in days (one decimal) on the collection's clock; null when unknown.
      type: float
    arch:
      description: The architecture whose indexes were read.
      type: str
    packages:
      description: How many Debian packages its SBOM names; null without an SBOM.
      type: int
    outdated:
      description: The packages with a newer version in the mirror (C(name), C(installed), C(candidate), C(suite),
        C(arch)).
      type: list
      elements: dict
      sample: [{"name": "openssl", "installed": "3.0.15-1~deb12u1", "candidate": "3.0.16-1~deb12u1",
                "suite": "bookworm-security", "arch": "amd64"}]
    outdated_count:
      description: How many; null when its packages were not checked (no SBOM).
      type: int
    note:
      description: Why its packages were not checked, or null.
      type: str
sources:
  description: The mirror's sources read (URLs without credentials).
  returned: success
  type: list
  elements: dict
  sample: [{"url": "http://deb.example.org/debian", "suite": "bookworm", "components": ["main"]}]
problems:
  description: One sentence per threshold passed, naming the environment, the artifact, the value and the threshold.
  returned: always
  type: list
  elements: str
  sample: ["prod: 127.0.0.1:5000/web@sha256:1f0c... is 41 days old (baked 2026-10-24T09:00:00Z), older than
            max_age_days 30: rebake it ..."]
summary:
  description: Compact lines for people, one per environment, then its outdated packages C(name installed -> candidate
    (suite)), at most O(limit) each, then C(... and N more).
  returned: success
  type: list
  elements: str
  sample: ["prod: 127.0.0.1:5000/web@sha256:1f0c... 41 days old, 2 of 152 packages outdated",
           "  openssl 3.0.15-1~deb12u1 -> 3.0.16-1~deb12u1 (bookworm-security)"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import normalize_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_clients
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import FreshnessError
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import MirrorIndex
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import apt_sources
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import check_artifact
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import display_url
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import parse_source
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import read_artifact
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import summary_lines
from ansible_collections.immutable.infra.plugins.module_utils.supply._freshness import threshold_problems
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError

ARGUMENT_SPEC = dict(
    artifacts=dict(type="list", elements="dict", required=True),
    sources=dict(type="list", elements="str"),
    apt_dir=dict(type="path", default="/etc/apt"),
    arch=dict(type="str"),
    artifacts_dir=dict(type="path"),
    app=dict(type="str"),
    max_age_days=dict(type="int"),
    max_outdated=dict(type="int"),
    fail_on_threshold=dict(type="bool", default=True),
    limit=dict(type="int", default=10),
    mirror_timeout=dict(type="int", default=60),
    **registry_argument_spec(),
)


def checked_inputs(module):
    """(sources, artifacts) after the checks that need no network: a bad input fails here, before anything is read."""
    params = module.params
    for name in ("max_age_days", "max_outdated"):
        if params[name] is not None and params[name] < 0:
            module.fail_json(
                msg=f"{name} {params[name]} is negative: give a whole number of 0 or more, or leave it unset"
            )
    artifacts = []
    for index, item in enumerate(params["artifacts"]):
        if not isinstance(item.get("env"), str) or not item["env"]:
            module.fail_json(msg=f"artifacts[{index}] has no env: give each item as {{env: <name>, id: <artifact ID>}}")
        artifact_id = item.get("id") or None
        if artifact_id is not None:
            try:
                artifact_id = normalize_id(artifact_id)
            except LedgerError as exc:
                module.fail_json(msg=f"{item['env']}: {exc.message}")
        artifacts.append((item["env"], artifact_id))
    try:
        if params["sources"]:
            sources = [parse_source(text) for text in params["sources"]]
        else:
            sources = apt_sources(params["apt_dir"])
    except FreshnessError as exc:
        module.fail_json(msg=str(exc))
    if not sources:
        module.fail_json(
            msg=f"no Debian mirror to compare with: the apt sources under {params['apt_dir']} name none (deb lines or"
            " deb822 .sources); give them, e.g. -e 'freshness_sources=[\"<url> bookworm main\"]'"
        )
    return sources, artifacts


def run_module(module):
    params = module.params
    sources, artifacts = checked_inputs(module)
    client_for = registry_clients(params, open_url, module.run_command)

    mirror = MirrorIndex(sources, open_url, timeout=params["mirror_timeout"])
    try:
        now = now_seconds()
    except LedgerError as exc:
        module.fail_json(msg=exc.message)
    report = []
    for env, artifact_id in artifacts:
        if artifact_id is None:
            report.append(dict(check_artifact(env, None, None, None, mirror, now, parse_utc), note="nothing live"))
            continue
        try:
            document, record, note = read_artifact(artifact_id, params["artifacts_dir"], params["app"], client_for)
            item = check_artifact(env, artifact_id, document, record, mirror, now, parse_utc, params["arch"])
        except (FreshnessError, SbomError, RecordError) as exc:
            module.fail_json(msg=f"{env}: {artifact_id}: {exc}")
        except RegistryError as exc:
            module.fail_json(msg=f"{env}: {artifact_id}: the registry: {exc.message}")
        item["note"] = note
        report.append(item)
    problems = threshold_problems(report, params["max_age_days"], params["max_outdated"])
    result = dict(
        changed=False,
        artifacts=report,
        sources=[dict(source, url=display_url(source["url"])) for source in sources],
        problems=problems,
        summary=summary_lines(report, limit=max(params["limit"], 0)),
    )
    if problems and params["fail_on_threshold"]:
        module.fail_json(msg="; ".join(problems), **result)
    module.exit_json(**result)


def main():
    run_module(
        AnsibleModule(
            argument_spec=ARGUMENT_SPEC,
            supports_check_mode=True,
            mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
            required_together=REGISTRY_REQUIRED_TOGETHER,
        )
    )


if __name__ == "__main__":
    main()
