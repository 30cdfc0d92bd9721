"""Unit tests for the verification gate's policy (module_utils/supply/_policy.py): parsing the signature settings,
applying them to a verification result, the revocation check, and the package diff at promotion."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import PolicyError
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_revocation
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_signature
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import promotion_diff
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import signature_policy
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import new_revocation
from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id

ART = "127.0.0.1:5000/web@sha256:" + "a" * 64
LIVE = "127.0.0.1:5000/web@sha256:" + "b" * 64


def public_pem():
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode(), key


def settings(default=None, **envs):
    return {"signature": default, "environments": {env: {"signature": value} for env, value in envs.items()}}


def test_no_policy_checks_nothing():
    policy = signature_policy(settings(), "prod")
    assert policy["required"] is False and policy["keys"] == []
    assert check_signature(policy, pytest.fail, ART, "container", "web", "prod") == {"checked": False, "line": None}


def test_environment_keys_override_the_default_and_files_are_read(tmp_path):
    pem, key = public_pem()
    path = tmp_path / "signing.pub"
    path.write_text(pem)
    policy = signature_policy(settings({"public_keys": [str(path)]}, prod={"required": "true"}), "prod")
    assert policy["required"] is True
    assert policy["key_ids"] == [key_id(key.public_key())]
    assert policy["where"] == "promotion_environments.prod.signature"
    # dev takes the default: keys, not required
    assert signature_policy(settings({"public_keys": pem}, prod={"required": True}), "dev")["required"] is False


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (settings({"public_keys": ["/nonexistent/signing.pub"]}), "promotion_signature.public_keys[0] (/nonexistent"),
        (
            settings(prod={"public_keys": ["-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----"]}),
            "promotion_environments.prod.signature.public_keys[0] is not a PEM public key",
        ),
        (
            settings(prod={"required": True}),
            "promotion_environments.prod.signature.required is true but no public_keys",
        ),
        (settings(prod={"required": "maybe"}), 'promotion_environments.prod.signature.required "maybe" is not'),
        (settings(prod={"require": True}), "promotion_environments.prod.signature has unknown keys require"),
        (settings("yes"), "promotion_signature must be a mapping"),
    ],
)
def test_bad_policy_fails_naming_the_setting(given, named):
    with pytest.raises(PolicyError) as err:
        signature_policy(given, "prod")
    assert named in err.value.message
    assert err.value.message.startswith("invalid settings: ")


def test_a_private_key_given_as_public_key_is_refused(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(PolicyError, match="is not a PEM public key"):
        signature_policy(settings(prod={"public_keys": [private.decode()]}), "prod")


def result(signature, provenance="valid"):
    return {
        "signature": {"status": signature, "detail": f"signature {signature}", "key_id": "sha256:k"},
        "provenance": {"status": provenance, "detail": f"provenance {provenance}"},
    }


def policy_of(required):
    pem, _key = public_pem()
    return signature_policy(settings(prod={"required": required, "public_keys": [pem]}), "prod")


@pytest.mark.parametrize(
    ("required", "found", "refused"),
    [
        (True, result("valid"), None),
        (True, result("missing", "missing"), "signature check failed: signature missing"),
        (True, result("valid", "missing"), "provenance check failed: provenance missing"),
        (False, result("missing", "missing"), None),
        (False, result("wrong_key", "missing"), "signature check failed: signature wrong_key"),
        (False, result("other_digest"), "signature check failed: signature other_digest"),
        (False, result("valid", "tampered"), "provenance check failed: provenance tampered"),
        (False, result("valid", "subject_mismatch"), "provenance check failed: provenance subject_mismatch"),
    ],
)
def test_the_policy_applied_to_what_verification_found(required, found, refused):
    policy = policy_of(required)
    asked = []

    def verify(keys, require_provenance):
        asked.append(require_provenance)
        return found

    if refused is None:
        checked = check_signature(policy, verify, ART, "container", "web", "prod")
        assert checked["checked"] is True
        assert checked["signature"] == found["signature"]["status"]
    else:
        with pytest.raises(PolicyError) as err:
            check_signature(policy, verify, ART, "container", "web", "prod")
        message = err.value.message
        assert message.startswith(f"artifact {ART} is refused for web/prod: {refused}")
        assert message.endswith("Nothing was pulled, switched, tagged or recorded")
    assert asked == [required]


def test_a_missing_signature_names_how_to_sign_and_the_setting():
    with pytest.raises(PolicyError) as err:
        check_signature(policy_of(True), lambda *a: result("missing", "missing"), ART, "container", "web", "prod")
    assert "bake_signing_key" in err.value.message
    assert "promotion_environments.prod.signature.required: false" in err.value.message


def test_wrong_key_names_the_trusted_keys():
    policy = policy_of(False)
    with pytest.raises(PolicyError) as err:
        check_signature(policy, lambda *a: result("wrong_key"), ART, "container", "web", "prod")
    assert policy["key_ids"][0] in err.value.message


def test_allow_unsigned_rollback_allows_missing_but_never_invalid():
    policy = policy_of(True)
    assert check_signature(policy, lambda *a: result("missing", "missing"), ART, "container", "web", "prod", True)
    with pytest.raises(PolicyError, match="signature other_digest"):
        check_signature(policy, lambda *a: result("other_digest"), ART, "container", "web", "prod", True)


def test_amis_are_verified_like_containers_and_other_kinds_refused_where_required():
    asked = []

    def verify(keys, required):
        asked.append(required)
        missing = {"status": "missing", "detail": "no signature: ami-0123456789abcdef0 carries no tag"}
        return {"signature": missing, "provenance": dict(missing, detail="no provenance")}

    with pytest.raises(PolicyError, match="bake_ami_evidence_bucket and bake_signing_key"):
        check_signature(policy_of(True), verify, "ami-0123456789abcdef0", "ami", "web", "prod")
    assert check_signature(policy_of(False), verify, "ami-0123456789abcdef0", "ami", "web", "prod")["checked"]
    assert asked == [True, False]
    with pytest.raises(PolicyError, match="only container and AMI artifacts are signed"):
        check_signature(policy_of(True), pytest.fail, "vm-1", "vm", "web", "prod")


def test_revocation_of_the_artifact_and_of_its_base():
    now = 1_800_000_000.0
    mine = new_revocation(ART, "artifact", "CVE-1", "alice", now - 60)
    with pytest.raises(PolicyError) as err:
        # the ledger's comparison: a digest in capitals is the same artifact
        check_revocation([mine], ART.replace("a" * 64, "A" * 64), None, now, "web", "prod", "deploy")
    assert "is revoked (by alice at" in err.value.message and "CVE-1" in err.value.message
    base = new_revocation("sha256:" + "c" * 64, "base", "bad base", "bob", now - 60)
    record = {"base": {"image": "debian", "id": "sha256:" + "c" * 64}}
    with pytest.raises(PolicyError, match="baked from the revoked base image sha256:c"):
        check_revocation([base], ART, record, now, "web", "prod", "promote")
    check_revocation([base], ART, {"base": {"id": "sha256:" + "d" * 64}}, now, "web", "prod", "deploy")
    later = new_revocation(ART, "artifact", "later", "alice", now - 60, "2030-01-01T00:00:00Z")
    check_revocation([later], ART, None, now, "web", "prod", "deploy")  # not in effect yet
    with pytest.raises(PolicyError, match="Roll forward instead"):
        check_revocation([mine], ART, None, now, "web", "prod", "rollback")


def sbom(packages):
    return json.dumps(
        {
            "components": [
                {
                    "type": "library",
                    "name": name,
                    "version": version,
                    "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64",
                }
                for name, version in packages
            ]
        }
    ).encode()


def test_promotion_diff_names_added_and_upgraded_with_versions():
    sboms = {
        LIVE: sbom([("probe-a", "1.0-1"), ("libc6", "2.36-9")]),
        ART: sbom([("probe-a", "1.1-1"), ("libc6", "2.36-9"), ("probe-b", "2.0-1")]),
    }
    diff = promotion_diff(sboms.get, LIVE, None, ART, None)
    assert diff["lines"][0] == f"changes from {LIVE}:"
    assert "  + probe-b 2.0-1" in diff["lines"]
    assert "  ^ probe-a 1.0-1 -> 1.1-1" in diff["lines"]
    assert diff["evidence"]["counts"] == {"added": 1, "removed": 0, "upgraded": 1, "downgraded": 0}
    assert diff["evidence"]["changes"] == ["+ probe-b 2.0-1", "^ probe-a 1.0-1 -> 1.1-1"]
    assert diff["evidence"]["from"] == LIVE


def test_promotion_diff_without_an_sbom_is_one_line():
    diff = promotion_diff({ART: sbom([])}.get, LIVE, None, ART, None)
    assert len(diff["lines"]) == 1
    assert diff["lines"][0].startswith(f"package diff: not shown, no SBOM of the live artifact {LIVE} (none locally")
    assert diff["evidence"]["skipped"] == diff["lines"][0]
