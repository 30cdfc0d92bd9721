# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The files a builder keeps for the bake: its list of changed paths and the image configs its roles declare.

PRIVATE to the collection: do not import it from other collections, it may change without notice.
"""

from __future__ import annotations

import json

from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._cache import BuilderError

# In cache layers only: every path changed since the base image, so a capture can squash them (see _squash.py)
CHANGES_FILE = "/.immutable-infra-changes"
IMAGE_CONFIG_DIR = "/etc/immutable-infra/image-config.d"
# One exec reads the builder's change list (and removes it when given "rm") and every image config file a role
# declared (docs/roles.md), each file as NUL, its path, a newline and its content.
READ_BUILDER_FILES = (
    f'f={CHANGES_FILE}; [ -f "$f" ] && cat "$f"; [ "$1" = rm ] && rm -f "$f"; '
    f'for c in {IMAGE_CONFIG_DIR}/*.json; do [ -f "$c" ] && printf "\\0%s\\n" "$c" && cat "$c"; done; true'
)
# Reads paths on stdin, prints those that do not exist (not even as a dangling symlink)
LIST_MISSING = 'while IFS= read -r p; do [ -e "$p" ] || [ -L "$p" ] || printf "%s\\n" "$p"; done'
# Reads paths on stdin and removes each
REMOVE_LISTED = 'while IFS= read -r p; do rm -rf -- "$p"; done'


def parse_builder_files(output):
    """(the recorded change list or None, the declared image configs in name order) from READ_BUILDER_FILES."""
    recorded, *files = output.split("\0")
    configs = []
    for chunk in sorted(files):
        path, _newline, content = chunk.partition("\n")
        try:
            config = json.loads(content)
        except ValueError as exc:
            raise BuilderError(
                f"image config {path} in the builder is not valid JSON ({exc}): fix the role that writes it"
            ) from None
        if not isinstance(config, dict):
            raise BuilderError(f"image config {path} in the builder must hold a JSON object (docs/roles.md)")
        configs.append(config)
    return (json.loads(recorded) if recorded.strip() else None), configs


def read_builder_files(docker, container, remove_list=False):
    """The builder's recorded change list (or None) and its declared image configs, read in one exec."""
    argv = ["sh", "-c", READ_BUILDER_FILES, "sh"] + (["rm"] if remove_list else [])
    return parse_builder_files(docker.exec(container, argv))


def write_change_list(docker, container, paths):
    docker.exec(container, ["sh", "-c", f"cat > {CHANGES_FILE}"], data=json.dumps(paths))


def missing_paths(docker, container, paths):
    """Those of the paths the container no longer has."""
    return set(docker.exec(container, ["sh", "-c", LIST_MISSING], data="".join(f"{p}\n" for p in paths)).splitlines())


def remove_paths(docker, container, paths):
    docker.exec(container, ["sh", "-c", REMOVE_LISTED], data="".join(f"{p}\n" for p in paths))
