# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters of the supply chain (docs/supply-chain.md). Documented in the sidecar file artifact_age_days.yml."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import parse_utc


def artifact_age_days(created):
    """Days (a float) since an artifact's creation time (ISO-8601 UTC), on the ledger's clock (IMMUTABLE_NOW)."""
    seconds = parse_utc(created) if isinstance(created, str) else None
    if seconds is None:
        raise AnsibleFilterError(
            f"artifact_age_days: {created!r} is not an ISO-8601 UTC time: pass the image's"
            " org.opencontainers.image.created label (registry_image_info's labels) or its created time"
        )
    try:
        return round((now_seconds() - seconds) / 86400.0, 3)
    except LedgerError as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"artifact_age_days": artifact_age_days}
