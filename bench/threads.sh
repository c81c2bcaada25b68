#!/usr/bin/env bash
# bench/threads.sh - where the server's CPU goes under PATCH: each thread's
# CPU seconds (utime + stime from /proc/PID/task/*/stat, summed by thread
# name) during one wrk run at 64 connections.
#
#   bench/threads.sh BINARY [NAME=VALUE...]   # the pairs go to the server's environment
#
# Starts BINARY on a fresh database in a temporary folder, seeds one tenant
# with 1,000 devices (bench/seed.py), warms up for 3 s, then measures
# DURATION (default 8s) of bench/wrk/patch_many.lua and prints wrk's
# WRKRESULT line and one line per thread name. Env: PORT=18191 DURATION=8s
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,11p' "${BASH_SOURCE[0]}" >&2; exit 64; }
BIN=$1
shift
PORT=${PORT:-18191}
DURATION=${DURATION:-8s}
W=$(mktemp -d /tmp/devicehub-threads.XXXX)
SECRET=threads-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
env "$@" DEVICEHUB__SERVER__BIND=127.0.0.1:$PORT DEVICEHUB__STORAGE__PATH=$W/devicehub.redb \
    DEVICEHUB__AUTH__HS256_SECRET=$SECRET RUST_LOG=warn "$BIN" serve >"$W/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do
    kill -0 $PID || { cat "$W/server.log" >&2; exit 1; }
    sleep 0.01
done
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$SECRET" 1 1000 "$W/seed" >/dev/null
patch() {
    WRK_TOKEN=$(cat "$W/seed/admin.txt") WRK_IDS_FILE=$W/seed/ids.txt \
        wrk -t2 -c64 -d"$1" -s "$ROOT/bench/wrk/patch_many.lua" "http://127.0.0.1:$PORT"
}
patch 3s >/dev/null
cpu() {
    for t in /proc/$PID/task/*; do
        echo "$(tr ' ' '_' <"$t/comm") $(awk '{print $14 + $15}' "$t/stat")"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
cpu >"$W/before"
patch "$DURATION" | grep WRKRESULT
cpu >"$W/after"
join "$W/before" "$W/after" | awk -v d="$DURATION" '{printf "%s %.2f s of %s\n", $1, ($3 - $2) / 100, d}'
