#!/usr/bin/env bash
# Entrypoint of the fleet's front door: one socat listener per published port.
# FLEET_FRONT_MAP is a space-separated list of listen_port=target_ip:target_port (tests/integration/fleet_hosts.py).
set -euo pipefail
: "${FLEET_FRONT_MAP:?FLEET_FRONT_MAP must list listen_port=ip:port pairs}"
for pair in ${FLEET_FRONT_MAP}; do
    socat "TCP-LISTEN:${pair%%=*},fork,reuseaddr" "TCP:${pair#*=}" &
done
wait
