# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Owners of builders: which ansible-playbook run a builder belongs to, and which builders killed runs left behind.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Every builder carries labels naming its kind, app, bake ID, creation time and owner, so a later run can find what a
killed run left behind.
"""

from __future__ import annotations

import os
import socket

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import DEPLOY_LABEL_COLOUR
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_APP
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_CREATED
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_KIND
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import LABEL_OWNER


def process_start(pid, proc="/proc"):
    """Start time of a process (clock ticks since boot, field 22 of /proc/<pid>/stat), or None when it is gone."""
    try:
        with open(os.path.join(proc, str(int(pid)), "stat"), encoding="utf-8") as handle:
            stat = handle.read()
    except (OSError, ValueError):
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return fields[19]
    except IndexError:
        return None


def _parent(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "stat"), encoding="utf-8") as handle:
            stat = handle.read()
        return int(stat[stat.rfind(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_playbook(pid, proc):
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as handle:
            argv = handle.read().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(arg.decode("utf-8", "replace")).startswith("ansible-playbook") for arg in argv[:3])


def find_owner_pid(start=None, proc="/proc"):
    """PID of the ansible-playbook run this process belongs to, or None.

    A module runs under a worker that ansible-playbook forked (so the worker shows the same command line); the
    owner is the outermost process of the chain of ansible-playbook ancestors.
    """
    pid = start if start is not None else os.getpid()
    owner = None
    seen = 0
    while pid and pid > 1 and seen < 64:
        if _is_playbook(pid, proc):
            owner = pid
        elif owner is not None:
            break
        pid = _parent(pid, proc)
        seen += 1
    return owner


def owner_label(pid, host=None, proc="/proc"):
    """'<host>:<pid>:<start ticks>' for a live PID (the start time guards against PID reuse), or None."""
    if pid is None:
        return None
    start = process_start(pid, proc)
    if start is None:
        return None
    return f"{host or socket.gethostname()}:{int(pid)}:{start}"


def owner_state(label, host, alive):
    """'alive', 'dead' or 'unknown' (no label, another host, or a malformed label) for an owner label."""
    if not label:
        return "unknown"
    owner_host, sep, rest = label.rpartition(":")
    owner_host, sep2, pid = owner_host.rpartition(":")
    if not (sep and sep2 and pid.isdigit() and rest) or owner_host != host:
        return "unknown"
    return "alive" if alive(int(pid), rest) else "dead"


def plan_sweep(containers, now, min_age, app=None, exclude=(), host=None, alive=None):
    """Builder containers left behind by killed runs (optionally of one app), with the reason.

    A builder whose owner (an ansible-playbook run on this host) is gone is an orphan whatever its age; one whose
    owner is alive is never taken. Builders without an owner label, or owned by a run on another host, are taken
    only when older than min_age seconds: the safety net.
    """
    orphans = []
    for item in containers:
        labels = item.get("labels", {})
        if labels.get(LABEL_KIND) != "builder":
            continue
        if DEPLOY_LABEL_COLOUR in labels:
            # a blue/green container of an artifact whose image kept its builder's labels (bakes before 0.2.0)
            continue
        if app and labels.get(LABEL_APP) != app:
            continue
        if item["name"] in exclude:
            continue
        state = owner_state(labels.get(LABEL_OWNER), host, alive) if alive else "unknown"
        if state == "alive":
            continue
        if state == "dead":
            orphans.append(dict(item, reason="owner process gone"))
            continue
        try:
            created = int(labels.get(LABEL_CREATED, "0"))
        except ValueError:
            created = 0
        if now - created >= min_age:
            orphans.append(dict(item, reason=f"older than {min_age}s"))
    return orphans
