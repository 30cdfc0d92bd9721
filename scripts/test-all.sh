#!/usr/bin/env bash
# Set up (idempotent) and run every test and quality gate of immutable.infra:
#   ruff, ansible-lint (production profile), ansible-test sanity (no ignores), galaxy build + install + smoke,
#   Molecule scenarios for every role, the ecosystem gates (ansible-core 2.17/2.18 matrix, docs site, execution
#   environment build + smoke), then pytest (unit + integration against real Docker, registry, nginx, moto).
# IMMUTABLE_TEST_STEPS limits the steps (space separated: lint sanity galaxy molecule matrix docs ee pytest); pytest
# args pass through.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/setup.sh
source "$root/scripts/setup.sh"
immutable_setup
# what only the tests need: nginx for the router/blue-green tests, wrk for the zero-failure load test,
# ShellCheck for ansible-test sanity's shell checks, rsync for the sanity tree, skopeo to read pushed labels
# with a client independent of ours (test_bake_labels.py), openssh-client for the AMI bakes' provisioning over
# ansible.builtin.ssh to the sshd stand-in and ssh-keygen (test_bake_playbook_ami.py, test_crash_safety_ami.py),
# chromium to render the promotion board headless (test_board.py: screenshot and DOM), prometheus for the
# analysis' Prometheus source (the tests start their own on loopback: test_analysis_prometheus.py)
apt_install nginx-light wrk shellcheck rsync skopeo openssh-client chromium prometheus
cd "$root"
steps="${IMMUTABLE_TEST_STEPS:-lint sanity galaxy molecule matrix docs ee pytest}"
declare -A took

run_step() {
    local name="$1"
    shift
    [[ " $steps " == *" $name "* ]] || return 0
    printf '\n===== %s =====\n' "$name"
    local start=$SECONDS
    "$@"
    took[$name]=$((SECONDS - start))
}

lint() {
    ruff check plugins tests bench
    ruff format --check plugins tests bench
    ansible-lint --offline --profile production
}

molecule_all() {
    # the scenarios' second platform, Debian 13: built here only, about a minute the first time
    setup_base_image_trixie
    # from the collection root: Molecule 26 loads extensions/molecule/config.yml only where galaxy.yml is
    molecule test --all
}

run_step lint lint
run_step sanity bash scripts/sanity.sh
run_step galaxy bash scripts/galaxy-smoke.sh
run_step molecule molecule_all
# ansible-core 2.19 (the pinned one) is the sanity and pytest steps; the matrix adds the older lines (docs/testing.md)
run_step matrix env IMMUTABLE_MATRIX_CORE="${IMMUTABLE_MATRIX_CORE:-2.17 2.18}" bash scripts/matrix.sh
run_step docs bash scripts/docs-site.sh
run_step ee bash -c 'bash scripts/ee-build.sh && bash scripts/ee-smoke.sh'

printf '\n===== timings of the steps before pytest (s) =====\n'
for name in "${!took[@]}"; do printf '%-10s %s\n' "$name" "${took[$name]}"; done

# pytest runs last, so its summary line closes the output
if [[ " $steps " == *" pytest "* ]]; then
    printf '\n===== pytest =====\n'
    python -m pytest --durations=15 "$@"
fi
