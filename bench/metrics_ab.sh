#!/usr/bin/env bash
# bench/metrics_ab.sh - what metrics cost GET /api/tenant/devices/{id} under
# wrk: metrics.enabled on against off, in interleaved pairs.
#
#   flock /tmp/cargo.lock bench/metrics_ab.sh [BINARY]   # BINARY: target/release/devicehub
#
# Seeds one tenant of 1,000 devices through the API once, copies the database,
# and starts two servers of the same binary at once on 127.0.0.1, one with
# metrics on and one with DEVICEHUB__METRICS__ENABLED=false, each on its copy.
# Then runs PAIRS pairs of `wrk -t2 -c$CONNS -d$DURATION` (after a 1 s warm-up
# each), one server at a time, the order flipped every pair (on off, off on,
# ...) so that drift of the machine falls on both alike. Prints one TSV row per
# run (pair, mode, req/s, the server's CPU per request from /proc/PID/stat),
# then the medians per mode, and the median of the pairs' on/off ratios.
# Env: PAIRS=15 DURATION=5s CONNS=64 PORT=18400 (off: PORT+1)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:-$ROOT/target/release/devicehub}
[[ -x $BIN ]] || { echo "not an executable: $BIN (cargo build --release)" >&2; exit 1; }
PAIRS=${PAIRS:-15}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-64}
PORT=${PORT:-18400}
for tool in wrk python3 curl bc; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

# shellcheck source=bench/servers.sh
source "$ROOT/bench/servers.sh" metrics-ab
declare -A PORTS=([on]=$PORT [off]=$((PORT + 1)))

start() { # MODE DIR
    local mode=$1 dir=$2 port=${PORTS[$1]}
    local enabled=true
    [[ $mode == off ]] && enabled=false
    DEVICEHUB__SERVER__BIND=127.0.0.1:$port DEVICEHUB__STORAGE__PATH=$dir/devicehub.redb \
        DEVICEHUB__AUTH__HS256_SECRET=$SECRET DEVICEHUB__METRICS__ENABLED=$enabled RUST_LOG=warn \
        "$BIN" serve >"$dir/server.log" 2>&1 &
    PIDS[$mode]=$!
    until curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; do
        kill -0 "${PIDS[$mode]}" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
        sleep 0.02
    done
}

mkdir -p "$WORK/seed" "$WORK/on" "$WORK/off"
start on "$WORK/seed"
python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$PORT" "$SECRET" 1 1000 "$WORK/seed/out" >/dev/null
kill "${PIDS[on]}" && wait "${PIDS[on]}" || true
unset 'PIDS[on]'
cp "$WORK/seed/devicehub.redb" "$WORK/on/"
cp "$WORK/seed/devicehub.redb" "$WORK/off/"
ID=$(head -1 "$WORK/seed/out/ids.txt")
READ=$(cat "$WORK/seed/out/read.txt")
start on "$WORK/on"
start off "$WORK/off"
# The switch really is off: /metrics answers only where metrics are on.
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[on]}/metrics") == 200 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORTS[off]}/metrics") == 404 ]]
echo "binary: $BIN ($(sha256sum "$BIN" | cut -c1-12)); wrk -t2 -c$CONNS -d$DURATION, $PAIRS pairs"

TICK_US=$((1000000 / $(getconf CLK_TCK)))
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A RPS=() CPU=()
RATIOS=
run() { # PAIR MODE
    local pair=$1 mode=$2 pid=${PIDS[$2]} url="http://127.0.0.1:${PORTS[$2]}/api/tenant/devices/$ID"
    wrk -t2 -c"$CONNS" -d1s -H "Authorization: Bearer $READ" "$url" >/dev/null
    local before after out rps requests us
    before=$(cpu_ticks "$pid")
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" -H "Authorization: Bearer $READ" "$url")
    after=$(cpu_ticks "$pid")
    if echo "$out" | grep -q 'Non-2xx\|Socket errors'; then
        echo "$out" >&2
        exit 2
    fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    us=$(echo "scale=4; ($after - $before) * $TICK_US / $requests" | bc)
    printf '%s\t%s\t%s\t%s\n' "$pair" "$mode" "$rps" "$us"
    RPS[$pair.$mode]=$rps
    CPU[$mode]+="$us "
}

printf 'pair\tmode\treq/s\tserver CPU us/request\n'
for pair in $(seq 1 "$PAIRS"); do
    if ((pair % 2)); then order="on off"; else order="off on"; fi
    for mode in $order; do
        run "$pair" "$mode"
    done
    RATIOS+="$(echo "scale=6; ${RPS[$pair.on]} / ${RPS[$pair.off]}" | bc) "
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rps_of() { local mode=$1 pair; for pair in $(seq 1 "$PAIRS"); do echo "${RPS[$pair.$mode]}"; done; }
on=$(rps_of on | median)
off=$(rps_of off | median)
ratio=$(echo "$RATIOS" | median)
cpu_on=$(echo "${CPU[on]}" | median)
cpu_off=$(echo "${CPU[off]}" | median)
echo
echo "pair ratios on/off: $RATIOS"
echo "median req/s: metrics on $on, off $off"
echo "median server CPU per request: on $cpu_on us, off $cpu_off us"
printf 'median of the pairs'"'"' on/off ratios: %.4f (GET loses %.1f %% with metrics on)\n' \
    "$ratio" "$(echo "(1 - $ratio) * 100" | bc -l)"
