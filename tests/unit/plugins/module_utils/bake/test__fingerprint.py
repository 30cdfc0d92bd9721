"""Unit tests for the bake fingerprint (plugins/module_utils/bake/_fingerprint.py), on real files in tmp dirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import FingerprintError
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import RoleResolver
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import canonical_json
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import compute_fingerprint
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import diff_inputs
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import hash_role_files
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import read_collection_version
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import to_plain

BASE = "sha256:" + "ab" * 32
OTHER_BASE = "sha256:" + "cd" * 32

ROLE_FILES = {
    "web": {
        "tasks/main.yml": "- name: Install nginx\n  ansible.builtin.apt:\n    name: nginx-light\n",
        "templates/index.html.j2": "<h1>{{ web_greeting }}</h1>\n",
        "defaults/main.yml": "web_greeting: hello\nweb_port: 8080\n",
        "meta/main.yml": "galaxy_info: {author: me}\ndependencies:\n  - common\n",
    },
    "common": {
        "tasks/main.yml": "- name: Common\n  ansible.builtin.debug: {msg: common}\n",
        "files/motd": "welcome\n",
    },
    "seal": {"tasks/main.yml": "- name: Seal\n  ansible.builtin.debug: {msg: seal}\n"},
}


def write_roles(roles_dir: Path, files=None, order=None) -> Path:
    files = ROLE_FILES if files is None else files
    items = [(role, rel, text) for role, entries in files.items() for rel, text in entries.items()]
    if order == "reversed":
        items.reverse()
    for role, rel, text in items:
        path = roles_dir / role / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return roles_dir


@pytest.fixture
def roles_dir(tmp_path) -> Path:
    return write_roles(tmp_path / "checkout1" / "roles")


def fingerprint(roles_dir, roles=("common", "web", "seal"), base=BASE, bake_vars=None, options=None, version="1.0.0"):
    resolver = RoleResolver(search_paths=[str(roles_dir)])
    return compute_fingerprint(
        base,
        list(roles),
        {"web_port": 8080, "web_greeting": "hi"} if bake_vars is None else bake_vars,
        {"regions": ["eu-west-1"], "config": {"cmd": ["nginx"]}} if options is None else options,
        version,
        resolver,
    )


# ------------------------------------------------------------------------------------------------ changes when ...


def test_result_shape(roles_dir):
    result = fingerprint(roles_dir)
    assert result["fingerprint"].startswith("sha256:") and len(result["fingerprint"]) == 7 + 64
    assert result["short"] == result["fingerprint"][7:19]
    assert [layer["role"] for layer in result["layers"]] == ["common", "web", "seal"]
    assert set(result["inputs"]) == {"base", "roles", "vars", "options", "collection_version"}
    assert result["inputs"]["base"] == BASE
    assert result["inputs"]["collection_version"] == "1.0.0"
    assert list(result["inputs"]["roles"]) == ["common", "web", "seal"]
    # the manifest holds digests, never var values
    assert "hi" not in canonical_json(result["manifest"])


def test_changes_when_a_role_file_changes(roles_dir):
    before = fingerprint(roles_dir)
    (roles_dir / "web" / "templates" / "index.html.j2").write_text("<h1>{{ web_greeting }}!</h1>\n")
    after = fingerprint(roles_dir)
    assert after["fingerprint"] != before["fingerprint"]
    assert diff_inputs(before["manifest"], after["manifest"]) == ["role web file templates/index.html.j2 changed"]


def test_changes_when_a_role_file_is_added_or_renamed(roles_dir):
    before = fingerprint(roles_dir)
    (roles_dir / "seal" / "files").mkdir()
    (roles_dir / "seal" / "files" / "x").write_text("x")
    added = fingerprint(roles_dir)
    assert added["fingerprint"] != before["fingerprint"]
    assert diff_inputs(before, added) == ["role seal file files/x added"]
    (roles_dir / "seal" / "files" / "x").rename(roles_dir / "seal" / "files" / "y")
    renamed = fingerprint(roles_dir)
    assert renamed["fingerprint"] != added["fingerprint"]
    assert diff_inputs(added, renamed) == ["role seal file files/x removed", "role seal file files/y added"]


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"bake_vars": {"web_port": 8081, "web_greeting": "hi"}}, ["var web_port changed"]),
        ({"bake_vars": {"web_port": "8080", "web_greeting": "hi"}}, ["var web_port changed"]),  # type counts
        ({"bake_vars": {"web_port": 8080}}, ["var web_greeting removed"]),
        ({"base": OTHER_BASE}, [f"base changed: {BASE} -> {OTHER_BASE}"]),
        (
            {"options": {"regions": ["eu-west-1", "us-east-1"], "config": {"cmd": ["nginx"]}}},
            ["option regions changed"],
        ),
        ({"options": {"regions": ["eu-west-1"], "config": {"cmd": ["nginx"]}, "kms": "k"}}, ["option kms added"]),
        ({"version": "1.0.1"}, ["collection version changed: 1.0.0 -> 1.0.1"]),
        (
            {"roles": ("common", "seal", "web")},
            ["role list changed: ['common', 'web', 'seal'] -> ['common', 'seal', 'web']"],
        ),
    ],
)
def test_changes_when_an_input_changes(roles_dir, change, expected):
    before = fingerprint(roles_dir)
    after = fingerprint(roles_dir, **change)
    assert after["fingerprint"] != before["fingerprint"]
    assert diff_inputs(before["manifest"], after["manifest"]) == expected


def test_dependency_change_propagates(roles_dir):
    """web depends on common (meta/main.yml): changing common changes web's digest even without listing common."""
    before = fingerprint(roles_dir, roles=["web"])
    (roles_dir / "common" / "files" / "motd").write_text("welcome back\n")
    after = fingerprint(roles_dir, roles=["web"])
    assert after["inputs"]["roles"]["web"] != before["inputs"]["roles"]["web"]
    assert after["fingerprint"] != before["fingerprint"]
    assert diff_inputs(before, after) == ["role web -> dependency common file files/motd changed"]


