# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Atomic file replacement shared by the ledger, the artifact records and the nginx switch.

PRIVATE to the collection: do not import it from other collections, it may change without notice.
"""

from __future__ import annotations

import os
import tempfile


def atomic_write(path, data, mode=0o644):
    """Replace path with data (str or bytes) so readers see the old or the new file, never a part of one.

    Writes a temporary file in the same directory, fsyncs it, renames it over path, then fsyncs the directory so the
    rename survives a crash. The temporary file is removed when anything fails.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
