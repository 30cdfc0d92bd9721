#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_image_info
short_description: Look up tags or digests of a repository in a container registry
version_added: 0.1.0
description:
  - Asks a distribution v2 registry, over its HTTP API, what each requested tag (or digest) of a repository holds;
    whether it exists, its manifest digest, the immutable reference C(repository@digest), the image ID, the labels
    (including the C(io.immutable-infra.fingerprint) label) and the creation time.
  - Read only. Two HTTP requests per reference (manifest and image config), plus authentication. The bake uses it as
    its cache lookup (is there an image tagged C(fp-<fingerprint>)?).
  - A missing tag or repository is not an error; it is returned with RV(images[].exists=false).
author:
  - immutable.infra contributors (@immutable-infra)
options:
  repository:
    description:
      - Repository including the registry host, for example V(127.0.0.1:5000/web). No tag or digest here.
    type: str
    required: true
  tags:
    description: Tags to look up.
    type: list
    elements: str
  digest:
    description: A manifest digest (V(sha256:...)) to look up, in addition to O(tags).
    type: str
attributes:
  check_mode:
    support: full
    description: Read-only module; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.push_image
extends_documentation_fragment:
  - immutable.infra.registry
"""

EXAMPLES = r"""
- name: Is there already an image for this fingerprint?
  immutable.infra.registry_image_info:
    repository: 127.0.0.1:5000/web
    tags: ["{{ fingerprint | immutable.infra.fingerprint_tag }}"]
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
  register: cache

- name: Reuse it when the fingerprint label matches
  ansible.builtin.set_fact:
    web_image: "{{ cache.images[0].image }}"
  when:
    - cache.images[0].exists
    - cache.images[0].fingerprint == fingerprint

- name: Inspect a deployed digest
  immutable.infra.registry_image_info:
    repository: 127.0.0.1:5000/web
    digest: sha256:4b1d8f0e0c6f2b5b6b3e2f5c0a1d8f9e7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b
    docker_config: ~/.docker
  register: deployed
"""

RETURN = r"""
repository:
  description: The repository looked up.
  returned: always
  type: str
  sample: 127.0.0.1:5000/web
images:
  description: One entry per requested tag (in order), then the digest if given.
  returned: success
  type: list
  elements: dict
  contains:
    ref:
      description: The tag or digest looked up.
      type: str
      sample: 1.4.0
    exists:
      description: Whether the registry has it.
      type: bool
      sample: true
    digest:
      description: Manifest digest, or null when missing.
      type: str
      sample: sha256:4b1d8f0e0c6f2b5b6b3e2f5c0a1d8f9e7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b
    image:
      description: C(repository@digest), or null when missing.
      type: str
      sample: 127.0.0.1:5000/web@sha256:4b1d8f0e0c6f2b5b6b3e2f5c0a1d8f9e7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b
    image_id:
      description: Image ID (config digest), or null.
      type: str
    media_type:
      description: Manifest media type (docker schema 2 or OCI, manifest or index).
      type: str
    labels:
      description: Labels of the image config (empty when missing).
      type: dict
    fingerprint:
      description: Value of the C(io.immutable-infra.fingerprint) label, or null.
      type: str
    created:
      description: Creation time from the image config, or null.
      type: str
      sample: "2026-01-31T12:00:00.123456789Z"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_FINGERPRINT
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_digest
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_tag
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import remote_state


def lookup(registry, repository, repo, refs):
    images = []
    for ref in refs:
        state = remote_state(registry, repo, ref)
        labels = (state or {}).get("labels") or {}
        images.append(
            {
                "ref": ref,
                "exists": state is not None,
                "digest": state["digest"] if state else None,
                "image": f"{repository}@{state['digest']}" if state else None,
                "image_id": state["image_id"] if state else None,
                "media_type": state["media_type"] if state else None,
                "labels": labels,
                "fingerprint": labels.get(LABEL_FINGERPRINT),
                "created": state["created"] if state else None,
            }
        )
    return images


ARGUMENT_SPEC = dict(
    repository=dict(type="str", required=True),
    tags=dict(type="list", elements="str"),
    digest=dict(type="str"),
    **registry_argument_spec(),
)
MODULE_OPTIONS = dict(
    required_one_of=[("tags", "digest")],
    mutually_exclusive=REGISTRY_MUTUALLY_EXCLUSIVE,
    required_together=REGISTRY_REQUIRED_TOGETHER,
    supports_check_mode=True,
)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    try:
        registry_host, repo = parse_repository(params["repository"])
        refs = [validate_tag(t) for t in params["tags"] or []]
        if params["digest"]:
            refs.append(validate_digest(params["digest"]))
        registry = registry_client(registry_host, params, open_url, module.run_command)
        images = lookup(registry, params["repository"], repo, refs)
    except (ImageReferenceError, RegistryError) as exc:
        module.fail_json(msg=str(exc), repository=params["repository"])
    module.exit_json(changed=False, repository=params["repository"], images=images)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
