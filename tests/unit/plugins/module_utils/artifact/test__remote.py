"""The names of records kept with the artifact (the registry tag, the AMI map); the reads and writes against a real
registry and moto_server are in tests/integration/test_shared_records.py."""

from __future__ import annotations

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_map
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import is_record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_subject
from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import record_tag
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_tag

DIGEST = "sha256:" + "9c1e" * 16


def test_the_record_tag_is_a_valid_tag_named_after_the_digest_and_leads_back_to_it():
    tag = record_tag(DIGEST)
    assert tag == "sha256-" + "9c1e" * 16 + ".record"
    assert validate_tag(tag) == tag  # at most 128 characters, allowed characters
    assert is_record_tag(tag) and not is_record_tag("fp-" + "a" * 64)
    assert record_subject(tag) == DIGEST


@pytest.mark.parametrize(
    ("artifact_id", "message"),
    [
        ("127.0.0.1:5000/web:1.4.0", "is not a digest reference <repository>@sha256:<hex>"),
        ("web@" + DIGEST, "does not start with a registry host"),
    ],
)
def test_a_container_id_that_is_not_a_digest_reference_is_refused_naming_the_form(artifact_id, message):
    with pytest.raises(RecordError, match=message):
        split_id(artifact_id)


@pytest.mark.parametrize(
    ("artifact_id", "expected"),
    [
        ({"eu-west-1": "ami-0123abcd"}, {"eu-west-1": "ami-0123abcd"}),
        ('{"us-east-1": "ami-0123abcd"}', {"us-east-1": "ami-0123abcd"}),
        ("ami-0123abcd", {None: "ami-0123abcd"}),
        ("127.0.0.1:5000/web@" + DIGEST, None),
        ({"eu-west-1": "i-0123"}, None),
    ],
)
def test_the_amis_of_an_artifact(artifact_id, expected):
    assert ami_map(artifact_id) == expected


def test_without_a_local_record_or_a_reader_nothing_is_found(tmp_path):
    assert find_record({"eu-west-1": "ami-0123abcd"}, str(tmp_path), "web", None) == (None, None)
