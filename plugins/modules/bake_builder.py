#!/usr/bin/python
# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: bake_builder
short_description: Builder containers and the per-role layer cache of a container bake
version_added: 0.1.0
author:
  - immutable.infra contributors (@immutable-infra)
description:
  - Starts the builder container of a container bake from the deepest per-role cache image that is still valid,
    saves a cache image after each role, removes the builder, sweeps builders left behind by killed runs and prunes
    old cache images.
  - Used by the C(immutable.infra.bake) playbook; usable on its own.
  - Builders and cache images carry the labels C(io.immutable-infra.kind) (V(builder) or V(cache)),
    C(io.immutable-infra.app), C(io.immutable-infra.bake-id) and C(io.immutable-infra.created) (epoch seconds).
  - Builders also carry C(io.immutable-infra.owner) (C(<host>:<pid>:<process start>)) naming the C(ansible-playbook)
    run that started them, so a sweep on the same host removes the builders of a killed run at once instead of
    waiting for O(sweep_min_age).
  - Cache images are named C(immutable-infra-cache/<app>:<layer fingerprint hex>) and stay in the local engine; they
    are never pushed and never confused with released artifacts.
  - Talks to the Docker Engine through its API on the local unix socket where the C(docker) CLI would use that
    socket, through the C(docker) CLI otherwise (and for what the API does not answer).
