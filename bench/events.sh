#!/usr/bin/env bash
# bench/events.sh - what recording events costs PATCH: two release binaries,
# one built before events and one with them, measured side by side.
#
#   bench/events.sh BEFORE_BIN [AFTER_BIN]    # AFTER_BIN: target/release/devicehub
#
# Both servers run at once on 127.0.0.1, each on a fresh database seeded the
# same way through the API (bench/seed.py: one tenant, 1,000 devices), and are
# measured one at a time with the same wrk settings, interleaved (before,
# after, before, after, ...) so that drift of the machine falls on both
# alike. The PATCH rows use bench/wrk/patch_many.lua: every request is a real
# change, so with events each one also writes an event. GET rows are measured
# the same way, as a control (a GET writes nothing). Prints one TSV row per
# run and then bench/events_report.py's table: the mean, median and the
# after/before ratio of each row, and the ratio of each before/after pair.
#
# To build the binary before events (7bc10ff is main just before them):
#   git worktree add /tmp/dh-before 7bc10ff
#   (cd /tmp/dh-before && cargo build --release)
#   bench/events.sh /tmp/dh-before/target/release/devicehub
#   git worktree remove --force /tmp/dh-before
#
# Env (defaults): RUNS=5 DURATION=10s PAUSE=2 CONNS="64 1" ENDPOINTS="patch get"
#   PORT=18110 (before; after uses PORT+1) RESULTS=<tsv> RAW_DIR=<dir>
# A short trial: RUNS=1 DURATION=2s PAUSE=0 bench/events.sh /tmp/dh-before/target/release/devicehub
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 1 ]] || { sed -n '2,25p' "${BASH_SOURCE[0]}" >&2; exit 64; }
BEFORE_BIN=$1
AFTER_BIN=${2:-$ROOT/target/release/devicehub}
for bin in "$BEFORE_BIN" "$AFTER_BIN"; do
    [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 1; }
done
RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
PAUSE=${PAUSE:-2}
CONNS=${CONNS:-64 1}
ENDPOINTS=${ENDPOINTS:-patch get}
PORT=${PORT:-18110}
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS=${RESULTS:-/tmp/devicehub-events-$STAMP.tsv}
RAW_DIR=${RAW_DIR:-/tmp/devicehub-events-raw-$STAMP}
mkdir -p "$RAW_DIR"
for tool in wrk python3 curl; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

# shellcheck source=bench/servers.sh
source "$ROOT/bench/servers.sh" events

# start LABEL BIN PORT: a server on a fresh database in $WORK/LABEL, seeded.
start() {
    local label=$1 bin=$2 port=$3 dir=$WORK/$1
    mkdir -p "$dir"
    DEVICEHUB__SERVER__BIND=127.0.0.1:$port DEVICEHUB__STORAGE__PATH=$dir/devicehub.redb \
        DEVICEHUB__AUTH__HS256_SECRET=$SECRET RUST_LOG=warn "$bin" serve >"$dir/server.log" 2>&1 &
    PIDS[$label]=$!
    until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
        kill -0 "${PIDS[$label]}" 2>/dev/null || { echo "$label did not start:" >&2; cat "$dir/server.log" >&2; exit 1; }
        sleep 0.01
    done
    python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$port" "$SECRET" 1 1000 "$dir/seed"
}

start before "$BEFORE_BIN" "$PORT"
start after "$AFTER_BIN" "$((PORT + 1))"
echo "before: $BEFORE_BIN ($(sha256sum "$BEFORE_BIN" | cut -c1-12))" | tee "$WORK/facts"
echo "after:  $AFTER_BIN ($(sha256sum "$AFTER_BIN" | cut -c1-12))" | tee -a "$WORK/facts"

bad=0
printf 'label\tendpoint\tconns\trun\trps\tavg_ms\tp50_ms\tp99_ms\tmax_ms\trequests\tnon2xx\tsock_errors\tflag\n' >"$RESULTS"
# one LABEL ENDPOINT CONNS RUN: one wrk run against one server, one TSV row.
one() {
    local label=$1 ep=$2 c=$3 run=$4 port dir t raw line vals flag
    dir=$WORK/$label
    port=$PORT
    [[ $label == after ]] && port=$((PORT + 1))
    t=2
    ((c < t)) && t=$c
    raw=$RAW_DIR/${label}_${ep}_c${c}_run${run}.txt
    case $ep in
        patch)
            WRK_TOKEN=$(cat "$dir/seed/admin.txt") WRK_IDS_FILE=$dir/seed/ids.txt \
                wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$ROOT/bench/wrk/patch_many.lua" \
                "http://127.0.0.1:$port" >"$raw" 2>&1 || true ;;
        get)
            WRK_TOKEN=$(cat "$dir/seed/read.txt") \
                wrk -t"$t" -c"$c" -d"$DURATION" --latency -s "$ROOT/bench/wrk/request.lua" \
                "http://127.0.0.1:$port/api/tenant/devices/$(head -1 "$dir/seed/ids.txt")" >"$raw" 2>&1 || true ;;
        *) echo "unknown endpoint $ep" >&2; exit 64 ;;
    esac
    line=$(grep '^WRKRESULT' "$raw" || true)
    if [[ -z "$line" ]]; then
        echo "wrk gave no result for $label $ep c=$c run=$run; see $raw" >&2
        bad=1
        return
    fi
    vals=$(echo "$line" | sed 's/^WRKRESULT //' | tr ' ' '\n' | cut -d= -f2 | paste -sd'\t')
    flag=ok
    [[ "$line" == *"non2xx=0 sock_errors=0"* ]] || { flag=ERRORS; bad=1; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$ep" "$c" "$run" "$vals" "$flag" | tee -a "$RESULTS"
    sleep "$PAUSE"
}

for ep in $ENDPOINTS; do
    for c in $CONNS; do
        for run in $(seq 1 "$RUNS"); do
            one before "$ep" "$c" "$run"
            one after "$ep" "$c" "$run"
        done
    done
done

for label in before after; do
    echo "$label: peak RSS $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/${PIDS[$label]}/status"), database file $(du -h "$WORK/$label/devicehub.redb" | cut -f1)" | tee -a "$WORK/facts"
done
# Every real change made one event: count the after server's feed.
patched=$(awk -F'\t' '$1 == "after" && $2 == "patch" { n += $10 } END { print n + 0 }' "$RESULTS")
python3 - "http://127.0.0.1:$((PORT + 1))" "$(cat "$WORK/after/seed/read.txt")" "$patched" <<'PY' | tee -a "$WORK/facts"
import http.client, json, sys
from urllib.parse import urlparse
base, token, patched = urlparse(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection(base.hostname, base.port, timeout=60)
count, kinds, after = 0, {}, None
while True:
    conn.request("GET", "/api/tenant/events?limit=1000" + (f"&startingAfter={after}" if after else ""),
                 headers={"Authorization": f"Bearer {token}"})
    page = json.loads(conn.getresponse().read())
    for event in page["data"]:
        kinds[event["type"]] = kinds.get(event["type"], 0) + 1
    count += len(page["data"])
    if not page["hasMore"]:
        break
    after = page["data"][-1]["id"]
print(f"after: {count} events in the feed {kinds}; wrk counted {patched} PATCH 2xx answers"
      " (a request still in flight when wrk stops is committed but not counted)")
PY

echo
echo "results: $RESULTS (wrk output: $RAW_DIR)"
python3 "$ROOT/bench/events_report.py" "$RESULTS"
cat "$WORK/facts"
if [[ $bad != 0 ]]; then
    echo "some runs had errors or non-2xx answers; see $RAW_DIR" >&2
    exit 2
fi
