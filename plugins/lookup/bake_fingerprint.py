# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: bake_fingerprint
author:
  - immutable.infra contributors (@immutable-infra)
short_description: Content-addressed fingerprint of a bake, computed on the controller before anything starts
version_added: 0.1.0
description:
  - Computes the sha256 fingerprint of a bake from its resolved inputs, on the controller, before a builder is
    launched. A bake whose fingerprint matches an existing artifact can reuse it instead of rebuilding.
  - "The inputs are: the resolved base image ID, the content of every file of every role in the bake (relative path
    and sha256 of the bytes; not mtimes, not absolute paths, not directory order), the roles they depend on through
    C(meta/main.yml) C(dependencies) (recursively), the rendered bake vars, the options that change the artifact
    (image config, regions, KMS keys, sharing, ...) and the version of the installed immutable.infra collection."
  - Ignored in role directories are C(__pycache__), C(*.pyc), C(.git) and editor backups (C(*~), C(.*.swp), C(.#*)).
    Symlinks count by the content they point to.
  - Also returns the cumulative fingerprint after each role (for a per-role layer cache) and a manifest of per-input
    digests that, stored in the artifact record, lets a later run say which input changed (see O(previous)).
  - The lookup returns a one-element list, so C(lookup(...)) gives the result dictionary directly;
    C(query(...)) or C(wantlist=true) give a list holding it.
  - Plain role names are searched as ansible-playbook does, with O(roles_path) added after the playbook's own
    C(roles) directory; in order C(<playbook_dir>/roles), O(roles_path), the configured roles path
    (C(DEFAULT_ROLES_PATH)), C(<playbook_dir>), then the name as a path relative to C(<playbook_dir>). Fully
    qualified names (C(namespace.collection.role)) are resolved through the collections path by Ansible's
    collection loader. A plain-name dependency of a collection role is looked up in that collection first.
options:
  _terms:
    description: Not used; pass everything as keyword options.
    required: false
  base_id:
    description:
      - The resolved, immutable ID of the base image, never a tag or a name.
      - A container image ID or digest (V(sha256:<64 hex>) or V(<repo>@sha256:<64 hex>)) or an AMI ID (V(ami-<hex>))
        after filter resolution.
      - Exactly one of O(base_id) and O(base_image) is required.
    type: str
  base_image:
    description:
      - A container image in the local Docker Engine (a name and tag such as V(immutable-infra/base:bookworm)),
        resolved to its image ID on the controller (the Engine API on the local unix socket where the C(docker) CLI
        would use it, the C(docker) CLI otherwise). The ID is the base of the fingerprint and is returned as
        RV(_raw[].base_id). Fails naming the fix when the image does not exist.
      - Exactly one of O(base_id) and O(base_image) is required.
    type: str
    version_added: 0.2.0
  roles:
    description:
      - The roles of the bake, in the order they are applied.
      - Each is a fully qualified name (V(immutable.infra.baseline)), a plain role name found on the roles path, or a
        dictionary with a C(role) key (as in a play's C(roles:) list).
      - Empty for a call that only resolves O(base_image) (read RV(_raw[].base_id)).
    type: list
    elements: raw
    default: []
  vars:
    description:
      - The bake vars, as the roles will see them. Templates in the values are rendered before hashing.
      - Only their digests are stored in the returned manifest, never their values.
    type: dict
    default: {}
  options:
    description:
      - The bake options that change the artifact but not the provisioning (image config such as cmd, env, ports and
        labels; regions; KMS keys; sharing). They count in the final fingerprint but not in the per-role layers.
    type: dict
    default: {}
  roles_path:
    description:
      - Extra directories to search for plain role names, after C(<playbook_dir>/roles).
    type: list
    elements: path
    default: []
  previous:
    description:
      - The manifest (RV(_raw[].manifest)) of an earlier fingerprint, for example from the artifact record of the last
        bake. When given, RV(_raw[].changes) names the inputs that changed since then.
    type: dict
"""

EXAMPLES = r"""
- name: Fingerprint the bake of the web image
  ansible.builtin.set_fact:
    bake_fp: >-
      {{ lookup('immutable.infra.bake_fingerprint',
                base_id=base_image_info.images[0].Id,
                roles=['immutable.infra.baseline', 'immutable.infra.web'],
                vars={'web_port': 8080, 'web_greeting': greeting},
                options={'config': {'cmd': ['nginx', '-g', 'daemon off;'], 'ports': ['8080/tcp']}}) }}

- name: Resolve a local base image to its ID and fingerprint the bake on it
  ansible.builtin.set_fact:
    bake_fp: >-
      {{ lookup('immutable.infra.bake_fingerprint', base_image='immutable-infra/base:bookworm',
                roles=['immutable.infra.baseline']) }}
- name: Tag the image with the fingerprint
  ansible.builtin.debug:
    msg: "fp-{{ bake_fp.short }} ({{ bake_fp.fingerprint }})"

- name: Say why the last artifact cannot be reused
  ansible.builtin.debug:
    msg: >-
      {{ lookup('immutable.infra.bake_fingerprint', base_id=ami_id, roles=bake_roles, vars=bake_vars,
                options={'regions': ['eu-west-1', 'eu-central-1'], 'kms_key_id': kms_key},
                previous=last_record.inputs).changes }}
"""

RETURN = r"""
_raw:
  description: A one-element list holding the fingerprint dictionary (C(lookup) unwraps it).
  type: list
  elements: dict
  contains:
    fingerprint:
      description: sha256 over the canonical JSON of all inputs.
      type: str
      sample: sha256:3f2a9c0e4b1d7a65c8e2f0b9d4a1c6e7f8b2d3a4c5e6f7a8b9c0d1e2f3a4b5c6
    base_id:
      description: The base image ID the fingerprint covers (O(base_id), or O(base_image) resolved).
      type: str
      sample: sha256:0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c
    short:
      description: The first 12 hex digits of the fingerprint, for tags and names.
      type: str
      sample: 3f2a9c0e4b1d
    layers:
      description:
        - One entry per role, in bake order. The fingerprint of entry k covers the base, roles 0..k, the vars and
          the collection version (not the options), so a bake whose first k+1 roles are unchanged can start from
          the image cached for entry k.
      type: list
      elements: dict
      sample: [{role: immutable.infra.baseline, fingerprint: "sha256:..."}, {role: web, fingerprint: "sha256:..."}]
    inputs:
      description: Summary of the inputs (base, roles as name -> digest, vars digest, options digest, version).
      type: dict
      sample:
        base: sha256:0b1c...
        roles: {immutable.infra.baseline: "sha256:...", web: "sha256:..."}
        vars: sha256:...
        options: sha256:...
        collection_version: 0.1.0
    manifest:
      description:
        - Per-input digests (each role file, each var, each option, the dependencies of each role). Store it in
          the artifact record and pass it back as O(previous) to learn what changed. Holds no var values.
      type: dict
    changes:
      description: Only with O(previous). The inputs that changed, as sentences; empty when nothing changed.
      type: list
      elements: str
      sample: ["role web file templates/index.html.j2 changed", "var web_port changed"]
"""

import os

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import FingerprintError
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import compute_fingerprint
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import diff_inputs
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import read_collection_version
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.plugin_utils._roles import role_resolver

COLLECTION_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        self.set_options(var_options=variables, direct=kwargs)
        variables = variables or {}

        playbook_dir = variables.get("playbook_dir") or (self._loader.get_basedir() if self._loader else os.getcwd())
        resolver = role_resolver(playbook_dir, self.get_option("roles_path"))
        base_id = self._base_id(self.get_option("base_id"), self.get_option("base_image"))
        try:
            result = compute_fingerprint(
                base_id=base_id,
                roles=self.get_option("roles"),
                bake_vars=self.get_option("vars"),
                options=self.get_option("options"),
                collection_version=read_collection_version(COLLECTION_ROOT),
                resolver=resolver,
            )
            previous = self.get_option("previous")
            if previous is not None:
                result["changes"] = diff_inputs(previous, result["manifest"])
        except FingerprintError as exc:
            raise AnsibleLookupError(f"bake_fingerprint: {exc}") from exc
        result["base_id"] = base_id
        return [result]

    @staticmethod
    def _base_id(base_id, base_image):
        """base_id as given, or base_image resolved to its ID through the Docker engine."""
        if (base_id is None) == (base_image is None):
            raise AnsibleLookupError("bake_fingerprint: give exactly one of base_id and base_image")
        if base_image is None:
            return base_id
        try:
            found = docker_engine().image_id(base_image)
        except DockerError as exc:
            raise AnsibleLookupError(f"bake_fingerprint: could not resolve base image {base_image}: {exc}") from None
        if found is None:
            raise AnsibleLookupError(
                f"bake_fingerprint: base image {base_image} not found in the local Docker Engine: run scripts/setup.sh"
                " (it builds immutable-infra/base:bookworm with debootstrap) or set bake_base_image to an image that"
                " exists"
            )
        return found
