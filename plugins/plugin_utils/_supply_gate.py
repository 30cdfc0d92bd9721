# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The promotion step's supply-chain parts (docs/supply-chain.md): the verification gate (revocations, signature
policy), the package diff between the live and the candidate artifact, and the steps behind revoke.yml (record a
revocation) and verify.yml (the environments whose live artifact is revoked).

PRIVATE to the collection: do not import it from other collections, it may change without notice.

The rules are in module_utils/supply/_policy.py and _revocation.py (pure, tested without Ansible); this file reads
what they need (records, the registry, the ledger through the ledger modules) for the promotion action plugin.
"""

from __future__ import annotations

from ansible_collections.immutable.infra.plugins.module_utils.artifact._ami_record import ami_map
from ansible_collections.immutable.infra.plugins.module_utils.artifact._records import RecordError
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import find_record
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import local_records
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import same_artifact_id
from ansible_collections.immutable.infra.plugins.module_utils.artifact._remote import split_id
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import LedgerError
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import now_seconds
from ansible_collections.immutable.infra.plugins.module_utils.ledger._model import show_id
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import RegistryError
from ansible_collections.immutable.infra.plugins.module_utils.supply._ami_evidence import EvidenceError
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import PolicyError
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_revocation
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import check_signature
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import promotion_diff
from ansible_collections.immutable.infra.plugins.module_utils.supply._policy import refusal
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import base_key
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import describe
from ansible_collections.immutable.infra.plugins.module_utils.supply._revocation import revoked_by
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import PromotionError
from ansible_collections.immutable.infra.plugins.plugin_utils._promotion import ledger_args

FILE_LEDGER_ONLY = {"backend": ("file", ("file",))}


def _is_container(artifact_id) -> bool:
    return isinstance(artifact_id, str) and "@sha256:" in artifact_id


def _record(artifact_id, settings, client_for, read_ami=None):
    """The full record of an artifact (local, else the registry's or the AMIs' tags), None when there is none."""
    try:
        return find_record(artifact_id, settings["artifacts_dir"], settings["app"], client_for, read_ami)[1]
    except (RecordError, RegistryError):
        return None


def _base_id(record):
    base = (record or {}).get("base")
    return base.get("id") if isinstance(base, dict) else None


def _checked(policy, revocations, verify, artifact_id, record, kind, where, allow_unsigned) -> dict:
    """Revocations, then the signature policy (where: app, env, action); PromotionError refuses the artifact."""
    app, env, action = where
    try:
        check_revocation(revocations, artifact_id, record, now_seconds(), app, env, action)
        return check_signature(policy, verify, artifact_id, kind, app, env, allow_unsigned)
    except PolicyError as exc:
        raise PromotionError(exc.message) from None
    except (RegistryError, LedgerError, EvidenceError) as exc:
        detail = f"the verification gate cannot read what it checks ({getattr(exc, 'message', exc)})"
        raise PromotionError(refusal(app, env, artifact_id, detail, "retry once the registry answers")) from None


def verification_gate(params, out, policy, client_for, read_ami) -> None:
    """Revocations, then the signature policy of the target environment, then (deploy, promote) the package diff
    from the artifact live there. Sets out["supply"] (the ledger evidence) and out["supply_lines"] (the summary's);
    PromotionError refuses the artifact (nothing done yet)."""
    settings, request, gate = out["settings"], out["request"], out["gate"]
    app, env, action, artifact_id = settings["app"], request["env"], request["action"], out["artifact_id"]
    out["supply"], out["supply_lines"] = {}, []
    revocations = gate.get("revocations") or []
    record = None
    if revocations or policy["keys"] or action != "rollback":
        record = _record(artifact_id, settings, client_for, read_ami)
    kind = (record or {}).get("kind") or ("container" if _is_container(artifact_id) else "ami")

    def verify(keys, required):
        from ansible_collections.immutable.infra.plugins.module_utils.supply._sign import verify_artifact

        if kind == "ami":
            return read_ami.verify(artifact_id, keys, record, require_provenance=required)
        repository, host, path, digest = split_id(artifact_id)
        return verify_artifact(client_for(host), repository, path, digest, keys, record, require_provenance=required)

    allow_unsigned = bool(params.get("allow_unsigned_rollback")) and action == "rollback"
    if params.get("step") == "record":
        # a fleet's record step, after its hosts switched: its plan step ran these checks before any host was touched
        checked = {"checked": False}
    else:
        checked = _checked(policy, revocations, verify, artifact_id, record, kind, (app, env, action), allow_unsigned)
    if checked["checked"]:
        out["supply"]["verification"] = {"signature": checked["signature"], "provenance": checked["provenance"]}
        out["supply_lines"].append(checked["line"])
    live = (gate.get("before") or {}).get("live") if isinstance(gate.get("before"), dict) else None
    if action == "rollback" or not live or same_artifact_id(live, artifact_id):
        return
    amis = ami_map(live) is not None and ami_map(artifact_id) is not None
    if not amis and not (_is_container(live) and _is_container(artifact_id)):
        return  # a container against an AMI: no package diff

    def read_sbom(image_id):
        if amis:
            return read_ami.sbom(image_id)  # the S3 object its tags name, checked against their sha256
        from ansible_collections.immutable.infra.plugins.module_utils.supply._sbom import read_sbom as read

        return read(client_for(split_id(image_id)[1]), image_id, settings["artifacts_dir"], app)[1]

    diff = promotion_diff(read_sbom, live, _record(live, settings, client_for), artifact_id, record)
    out["diff"] = diff["lines"]
    out["supply"]["diff"] = diff["evidence"]
    out["supply_lines"].extend(diff["lines"])


# -- revoke.yml and verify.yml ------------------------------------------------------------------------------------


def _revocation_kind(kind, artifact_id, settings, client_for, local):
    """artifact or base for `kind` auto: a digest reference is an artifact (it must have a record), a bare image ID
    (sha256:...) a base; an AMI ID is whichever the local records say it is."""
    if kind in ("artifact", "base"):
        return kind
    text = show_id(artifact_id)
    if _is_container(text):
        if _record(text, settings, client_for) is None:
            raise PromotionError(
                f"artifact id {text} is unknown to every artifact record (local and in the registry): check the ID;"
                " a base image is revoked by its ID (the records' base.id, sha256:...), or give -e kind=artifact to"
                " revoke it anyway. Nothing was recorded"
            )
        return "artifact"
    if text.startswith("sha256:"):
        return "base"
    if any(same_artifact_id(record["id"], artifact_id) for _path, record in local):
        return "artifact"
    if any(base_key(_base_id(record)) == base_key(text) for _path, record in local if _base_id(record)):
        return "base"
    raise PromotionError(
        f"{text} is neither the ID of a local artifact record nor the base image of one: give -e kind=artifact or"
        " -e kind=base. Nothing was recorded"
    )


def revoke_step(plugin, params, out, _check_envs, client_for, task_vars, check_mode=False) -> dict:
    """revoke.yml: record the revocation in the ledger (the ledger module, action=revoke)."""
    from ansible_collections.immutable.infra.plugins.modules import ledger

    settings = out["settings"]
    artifact_id = params["artifact"]
    if artifact_id in (None, ""):
        raise PromotionError(
            "give what to revoke: -e artifact=<artifact ID, or a base image ID> -e reason='<why>' (revoke.yml)"
        )
    try:
        local = local_records(settings["artifacts_dir"], settings["app"])
    except RecordError as exc:
        raise PromotionError(str(exc)) from None
    kind = _revocation_kind(params.get("revoke_kind") or "auto", artifact_id, settings, client_for, local)
    descendants = []
    if kind == "base":
        descendants = [record["id"] for _path, record in local if base_key(_base_id(record)) == base_key(artifact_id)]
    args = ledger_args(settings, "revoke", "", "", artifact_id, False, params["reason"])
    args.pop("env", None)
    args.pop("force", None)
    if params.get("by"):
        args["by"] = params["by"]
    args["revocation"] = {"kind": kind, "from": params.get("revoke_from"), "artifacts": descendants or None}
    result = plugin.run_module_step(
        "immutable.infra.ledger", ledger, args, task_vars, check_mode=check_mode, only_when=FILE_LEDGER_ONLY
    )
    if result.get("failed"):
        return dict(out, failed=True, msg=result.get("msg", "the ledger refused the revocation"))
    stands = result.get("revocation") or {}
    lines = [
        f"{settings['app']}: revoked {show_id(stands.get('id'))} ({stands.get('kind')}) by {stands.get('by')} at"
        f" {stands.get('at')}, in effect from {stands.get('from')}: {stands.get('reason')}"
        + ("" if result.get("changed") else " (revoked before: nothing changed)")
    ]
    if kind == "base":
        lines.append(
            f"baked from it (local records): {', '.join(descendants) if descendants else 'none'}; any record (also"
            " in the registry) naming it as base.id is refused"
        )
    return dict(out, changed=bool(result.get("changed")), revocation=stands, summary=lines)


def revoked_step(plugin, params, out, check_envs, client_for, task_vars, _check_mode=False) -> dict:
    """verify.yml: every checked environment whose live artifact is revoked (its ID, or its record's base image)."""
    from ansible_collections.immutable.infra.plugins.modules import ledger_info

    settings = out["settings"]
    app = settings["app"]
    args = ledger_args(settings, "revoke", "", "", None, False, None)
    args = {key: value for key, value in args.items() if key in ("backend", "path", "prefix", "region", "endpoint_url")}
    args["app"] = app
    found = plugin.run_module_step(
        "immutable.infra.ledger_info", ledger_info, args, task_vars, check_mode=False, only_when=FILE_LEDGER_ONLY
    )
    if found.get("failed"):
        return dict(out, failed=True, msg=found.get("msg", "cannot read the ledger"))
    entries = ((found.get("ledger") or {}).get("apps") or {}).get(app) or {}
    revocations = found.get("revocations") or []
    now = now_seconds()
    revoked, problems = [], []
    for env in check_envs:
        live = (entries.get(env) or {}).get("live")
        if not live or not revocations:
            continue
        needs_record = any(item.get("kind") == "base" for item in revocations if isinstance(item, dict))
        record = _record(live, settings, client_for) if needs_record else None
        item = revoked_by(revocations, live, _base_id(record), now)
        if item is not None:
            revoked.append({"env": env, "id": live, "revocation": item})
            problems.append(f"{env}: runs a REVOKED artifact: {describe(item, live)}")
    return dict(out, revoked=revoked, problems=problems, revocations=revocations)