def test_dependency_of_a_dependency_and_dict_form(tmp_path):
    files = {
        "app": {"meta/main.yml": "dependencies:\n  - role: mid\n    vars: {x: 1}\n"},
        "mid": {"meta/main.yml": "dependencies: [{name: leaf}]\n"},
        "leaf": {"tasks/main.yml": "---\n"},
    }
    roles = write_roles(tmp_path / "roles", files)
    before = fingerprint(roles, roles=["app"])
    (roles / "leaf" / "tasks" / "main.yml").write_text("--- # changed\n")
    after = fingerprint(roles, roles=["app"])
    assert after["fingerprint"] != before["fingerprint"]
    assert diff_inputs(before, after) == ["role app -> dependency mid -> dependency leaf file tasks/main.yml changed"]


def test_dependency_loop_is_reported(tmp_path):
    files = {"a": {"meta/main.yml": "dependencies: [b]\n"}, "b": {"meta/main.yml": "dependencies: [a]\n"}}
    roles = write_roles(tmp_path / "roles", files)
    with pytest.raises(FingerprintError, match="depends on itself"):
        fingerprint(roles, roles=["a"])


# ---------------------------------------------------------------------------------------------- stable when ...


def test_stable_when_mtimes_change(roles_dir):
    before = fingerprint(roles_dir)
    for path in roles_dir.rglob("*"):
        os.utime(path, (1_000_000_000, 1_000_000_000))
    assert fingerprint(roles_dir) == before


def test_stable_across_checkouts_and_creation_order(tmp_path, roles_dir):
    """Two copies of the roles, written in the opposite order in another directory, give the same fingerprint."""
    other = write_roles(tmp_path / "elsewhere" / "deeper" / "roles", order="reversed")
    assert fingerprint(other) == fingerprint(roles_dir)


def test_stable_with_dict_key_order_shuffled(roles_dir):
    a = fingerprint(
        roles_dir,
        bake_vars={"web_port": 8080, "web_greeting": "hi", "nested": {"a": 1, "b": [1, {"y": 2, "x": 1}]}},
        options={"regions": ["eu-west-1"], "config": {"cmd": ["nginx"], "env": {"A": "1", "B": "2"}}},
    )
    b = fingerprint(
        roles_dir,
        bake_vars={"nested": {"b": [1, {"x": 1, "y": 2}], "a": 1}, "web_greeting": "hi", "web_port": 8080},
        options={"config": {"env": {"B": "2", "A": "1"}, "cmd": ["nginx"]}, "regions": ["eu-west-1"]},
    )
    assert a == b


