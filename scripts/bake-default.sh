#!/usr/bin/env bash
# Set up (idempotent) and bake the default image: the collection's baseline -> web -> seal roles on the Debian
# bookworm base image, pushed to the local registry. Prints the artifact's digest reference.
# Extra arguments go to ansible-playbook (e.g. -e bake_version=1.1.0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"
immutable_setup
cd "$root"
set -a
# shellcheck disable=SC1090
source "$IMMUTABLE_REGISTRY_CREDENTIALS"
set +a
ansible-playbook playbooks/bake.yml -e "bake_registry=$IMMUTABLE_REGISTRY" "$@"
