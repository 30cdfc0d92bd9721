#!/bin/sh
exec python3 -m http.server "${BENCH_APP_PORT:-9090}" --directory /opt/benchapp
