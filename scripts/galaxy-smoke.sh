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
# install as a user would: outside the checkout (no ansible.cfg pointing at it), only the temp path configured
cd "$work"
unset ANSIBLE_CONFIG
export ANSIBLE_COLLECTIONS_PATH="$work/collections"
ansible-galaxy collection install --offline -p "$work/collections" "$tarball" >"$work/install.log" \
    || { cat "$work/install.log"; exit 1; }
test -f "$work/collections/ansible_collections/immutable/infra/MANIFEST.json" \
    || { echo "ERROR: the tarball did not install into $work/collections" >&2; cat "$work/install.log"; exit 1; }
# nothing from the dev tree may ship
for unwanted in .venv .local scripts bench tests/output; do
    if tar -tzf "$tarball" | grep -q "^$unwanted/"; then echo "ERROR: $unwanted/ is in the tarball" >&2; exit 1; fi
done
for module in $(find "$work/collections/ansible_collections/immutable/infra/plugins/modules/" -name '*.py' -printf '%f\n' | sed 's/\.py$//'); do
    ansible-doc -t module "immutable.infra.$module" >/dev/null
done
cat >"$work/smoke.yml" <<'YML'
- name: Smoke test of the installed immutable.infra collection
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    collection_root: "{{ lookup('ansible.builtin.env', 'ANSIBLE_COLLECTIONS_PATH') }}/ansible_collections/immutable/infra"
  tasks:
    - name: Fingerprint a bake of the installed roles
      ansible.builtin.set_fact:
        smoke_fp: >-
          {{ lookup('immutable.infra.bake_fingerprint', base_id='sha256:' ~ ('0' * 64),
                    roles=['immutable.infra.baseline', 'immutable.infra.web', 'immutable.infra.seal']) }}

    - name: Ask the local registry through an installed module
      immutable.infra.registry_image_info:
        repository: "{{ lookup('ansible.builtin.env', 'IMMUTABLE_REGISTRY') }}/smoke"
        tags: [none]
        registry_username: "{{ lookup('ansible.builtin.env', 'IMMUTABLE_REGISTRY_USER') }}"
        registry_password: "{{ lookup('ansible.builtin.env', 'IMMUTABLE_REGISTRY_PASSWORD') }}"
      register: smoke_info

    - name: Check what the installed collection answered
      ansible.builtin.assert:
        that:
          - smoke_fp.fingerprint is match('^sha256:[0-9a-f]{64}$')
          - smoke_fp.layers | length == 3
          - not smoke_info.images[0].exists
          - (collection_root ~ '/playbooks/bake.yml') is file
          - (collection_root ~ '/roles/baseline/meta/argument_specs.yml') is file
          - (collection_root ~ '/roles/web/meta/argument_specs.yml') is file
          - (collection_root ~ '/roles/seal/meta/argument_specs.yml') is file
          - (collection_root ~ '/roles/router/meta/argument_specs.yml') is file
YML
set -a
# shellcheck disable=SC1090
source "${IMMUTABLE_REGISTRY_CREDENTIALS:-$root/.local/registry/credentials.env}"
set +a
export IMMUTABLE_REGISTRY="${IMMUTABLE_REGISTRY:-127.0.0.1:${IMMUTABLE_REGISTRY_PORT:-5000}}"
# the implicit localhost runs modules with this very interpreter (no interpreter discovery)
ansible-playbook "$work/smoke.yml" >"$work/smoke.log" || { cat "$work/smoke.log"; exit 1; }
echo "galaxy build + offline install + smoke run: ok"
