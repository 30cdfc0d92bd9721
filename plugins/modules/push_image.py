#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: push_image
short_description: Commit a builder container (or take a local image) and push it to a registry with immutable tags
version_added: 0.1.0
description:
  - Captures a builder container as an image (C(docker commit) with the image config), or takes a local image, and
    pushes it to a distribution v2 registry. Returns the manifest digest, the one immutable ID to deploy.
  - Before committing or pushing anything, the module asks the registry what every requested tag holds.
    The identity of the content is the O(fingerprint) label when O(fingerprint) is given; otherwise, for a
    commit, a hash of the source container/image ID and the requested config (label C(io.immutable-infra.source));
    otherwise (a local image pushed as is) the image ID, which is the config digest in the registry.
  - If every tag already holds that content, nothing is committed or pushed (C(changed=false)).
  - If a tag that is not in O(mutable_tags) holds other content, the module fails naming the tag and its digest,
    and nothing is pushed or moved, unless O(force=true).
  - If some tag already holds the content, the missing tags are added by manifest (GET and PUT of the manifest,
    same digest, no layer is pushed and nothing is committed). This is how promotion re-tags an image.
  - Otherwise the module commits, tags, pushes the first missing tag with C(docker push), reads the digest back from
    the registry and adds the remaining tags by manifest.
  - Credentials given as O(registry_username)/O(registry_password) are written only to a temporary C(DOCKER_CONFIG)
    directory (mode 0700) for the push and removed afterwards; they never reach C(~/.docker).
  - The module uses the C(docker) CLI on the target host and the registry HTTP API; it does not need the Docker SDK
    for Python.
author:
  - immutable.infra contributors (@immutable-infra)
