# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Artifact records of bakes: one JSON file per bake plus latest.json, written atomically.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Layout: <dir>/<name>/records/<bake_id>.json and <dir>/<name>/latest.json (a copy of the newest record).
"""

from __future__ import annotations

import json
import os
import re

from ansible_collections.immutable.infra.plugins.module_utils.common._atomic import atomic_write

RECORD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
REQUIRED_KEYS = ("schema", "name", "kind", "fingerprint", "id")


class RecordError(Exception):
    """A record cannot be written or read; the message names the problem and the fix."""


def validate(record, bake_id):
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise RecordError(f"artifact record lacks {', '.join(missing)}: pass the record bake.yml builds")
    if not RECORD_ID.match(str(bake_id)):
        raise RecordError(f"bake_id {bake_id!r} is not usable as a file name: use letters, digits, '.', '_' or '-'")
    if not RECORD_ID.match(str(record["name"])):
        raise RecordError(f"record name {record['name']!r} is not usable as a directory name")


def serialise(record):
    return json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def record_paths(directory, name, bake_id):
    base = os.path.join(directory, name)
    return os.path.join(base, "records", f"{bake_id}.json"), os.path.join(base, "latest.json")


def write_record(directory, record, bake_id, check_mode=False):
    """Write the record and point latest.json at it. Unchanged content is not rewritten (changed=False)."""
    validate(record, bake_id)
    path, latest = record_paths(directory, record["name"], bake_id)
    text = serialise(record)
    changed = False
    for target in (path, latest):
        try:
            with open(target, encoding="utf-8") as handle:
                if handle.read() == text:
                    continue
        except FileNotFoundError:
            pass
        changed = True
        if not check_mode:
            atomic_write(target, text)
    return {"changed": changed, "path": path, "latest": latest}
