#!/usr/bin/env bash
# Smoke test of the execution environment scripts/ee-build.sh builds: inside the image, `ansible-galaxy collection
# list` shows immutable.infra, amazon.aws and community.docker, and tests/ee/smoke.yml runs a bake_fingerprint lookup
# and a registry_image_info query against the test registry (host network: the registry listens on 127.0.0.1).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
image="${IMMUTABLE_EE_IMAGE:-immutable-infra/ee:latest}"
start=$SECONDS
set -a
# shellcheck disable=SC1090
source "${IMMUTABLE_REGISTRY_CREDENTIALS:-${IMMUTABLE_STATE_DIR:-$root/.local}/registry/credentials.env}"
set +a
export IMMUTABLE_REGISTRY="${IMMUTABLE_REGISTRY:-127.0.0.1:${IMMUTABLE_REGISTRY_PORT:-5000}}"
# the credentials pass by name (-e NAME): their values stay off the command line
run() {
    docker run --rm --network host -e IMMUTABLE_REGISTRY -e IMMUTABLE_REGISTRY_USER -e IMMUTABLE_REGISTRY_PASSWORD \
        -v "$root/tests/ee/smoke.yml:/runner/smoke.yml:ro" "$image" "$@"
}
listing="$(run ansible-galaxy collection list 2>&1)" || { echo "$listing"; exit 1; }
for collection in immutable.infra amazon.aws community.docker; do
    grep -q "^$collection " <<<"$listing" \
        || { echo "$listing"; echo "ERROR: $collection is not installed in $image" >&2; exit 1; }
done
grep -E '^(immutable\.infra|amazon\.aws|community\.docker) ' <<<"$listing"
output="$(run ansible-playbook /runner/smoke.yml 2>&1)" || { echo "$output"; exit 1; }
grep -q 'failed=0' <<<"$output" || { echo "$output"; exit 1; }
echo "execution environment smoke test: ok ($((SECONDS - start)) s)"
