#!/usr/bin/env bash
# Entrypoint of a fleet test host (tests/integration/fleet_hosts.py starts it; docs/testing-fleet.md).
#   - registry relay: 127.0.0.1:$FLEET_REGISTRY_PORT -> $FLEET_REGISTRY_TARGET (the fleet's registry container), so
#     the reference the controller pushed (127.0.0.1:5000/app@sha256:...) pulls as is, with the same credentials
#   - front-door relays: 0.0.0.0:(port + $FLEET_FRONT_OFFSET) -> 127.0.0.1:port for every port of $FLEET_FRONT_PORTS
#     (first-last, or none), so a service bound to 127.0.0.1 or 0.0.0.0 inside the host answers the front door
#   - the host's own Docker Engine in the foreground, its containers under the cgroup /$FLEET_CGROUP_PARENT
set -euo pipefail

: "${FLEET_CGROUP_PARENT:?FLEET_CGROUP_PARENT must name the cgroup parent of this host}"
FLEET_REGISTRY_PORT="${FLEET_REGISTRY_PORT:-5000}"
FLEET_REGISTRY_TARGET="${FLEET_REGISTRY_TARGET:-registry.test:5000}"
FLEET_FRONT_PORTS="${FLEET_FRONT_PORTS:-18000-18004}"
FLEET_FRONT_OFFSET="${FLEET_FRONT_OFFSET:-10000}"

mkdir -p /var/log/fleet

# Debian defaults to iptables-nft; fall back to the legacy backend when this kernel has no nf_tables
if ! iptables-nft -n -L >/dev/null 2>&1 && iptables-legacy -n -L >/dev/null 2>&1; then
    update-alternatives --quiet --set iptables /usr/sbin/iptables-legacy
    update-alternatives --quiet --set ip6tables /usr/sbin/ip6tables-legacy
fi

socat "TCP-LISTEN:${FLEET_REGISTRY_PORT},bind=127.0.0.1,fork,reuseaddr" "TCP:${FLEET_REGISTRY_TARGET}" \
    >/var/log/fleet/registry-relay.log 2>&1 &

if [ "$FLEET_FRONT_PORTS" != none ]; then
    first="${FLEET_FRONT_PORTS%-*}"
    last="${FLEET_FRONT_PORTS#*-}"
    for ((port = first; port <= last; port++)); do
        socat "TCP-LISTEN:$((port + FLEET_FRONT_OFFSET)),fork,reuseaddr" "TCP:127.0.0.1:${port}" \
            >>/var/log/fleet/front-relay.log 2>&1 &
    done
fi

exec dockerd \
    --cgroup-parent="/${FLEET_CGROUP_PARENT}" \
    --storage-driver=overlay2 \
    --insecure-registry="${FLEET_REGISTRY_TARGET}" \
    --log-level=warn
