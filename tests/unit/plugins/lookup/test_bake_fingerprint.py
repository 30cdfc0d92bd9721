"""The immutable.infra.bake_fingerprint lookup, run through ansible-playbook on real role trees in tmp dirs.

One playbook run (module-scoped) exercises every call form; each test checks one behaviour of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import COLLECTIONS_DIR
from conftest import REPO_ROOT
from conftest import run_playbook

from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import RoleResolver
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import compute_fingerprint
from ansible_collections.immutable.infra.plugins.module_utils.bake._fingerprint import read_collection_version

BASE = "sha256:" + "0f" * 32

PLAYBOOK = r"""
- name: Exercise the bake_fingerprint lookup
  hosts: localhost
  gather_facts: false
  vars:
    port: 8080
    base: "sha256:{{ '0f' * 32 }}"
    bake_vars:
      web_port: "{{ port }}"
      web_banner: "{{ port }}x"
      web_flags: {debug: false, workers: 2}
    bake_options:
      config: {cmd: [nginx, -g, daemon off;], ports: [8080/tcp]}
      regions: [eu-west-1]
    plain: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=['web'], vars=bake_vars,
                      options=bake_options) }}"
  tasks:
    - name: Call the lookup in every supported form
      ansible.builtin.set_fact:
        results:
          plain: "{{ plain }}"
          plain_is_mapping: "{{ plain is mapping }}"
          literal: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=['web'],
                              vars={'web_port': 8080, 'web_banner': '8080x',
                                    'web_flags': {'workers': 2, 'debug': false}},
                              options=bake_options) }}"
          query: "{{ query('immutable.infra.bake_fingerprint', base_id=base, roles=['web'], vars=bake_vars,
                           options=bake_options) }}"
          fqcn: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=['acme.demo.app', 'web']) }}"
          extra: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=[{'role': 'extra_role'}],
                            roles_path=[extra_dir]) }}"
          previous: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=['web'],
                               vars=bake_vars | combine({'web_port': 9090}), options=bake_options,
                               previous=plain.manifest) }}"

    - name: Ask for a role that does not exist
      ansible.builtin.set_fact:
        missing: "{{ lookup('immutable.infra.bake_fingerprint', base_id=base, roles=['web', 'nope']) }}"
      ignore_errors: true  # noqa: ignore-errors
      register: missing_role

    - name: Give a tag instead of an image ID
      ansible.builtin.set_fact:
        tagged: "{{ lookup('immutable.infra.bake_fingerprint', base_id='debian:bookworm', roles=['web']) }}"
      ignore_errors: true  # noqa: ignore-errors
      register: tag_base

    - name: Write the results for the test
      ansible.builtin.copy:
        content: "{{ results | combine({'missing_msg': missing_role.msg, 'tag_msg': tag_base.msg}) | to_json }}"
        dest: "{{ out_file }}"
        mode: "0600"
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lookup")
    write(root / "play" / "roles" / "web" / "tasks" / "main.yml", "- name: Web\n  ansible.builtin.debug: {}\n")
    write(root / "play" / "roles" / "web" / "meta" / "main.yml", "dependencies: [common]\n")
    write(root / "play" / "roles" / "common" / "tasks" / "main.yml", "---\n")
    write(root / "extra" / "extra_role" / "tasks" / "main.yml", "---\n")
    coll = root / "collections" / "ansible_collections" / "acme" / "demo"
    write(coll / "galaxy.yml", "namespace: acme\nname: demo\nversion: 1.0.0\nreadme: README.md\nauthors: [me]\n")
    write(coll / "roles" / "app" / "tasks" / "main.yml", "- name: App\n  ansible.builtin.debug: {}\n")
    write(coll / "roles" / "app" / "meta" / "main.yml", "dependencies: [lib]\n")
    write(coll / "roles" / "lib" / "files" / "lib.txt", "library\n")
    write(root / "play" / "bake.yml", PLAYBOOK)
    return root


