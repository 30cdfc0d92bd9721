#!/usr/bin/env bash
# Idempotent set-up for immutable.infra: a pinned virtualenv, a Docker Engine that answers, a local registry with
# htpasswd auth on 127.0.0.1, a Debian bookworm base image and the local example's signing key pair. Sourced by
# scripts/bake-default.sh and scripts/test-all.sh; can also be run on its own. Every failure prints one line that
# names the problem and the fix.
#
# Knobs (environment):
#   IMMUTABLE_VENV            virtualenv path                      (default: <repo>/.venv)
#   IMMUTABLE_STATE_DIR       generated state: registry, logs      (default: <repo>/.local)
#   IMMUTABLE_REGISTRY_PORT   local registry port on 127.0.0.1     (default: 5000)
#   IMMUTABLE_BASE_IMAGE      base image name                      (default: immutable-infra/base:bookworm)
#   IMMUTABLE_DEBIAN_MIRROR   Debian mirror for debootstrap        (default: read from this machine's apt sources)
#   IMMUTABLE_SETUP_SKIP      space-separated parts to skip: venv docker registry base_image signing_key
#   IMMUTABLE_SETUP_EXTRA     space-separated optional parts: base_image_trixie (Debian 13 image for Molecule)
#   IMMUTABLE_BASE_IMAGE_TRIXIE  Debian 13 base image name            (default: immutable-infra/base:trixie)

set -euo pipefail

IMMUTABLE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMMUTABLE_VENV="${IMMUTABLE_VENV:-$IMMUTABLE_ROOT/.venv}"
IMMUTABLE_STATE_DIR="${IMMUTABLE_STATE_DIR:-$IMMUTABLE_ROOT/.local}"
IMMUTABLE_REGISTRY_PORT="${IMMUTABLE_REGISTRY_PORT:-5000}"
IMMUTABLE_BASE_IMAGE="${IMMUTABLE_BASE_IMAGE:-immutable-infra/base:bookworm}"
IMMUTABLE_BASE_IMAGE_TRIXIE="${IMMUTABLE_BASE_IMAGE_TRIXIE:-immutable-infra/base:trixie}"
IMMUTABLE_SETUP_EXTRA="${IMMUTABLE_SETUP_EXTRA:-}"
IMMUTABLE_SETUP_SKIP="${IMMUTABLE_SETUP_SKIP:-}"
export IMMUTABLE_ROOT IMMUTABLE_VENV IMMUTABLE_STATE_DIR IMMUTABLE_REGISTRY_PORT IMMUTABLE_BASE_IMAGE IMMUTABLE_BASE_IMAGE_TRIXIE

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
skipped() { [[ " $IMMUTABLE_SETUP_SKIP " == *" $1 "* ]]; }
is_root() { [ "$(id -u)" -eq 0 ]; }

apt_install() {
    # Install the Debian packages that are missing; needs root.
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get: install them with your package manager, then re-run"
    is_root || die "missing Debian packages ${missing[*]}: run this as root, or install them first (apt-get install ${missing[*]})"
    log "installing Debian packages: ${missing[*]}"
    local stamp="$IMMUTABLE_STATE_DIR/apt-updated"
    if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360 2>/dev/null)" ]; then
        apt-get update -qq >"$IMMUTABLE_STATE_DIR/apt.log" 2>&1 || die "apt-get update failed (see $IMMUTABLE_STATE_DIR/apt.log): check the machine's apt sources"
        touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$IMMUTABLE_STATE_DIR/apt.log" 2>&1 \
        || die "apt-get install ${missing[*]} failed (see $IMMUTABLE_STATE_DIR/apt.log)"
}