options:
  container:
    description:
      - Name or ID of the builder container to commit. Mutually exclusive with O(image).
      - Neither O(container) nor O(image) is needed when O(fingerprint) is given and the registry already holds an
        image with that fingerprint under one of O(tags). The missing tags are then added by manifest (promotion,
        a new version name for the same content). Without such an image the module fails and asks for a source.
      - The container's config (for example the C(sleep) command a builder runs) is kept unless O(config) overrides
        it, so set O(config.cmd) for a builder.
    type: str
  image:
    description:
      - A local image reference (name:tag or ID) to push. Mutually exclusive with O(container).
      - With O(config), O(fingerprint) or an C(oci_*) option, the module creates a temporary container from the
        image, commits it with that config and removes the temporary container; the pushed image then has a new ID.
        Without them the image is pushed exactly as it is.
    type: str
  repository:
    description:
      - Target repository including the registry host, for example V(127.0.0.1:5000/web) or
        V(registry.example.com/team/web). Follows the docker reference grammar; no tag or digest here.
      - Registries on C(localhost) and 127.0.0.0/8 are spoken to over HTTP, others over HTTPS (see O(registry_scheme)).
    type: str
    required: true
  tags:
    description:
      - Tags to publish, at least one. The first tag that the registry does not have yet is pushed with its layers;
        the others are added by manifest.
    type: list
    elements: str
    required: true
  mutable_tags:
    description:
      - Tags that may move to other content (channel tags). Every other tag is immutable.
    type: list
    elements: str
    default: [latest]
  force:
    description:
      - Allow moving an immutable tag that holds other content. The old manifest stays reachable by digest.
    type: bool
    default: false
  refresh:
    description:
      - Push the new commit even when the tags already hold content with the same identity (the same O(fingerprint)),
        moving them to it. For a rebuild on purpose of unchanged inputs (C(bake_max_age) in C(playbooks/bake.yml)),
        so the tags name the fresh image. The old manifest stays reachable by digest.
    type: bool
    default: false
  config:
    description:
      - Image config applied at commit with C(docker commit --change). Unset keys keep the source's value.
      - The keys are ours (lower case). C(playbooks/bake.yml) also takes Docker's spelling in C(bake_image_config)
        (C(Cmd), C(Entrypoint), C(Env), C(ExposedPorts), C(User), C(WorkingDir), C(Volumes), C(Healthcheck),
        C(Labels)) and maps it to these before the builder starts.
    type: dict
    suboptions:
      cmd:
        description: Default command; a list (exec form) or a string (shell form).
        type: raw
      entrypoint:
        description: Entrypoint; a list (exec form) or a string (shell form).
        type: raw
      env:
        description: Environment variables to set, as a dict of name to value.
        type: dict
      ports:
        description: Ports to expose, like V(8080/tcp) or V(53/udp).
        type: list
        elements: str
      user:
        description: User (name or UID[:GID]) the image runs as.
        type: str
      workdir:
        description: Absolute working directory.
        type: str
      volumes:
        description: Absolute paths declared as volumes (C(VOLUME)).
        type: list
        elements: str
        version_added: 0.2.0
      healthcheck:
        description: Health check of the image.
        type: dict
        suboptions:
          test:
            description:
              - A list like V([CMD, curl, -f, http://localhost/]) or V([CMD-SHELL, "curl -f http://localhost/"]),
                a string (shell form), or V([NONE]) to disable the inherited check.
            type: raw
          interval:
            description: Time between checks, a duration like V(30s) or a number of seconds.
            type: raw
          timeout:
            description: Time a check may take, a duration like V(5s) or a number of seconds.
            type: raw
          retries:
            description: Consecutive failures that make the container unhealthy.
            type: int
          start_period:
            description: Grace period after start, a duration like V(10s) or a number of seconds.
            type: raw
      labels:
        description:
          - Labels to set, as a dict. OCI labels (C(org.opencontainers.image.*)) may be given here too.
        type: dict
  fingerprint:
    description:
      - Fingerprint of the bake inputs, stored as the label C(io.immutable-infra.fingerprint) and used as the identity
        of the content (same fingerprint = same content). Give it for idempotent runs from a fresh builder container.
    type: str
  oci_revision:
    description: Source revision, stored as the label C(org.opencontainers.image.revision).
    type: str
  oci_source:
    description: Source repository URL, stored as the label C(org.opencontainers.image.source).
    type: str
  oci_title:
    description:
      - Title (the artifact's name), stored as the label C(org.opencontainers.image.title). Give it when the image
        is built on a base image that sets its own title, or the base's title is what the pushed image says.
    type: str
    version_added: 0.2.0
  oci_version:
    description: Version, stored as the label C(org.opencontainers.image.version).
    type: str
attributes:
  check_mode:
    support: full
    description: Resolves the registry state and reports the plan (commit, tags to push, tags to add by manifest,
      conflicts) without committing, tagging or pushing.
  diff_mode:
    support: none
    description: No diff is returned; see RV(plan).
  idempotent:
    support: full
    description: A second run with the same content returns C(changed=false) and commits and pushes nothing.
notes:
  - The Docker daemon must be allowed to push to the registry (127.0.0.0/8 registries are allowed over HTTP by
    default; other plain-HTTP registries need C(insecure-registries)).
  - Content identity without O(fingerprint) for a container is the container ID plus the config; if you change a
    builder container after pushing it, give a new O(fingerprint) or a new tag.
seealso:
  - module: immutable.infra.registry_image_info
extends_documentation_fragment:
  - immutable.infra.registry
"""

EXAMPLES = r"""
- name: Capture the builder container and push it with an immutable version tag and a fingerprint tag
  immutable.infra.push_image:
    container: web-builder
    repository: 127.0.0.1:5000/web
    tags: ["{{ fingerprint | immutable.infra.fingerprint_tag }}", "1.4.0", latest]
    fingerprint: "{{ fingerprint }}"
    oci_revision: "{{ git_sha }}"
    oci_version: 1.4.0
    config:
      cmd: [nginx, -g, daemon off;]
      ports: [8080/tcp]
      env:
        APP_ENV: production
      user: www-data
      workdir: /srv/web
      healthcheck:
        test: [CMD, curl, -fsS, http://127.0.0.1:8080/health]
        interval: 10s
        timeout: 3s
        retries: 3
    registry_username: "{{ registry_user }}"
    registry_password: "{{ registry_password }}"
  register: pushed

- name: Deploy exactly this digest
  ansible.builtin.debug:
    msg: "{{ pushed.image }}"  # 127.0.0.1:5000/web@sha256:...

- name: Promote a pushed image to a new tag by manifest (no layer is pushed)
  immutable.infra.push_image:
    image: 127.0.0.1:5000/web:1.4.0
    repository: 127.0.0.1:5000/web
    tags: ["1.4.0", staging]
    mutable_tags: [staging, latest]
    docker_config: ~/.docker

- name: Show what a push would do
  immutable.infra.push_image:
    container: web-builder
    repository: 127.0.0.1:5000/web
    tags: ["1.5.0"]
    fingerprint: "{{ fingerprint }}"
  check_mode: true
  register: plan
"""

RETURN = r"""
digest:
  description: Manifest digest the tags point at (null in check mode when a push would be needed).
  returned: success
  type: str
  sample: sha256:4b1d8f0e0c6f2b5b6b3e2f5c0a1d8f9e7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b
image:
  description: The immutable reference C(repository@digest) to deploy.
  returned: success
  type: str
  sample: 127.0.0.1:5000/web@sha256:4b1d8f0e0c6f2b5b6b3e2f5c0a1d8f9e7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b
image_id:
  description: Image ID (config digest) of the content.
  returned: success
  type: str
  sample: sha256:9f2c1e0d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4d3c2b1a0f9e8d7c6b5a4d3c2b1a
repository:
  description: The repository pushed to.
  returned: always
  type: str
  sample: 127.0.0.1:5000/web
tags:
  description: The requested tags.
  returned: success
  type: list
  elements: str
  sample: ["1.4.0", "latest"]
pushed:
  description: Tags pushed with their layers (C(docker push)); empty when nothing was pushed.
  returned: success
  type: list
  elements: str
  sample: ["1.4.0"]
retagged:
  description: Tags added or moved by manifest (same digest, no layer pushed).
  returned: success
  type: list
  elements: str
  sample: ["latest"]
plan:
  description: What the module decided before changing anything (also returned on a tag conflict).
  returned: always
  type: dict
  contains:
    identity:
      description: How content was identified (C(kind) fingerprint, source or image_id, and C(value)).
      type: dict
    unchanged:
      description: Tags that already hold the content.
      type: list
      elements: str
    conflicts:
      description: Immutable tags holding other content (C(tag), C(digest)); the module failed.
      type: list
      elements: dict
    moves:
      description: Mutable (or forced) tags that move to the new content.
      type: list
      elements: str
    commit:
      description: Whether a commit is (or would be) made.
      type: bool
    push_tag:
      description: The tag pushed with layers, or null.
      type: str
    manifest_tags:
      description: Tags added by manifest.
      type: list
      elements: str
    retag_from:
      description: Digest whose manifest is copied to the missing tags, or null.
      type: str
actions:
  description: Human-readable steps done (or, in check mode, that would be done).
  returned: success
  type: list
  elements: str
  sample: ["commit container web-builder", "push 127.0.0.1:5000/web:1.4.0", "add tag latest by manifest"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.common._http import open_url
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_MUTUALLY_EXCLUSIVE
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import REGISTRY_REQUIRED_TOGETHER
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_argument_spec
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import registry_client
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import PushImageError
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import run_push


def argument_spec():
    healthcheck = dict(
        test=dict(type="raw"),
        interval=dict(type="raw"),
        timeout=dict(type="raw"),
        retries=dict(type="int"),
        start_period=dict(type="raw"),
    )
    config = dict(
        cmd=dict(type="raw"),
        entrypoint=dict(type="raw"),
        env=dict(type="dict"),
        ports=dict(type="list", elements="str"),
        user=dict(type="str"),
        workdir=dict(type="str"),
        volumes=dict(type="list", elements="str"),
        healthcheck=dict(type="dict", options=healthcheck),
        labels=dict(type="dict"),
    )
    return dict(
        container=dict(type="str"),
        image=dict(type="str"),
        repository=dict(type="str", required=True),
        tags=dict(type="list", elements="str", required=True),
        mutable_tags=dict(type="list", elements="str", default=["latest"]),
        force=dict(type="bool", default=False),
        refresh=dict(type="bool", default=False),
        config=dict(type="dict", options=config),
        fingerprint=dict(type="str"),
        oci_revision=dict(type="str"),
        oci_source=dict(type="str"),
        oci_title=dict(type="str"),
        oci_version=dict(type="str"),
        **registry_argument_spec(),
    )


ARGUMENT_SPEC = argument_spec()
MODULE_OPTIONS = dict(
    mutually_exclusive=[("container", "image")] + REGISTRY_MUTUALLY_EXCLUSIVE,
    required_one_of=[("container", "image", "fingerprint")],
    required_together=REGISTRY_REQUIRED_TOGETHER,
    supports_check_mode=True,
)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    params = module.params
    try:
        registry_host, _repo = parse_repository(params["repository"])
        docker_bin = module.get_bin_path("docker", required=True)
        docker = docker_engine(module.run_command, docker_bin=docker_bin, secrets=[params["registry_password"]])
        registry = registry_client(registry_host, params, open_url, module.run_command)
        result = run_push(docker, registry, params, check_mode=module.check_mode)
    except PushImageError as exc:
        extra = {"plan": exc.plan} if exc.plan else {}
        module.fail_json(msg=exc.message, repository=params["repository"], **extra)
    except (ImageReferenceError, RegistryError) as exc:
        module.fail_json(msg=str(exc), repository=params["repository"])
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
