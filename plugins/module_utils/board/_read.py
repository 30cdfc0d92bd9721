# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the promotion board reads besides the ledger: an app's artifact records and the last verify's result.

PRIVATE to the collection: no compatibility promise outside immutable.infra.

Both live in the artifacts directory: `<artifacts_dir>/<app>/records/*.json` (docs/artifact-record.md) and
`<artifacts_dir>/<app>/verify.json`, which playbooks/verify.yml writes (docs/board.md). The board shows what it can:
a missing file is no data; an unreadable one is reported as a problem and skipped.
"""

from __future__ import annotations

import glob
import json
import os

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import records_dir

VERIFY_FILE = "verify.json"


def verify_path(artifacts_dir: str, app: str) -> str:
    """Where playbooks/verify.yml keeps its last result for the app."""
    return os.path.join(artifacts_dir, app, VERIFY_FILE)


def _load(path: str, problems: list):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problems.append(f"{path} is unreadable ({type(exc).__name__}: {exc}): not shown on the board")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path} is not a JSON object: not shown on the board")
        return None
    return data


def read_records(artifacts_dir: str, app: str, problems: list) -> list:
    """The app's artifact records, as written (every field), oldest file name first."""
    pattern = os.path.join(glob.escape(records_dir(artifacts_dir, app)), "*.json")
    loaded = (_load(path, problems) for path in sorted(glob.glob(pattern)))
    return [record for record in loaded if record is not None]


def read_verify(artifacts_dir: str, app: str, problems: list) -> dict | None:
    return _load(verify_path(artifacts_dir, app), problems)