check_python() {
    local py="${IMMUTABLE_PYTHON:-python3}"
    command -v "$py" >/dev/null || die "python3 not found: install Python 3.11 or newer (apt-get install python3 python3-venv) or set IMMUTABLE_PYTHON"
    "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "$("$py" --version 2>&1) is too old: ansible-core 2.19 needs Python 3.11 or newer; set IMMUTABLE_PYTHON to a newer interpreter"
    "$py" -c 'import venv, ensurepip' 2>/dev/null || {
        is_root && apt_install python3-venv
        "$py" -c 'import venv, ensurepip' 2>/dev/null || die "$py has no venv/ensurepip module: apt-get install python3-venv"
    }
    IMMUTABLE_PYTHON="$py"
}

setup_venv() {
    check_python
    local req="$IMMUTABLE_ROOT/requirements-dev.txt"
    local stamp="$IMMUTABLE_VENV/.requirements.sha256"
    local want
    want="$(sha256sum "$req" | cut -d' ' -f1)"
    if [ -x "$IMMUTABLE_VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        log "virtualenv up to date: $IMMUTABLE_VENV"
    else
        log "installing pinned tools into $IMMUTABLE_VENV (first run: about 2 minutes)"
        [ -x "$IMMUTABLE_VENV/bin/python" ] || "$IMMUTABLE_PYTHON" -m venv "$IMMUTABLE_VENV"
        "$IMMUTABLE_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >"$IMMUTABLE_STATE_DIR/pip.log" 2>&1 \
            || die "pip install -r requirements-dev.txt failed (see $IMMUTABLE_STATE_DIR/pip.log): check that PyPI (or your PIP_INDEX_URL) is reachable"
        echo "$want" >"$stamp"
    fi
    export PATH="$IMMUTABLE_VENV/bin:$PATH"
    export VIRTUAL_ENV="$IMMUTABLE_VENV"
}

docker_answers() { timeout 20 docker info >/dev/null 2>&1; }

setup_docker() {
    if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
        if ! command -v docker >/dev/null || ! docker_answers; then
            apt_install docker.io
        fi
    fi
    docker_answers && { log "Docker Engine answers"; return 0; }
    command -v dockerd >/dev/null || die "Docker does not answer and dockerd is not installed: install docker.io (apt-get install docker.io) or point DOCKER_HOST at a running engine"
    is_root || die "Docker does not answer and starting dockerd needs root: start the Docker service (systemctl start docker) or run as root"
    log "starting dockerd (log: $IMMUTABLE_STATE_DIR/dockerd.log)"
    nohup dockerd >"$IMMUTABLE_STATE_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker_answers && { log "Docker Engine answers"; return 0; }
        sleep 1
    done
    die "dockerd did not answer within 60 s (see $IMMUTABLE_STATE_DIR/dockerd.log)"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

setup_registry() {
    apt_install docker-registry apache2-utils
    local dir="$IMMUTABLE_STATE_DIR/registry"
    mkdir -p "$dir/data"
    chmod 700 "$dir"
    local creds="$dir/credentials.env"
    if [ ! -s "$creds" ] || [ ! -s "$dir/htpasswd" ]; then
        local password
        password="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)"
        umask 077
        printf 'IMMUTABLE_REGISTRY_USER=%s\nIMMUTABLE_REGISTRY_PASSWORD=%s\n' "bake" "$password" >"$creds"
        htpasswd -Bbc "$dir/htpasswd" bake "$password" >/dev/null 2>&1
        umask 022
        log "generated registry credentials in $creds"
    fi
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$IMMUTABLE_REGISTRY_PORT
  secret: $(sha256sum "$creds" | cut -c1-32)
auth:
  htpasswd:
    realm: immutable-infra
    path: $dir/htpasswd
EOF
    local pidfile="$dir/registry.pid"
    # the pid file's process must be this registry: after a reboot or a kill the pid may be another process's
    if [ -f "$pidfile" ] && tr '\0' ' ' <"/proc/$(cat "$pidfile")/cmdline" 2>/dev/null | grep -qF "serve $dir/config.yml"; then
        log "registry already running on 127.0.0.1:$IMMUTABLE_REGISTRY_PORT (pid $(cat "$pidfile"))"
    else
        if port_in_use "$IMMUTABLE_REGISTRY_PORT"; then
            die "port 127.0.0.1:$IMMUTABLE_REGISTRY_PORT is taken by another process: stop it or set IMMUTABLE_REGISTRY_PORT to a free port"
        fi
        local bin
        bin="$(command -v docker-registry || echo /usr/bin/docker-registry)"
        nohup "$bin" serve "$dir/config.yml" >"$dir/registry.log" 2>&1 </dev/null &
        echo $! >"$pidfile"
        for _ in $(seq 1 30); do
            port_in_use "$IMMUTABLE_REGISTRY_PORT" && break
            sleep 0.5
        done
        port_in_use "$IMMUTABLE_REGISTRY_PORT" || die "registry did not start on 127.0.0.1:$IMMUTABLE_REGISTRY_PORT (see $dir/registry.log)"
        log "registry started on 127.0.0.1:$IMMUTABLE_REGISTRY_PORT (credentials: $creds)"
    fi
    export IMMUTABLE_REGISTRY="127.0.0.1:$IMMUTABLE_REGISTRY_PORT"
    export IMMUTABLE_REGISTRY_CREDENTIALS="$creds"
}

debian_mirror() {
    # The machine's own Debian mirror, so nothing names a registry host: IMMUTABLE_DEBIAN_MIRROR wins.
    if [ -n "${IMMUTABLE_DEBIAN_MIRROR:-}" ]; then echo "$IMMUTABLE_DEBIAN_MIRROR"; return; fi
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -n1)"
    [ -n "$uri" ] || uri="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1)"
    echo "$uri"
}

debian_security_mirror() {
    local uri
    uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -- '-security' | head -n1)"
    [ -n "$uri" ] || uri="$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -- '-security' | head -n1)"
    echo "${IMMUTABLE_DEBIAN_SECURITY_MIRROR:-$uri}"
}

