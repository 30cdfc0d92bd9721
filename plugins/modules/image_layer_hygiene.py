#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: image_layer_hygiene
short_description: Check every layer of a pushed image for keys, credentials, histories and host identity
version_added: 0.3.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Reads the image from the registry by digest and checks each of its layers on its own with the rules of
    M(immutable.infra.image_hygiene) (host and user SSH keys, histories, a non-empty machine-id, client credential
    files, private keys and token-shaped strings in files, O(forbidden) globs).
  - "Why each layer: a file written in one layer and removed in a later one is only hidden by a whiteout; its bytes
    stay in the earlier layer's blob, which the registry serves to anyone who may pull the image. A check of the
    merged file system (what M(immutable.infra.image_hygiene) does on a bake's builder) cannot see it."
  - A bake of this collection pushes one layer above its base, checked before the push; this module is the proof
    for any image, for example one made by C(docker build), or one a team receives.
  - Only the paths the rules read are unpacked, to a temporary directory removed at the end; whiteouts are not
    followed and symbolic links are not recreated. A finding names the layer, the path and the kind of secret,
    never the secret.
  - Read only.
options:
  image:
    description: The image, C(<registry>/<repository>@sha256:<64 hex>) (a digest reference, never a tag).
    type: str
    required: true
  base_image:
    description:
      - An image in the local Docker engine (name or ID) the checked image is built on; its layers (by their
        uncompressed digest, C(rootfs.diff_ids)) are not checked. Without it every layer is checked.
    type: str
extends_documentation_fragment:
  - immutable.infra.hygiene_rules
  - immutable.infra.registry
attributes:
  check_mode:
    support: full
    description: Read only; runs the same in check mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
  idempotent:
    support: full
    description: Never changes anything.
seealso:
  - module: immutable.infra.image_hygiene
"""

EXAMPLES = r"""
- name: No secret in any layer of an image built elsewhere
  immutable.infra.image_layer_hygiene:
    image: 127.0.0.1:5000/vendor/app@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0
    base_image: immutable-infra/base:bookworm
    forbidden:
      - /etc/app/*.json
"""

RETURN = r"""
digest:
  description: The manifest digest that was checked.
  returned: success
  type: str
layers:
  description: Every layer, bottom first, whether it was checked (not a layer of O(base_image)) and what it held.
  returned: success
  type: list
  elements: dict
  contains:
    index:
      description: Position from the bottom (0 is the first layer).
      type: int
    digest:
      description: The layer blob's digest in the registry.
      type: str
    diff_id:
      description: The layer's uncompressed digest from the image config.
      type: str
    scanned:
      description: Whether the layer was checked.
      type: bool
    files:
      description: Regular files of the layer the rules read (when scanned).
      type: int
findings:
  description: Every offending file with its layer; empty when the image is clean (the task fails otherwise).
  returned: always
  type: list
  elements: dict
  sample: [{"layer": 1, "digest": "sha256:5d41...", "path": "/opt/app/deploy_key", "reason": "OPENSSH private key"}]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneError
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import hygiene_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import LayerError
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import layers_failure_message
from ansible_collections.immutable.infra.plugins.module_utils.bake._layers import scan_layers
from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client

ARGUMENT_SPEC = dict(
    image=dict(type="str", required=True),
    base_image=dict(type="str"),
    **hygiene_argument_spec(),
    **registry_argument_spec(),
)


def base_layers(module, base_image):
    """The diff_ids of a local image's layers (empty without base_image)."""
    if not base_image:
        return []
    try:
        found = docker_engine(module.run_command).inspect(base_image, kind="image")
    except DockerError as exc:
        module.fail_json(msg=f"base_image {base_image}: cannot ask the Docker engine: {exc}")
    if not found:
        module.fail_json(
            msg=f"base_image {base_image} is not in the local Docker engine: give a local image (name or ID), "
            "or leave base_image out to check every layer"
        )
    return ((found.get("RootFS") or {}).get("Layers")) or []


def run_module(module):
    params = module.params
    image = params["image"]
    repository, _sep, digest = image.partition("@")
    try:
        if not digest.startswith("sha256:") or len(digest) != 71:
            raise ImageReferenceError("it has no @sha256:<64 hex> digest")
        host, path = parse_repository(repository)
    except ImageReferenceError as exc:
        module.fail_json(msg=f"image {image!r} is not a digest reference <registry>/<repository>@sha256:<hex>: {exc}")
    skip = base_layers(module, params["base_image"])
    client = registry_client(host, params, open_url, module.run_command)
    try:
        result = scan_layers(
            client, path, digest, params["forbidden"], params["allow"], params["scan_paths"], skip=skip
        )
    except (HygieneError, LayerError) as exc:
        module.fail_json(msg=f"{image}: {exc}", findings=[])
    except RegistryError as exc:
        module.fail_json(msg=f"{image}: the registry: {exc.message}", findings=[])
    for layer in result["layers"]:
        layer.pop("findings", None)
    if result["findings"]:
        module.fail_json(msg=layers_failure_message(image, result["findings"]), **result)
    module.exit_json(changed=False, **result)


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
