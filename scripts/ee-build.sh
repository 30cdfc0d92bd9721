#!/usr/bin/env bash
# Build the execution environment of immutable.infra offline with ansible-builder (docs/execution-environment.md):
# the definition tests/ee/execution-environment.yml on the local base image, the collections from tarballs (ours from
# `ansible-galaxy collection build`, amazon.aws / community.docker / their dependency packed from the copies the
# `ansible` package installed into the virtualenv), Python packages through the machine's CA bundle.
# The collection's own dependencies (requirements.txt, bindep.txt) reach the image through meta/execution-environment.yml.
#
# Knobs: IMMUTABLE_EE_IMAGE (default immutable-infra/ee:latest). Re-runs are cached by content: a build whose
# context did not change is skipped (the image carries the context's hash as a label); Docker reuses the layers of
# the stages whose inputs did not change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${IMMUTABLE_STATE_DIR:-$root/.local}"
image="${IMMUTABLE_EE_IMAGE:-immutable-infra/ee:latest}"
base="${IMMUTABLE_BASE_IMAGE:-immutable-infra/base:bookworm}"
work="$state/ee"
ctx="$work/context"
start=$SECONDS
command -v ansible-builder >/dev/null || { echo "ERROR: ansible-builder not found: run scripts/setup.sh (requirements-dev.txt pins it)" >&2; exit 1; }
docker image inspect "$base" >/dev/null 2>&1 || { echo "ERROR: base image $base missing: run scripts/setup.sh" >&2; exit 1; }

rm -rf "$ctx"
mkdir -p "$ctx/collections"
# our collection, as it ships
rm -rf "$work/dist"
ansible-galaxy collection build --output-path "$work/dist" "$root" >/dev/null
cp "$work"/dist/immutable-infra-*.tar.gz "$ctx/collections/immutable-infra.tar.gz"
# the dependencies: an installed collection (MANIFEST.json, FILES.json, the files) has the layout of a collection
# tarball. The `ansible` package leaves out some files FILES.json lists (.github/, tests/), so the copy's FILES.json
# keeps the entries present (each checked against its checksum) and MANIFEST.json gets the new FILES.json checksum;
# `ansible-galaxy collection install --offline` then verifies every file of the tarball against them.
site="$(python -c 'import ansible_collections, os; print([p for p in ansible_collections.__path__ if "site-packages" in p][0])')"
for dep in amazon/aws community/docker community/library_inventory_filtering_v1; do
    rm -rf "$work/pack" && mkdir -p "$work/pack" && cp -a "$site/$dep/." "$work/pack/"
    python - "$work/pack" <<'PY'
import hashlib, json, os, sys
root = sys.argv[1]
def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
with open(os.path.join(root, "FILES.json")) as handle:
    files = json.load(handle)
kept = []
for entry in files["files"]:
    path = os.path.join(root, entry["name"]) if entry["name"] != "." else root
    if entry["ftype"] == "dir" and os.path.isdir(path):
        kept.append(entry)
    elif entry["ftype"] == "file" and os.path.isfile(path):
        if sha256(path) != entry["chksum_sha256"]:
            sys.exit(f"ERROR: {path} differs from its FILES.json checksum: the installed collection was modified")
        kept.append(entry)
files["files"] = kept
with open(os.path.join(root, "FILES.json"), "w") as handle:
    json.dump(files, handle, indent=4)
with open(os.path.join(root, "MANIFEST.json")) as handle:
    manifest = json.load(handle)
manifest["file_manifest_file"]["chksum_sha256"] = sha256(os.path.join(root, "FILES.json"))
with open(os.path.join(root, "MANIFEST.json"), "w") as handle:
    json.dump(manifest, handle, indent=4)
PY
    find "$work/pack" -name __pycache__ -prune -exec rm -rf {} +
    (cd "$work/pack" && shopt -s dotglob && tar --sort=name --mtime=@0 --owner=0 --group=0 -czf "$ctx/collections/${dep/\//-}.tar.gz" -- *)
done
rm -rf "$work/pack"
# pip inside the build: the machine's CA bundle, and the machine's package index if its pip config names one
cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
{
    echo "[global]"
    echo "cert = /etc/ssl/certs/immutable-ee-ca.crt"
    index="$(pip config get global.index-url 2>/dev/null || true)"
    [ -z "$index" ] || echo "index-url = $index"
} >"$ctx/pip.conf"

# content hash of everything the build reads: definition, tarballs (ours holds requirements.txt, bindep.txt and
# meta/execution-environment.yml), CA bundle, pip.conf, base image ID, ansible-builder version
# (gzip headers carry no time: --mtime above; galaxy's tarball is rebuilt but its members are hashed, not the gzip)
hash="$( {
    sha256sum "$root/tests/ee/execution-environment.yml" "$ctx/ca-certificates.crt" "$ctx/pip.conf" | cut -d' ' -f1
    for tarball in "$ctx"/collections/*.tar.gz; do tar -xzOf "$tarball" | sha256sum | cut -d' ' -f1; done
    docker image inspect -f '{{.Id}}' "$base"
    ansible-builder --version
} | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f '{{index .Config.Labels "immutable-infra.ee-context"}}' "$image" 2>/dev/null)" = "$hash" ]; then
    echo "execution environment $image is up to date (context $hash): nothing built, $((SECONDS - start)) s"
    exit 0
fi

# ansible-builder copies additional_build_files relative to the definition: give it a copy beside the context
sed -e "s#immutable-infra/ee:latest#$image#" -e "s#immutable-infra/base:bookworm#$base#" \
    "$root/tests/ee/execution-environment.yml" >"$work/execution-environment.yml"
ansible-builder build -f "$work/execution-environment.yml" -c "$work/build" -t "$image" \
    --container-runtime docker --build-arg "IMMUTABLE_EE_CONTEXT=$hash" -v 2 >"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; echo "ERROR: ansible-builder build failed (full log: $work/build.log)" >&2; exit 1; }
echo "built execution environment $image (context $hash) in $((SECONDS - start)) s"
