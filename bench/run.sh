#!/usr/bin/env bash
# bench/run.sh - measures devicehub with wrk: GET one device, a list of 100,
# the device's `me`, PATCH over many devices, then memory under a mixed load.
#
#   bench/run.sh            # 1,000 devices in one tenant (the main table)
#   bench/run.sh big        # 1,000,000 devices over 1,000 tenants
#   bench/run.sh pg         # as the first, on PostgreSQL (a throwaway cluster
#                           # on this box, fsync on: scripts/pg-cluster.sh)
#
# It needs nothing outside this repository: the release binary (built here),
# wrk (installed with apt-get when missing and run as root), python3, curl.
# Builds the release binary, starts it on 127.0.0.1 with a fresh database,
# seeds it through the API (bench/seed.py), runs the product rows with
# bench/wrk/*.lua, and prints the table (bench/report.py).
#
# Peers, optional: when a peer-benchmark folder exists (SHARED_BENCH, default
# ../shared/bench beside the repository) and PEERS is not 0, its
# bench_all.sh first measures the HTTP-stack ceiling and PocketBase on the
# same matrix (small mode only), and the report adds the ratios to them.
# Without it the ratios print n/a.
#
# Env (defaults): PORT=18100 RUNS=2 DURATION=10s MIXED_DURATION=10s PAUSE=2
#   CONNS="64 1" PEERS=1 SHARED_BENCH=../shared/bench
#   PEERBENCH_DIR=/tmp/peerbench RESULTS=<tsv>
# A short trial: PEERS=0 RUNS=1 DURATION=2s MIXED_DURATION=2s PAUSE=0 bench/run.sh
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
MODE=${1:-small}
PORT=${PORT:-18100}
export RUNS=${RUNS:-2} DURATION=${DURATION:-10s}
MIXED_DURATION=${MIXED_DURATION:-10s}
PAUSE=${PAUSE:-2}
CONNS=${CONNS:-64 1}
export PEERBENCH_DIR=${PEERBENCH_DIR:-/tmp/peerbench}
mkdir -p "$PEERBENCH_DIR"
export RESULTS=${RESULTS:-$PEERBENCH_DIR/devicehub-$MODE-$(date +%Y%m%d-%H%M%S).tsv}
RAW_DIR=$PEERBENCH_DIR/wrk-raw
mkdir -p "$RAW_DIR"

case $MODE in
    small | big | pg) ;;
    *) echo "usage: bench/run.sh [small|big|pg]" >&2; exit 64 ;;
esac

if ! command -v wrk >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "wrk not found: installing it with apt-get" >&2
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
    fi
    command -v wrk >/dev/null || { echo "wrk not found: install it (Debian: apt-get install -y wrk)" >&2; exit 1; }
