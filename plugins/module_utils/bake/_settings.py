# Copyright: Contributors to the immutable.infra collection
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The container bake's settings checked before anything starts (playbooks/bake.yml, "Check the bake settings").

PRIVATE to the collection: do not import it from other collections, it may change without notice.

Every rule a module would apply later (push_image: image config, tags, repository; image_hygiene: path globs;
bake_builder: the change listing; the fingerprint lookup: the roles) is applied here with the same code, so a bad
setting fails in a second, naming the variable and the rule it breaks, instead of after the build. All problems
are reported at once.
"""

from __future__ import annotations

import re

from ansible_collections.immutable.infra.plugins.module_utils.artifact._contract import is_fingerprint_tag
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import FingerprintError
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import HygieneError
from ansible_collections.immutable.infra.plugins.module_utils.bake._hygiene import check_globs
from ansible_collections.immutable.infra.plugins.module_utils.bake.builder._changes import CHANGE_LISTINGS
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import ImageReferenceError
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import parse_repository
from ansible_collections.immutable.infra.plugins.module_utils.registry._client import validate_tag
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import PushImageError
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import config_changes
from ansible_collections.immutable.infra.plugins.module_utils.registry._push import normalize_config

NAME_MAX = 63
_NAME_CHAR = re.compile(r"[a-z0-9_.-]")
KINDS = ("container", "ami")


def name_problems(name, variable="bake_name"):
    """One message per rule of an artifact name that name breaks (it names the repository and the cache)."""
    if not isinstance(name, str) or not name:
        return [f"{variable} is empty: give 1-{NAME_MAX} lower-case letters, digits, '.', '_' or '-', e.g. web"]
    problems = []
    suggestion = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).lstrip("._-")[:NAME_MAX]
    hint = f" (e.g. {suggestion!r})" if suggestion and suggestion != name else ""
    bad = sorted({c for c in name if not _NAME_CHAR.match(c)})
    if bad:
        what = "upper-case letters " if all(c.isupper() for c in bad) else ""
        problems.append(
            f'{variable} {name!r} has {what}{", ".join(repr(c) for c in bad)}: it breaks the rule "only lower-case '
            f"letters, digits, '.', '_' and '-'\"{hint}"
        )
    if name[0] in "._-":
        problems.append(
            f'{variable} {name!r} starts with {name[0]!r}: it breaks the rule "starts with a lower-case letter or '
            f'digit"{hint}'
        )
    if len(name) > NAME_MAX:
        problems.append(
            f'{variable} {name!r} has {len(name)} characters: it breaks the rule "at most {NAME_MAX} characters"'
        )
    return problems


def _tag_problems(tag, variable):
    try:
        validate_tag(tag)
    except ImageReferenceError as exc:
        return [f"{variable}: {exc}"]
    if is_fingerprint_tag(tag):
        return [f"{variable} {tag!r} starts with 'fp-': that prefix names artifacts by fingerprint, choose another tag"]
    return []


def image_config(config, variable="bake_image_config"):
    """bake_image_config in push_image's spelling (Docker's Cmd, Env, ExposedPorts, ... mapped); raises
    PushImageError naming the variable and the rule."""
    return normalize_config(config, variable)


def _role_names(roles):
    for role in roles:
        if isinstance(role, dict):
            yield role.get("role") or role.get("name")
        else:
            yield role


_TRUE_FALSE = ("true", "false", "yes", "no", "on", "off", "1", "0")


def _raw_problems(integers, booleans):
    """Variables that bake.yml turns with | int or | bool, as given: a typo would silently become 0 or false."""
    problems = []
    for variable, value in (integers or {}).items():
        if isinstance(value, bool) or not str(value).strip().isdigit():
            problems.append(f'{variable} {value!r} breaks the rule "a whole number of 0 or more"')
    for variable, value in (booleans or {}).items():
        if not isinstance(value, bool) and str(value).strip().lower() not in _TRUE_FALSE:
            problems.append(f'{variable} {value!r} breaks the rule "true or false"')
    return problems


def max_age_problems(value, variable="bake_max_age"):
    """bake_max_age: unset (None, empty) or a whole number of days of at least 1 (docs/supply-chain.md, Freshness)."""
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return []
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value).strip()) < 1:
        return [
            f'{variable} {value!r} breaks the rule "a whole number of days of 1 or more (unset: a cached artifact is'
            ' reused whatever its age)"'
        ]
    return []


def settings_problems(
    settings,
    resolver=None,
    hygiene_forbidden=(),
    hygiene_allow=(),
    change_listing="engine",
    integers=None,
    booleans=None,
):
    """Every problem of the resolved bake settings (bake.yml's `bake` fact), as messages naming the variable.

    resolver: a bake._fingerprint.RoleResolver to check that every role exists (None: not checked).
    integers, booleans: {variable: value as given} of the variables the playbook converts with | int or | bool.
    """
    problems = list(name_problems(settings.get("name")))
    kinds = settings.get("kinds")
    if not isinstance(kinds, list) or not kinds or any(k not in KINDS for k in kinds):
        problems.append(f'bake_kinds {kinds!r} breaks the rule "a list of container and/or ami"')
        kinds = []
    roles = settings.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, (str, dict)) for r in roles):
        problems.append(f'bake_roles {roles!r} breaks the rule "a list of role names"')
    else:
        names = [str(n) for n in _role_names(roles)]
        seals = [n for n in names if n == "seal" or n.endswith(".seal")]
        if len(seals) != 1 or not names[-1].endswith("seal"):
            problems.append(
                "bake_roles must not contain the seal role (it always runs last, set bake_seal_role to change it)"
            )
        for name in dict.fromkeys(names) if resolver is not None else ():
            try:
                resolver.resolve(name)
            except FingerprintError as exc:
                problems.append(str(exc))
    if not isinstance(settings.get("vars"), dict):
        problems.append("bake_vars must be a dictionary of the variables the roles get")
    try:
        config_changes(image_config(settings.get("image_config")), {})
    except PushImageError as exc:
        message = exc.message
        problems.append(message if message.startswith("bake_image_config") else f"bake_image_config: {message}")
    version = settings.get("version") or ""
    if version:
        problems += _tag_problems(version, "bake_version")
    extra_tags = settings.get("extra_tags")
    if not isinstance(extra_tags, list):
        problems.append(f'bake_extra_tags {extra_tags!r} breaks the rule "a list of tags"')
    else:
        for tag in extra_tags:
            problems += _tag_problems(tag, "bake_extra_tags")
        if len(set(extra_tags + ([version] if version else []))) != len(extra_tags) + (1 if version else 0):
            problems.append("bake_extra_tags lists a tag twice or repeats bake_version: give each tag once")
    name_broken = len(problems) > 0 and problems[0].startswith("bake_name")
    repository = settings.get("repository")
    # a repository made of a broken bake_name is already reported as bake_name
    if "container" in kinds and not (name_broken and str(repository).endswith(f"/{settings.get('name')}")):
        try:
            parse_repository(repository)
        except ImageReferenceError as exc:
            problems.append(f"bake_repository (or bake_registry/bake_name): {exc}")
    for globs, variable in ((hygiene_forbidden, "bake_hygiene_forbidden"), (hygiene_allow, "bake_hygiene_allow")):
        if not isinstance(globs, (list, tuple)):
            problems.append(f'{variable} {globs!r} breaks the rule "a list of absolute path globs"')
            continue
        try:
            check_globs(globs, variable)
        except HygieneError as exc:
            problems.append(str(exc))
    problems += _raw_problems(integers, booleans)
    problems += max_age_problems(settings.get("max_age"))
    if change_listing not in CHANGE_LISTINGS:
        problems.append(f'bake_change_listing {change_listing!r} breaks the rule "one of {", ".join(CHANGE_LISTINGS)}"')
    return problems