options:
  state:
    description:
      - V(started) starts the builder (after sweeping orphans when O(sweep_min_age) is set) from the deepest cached
        layer of O(layers).
      - V(layer_saved) commits the builder as the cache image of O(layer); nothing happens when it exists.
      - V(squashed) returns the container to capture with the builder's whole filesystem in one layer above
        O(image) (the base image). A builder started from the base image is returned as it is; one started from a
        cache layer gets a new container C(<container>-squash) from the base image holding every path the builder
        changed (owners, modes and extended attributes kept) and none it removed, so files the seal or a later
        role removed are not hidden in a cache layer's blob of the artifact. O(state=absent) removes both
        containers afterwards. The builder needs GNU C(tar). Also returns the image config the roles declared
        (RV(declared_config)).
      - With O(split=true), V(squashed) captures a builder started from a cache layer in two layers above
        O(image) instead, both copies of the builder as it is. The first holds the paths its cache layers changed
        that the builder did not touch since (kept as the local image C(immutable-infra-cache/<app>:kept-<hex>),
        reused by a later bake whose builder starts from the same cache layer and touches the same of those paths);
        the second is C(<container>-squash) from that image with every path the builder touched. Neither layer
        holds a file the builder no longer has.
      - V(absent) removes the builder container and its copies C(<container>-squash) and C(<container>-kept),
        whichever exist, in one C(docker rm).
      - V(swept) removes the builder containers of runs that are gone (of O(app) when given), that is those whose
        owner C(ansible-playbook) process on this host no longer runs, whatever their age, and those without an
        owner on this host once older than O(sweep_min_age) seconds. Builders of a live run are never removed.
      - V(pruned) removes the cache images of O(app) that are not in O(layers), keeping the O(keep) newest others.
    type: str
    choices: [started, layer_saved, squashed, absent, swept, pruned]
    default: started
  app:
    description: Name of the artifact being baked (lower-case letters, digits, C(.), C(_), C(-)).
    type: str
  bake_id:
    description: ID of this bake run, stored as a label on everything it creates.
    type: str
  container:
    description: Name of the builder container. Defaults to C(bake-<app>-<bake_id>).
    type: str
  image:
    description:
      - Base image to start from when no cached layer applies (O(state=started)), or to squash onto
        (O(state=squashed)).
    type: str
  layers:
    description:
      - Per-role layers of the bake in order, as returned by the C(immutable.infra.bake_fingerprint) lookup
        (C(role) and C(fingerprint) keys). For O(state=started) the roles whose layers may be reused; for
        O(state=pruned) the layers to keep.
    type: list
    elements: dict
    default: []
  layer:
    description: The layer to save (C(role) and C(fingerprint) keys) for O(state=layer_saved).
    type: dict
  cache:
    description: Whether O(state=started) may start from a cached layer.
    type: bool
    default: true
  network:
    description: Docker network of the builder. The default bridge when not set.
    type: str
  sweep_min_age:
    description:
      - Builders older than this many seconds whose owner cannot be checked (no owner label, or started from
        another host) are taken as left behind by a killed run and removed; builders whose owner process on this
        host is gone are removed whatever their age (O(state=started) sweeps only the builders of O(app);
        O(state=swept) all apps unless O(app) is set).
      - Must be longer than the longest bake you run, so a running bake of another host is never swept.
    type: int
  owner_pid:
    description:
      - PID of the C(ansible-playbook) process that owns the builder started by O(state=started).
      - Default is the outermost C(ansible-playbook) process among the module's ancestors (read from C(/proc));
        when none is found (not Linux, or not run by C(ansible-playbook)) the builder gets no owner label and only
        the age rule of O(sweep_min_age) sweeps it.
    type: int
  keep:
    description: Number of cache images off the current path to keep for O(state=pruned), newest first.
    type: int
    default: 6
  prune:
    description:
      - With O(state=started), also remove the cache images of O(app) that are not in O(layers), keeping the
        O(keep) newest others, as O(state=pruned) does. It reuses the listing the start needs anyway, so a bake
        spends no separate module call on pruning. Ignored when O(cache=false).
    type: bool
    default: false
  change_listing:
    description:
      - How O(state=layer_saved) and O(state=squashed) list the paths the builder changed.
      - V(engine) asks the Docker Engine (C(GET /containers/{id}/changes), C(docker diff) without the API socket)
        and, for the squash, whether a removed path is in the base image (a container created from the base). It
        reads nothing of Docker's storage directories.
      - V(overlay2) is an accelerator (a few milliseconds instead of the engine's 0.3-0.7 s diff on a small
        machine), reading the builder's overlay2 upper directory and the base image's layer directories. It is used
        only with the local daemon on the storage driver C(overlay2) without the containerd image store (C(docker
        info)); elsewhere the module warns and uses V(engine). The directories are root's; where they cannot be
        read, or hold what the walk does not interpret (an opaque or redirected directory), the engine lists that
        builder's changes.
    type: str
    choices: [engine, overlay2]
    default: engine
    version_added: 0.2.0
  split:
    description:
      - With O(state=squashed), capture a builder started from a cache layer in two layers above O(image), the
        first of which later bakes of O(app) reuse (see O(state)). Needs O(app) (and O(bake_id) for the labels of
        the kept image). A builder started from O(image) is captured as it is either way.
      - C(playbooks/bake.yml) sets it with C(bake_artifact_layers=split) (docs/bake.md).
    type: bool
    default: false
    version_added: 0.3.0
  start_channel:
    description:
      - With O(state=started), also start the relay of the P(immutable.infra.builder#connection) connection to the
        new builder, in the background (done by the module's action plugin on the controller). The first task over
        that connection then does not spend about 0.3 s starting it. C(playbooks/bake.yml) sets it.
      - Only useful when the builder is reached with that connection as the container's default user; otherwise
        the relay stops after the connection's idle timeout (60 s) without having served.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    description: Reports what would be started, saved, removed or pruned, and changes nothing.
  diff_mode:
    support: none
    description: No diff.
  idempotent:
    support: full
    description: A running builder, an existing layer image or an absent container report C(changed=false).
notes:
  - Only a contiguous prefix of cached layers is reused, because a layer image contains every role before it.
"""

EXAMPLES = r"""
- name: Start the builder from the deepest cached layer
  immutable.infra.bake_builder:
    app: web
    bake_id: "{{ bake_id }}"
    image: immutable-infra/base:bookworm
    layers: "{{ bake_fp.layers[:-1] }}"
    sweep_min_age: 7200
  register: builder

- name: Save the layer of the role just applied
  immutable.infra.bake_builder:
    state: layer_saved
    app: web
    bake_id: "{{ bake_id }}"
    container: "{{ builder.container }}"
    layer: "{{ bake_fp.layers[0] }}"

- name: Remove the builder
  immutable.infra.bake_builder:
    state: absent
    container: "{{ builder.container }}"

- name: Sweep builders of killed runs older than two hours
  immutable.infra.bake_builder:
    state: swept
    sweep_min_age: 7200
"""

RETURN = r"""
container:
  description: Name of the builder container.
  returned: when O(state) is V(started), V(layer_saved), V(squashed) or V(absent)
  type: str
  sample: bake-web-20261126T201500-3f2a
start_image:
  description: Image the builder was started from (a cache image or the base image).
  returned: when O(state=started)
  type: str
  sample: immutable-infra-cache/web:3f2a...
base_config:
  description:
    - Entrypoint and command of the base image. The builder runs C(sleep infinity), so a capture should set these
      (or the ones its roles declare) instead of inheriting the builder's.
  returned: when O(state=started)
  type: dict
  sample: {entrypoint: [], cmd: [/bin/bash]}
reused_layers:
  description: Number of leading layers taken from the cache.
  returned: when O(state=started)
  type: int
  sample: 2
reused_roles:
  description: Roles whose layers were taken from the cache (they need not run again).
  returned: when O(state=started)
  type: list
  elements: str
  sample: [immutable.infra.baseline]
image:
  description: Cache image of the saved layer.
  returned: when O(state=layer_saved)
  type: str
squashed:
  description: Whether a new one-layer container was made (V(false) when the builder started from the base image).
  returned: when O(state=squashed)
  type: bool
split:
  description: >-
    Whether the capture was split into a kept layer and a top layer
    (O(split=true), a builder from a cache layer).
  returned: when O(state=squashed) and RV(squashed) is V(true) and O(split=true)
  type: bool
kept_image:
  description: The local image of the kept layer the capture built on.
  returned: when RV(split) is V(true), not in check mode
  type: str
  sample: immutable-infra-cache/web:kept-5d1c...
kept_reused:
  description: Whether the kept layer's image existed already (nothing copied or committed for it).
  returned: when RV(split) is V(true), not in check mode
  type: bool
paths:
  description: Number of paths copied into the squashed container (with O(split=true), into its top layer).
  returned: when O(state=squashed) and RV(squashed) is V(true)
  type: int
removed_paths:
  description: Number of changed paths the builder no longer has (removed in the squashed container).
  returned: when O(state=squashed) and RV(squashed) is V(true)
  type: int
declared_config:
  description:
    - The image config objects the roles declared in C(/etc/immutable-infra/image-config.d/*.json) of the builder,
      in file name order (read in the same C(docker exec) as the change list), for P(immutable.infra.push_image#module)
      to merge. Empty in check mode.
  returned: when O(state=squashed)
  type: list
  elements: dict
  sample: [{"cmd": ["nginx", "-g", "daemon off;"], "ports": ["8080/tcp"]}]
pruned:
  description: Cache images removed because O(prune=true), or that would be in check mode.
  returned: when O(state=started)
  type: list
  elements: str
swept:
  description: Orphan builders removed before starting.
  returned: when O(state=started)
  type: list
  elements: str
owner:
  description: Owner label given to the builder (C(<host>:<pid>:<process start>)), or null when none was found.
  returned: when O(state=started)
  type: str
  sample: ci-runner-3:41873:9120453
reasons:
  description: Why each removed builder was taken as an orphan (owner process gone, or older than the minimum age).
  returned: when O(state=swept)
  type: dict
  sample: {"bake-web-20261126T201500-3f2a01": "owner process gone"}
removed:
  description:
    - Containers (O(state=swept)) or cache images (O(state=pruned)) removed, or that would be in check mode.
    - For O(state=absent), the builder and its squashed copy, of those that existed.
  returned: when O(state) is V(absent), V(swept) or V(pruned)
  type: list
  elements: str
  sample: [bake-web-20261126T201500-3f2a, bake-web-20261126T201500-3f2a-squash]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import CHANGE_LISTINGS
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import change_listing
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._manager import BuilderManager
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import find_owner_pid
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._owners import owner_label
from ansible_collections.immutable.infra.plugins.module_utils.docker._engine import docker_engine
from ansible_collections.immutable.infra.plugins.module_utils.docker._interface import DockerError

REQUIRED = {
    "started": ["app", "bake_id", "image"],
    "layer_saved": ["app", "bake_id", "layer"],
    "squashed": ["container", "image"],
    "absent": [],
    "swept": ["sweep_min_age"],
    "pruned": ["app"],
}


ARGUMENT_SPEC = dict(
    state=dict(type="str", default="started", choices=list(REQUIRED)),
    app=dict(type="str"),
    bake_id=dict(type="str"),
    container=dict(type="str"),
    image=dict(type="str"),
    layers=dict(type="list", elements="dict", default=[]),
    layer=dict(type="dict"),
    cache=dict(type="bool", default=True),
    network=dict(type="str"),
    sweep_min_age=dict(type="int"),
    keep=dict(type="int", default=6),
    prune=dict(type="bool", default=False),
    change_listing=dict(type="str", default="engine", choices=list(CHANGE_LISTINGS)),
    split=dict(type="bool", default=False),
    # used by the action plugin, not by the module (see DOCUMENTATION)
    start_channel=dict(type="bool", default=False),
    owner_pid=dict(type="int"),
)
MODULE_OPTIONS = dict(
    required_if=[("state", state, needed) for state, needed in REQUIRED.items() if needed],
    supports_check_mode=True,
)


def run_module(module):
    """The module's work; also called in process by its action plugin (plugin_utils/_in_process.py)."""
    p = module.params
    owner = None
    if p["state"] in ("started", "squashed"):
        owner = owner_label(p["owner_pid"] if p["owner_pid"] is not None else find_owner_pid())
    docker = docker_engine(module.run_command)
    container = p["container"] or (f"bake-{p['app']}-{p['bake_id']}" if p["app"] and p["bake_id"] else None)
    try:
        listing = None
        if p["state"] in ("layer_saved", "squashed"):
            listing = change_listing(docker, p["change_listing"], warn=module.warn)
        manager = BuilderManager(docker, check_mode=module.check_mode, owner=owner, listing=listing)
        if p["state"] == "started":
            result = manager.start(
                p["app"],
                p["bake_id"],
                p["image"],
                p["layers"] if p["cache"] else [],
                name=container,
                network=p["network"],
                sweep_min_age=p["sweep_min_age"],
                keep=p["keep"] if p["prune"] else None,
            )
        elif p["state"] == "layer_saved":
            result = manager.save_layer(
                p["app"], container, p["layer"]["role"], p["layer"]["fingerprint"], p["bake_id"]
            )
        elif p["state"] == "squashed":
            if p["split"] and not p["app"]:
                module.fail_json(msg="split=true needs app: the kept layer's image is kept under the app's name")
            split_app = p["app"] if p["split"] else None
            result = manager.squash(container, p["image"], split_app=split_app, bake_id=p["bake_id"])
        elif p["state"] == "absent":
            if not container:
                module.fail_json(msg="state=absent needs container, or app and bake_id to name the builder")
            result = manager.remove(container)
        elif p["state"] == "swept":
            result = manager.sweep(app=p["app"], min_age=p["sweep_min_age"])
        else:
            result = manager.prune(p["app"], [layer["fingerprint"] for layer in p["layers"]], keep_newest=p["keep"])
    except (BuilderError, DockerError) as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


def main():
    run_module(AnsibleModule(argument_spec=ARGUMENT_SPEC, **MODULE_OPTIONS))


if __name__ == "__main__":
    main()
