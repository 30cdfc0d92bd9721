#!/usr/bin/env bash
# ansible-test sanity from a real ansible_collections/immutable/infra tree (a copy, not a symlink: ansible-test
# resolves the working directory), with no ignore file. Needs scripts/setup.sh to have run (venv on PATH).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# outside the checkout: inside it, ansible-test would list files through the checkout's git and find none
work="$(mktemp -d "${TMPDIR:-/tmp}/immutable-infra-sanity.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tree="$work/ansible_collections/immutable/infra"

# ansible-test bootstraps pip in each of its virtualenvs with a get-pip script it downloads from a host we cannot
# reach; it first looks in its cache, so a stand-in there bootstraps pip with ensurepip and installs the rest from
# the package index pip is configured with.
pip_version="$(python - <<'PY'
import ansible_test._internal.python_requirements as r
import inspect, re
print(re.search(r"pip='([0-9.]+)'", inspect.getsource(r.get_venv_packages)).group(1))
PY
)"
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$cache" ]; then
    mkdir -p "$(dirname "$cache")"
    cat >"$cache" <<'PY'
# Offline stand-in for get-pip.py, written by immutable.infra scripts/sanity.sh.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q"] + args)
PY
fi

mkdir -p "$tree"
rsync -a --delete \
    --exclude /.git --exclude /.venv --exclude /.local --exclude /tests/output --exclude /artifacts --exclude /ledger \
    --exclude .pytest_cache --exclude .ruff_cache --exclude __pycache__ --exclude .ansible --exclude '*.tar.gz' \
    "$root/" "$tree/"
# the dependencies must sit in the same collection root for the import and validate-modules tests
site="$(python -c 'import ansible_collections, os; print([p for p in ansible_collections.__path__ if "site-packages" in p][0])')"
for dep in amazon/aws community/docker; do
    mkdir -p "$work/ansible_collections/${dep%/*}"
    ln -sfn "$site/$dep" "$work/ansible_collections/$dep"
done
cd "$tree"
[ ! -e tests/sanity ] || [ -z "$(find tests/sanity -name 'ignore-*.txt' -size +0 2>/dev/null)" ] \
    || { echo "ERROR: tests/sanity ignore files are not allowed" >&2; exit 1; }
ansible-test sanity --venv --python "$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
    --color no "$@"
