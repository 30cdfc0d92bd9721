#!/usr/bin/env bash
# The ansible-core version matrix: for each version, a virtualenv of its own with that ansible-core from the package
# index, then ansible-test sanity (scripts/sanity.sh) and the unit tests (tests/unit) in it; a pass/fail table at the
# end, non-zero exit when any cell failed. meta/runtime.yml and galaxy.yml's requires_ansible state what passes here.
#
# Knobs (environment):
#   IMMUTABLE_MATRIX_CORE     ansible-core release lines       (default: "2.17 2.18 2.19")
#   IMMUTABLE_MATRIX_SANITY   the sanity tests run per version (default: the ones whose result depends on the core
#                             version: ansible-doc validate-modules import; "all" for the whole suite, pylint
#                             included; the test-all.sh `sanity` step runs the whole suite on the pinned version)
#   IMMUTABLE_MATRIX_DIR      where the virtualenvs live        (default: <state dir>/matrix)
# ansible-core 2.20 and later need Python >= 3.12; on an older interpreter the script says so and skips that line
# (the table shows it as "n/a", never as a pass).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${IMMUTABLE_STATE_DIR:-$root/.local}"
matrix_dir="${IMMUTABLE_MATRIX_DIR:-$state/matrix}"
lines="${IMMUTABLE_MATRIX_CORE:-2.17 2.18 2.19}"
sanity_tests="${IMMUTABLE_MATRIX_SANITY:-ansible-doc validate-modules import}"
python="${IMMUTABLE_PYTHON:-python3}"
main_python="${IMMUTABLE_VENV:-$root/.venv}/bin/python"
[ -x "$main_python" ] || { echo "ERROR: $main_python missing: run scripts/setup.sh first" >&2; exit 1; }
mkdir -p "$matrix_dir"

# the unit tests' own tools, at the versions the main virtualenv pins
pin() { grep -E "^$1==" "$root/requirements-dev.txt"; }
tools=("$(pin pytest)" "$(pin boto3)" "$(pin botocore)" "$(pin "moto\\[server\\]")")
# and jsonschema (the record schema checks in tests/conftest.py), at the main virtualenv's version
tools+=("jsonschema==$("$main_python" -c 'import importlib.metadata as m; print(m.version("jsonschema"))')")
# amazon.aws and community.docker come from the main virtualenv's `ansible` package (one copy for every line)
main_site="$("$main_python" -c 'import ansible_collections, os; print([p for p in ansible_collections.__path__ if "site-packages" in p][0])')"
py_version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

prepare_venv() {
    # a virtualenv per release line, rebuilt only when what it should hold changed
    local line="$1" venv="$2"
    local want
    want="$(printf '%s\n' "ansible-core==$line.*" "${tools[@]}" "$py_version" | sha256sum | cut -d' ' -f1)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.matrix.sha256" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "ansible-core==$line.*" "${tools[@]}" \
        >"$venv.pip.log" 2>&1 || { echo "ERROR: pip install ansible-core==$line.* failed (see $venv.pip.log)" >&2; return 1; }
    local site
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    mkdir -p "$site/ansible_collections"
    ln -sfn "$main_site/amazon" "$site/ansible_collections/amazon"
    ln -sfn "$main_site/community" "$site/ansible_collections/community"
    echo "$want" >"$venv/.matrix.sha256"
}

declare -A result
for line in $lines; do
    venv="$matrix_dir/core-$line"
    printf '\n===== ansible-core %s =====\n' "$line"
    if ! "$python" -c "import sys; sys.exit(0 if sys.version_info >= (3, 12) or tuple(map(int, '$line'.split('.'))) < (2, 20) else 1)"; then
        echo "ansible-core $line needs Python >= 3.12; $python is $py_version: not run"
        result[$line]="n/a (needs Python >= 3.12)|n/a|-|-"
        continue
    fi
    start=$SECONDS
    if ! prepare_venv "$line" "$venv"; then
        result[$line]="venv failed|not run|-|$((SECONDS - start))"
        continue
    fi
    version="$("$venv/bin/ansible" --version | sed -n '1s/.*core \([0-9.]*\).*/\1/p')"
    args=()
    if [ "$sanity_tests" != all ]; then
        for test in $sanity_tests; do args+=(--test "$test"); done
    fi
    # tests written against ansible-core 2.19's module test API (ansible.module_utils.testing.patch_module_args) do
    # not import on older lines; older lines offer no public way to pass module arguments in process (only the
    # private basic._ANSIBLE_ARGS), so they are not run there, and the table says how many files that is
    ignore=()
    if ! "$venv/bin/python" -c 'import ansible.module_utils.testing' 2>/dev/null; then
        while IFS= read -r file; do ignore+=("--ignore=$file"); done \
            < <(cd "$root" && grep -rl --include='test_*.py' 'ansible.module_utils.testing' tests/unit | sort)
    fi
    sanity=pass unit=pass
    # the matrix venv first on PATH: sanity.sh and pytest use its python, ansible-test and ansible-core
    PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" bash "$root/scripts/sanity.sh" "${args[@]}" || sanity=FAIL
    (cd "$root" && PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" python -m pytest tests/unit -q -p no:cacheprovider "${ignore[@]}") \
        || unit=FAIL
    [ "${#ignore[@]}" -eq 0 ] || unit="$unit (${#ignore[@]} files not run: need 2.19's module test API)"
    result[$line]="$sanity|$unit|$version|$((SECONDS - start))"
done

printf '\n===== ansible-core matrix (sanity: %s) =====\n' "$sanity_tests"
printf '%-6s %-10s %-28s %-8s %s\n' line version sanity seconds unit
failed=0
for line in $lines; do
    IFS='|' read -r sanity unit version took <<<"${result[$line]}"
    printf '%-6s %-10s %-28s %-8s %s\n' "$line" "$version" "$sanity" "$took" "$unit"
    [[ "$sanity $unit" == *FAIL* || "$sanity" == "venv failed" ]] && failed=1
done
exit "$failed"
