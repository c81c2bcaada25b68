#!/usr/bin/env bash
# bench/ops.sh - what metrics and TLS cost on GET /api/tenant/devices/{id}.
#
#   flock /tmp/cargo.lock bench/ops.sh
#
# Builds the release binary, seeds 1,000 devices in one tenant once, then
# runs rounds of `wrk -t2 -c64 -d$DURATION` against the same database with
# the server restarted in each mode, modes interleaved within a round so
# that load from elsewhere on the machine spreads over all of them:
#   off    plain HTTP, metrics.enabled=false
#   on     plain HTTP, metrics.enabled=true (the default)
#   tls    HTTPS (a self-signed certificate made with openssl), metrics on
# Prints requests/s and the server's CPU time per request (user + system,
# from /proc/PID/stat) per run, and the median of each per mode. On a machine
# shared with other work, CPU per request is the steadier figure: throughput
# moves with whatever else runs.
# Env: PORT=18200 ROUNDS=3 DURATION=10s CONNS=64
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-18200}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/devicehub
WORK=$(mktemp -d /tmp/devicehub-ops-bench.XXXXXX)
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PID=
stop_server() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

start_server() { # mode
    local scheme=http
    local -a env=(DEVICEHUB__SERVER__BIND=127.0.0.1:$PORT
        DEVICEHUB__STORAGE__PATH=$WORK/devicehub.redb
        DEVICEHUB__AUTH__HS256_SECRET=$SECRET RUST_LOG=warn)
    case $1 in
        off) env+=(DEVICEHUB__METRICS__ENABLED=false) ;;
        tls) env+=(DEVICEHUB__SERVER__TLS_CERT_FILE=$WORK/cert.pem
            DEVICEHUB__SERVER__TLS_KEY_FILE=$WORK/key.pem)
            scheme=https ;;
    esac
    env "${env[@]}" "$BIN" serve >"$WORK/server-$1.log" 2>&1 &
    PID=$!
    until curl -fsk "$scheme://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.05; done
    BASE=$scheme://127.0.0.1:$PORT
}

start_server on
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$SECRET" 1 1000 "$WORK/seed" >/dev/null
stop_server
ID=$(head -1 "$WORK/seed/ids.txt")
READ=$(cat "$WORK/seed/read.txt")

TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

declare -A RESULTS CPU
for round in $(seq 1 "$ROUNDS"); do
    for mode in off on tls; do
        start_server "$mode"
        # A short warm-up (connections, TLS sessions, caches).
        wrk -t2 -c"$CONNS" -d2s -H "Authorization: Bearer $READ" "$BASE/api/tenant/devices/$ID" >/dev/null
        before=$(cpu_ticks)
        out=$(wrk -t2 -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $READ" "$BASE/api/tenant/devices/$ID")
        after=$(cpu_ticks)
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        requests=$(echo "$out" | awk '/requests in/ {print $1}')
        us=$(echo "scale=6; ($after - $before) * $TICK_US / $requests" | bc)
        if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
            echo "$out" >&2
            echo "round $round $mode: errors (see above)" >&2
            exit 2
        fi
        printf 'round %s\t%s\t%s req/s\t%s us CPU/request\n' "$round" "$mode" "$rps" "$us"
        RESULTS[$mode]+="$rps "
        CPU[$mode]+="$us "
        stop_server
        sleep 1
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
off=$(echo "${RESULTS[off]}" | median)
on=$(echo "${RESULTS[on]}" | median)
tls=$(echo "${RESULTS[tls]}" | median)
echo
echo "median req/s: metrics off $off, metrics on $on, TLS (metrics on) $tls"
cpu_off=$(echo "${CPU[off]}" | median)
cpu_on=$(echo "${CPU[on]}" | median)
cpu_tls=$(echo "${CPU[tls]}" | median)
echo "median server CPU per request: metrics off $cpu_off us, on $cpu_on us, TLS $cpu_tls us"
pct() { printf '%.1f' "$(echo "scale=6; $1" | bc)"; }
echo "metrics cost: $(pct "(1 - $on / $off) * 100") % of req/s, $(pct "($cpu_on / $cpu_off - 1) * 100") % of CPU per request"
echo "TLS / plain (both metrics on): $(pct "$tls * 100 / $on") % of req/s"
