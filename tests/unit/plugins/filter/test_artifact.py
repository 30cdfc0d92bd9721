"""The artifact filters give playbooks the contract's tag rule and record layout, and refuse what is no fingerprint."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError
from conftest import ansible_env

from ansible_collections.immutable.infra.plugins.filter import artifact
from ansible_collections.immutable.infra.plugins.module_utils.artifact import _contract

HEX = "3f2a" + "0" * 60
FP = "sha256:" + HEX
FILTER_DIR = Path(artifact.__file__).parent


def test_fingerprint_tag_is_the_contracts():
    assert artifact.fingerprint_tag(FP) == "fp-" + HEX == _contract.fingerprint_tag(FP)
    assert artifact.fingerprint_tag(HEX) == "fp-" + HEX


def test_artifact_tags_put_the_fingerprint_tag_first_then_the_version_then_the_extra_tags():
    assert artifact.artifact_tags(FP) == ["fp-" + HEX]
    assert artifact.artifact_tags(FP, "") == ["fp-" + HEX]
    assert artifact.artifact_tags(FP, "1.4.0") == ["fp-" + HEX, "1.4.0"]
    assert artifact.artifact_tags(FP, "1.4.0", ["latest"]) == ["fp-" + HEX, "1.4.0", "latest"]
    assert artifact.artifact_tags(FP, "", ["latest"]) == ["fp-" + HEX, "latest"]


def test_the_latest_path_is_the_contracts(tmp_path):
    assert artifact.artifact_latest_path(str(tmp_path), "web") == str(tmp_path / "web" / "latest.json")
    assert artifact.artifact_latest_path(str(tmp_path), "web") == _contract.latest_path(str(tmp_path), "web")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: artifact.fingerprint_tag("fp-" + HEX), "is not a bake fingerprint: pass the fingerprint of the"),
        (lambda: artifact.fingerprint_tag("sha256:abc"), "is not a bake fingerprint"),
        (lambda: artifact.fingerprint_tag(None), "is not a bake fingerprint"),
        (lambda: artifact.artifact_tags("web", "1.0"), "is not a bake fingerprint"),
        (lambda: artifact.artifact_tags(FP, "1.0", "latest"), "not a list of strings: fix bake_extra_tags"),
        (lambda: artifact.artifact_tags(FP, None), "not a string \\(empty for none\\): fix bake_version"),
        (lambda: artifact.artifact_latest_path("", "web"), "needs the artifacts directory and an artifact name"),
    ],
)
def test_bad_input_fails_naming_the_fix(call, message):
    with pytest.raises(AnsibleFilterError, match=message):
        call()


def test_every_filter_has_its_documentation():
    for name in artifact.FilterModule().filters():
        doc = yaml.safe_load((FILTER_DIR / f"{name}.yml").read_text())
        assert doc["DOCUMENTATION"]["name"] == name
        assert doc["EXAMPLES"] and doc["RETURN"]["_value"]


def test_the_filters_work_in_a_template():
    """Through Ansible's own templating and collection loader, as bake.yml uses them."""
    expression = (
        f"{{{{ {{'tags': '{FP}' | immutable.infra.artifact_tags('1.0', ['x']),"
        f" 'tag': '{FP}' | immutable.infra.fingerprint_tag,"
        " 'latest': '/srv/a' | immutable.infra.artifact_latest_path('web')} | to_json }}"
    )
    proc = subprocess.run(
        ["ansible", "localhost", "-m", "ansible.builtin.debug", "-a", f"msg={expression}", "-o"],
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    msg = json.loads(proc.stdout.split("=>", 1)[1])["msg"]
    assert (json.loads(msg) if isinstance(msg, str) else msg) == {
        "tags": ["fp-" + HEX, "1.0", "x"],
        "tag": "fp-" + HEX,
        "latest": "/srv/a/web/latest.json",
    }


def test_local_evidence_names_the_sbom_and_provenance_files_the_bake_keeps(tmp_path):
    digest = "sha256:" + "ab" * 32
    sbom, provenance = artifact.artifact_local_evidence(digest, str(tmp_path), "web")
    assert sbom == str(tmp_path / "web" / "sbom" / f"sha256-{'ab' * 32}.cdx.json")
    assert provenance == str(tmp_path / "web" / "provenance" / f"sha256-{'ab' * 32}.att.json")
    assert sbom == _contract.sbom_path(str(tmp_path), "web", digest)  # where the bake writes it
    with pytest.raises(AnsibleFilterError, match="is not an image digest"):
        artifact.artifact_local_evidence("web:1.0", str(tmp_path), "web")
    with pytest.raises(AnsibleFilterError, match="needs the artifacts directory and an artifact name"):
        artifact.artifact_local_evidence(digest, "", "web")