def test_ignored_files_do_not_count(roles_dir):
    before = fingerprint(roles_dir)
    web = roles_dir / "web"
    (web / "__pycache__").mkdir()
    (web / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (web / "library.pyc").write_bytes(b"\0")
    (web / ".git").mkdir()
    (web / ".git" / "HEAD").write_text("ref: main\n")
    (web / "tasks" / "main.yml~").write_text("old")
    (web / "tasks" / ".main.yml.swp").write_bytes(b"\1")
    assert fingerprint(roles_dir) == before


def test_symlinks_count_by_target_content(tmp_path, roles_dir):
    shared = tmp_path / "shared.conf"
    shared.write_text("v1\n")
    (roles_dir / "seal" / "files").mkdir()
    (roles_dir / "seal" / "files" / "app.conf").symlink_to(shared)
    linked = fingerprint(roles_dir)
    assert linked["manifest"]["roles"][2]["files"]["files/app.conf"] == hash_role_files(tmp_path)["shared.conf"]
    shared.write_text("v2\n")
    linked_v2 = fingerprint(roles_dir)
    assert linked_v2["fingerprint"] != linked["fingerprint"]
    # a plain copy of the same bytes is the same input as the link
    (roles_dir / "seal" / "files" / "app.conf").unlink()
    (roles_dir / "seal" / "files" / "app.conf").write_text("v2\n")
    assert fingerprint(roles_dir)["fingerprint"] == linked_v2["fingerprint"]


def test_broken_symlink_is_reported(roles_dir):
    (roles_dir / "seal" / "dangling").symlink_to("/nonexistent/file")
    with pytest.raises(FingerprintError, match=r"role file dangling in .*seal is a broken symlink"):
        fingerprint(roles_dir)


# ------------------------------------------------------------------------------------------------------ layers


def test_layer_chain_prefix_property(roles_dir):
    """Changing only the last role keeps every earlier layer; changing the first changes them all."""
    before = fingerprint(roles_dir)
    (roles_dir / "seal" / "tasks" / "main.yml").write_text("- name: Seal harder\n  ansible.builtin.debug: {}\n")
    after = fingerprint(roles_dir)
    assert after["layers"][:2] == before["layers"][:2]
    assert after["layers"][2] != before["layers"][2]
    (roles_dir / "common" / "tasks" / "main.yml").write_text("---\n")
    first = fingerprint(roles_dir)
    assert all(x["fingerprint"] != y["fingerprint"] for x, y in zip(first["layers"], after["layers"], strict=True))


def test_layers_ignore_options_but_not_vars(roles_dir):
    before = fingerprint(roles_dir)
    other_options = fingerprint(roles_dir, options={"regions": ["us-east-1"]})
    assert other_options["layers"] == before["layers"]
    assert other_options["fingerprint"] != before["fingerprint"]
    other_vars = fingerprint(roles_dir, bake_vars={"web_port": 1})
    assert all(
        x["fingerprint"] != y["fingerprint"] for x, y in zip(other_vars["layers"], before["layers"], strict=True)
    )


# ------------------------------------------------------------------------------------------- resolution and errors


def test_unknown_role_error_names_places_and_fix(tmp_path, roles_dir):
    resolver = RoleResolver(search_paths=[str(roles_dir), str(tmp_path / "more")])
    with pytest.raises(FingerprintError) as excinfo:
        compute_fingerprint(BASE, ["web", "nope"], {}, {}, "1.0.0", resolver)
    assert str(excinfo.value) == (
        f"role 'nope' not found in {roles_dir}, {tmp_path / 'more'}: "
        "check the name in bake_roles or add its directory to roles_path"
    )


def test_unknown_fqcn_role_error(tmp_path):
    resolver = RoleResolver(collection_paths=[str(tmp_path)])
    with pytest.raises(FingerprintError, match=r"role 'acme\.demo\.nope' not found in collection acme\.demo"):
        compute_fingerprint(BASE, ["acme.demo.nope"], {}, {}, "1.0.0", resolver)


def test_fqcn_role_and_its_plain_dependency_resolve_in_the_collection(tmp_path):
    coll = tmp_path / "colls" / "ansible_collections" / "acme" / "demo" / "roles"
    write_roles(coll, {"web": {"meta/main.yml": "dependencies: [base]\n"}, "base": {"tasks/main.yml": "---\n"}})
    # a same-named plain role elsewhere must not be picked for the collection role's dependency
    write_roles(tmp_path / "roles", {"base": {"tasks/main.yml": "--- # decoy\n"}})
    resolver = RoleResolver(search_paths=[str(tmp_path / "roles")], collection_paths=[str(tmp_path / "colls")])
    result = compute_fingerprint(BASE, ["acme.demo.web"], {}, {}, "1.0.0", resolver)
    dep = result["manifest"]["roles"][0]["dependencies"][0]
    assert dep["name"] == "base"
    assert dep["files"] == hash_role_files(coll / "base")


def test_role_given_as_dict_and_as_path(tmp_path, roles_dir):
    resolver = RoleResolver(search_paths=[str(roles_dir)], base_dir=str(roles_dir.parent))
    as_dict = compute_fingerprint(BASE, [{"role": "seal"}], {}, {}, "1", resolver)
    plain = compute_fingerprint(BASE, ["seal"], {}, {}, "1", resolver)
    assert as_dict == plain
    by_path = compute_fingerprint(BASE, ["roles/seal"], {}, {}, "1", resolver)
    assert by_path["inputs"]["roles"]["roles/seal"] == plain["inputs"]["roles"]["seal"]


@pytest.mark.parametrize("base", ["debian:bookworm", "sha256:abc", "", None, "ami-xyz"])
def test_mutable_or_malformed_base_id_is_refused(roles_dir, base):
    with pytest.raises(FingerprintError, match="not an immutable image ID.*resolve the base first"):
        fingerprint(roles_dir, base=base)


@pytest.mark.parametrize("base", ["ami-0123456789abcdef0", "127.0.0.1:5000/base@sha256:" + "0" * 64, BASE])
def test_immutable_base_ids_are_accepted(roles_dir, base):
    assert fingerprint(roles_dir, base=base)["inputs"]["base"] == base


# --------------------------------------------------------------------------------------------- canonical form


def test_canonical_json_is_compact_sorted_utf8():
    assert canonical_json(to_plain({"b": [1, 2.5, True, None], "a": "é"})) == '{"a":"é","b":[1,2.5,true,null]}'


def test_str_and_dict_subclasses_become_plain():
    class Tagged(str):
        pass

    class TaggedDict(dict):
        pass

    plain = to_plain(TaggedDict({Tagged("k"): [Tagged("v"), (1, 2)], "s": {3, 1, 2}}))
    assert plain == {"k": ["v", [1, 2]], "s": [1, 2, 3]}
    assert type(next(iter(plain))) is str and type(plain["k"][0]) is str  # pylint: disable=unidiomatic-typecheck


def test_unsupported_type_names_the_var(roles_dir):
    with pytest.raises(FingerprintError, match=r"vars\.web_port has type object"):
        fingerprint(roles_dir, bake_vars={"web_port": object()})


# ---------------------------------------------------------------------------------------------- version, diff


def test_collection_version_from_manifest_json_or_galaxy_yml(tmp_path):
    (tmp_path / "galaxy.yml").write_text("namespace: immutable\nname: infra\nversion: 0.3.0\n")
    assert read_collection_version(str(tmp_path)) == "0.3.0"
    (tmp_path / "MANIFEST.json").write_text('{"collection_info": {"version": "0.4.0"}}')
    assert read_collection_version(str(tmp_path)) == "0.4.0"
    with pytest.raises(FingerprintError, match="neither MANIFEST.json nor galaxy.yml"):
        read_collection_version(str(tmp_path / "missing"))


def test_diff_inputs_same_inputs_is_empty_and_summary_works(roles_dir):
    before = fingerprint(roles_dir)
    assert diff_inputs(before["manifest"], fingerprint(roles_dir)["manifest"]) == []
    (roles_dir / "web" / "defaults" / "main.yml").write_text("web_greeting: bye\n")
    after = fingerprint(roles_dir, bake_vars={"web_port": 9})
    # from the short `inputs` summary only the role and the vars as a whole can be named
    assert diff_inputs(before["inputs"], after["inputs"]) == ["role web changed", "vars changed"]
