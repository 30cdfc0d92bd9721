"""plugins/filter/supply.py: an artifact's age on the collection's clock (IMMUTABLE_NOW)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.immutable.infra.plugins.filter.supply import artifact_age_days


def test_the_age_is_counted_on_the_collections_clock(monkeypatch):
    monkeypatch.setenv("IMMUTABLE_NOW", "2026-12-04T12:00:00Z")
    assert artifact_age_days("2026-11-03T00:00:00Z") == 31.5
    assert artifact_age_days("2026-12-04T12:00:00+00:00") == 0


def test_a_bad_time_or_clock_names_the_fix(monkeypatch):
    with pytest.raises(AnsibleFilterError, match="not an ISO-8601 UTC time: pass the image's"):
        artifact_age_days("yesterday")
    monkeypatch.setenv("IMMUTABLE_NOW", "soon")
    with pytest.raises(AnsibleFilterError, match="IMMUTABLE_NOW='soon' is not an ISO-8601 UTC time"):
        artifact_age_days("2026-11-03T00:00:00Z")
