#!/usr/bin/env bash
# bench/run.sh - devicehub side by side with the HTTP-stack ceiling and
# PocketBase (../shared/bench), same wrk matrix, one target at a time.
#
#   bench/run.sh            # 1,000 devices in one tenant (the main table)
#   bench/run.sh big        # 1,000,000 devices over 1,000 tenants (product only)
#
# Builds the release binary, starts it on 127.0.0.1 with a fresh database,
# seeds it through the API (bench/seed.py), runs the peers through
# ../shared/bench/bench_all.sh (skipped with PEERS=0 or in big mode), then the
# product rows, and prints the ratio table (bench/report.py).
# Env: PORT=18100 RUNS=2 DURATION=10s SHARED_BENCH=../shared/bench
#      PEERBENCH_DIR=/tmp/peerbench RESULTS=<tsv>
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
MODE=${1:-small}
PORT=${PORT:-18100}
export RUNS=${RUNS:-2} DURATION=${DURATION:-10s}
export PEERBENCH_DIR=${PEERBENCH_DIR:-/tmp/peerbench}
mkdir -p "$PEERBENCH_DIR"
export RESULTS=${RESULTS:-$PEERBENCH_DIR/devicehub-$MODE-$(date +%Y%m%d-%H%M%S).tsv}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/devicehub
WORK=$(mktemp -d /tmp/devicehub-bench.XXXXXX)
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
PID=
cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_server() {
    local started=$(date +%s.%N)
    DEVICEHUB__SERVER__BIND=127.0.0.1:$PORT DEVICEHUB__STORAGE__PATH=$WORK/devicehub.redb \
        DEVICEHUB__AUTH__HS256_SECRET=$SECRET RUST_LOG=warn "$BIN" serve >"$WORK/server.log" 2>&1 &
    PID=$!
    until curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; do sleep 0.01; done
    echo "start-up to first answer: $(echo "$(date +%s.%N) - $started" | bc) s" | tee -a "$WORK/facts"
}

if [[ $MODE == big ]]; then
    TENANTS=1000 PER=1000
else
    TENANTS=1 PER=1000
    if [[ ${PEERS:-1} == 1 ]]; then
        TARGETS="pb-tenant ceiling" "$SHARED/bench_all.sh" || true
    fi
fi

start_server
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$SECRET" "$TENANTS" "$PER" "$WORK/seed"
if [[ $MODE == big ]]; then
    # Start-up over the full data set.
    kill "$PID"; wait "$PID" 2>/dev/null || true
    start_server
fi
ID=$(head -1 "$WORK/seed/ids.txt")
READ=$(cat "$WORK/seed/read.txt") ADMIN=$(cat "$WORK/seed/admin.txt") KEY=$(cat "$WORK/seed/key.txt")
BASE=http://127.0.0.1:$PORT

"$SHARED/wrk_matrix.sh" product "$READ" \
    get:GET:"$BASE/api/tenant/devices/$ID" \
    list:GET:"$BASE/api/tenant/devices?limit=100"
"$SHARED/wrk_matrix.sh" product "$KEY" me:GET:"$BASE/api/device/me"

# PATCH over many devices, each request a real change (bench/wrk/patch_many.lua).
for c in 64 1; do
    t=2; ((c < t)) && t=$c
    for run in $(seq 1 "$RUNS"); do
        raw=$PEERBENCH_DIR/wrk-raw/product_patch_c${c}_run${run}.txt
        mkdir -p "$(dirname "$raw")"
        WRK_TOKEN=$ADMIN WRK_IDS_FILE=$WORK/seed/ids.txt \
            wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$ROOT/bench/wrk/patch_many.lua" "$BASE" >"$raw" 2>&1 || true
        line=$(grep '^WRKRESULT' "$raw")
        vals=$(echo "$line" | sed 's/^WRKRESULT //' | tr ' ' '\n' | cut -d= -f2 | paste -sd'\t')
        rps=$(echo "$line" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p')
        flag=ok; [[ "$line" == *"non2xx=0 sock_errors=0"* ]] || flag=ERRORS
        printf 'product\tpatch\t%s\t%s\t%s\t%s\t%s\n' "$c" "$run" "$vals" "$(echo "scale=3; $c*1000/$rps" | bc)" "$flag" | tee -a "$RESULTS"
        sleep 2
    done
done

# Memory under a mixed load (GET, me, PATCH at once), then the peak RSS.
mixed=()
WRK_TOKEN=$READ WRK_METHOD=GET wrk -t1 -c32 -d10s -s "$SHARED/wrk/bench.lua" "$BASE/api/tenant/devices/$ID" >"$WORK/mixed-get" &
mixed+=($!)
WRK_TOKEN=$KEY WRK_METHOD=GET wrk -t1 -c16 -d10s -s "$SHARED/wrk/bench.lua" "$BASE/api/device/me" >"$WORK/mixed-me" &
mixed+=($!)
WRK_TOKEN=$ADMIN WRK_IDS_FILE=$WORK/seed/ids.txt wrk -t1 -c16 -d10s -s "$ROOT/bench/wrk/patch_many.lua" "$BASE" >"$WORK/mixed-patch" &
mixed+=($!)
wait "${mixed[@]}"
for kind in get me patch; do
    echo "mixed $kind: $(grep -o 'rps=[0-9.]*' "$WORK/mixed-$kind") $(grep -o 'non2xx=[0-9]*' "$WORK/mixed-$kind")" | tee -a "$WORK/facts"
done
echo "peak RSS under the mixed load: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' /proc/$PID/status)" | tee -a "$WORK/facts"
echo "database file: $(du -h "$WORK/devicehub.redb" | cut -f1)" | tee -a "$WORK/facts"

echo
echo "results: $RESULTS"
python3 "$ROOT/bench/report.py" "$RESULTS"
cat "$WORK/facts"
