# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The promotion's verification gate (docs/supply-chain.md, "Verification gate", "Revocation", "Package diff at
promotion"): the signature policy of an environment, the checks of a candidate artifact, and the package diff between
the artifact live in the environment and the candidate.

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The policy lives in group vars: ``promotion_signature`` for every environment,
``promotion_environments.<env>.signature`` for one (its keys override the default's):
``{required: true|false, public_keys: [a PEM text or a file, ...]}``.
Without keys nothing is checked (as before the gate existed); with keys and ``required: false``, what exists is
checked (an invalid signature or provenance is always refused) and a missing one is allowed; with ``required: true``
both the signature and the provenance must exist and verify.
"""

from __future__ import annotations

import json
import os

from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import describe
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import revoked_by

POLICY_KEYS = ("required", "public_keys")
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


class PolicyError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _policy_part(value, where):
    if value in (None, "", {}):
        return {}
    if not isinstance(value, dict):
        raise PolicyError(
            f"invalid settings: {where} must be a mapping {{required: true|false, public_keys: [...]}}, not"
            f" {type(value).__name__}"
        )
    unknown = sorted(str(key) for key in value if key not in POLICY_KEYS)
    if unknown:
        raise PolicyError(
            f"invalid settings: {where} has unknown keys {', '.join(unknown)}: it takes required and public_keys"
        )
    return {key: value[key] for key in POLICY_KEYS if key in value and value[key] is not None}


def _required(value, where) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE or text in FALSE:
        return text in TRUE
    raise PolicyError(
        f"invalid settings: {where}.required {json.dumps(str(value))} is not a boolean: use true or false"
    )


def signature_policy(settings: dict, env: str) -> dict:
    """{required, keys (loaded public keys), key_ids, where} of env; PolicyError names the bad setting.

    A public key is PEM text or the path of a file holding one (~ is expanded; a relative path is taken from the
    directory ansible-playbook runs in)."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import SignError
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import key_id
    from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import load_public_key

    default = _policy_part(settings.get("signature"), "promotion_signature")
    envcfg = (settings.get("environments") or {}).get(env)
    own = _policy_part(
        (envcfg or {}).get("signature") if isinstance(envcfg, dict) else None, f"promotion_environments.{env}.signature"
    )
    merged = dict(default, **own)
    where_of = {
        key: (f"promotion_environments.{env}.signature" if key in own else "promotion_signature") for key in merged
    }
    required = _required(merged.get("required", False), where_of.get("required", "promotion_signature"))
    entries = merged.get("public_keys", [])
    if isinstance(entries, str):
        entries = [entries]
    keys_where = where_of.get("public_keys", "promotion_signature") + ".public_keys"
    if not isinstance(entries, list):
        raise PolicyError(f"invalid settings: {keys_where} must be a list of PEM public keys or files holding one")
    keys = []
    for index, entry in enumerate(entries):
        text, where = str(entry), f"{keys_where}[{index}]"
        if "-----BEGIN" not in text:
            path = os.path.expanduser(text)
            where = f"{where} ({text})"
            try:
                with open(path, "rb") as handle:
                    text = handle.read()
            except OSError as exc:
                raise PolicyError(
                    f"invalid settings: {where} is neither PEM text nor a readable file ({exc.strerror}): give the"
                    " public key file (openssl ec -in signing.pem -pubout) or its PEM text"
                ) from None
        try:
            keys.append(load_public_key(text, where=where))
        except SignError as exc:
            raise PolicyError(f"invalid settings: {exc}") from None
    if required and not keys:
        raise PolicyError(
            f"invalid settings: {where_of['required']}.required is true but no public_keys are given: list the"
            " trusted public keys (files or PEM text) in promotion_signature.public_keys or"
            f" promotion_environments.{env}.signature.public_keys"
        )
    return {
        "required": required,
        "keys": keys,
        "key_ids": [key_id(key) for key in keys],
        "where": where_of.get("required") or where_of.get("public_keys") or "promotion_signature",
    }


# -- the checks --------------------------------------------------------------------------------------------------

FIXES = {
    "missing": "sign it: bake it again with bake_signing_key (a cached re-bake signs it without rebuilding) or run"
    " immutable.infra.artifact_sign with a trusted key",
    "wrong_key": "sign it with the private key of one of the trusted keys, or add the signer's public key to {where}"
    ".public_keys (trusted here: {key_ids})",
    "other_digest": "its signature tag was moved or copied from another image: delete sha256-<hex>.sig and sign the"
    " artifact again (a bake with bake_signing_key), or deploy another artifact",
    "tampered": "its provenance was modified after signing: delete sha256-<hex>.att and sign the artifact again, or"
    " deploy another artifact",
    "subject_mismatch": "its provenance is about another image: delete sha256-<hex>.att and sign the artifact again",
    "materials_mismatch": "its provenance does not describe the bake its record describes: sign it again from its"
    " own bake (bake.yml with bake_signing_key), or deploy another artifact",
    "no_record": "bake it (the record and the provenance come from the same bake)",
    "invalid": "delete the broken tag and sign the artifact again (a bake with bake_signing_key)",
}
# an AMI's evidence is S3 objects named by its tags (supply/_ami_evidence.py), not registry tags
AMI_FIXES = dict(
    FIXES,
    missing="sign it: bake it with bake_ami_evidence_bucket and bake_signing_key (a cached re-bake of an AMI that has"
    " its SBOM signs it without rebuilding)",
    other_digest="its evidence tags or objects were moved or copied from another AMI: bake it again with"
    " bake_ami_evidence_bucket and bake_signing_key (the tags and objects are rewritten), or deploy another artifact",
    tampered="its evidence in S3 was replaced or modified after signing: bake it again with bake_ami_evidence_bucket"
    " and bake_signing_key, or deploy another artifact",
    subject_mismatch="its provenance is about other AMIs: bake it again with bake_signing_key",
    invalid="bake it again with bake_ami_evidence_bucket and bake_signing_key (the evidence is rewritten)",
)


def refusal(app, env, artifact_id, detail, fix) -> str:
    """The one message style of the gate's refusals (the record check's too): what, why, how to fix, nothing done."""
    return (
        f"artifact {artifact_id} is refused for {app}/{env}: {detail}. {fix[:1].upper()}{fix[1:]}. Nothing was pulled,"
        " switched, tagged or recorded"
    )


def check_revocation(revocations, artifact_id, record, now, app, env, action) -> None:
    """PolicyError when a revocation in effect covers the artifact (its ID, or its record's base image)."""
    base = ((record or {}).get("base") or {}).get("id") if isinstance((record or {}).get("base"), dict) else None
    item = revoked_by(revocations, artifact_id, base, now)
    if item is None:
        return
    fix = (
        "roll forward instead: deploy an artifact that is not revoked"
        if action == "rollback"
        else "bake a fixed artifact (a new base image, or a fixed role) and deploy that"
    )
    raise PolicyError(refusal(app, env, artifact_id, describe(item, artifact_id), fix))


def check_signature(policy, verify, artifact_id, kind, app, env, allow_unsigned=False) -> dict:
    """Apply the policy to the candidate. verify(keys, require_provenance) runs supply/_sign.verify_artifact on the
    registry and returns its result. Returns {checked, signature, provenance, line}; PolicyError when refused.

    allow_unsigned (a rollback with -e allow_unsigned_rollback=true): a MISSING signature or provenance is allowed
    even where they are required; an invalid one is still refused."""
    if not policy["keys"]:
        return {"checked": False, "line": None}
    if kind not in ("container", "ami"):
        if policy["required"]:
            raise PolicyError(
                refusal(
                    app,
                    env,
                    artifact_id,
                    f"{policy['where']}.required is true, but only container and AMI artifacts are signed"
                    f" ({kind} is not)",
                    f"set {policy['where']}.required: false for this environment",
                )
            )
        return {"checked": False, "line": None}
    required = policy["required"] and not allow_unsigned
    result = verify(policy["keys"], required)
    for part in ("signature", "provenance"):
        found = result[part]
        status = found["status"]
        if status == "valid" or (status in ("missing", "no_record") and not required):
            continue
        fixes = AMI_FIXES if kind == "ami" else FIXES
        fix = fixes.get(status, fixes["invalid"]).format(where=policy["where"], key_ids=", ".join(policy["key_ids"]))
        if status == "missing":
            fix += f", or do not require signatures here: {policy['where']}.required: false"
        raise PolicyError(refusal(app, env, artifact_id, f"{part} check failed: {found['detail']}", fix))
    line = (
        f"signature: {result['signature']['status']} ({result['signature'].get('key_id') or 'no key'}),"
        f" provenance: {result['provenance']['status']}"
    )
    return {
        "checked": True,
        "signature": result["signature"]["status"],
        "provenance": result["provenance"]["status"],
        "line": line,
    }


# -- the package diff at promotion ------------------------------------------------------------------------------


def promotion_diff(read_sbom, live_id, live_record, candidate_id, candidate_record, limit=20) -> dict:
    """{lines, evidence} of what changes when candidate replaces live, from their SBOMs (read_sbom(id) -> bytes or
    None) and records (the role inputs). A missing SBOM is one line, not a failure."""
    from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import artifact_diff
    from ansible_collections.immutable.infra.plugins.module_utils.supply._diff import summary_lines

    sboms = {}
    for side, artifact_id in (("live", live_id), ("candidate", candidate_id)):
        try:
            data = read_sbom(artifact_id)
        except Exception as exc:  # noqa: BLE001 - SbomError, RegistryError: the diff is information, never a failure
            data, why = None, f"cannot read it: {getattr(exc, 'message', exc)}"
        else:
            why = "none locally or in the registry: baked with bake_sbom=false or before SBOMs existed"
        if data is None:
            line = f"package diff: not shown, no SBOM of the {side} artifact {artifact_id} ({why})"
            return {"lines": [line], "evidence": {"from": str(live_id), "skipped": line}}
        sboms[side] = json.loads(data)
    diff = artifact_diff(sboms["live"], sboms["candidate"], live_record, candidate_record)
    lines = summary_lines(diff, limit=limit)
    changes = [line for line in lines[1:] if not line.startswith(("inputs:", "... and"))]
    evidence = {
        "from": str(live_id),
        "counts": diff["counts"],
        "changes": changes,
        "inputs": list(diff["inputs"]) if diff.get("inputs") is not None else None,
    }
    return {"lines": [f"changes from {live_id}:"] + ["  " + line for line in lines], "evidence": evidence}