setup_base_image() { build_base_image "$IMMUTABLE_BASE_IMAGE" bookworm; }

# Debian 13, the second platform of the Molecule scenarios: built only where it is needed (test-all's molecule step,
# or IMMUTABLE_SETUP_EXTRA=base_image_trixie), about a minute the first time.
setup_base_image_trixie() { build_base_image "$IMMUTABLE_BASE_IMAGE_TRIXIE" trixie; }

build_base_image() {
    # build_base_image IMAGE SUITE: a minimal Debian SUITE image debootstrapped from the machine's mirror, updated once
    local image="$1" suite="$2"
    if docker image inspect "$image" >/dev/null 2>&1; then
        log "base image present: $image"
        return 0
    fi
    # two set-ups at once must not debootstrap twice: the second waits, then finds the image
    exec 9>"$IMMUTABLE_STATE_DIR/base-image.lock"
    flock 9
    if docker image inspect "$image" >/dev/null 2>&1; then
        log "base image present: $image"
        return 0
    fi
    apt_install debootstrap
    is_root || die "building the base image with debootstrap needs root: run as root, or docker load/tag an image as $image"
    [ -e "/usr/share/debootstrap/scripts/$suite" ] || die "debootstrap does not know Debian $suite: upgrade debootstrap (apt-get install debootstrap)"
    local mirror security
    mirror="$(debian_mirror)"
    security="$(debian_security_mirror)"
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt/sources.list(.d): set IMMUTABLE_DEBIAN_MIRROR"
    # the partial rootfs is removed whatever happens, so a failed build leaves nothing behind
    IMMUTABLE_ROOTFS="$(mktemp -d "$IMMUTABLE_STATE_DIR/rootfs.XXXXXX")"
    trap 'rm -rf "$IMMUTABLE_ROOTFS"' EXIT
    local rootfs="$IMMUTABLE_ROOTFS"
    log "building $image with debootstrap ($suite) from $mirror (about a minute)"
    if ! debootstrap --variant=minbase --include=python3,python3-apt,ca-certificates "$suite" "$rootfs" "$mirror" \
        >"$IMMUTABLE_STATE_DIR/debootstrap-$suite.log" 2>&1; then
        die "debootstrap failed (see $IMMUTABLE_STATE_DIR/debootstrap-$suite.log): check IMMUTABLE_DEBIAN_MIRROR ($mirror) and the network"
    fi
    {
        echo "deb $mirror $suite main"
        echo "deb $mirror $suite-updates main"
        [ -n "$security" ] && echo "deb $security $suite-security main"
    } >"$rootfs/etc/apt/sources.list"
    # no stale package lists or caches: the first apt task of a bake refreshes them (its cache_valid_time sees none)
    rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/cache/apt/*.bin "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/dev/*
    local staging="$image-staging" updater="immutable-infra-base-update-$suite"
    tar -C "$rootfs" -c . | docker import - "$staging" >/dev/null || die "docker import of the base image failed"
    # Security updates go in once here rather than in every cold bake's unattended-upgrade run.
    log "applying Debian updates to the base image"
    docker rm -f "$updater" >/dev/null 2>&1 || true
    if ! docker run --name "$updater" "$staging" sh -c \
        'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade \
         && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin' >"$IMMUTABLE_STATE_DIR/base-update-$suite.log" 2>&1; then
        docker rm -f "$updater" >/dev/null 2>&1
        docker image rm "$staging" >/dev/null 2>&1
        die "updating the base image failed (see $IMMUTABLE_STATE_DIR/base-update-$suite.log): check the Debian mirror"
    fi
    docker commit \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL org.opencontainers.image.title=immutable-infra-base org.opencontainers.image.version=$suite" \
        "$updater" "$image" >/dev/null || die "docker commit of the base image failed"
    docker rm -f "$updater" >/dev/null
    docker image rm "$staging" >/dev/null
    rm -rf "$IMMUTABLE_ROOTFS"
    trap - EXIT
    log "base image built: $image"
}

setup_signing_key() {
    # the local example's signing key pair (docs/supply-chain.md, "Signatures"): made once, kept under the state
    # directory (git ignores it), never printed; a team uses its own key from a vault instead
    local dir="$IMMUTABLE_STATE_DIR/signing"
    if [ -s "$dir/signing.pem" ] && [ -s "$dir/signing.pub.pem" ]; then
        log "signing key present ($dir/signing.pem)"
        return
    fi
    command -v openssl >/dev/null 2>&1 || apt_install openssl
    mkdir -p "$dir"
    chmod 700 "$dir"
    (
        umask 077
        openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null \
            | openssl pkcs8 -topk8 -nocrypt -out "$dir/signing.pem.new" \
            || die "could not make the signing key with openssl in $dir: check that openssl works, or set IMMUTABLE_SETUP_SKIP=signing_key"
        openssl pkey -in "$dir/signing.pem.new" -pubout -out "$dir/signing.pub.pem" 2>/dev/null \
            || die "could not write the public key of $dir/signing.pem.new with openssl"
    )
    mv "$dir/signing.pem.new" "$dir/signing.pem"
    log "generated the local example's signing key $dir/signing.pem (public key: $dir/signing.pub.pem)"
}

link_collection() {
    # ansible.cfg points collections_path here, so FQCNs resolve to this checkout
    local parent="$IMMUTABLE_STATE_DIR/collections/ansible_collections/immutable"
    mkdir -p "$parent"
    ln -sfn "$IMMUTABLE_ROOT" "$parent/infra"
    export ANSIBLE_COLLECTIONS_PATH="$IMMUTABLE_STATE_DIR/collections"
}

immutable_setup() {
    mkdir -p "$IMMUTABLE_STATE_DIR"
    link_collection
    skipped venv || setup_venv
    skipped docker || setup_docker
    skipped registry || setup_registry
    skipped base_image || setup_base_image
    skipped signing_key || setup_signing_key
    [[ " $IMMUTABLE_SETUP_EXTRA " != *" base_image_trixie "* ]] || setup_base_image_trixie
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    immutable_setup
    log "ready: venv $IMMUTABLE_VENV, registry ${IMMUTABLE_REGISTRY:-skipped}, base image $IMMUTABLE_BASE_IMAGE"
fi