@pytest.fixture(scope="module")
def results(tree) -> dict:
    out = tree / "out.json"
    proc = run_playbook(
        tree / "play" / "bake.yml",
        {"out_file": str(out), "extra_dir": str(tree / "extra")},
        env={"ANSIBLE_COLLECTIONS_PATH": f"{tree / 'collections'}:{COLLECTIONS_DIR}"},
        timeout=120,
    )
    if proc.returncode != 0 or not out.exists():
        pytest.fail(f"ansible-playbook failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text())


def test_lookup_returns_the_dict_directly(results):
    plain = results["plain"]
    assert results["plain_is_mapping"] is True
    assert set(plain) == {"fingerprint", "short", "layers", "inputs", "manifest", "base_id"}
    assert plain["base_id"] == BASE
    assert plain["short"] == plain["fingerprint"][7:19]
    assert [layer["role"] for layer in plain["layers"]] == ["web"]


def test_query_returns_a_one_element_list(results):
    assert results["query"] == [results["plain"]]


def test_lookup_equals_the_library_on_the_same_files(results, tree):
    """Nothing machine-specific sneaks in: the lookup's fingerprint is the library's on the same inputs, and the
    collection version is the installed immutable.infra's."""
    version = read_collection_version(str(REPO_ROOT))
    assert results["plain"]["inputs"]["collection_version"] == version
    expected = compute_fingerprint(
        BASE,
        ["web"],
        {"web_port": 8080, "web_banner": "8080x", "web_flags": {"debug": False, "workers": 2}},
        {"config": {"cmd": ["nginx", "-g", "daemon off;"], "ports": ["8080/tcp"]}, "regions": ["eu-west-1"]},
        version,
        RoleResolver(search_paths=[str(tree / "play" / "roles")]),
    )
    assert results["plain"] == dict(expected, base_id=BASE)


def test_templated_vars_are_rendered_before_hashing(results):
    """bake_vars holds '{{ port }}' templates; the literal call passes the rendered values: same fingerprint."""
    assert results["literal"]["fingerprint"] == results["plain"]["fingerprint"]


def test_fqcn_role_resolves_through_the_collections_path(results, tree):
    fqcn = results["fqcn"]
    app = fqcn["manifest"]["roles"][0]
    assert app["name"] == "acme.demo.app"
    assert set(app["files"]) == {"tasks/main.yml", "meta/main.yml"}
    assert app["dependencies"][0]["name"] == "lib"
    assert set(app["dependencies"][0]["files"]) == {"files/lib.txt"}
    assert [layer["role"] for layer in fqcn["layers"]] == ["acme.demo.app", "web"]


def test_roles_path_option_is_searched(results):
    assert list(results["extra"]["inputs"]["roles"]) == ["extra_role"]


def test_previous_manifest_explains_the_miss(results):
    assert results["previous"]["changes"] == ["var web_port changed"]
    assert results["previous"]["fingerprint"] != results["plain"]["fingerprint"]


def test_unknown_role_fails_with_places_and_fix(results, tree):
    msg = results["missing_msg"]
    assert "role 'nope' not found in " in msg
    assert str(tree / "play" / "roles") in msg
    assert "check the name in bake_roles or add its directory to roles_path" in msg


def test_tag_as_base_is_refused(results):
    assert "base_id 'debian:bookworm' is not an immutable image ID" in results["tag_msg"]


def test_ansible_doc_renders():
    proc = subprocess.run(
        ["ansible-doc", "-t", "lookup", "immutable.infra.bake_fingerprint"],
        cwd=REPO_ROOT,
        check=False,
        env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS_DIR)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "base_id" in proc.stdout and "roles_path" in proc.stdout and "previous" in proc.stdout


def test_exactly_one_of_base_id_and_base_image():
    from ansible.errors import AnsibleLookupError

    from ansible_collections.immutable.infra.plugins.lookup.bake_fingerprint import LookupModule

    assert LookupModule._base_id(BASE, None) == BASE
    for both_or_neither in ((BASE, "immutable-infra/base:bookworm"), (None, None)):
        with pytest.raises(AnsibleLookupError, match="give exactly one of base_id and base_image"):
            LookupModule._base_id(*both_or_neither)