fi
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/devicehub
WORK=$(mktemp -d /tmp/devicehub-bench.XXXXXX)
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PID=
STORE_ENV=(DEVICEHUB__STORAGE__PATH="$WORK/devicehub.redb")
cleanup() {
    if [[ -n "$PID" ]]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    [[ $MODE == pg ]] && "$ROOT/scripts/pg-cluster.sh" stop "$WORK/pg"
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

start_server() {
    local started
    started=$(now)
    env DEVICEHUB__SERVER__BIND=127.0.0.1:$PORT "${STORE_ENV[@]}" \
        DEVICEHUB__AUTH__HS256_SECRET=$SECRET RUST_LOG=warn "$BIN" serve >"$WORK/server.log" 2>&1 &
    PID=$!
    until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do
        kill -0 "$PID" 2>/dev/null || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
        sleep 0.01
    done
    echo "start-up to first answer: $(elapsed "$started") s" | tee -a "$WORK/facts"
}

bad=0
# measure ENDPOINT SCRIPT URL [VAR=value…]: one TSV row per connection count
# and run, in the columns bench/report.py reads.
measure() {
    local ep=$1 script=$2 url=$3 c t run raw line vals flag rps
    shift 3
    [[ -s "$RESULTS" ]] || printf 'label\tendpoint\tconns\trun\trps\tavg_ms\tp50_ms\tp99_ms\tmax_ms\trequests\tnon2xx\tsock_errors\tlittle_ms\tflag\n' >"$RESULTS"
    for c in $CONNS; do
        t=2
        ((c < t)) && t=$c
        for run in $(seq 1 "$RUNS"); do
            raw=$RAW_DIR/product_${ep}_c${c}_run${run}.txt
            env "$@" wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$script" "$url" >"$raw" 2>&1 || true
            line=$(grep '^WRKRESULT' "$raw" || true)
            if [[ -z "$line" ]]; then
                echo "wrk gave no result for $ep c=$c run=$run; see $raw" >&2
                bad=1
                continue
            fi
            vals=$(echo "$line" | sed 's/^WRKRESULT //' | tr ' ' '\n' | cut -d= -f2 | paste -sd'\t')
            rps=$(echo "$line" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')
            flag=ok
            [[ "$line" == *"non2xx=0 sock_errors=0"* ]] || { flag=ERRORS; bad=1; }
            printf 'product\t%s\t%s\t%s\t%s\t%s\t%s\n' "$ep" "$c" "$run" "$vals" \
                "$(awk -v c="$c" -v r="$rps" 'BEGIN { printf "%.3f", (r > 0 ? c * 1000 / r : 0) }')" "$flag" | tee -a "$RESULTS"
            sleep "$PAUSE"
        done
    done
}

if [[ $MODE == big ]]; then
    TENANTS=1000 PER=1000
else
    if [[ $MODE == pg ]]; then
        chmod 755 "$WORK"
        STORE_ENV=(DEVICEHUB__STORAGE__POSTGRES_URL="$(PG_DURABLE=1 "$ROOT/scripts/pg-cluster.sh" start "$WORK/pg")")
    fi
    TENANTS=1 PER=1000
    if [[ ${PEERS:-1} != 0 && -x "$SHARED/bench_all.sh" ]]; then
        TARGETS="pb-tenant ceiling" "$SHARED/bench_all.sh" || true
    elif [[ ${PEERS:-1} != 0 ]]; then
        echo "no peer benchmarks at $SHARED: measuring devicehub alone (ratios print n/a)" >&2
    fi
fi

start_server
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$SECRET" "$TENANTS" "$PER" "$WORK/seed"
if [[ $MODE == big ]]; then
    # Start-up over the full data set.
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    start_server
fi
ID=$(head -1 "$WORK/seed/ids.txt")
READ=$(cat "$WORK/seed/read.txt") ADMIN=$(cat "$WORK/seed/admin.txt") KEY=$(cat "$WORK/seed/key.txt")
BASE=http://127.0.0.1:$PORT
REQUEST=$ROOT/bench/wrk/request.lua
PATCH=$ROOT/bench/wrk/patch_many.lua

measure get "$REQUEST" "$BASE/api/tenant/devices/$ID" WRK_TOKEN="$READ"
measure list "$REQUEST" "$BASE/api/tenant/devices?limit=100" WRK_TOKEN="$READ"
measure me "$REQUEST" "$BASE/api/device/me" WRK_TOKEN="$KEY"
# PATCH over many devices, each request a real change.
measure patch "$PATCH" "$BASE" WRK_TOKEN="$ADMIN" WRK_IDS_FILE="$WORK/seed/ids.txt"

# Memory under a mixed load (GET, me, PATCH at once), then the peak RSS.
mixed=()
WRK_TOKEN=$READ wrk -t1 -c32 -d"$MIXED_DURATION" -s "$REQUEST" "$BASE/api/tenant/devices/$ID" >"$WORK/mixed-get" &
mixed+=($!)
WRK_TOKEN=$KEY wrk -t1 -c16 -d"$MIXED_DURATION" -s "$REQUEST" "$BASE/api/device/me" >"$WORK/mixed-me" &
mixed+=($!)
WRK_TOKEN=$ADMIN WRK_IDS_FILE=$WORK/seed/ids.txt wrk -t1 -c16 -d"$MIXED_DURATION" -s "$PATCH" "$BASE" >"$WORK/mixed-patch" &
mixed+=($!)
wait "${mixed[@]}"
for kind in get me patch; do
    echo "mixed $kind: $(grep -o 'rps=[0-9.]*' "$WORK/mixed-$kind") $(grep -o 'non2xx=[0-9]*' "$WORK/mixed-$kind")" | tee -a "$WORK/facts"
done
echo "peak RSS under the mixed load: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$PID/status")" | tee -a "$WORK/facts"
if [[ $MODE != pg ]]; then
    echo "database file: $(du -h "$WORK/devicehub.redb" | cut -f1)" | tee -a "$WORK/facts"
fi

echo
echo "results: $RESULTS"
python3 "$ROOT/bench/report.py" "$RESULTS"
cat "$WORK/facts"
if [[ $bad != 0 ]]; then
    echo "some runs had errors or non-2xx answers; see $RAW_DIR" >&2
    exit 2
fi
