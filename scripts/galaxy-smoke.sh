#!/usr/bin/env bash
# Build the collection tarball, install it (offline: its dependencies come from the venv's ansible package) into a
# temporary path and run a smoke playbook from the INSTALLED copy, not the checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$root"
ansible-galaxy collection build --force --output-path "$work/dist" . >/dev/null
tarball="$(ls "$work"/dist/immutable-infra-*.tar.gz)"
echo "built $(basename "$tarball") ($(du -k "$tarball" | cut -f1) KiB)"
ansible-galaxy collection install --offline -p "$work/collections" "$tarball" >/dev/null
test -f "$work/collections/ansible_collections/immutable/infra/MANIFEST.json"
# nothing from the dev tree may ship
for unwanted in .venv .local scripts bench tests/output; do
    if tar -tzf "$tarball" | grep -q "^$unwanted/"; then echo "ERROR: $unwanted/ is in the tarball" >&2; exit 1; fi
done
cd "$work"
export ANSIBLE_COLLECTIONS_PATH="$work/collections"
unset ANSIBLE_CONFIG
for module in $(ls "$work/collections/ansible_collections/immutable/infra/plugins/modules/" | sed -n 's/\.py$//p'); do
    ansible-doc -t module "immutable.infra.$module" >/dev/null
done
cat >"$work/smoke.yml" <<'YML'
- name: Smoke test of the installed immutable.infra collection
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Resolve the collection's roles and playbooks from the installed path
      ansible.builtin.assert:
        that:
          - lookup('ansible.builtin.fileglob', collection_root ~ '/roles/*/meta/argument_specs.yml', wantlist=True) | length >= 3
          - (collection_root ~ '/playbooks/bake.yml') is file
      vars:
        collection_root: "{{ lookup('ansible.builtin.env', 'ANSIBLE_COLLECTIONS_PATH') }}/ansible_collections/immutable/infra"
YML
ansible-playbook -i localhost, "$work/smoke.yml" >/dev/null
echo "galaxy build + offline install + smoke run: ok"
