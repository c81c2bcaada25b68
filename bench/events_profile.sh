#!/usr/bin/env bash
# bench/events_profile.sh - what one PATCH costs the server in instructions
# (callgrind: machine noise does not change them) and in bytes written to disk.
#
#   bench/events_profile.sh LABEL BINARY [N]     # N PATCHes, default 1000
#
# Starts BINARY under valgrind --tool=callgrind on a fresh database in
# /tmp/devicehub-profile-LABEL.XXXX, seeds one tenant with 200 devices
# (bench/seed.py), zeroes the counters, makes N PATCHes one after another
# over one keep-alive connection (each a real change, so one commit each),
# dumps the counters and prints the instructions and the bytes the server
# wrote (/proc/PID/io write_bytes) per PATCH. The dump (cg.out.1) stays in
# the work folder for callgrind_annotate --inclusive=yes. CG=0 runs the
# binary without valgrind (bytes only). Env: PORT=18150 CG=1
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -ge 2 ]] || { sed -n '2,15p' "${BASH_SOURCE[0]}" >&2; exit 64; }
label=$1 bin=$2 n=${3:-1000} port=${PORT:-18150}
work=$(mktemp -d "/tmp/devicehub-profile-$label.XXXX")
secret=profile-secret-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
pre=()
[[ ${CG:-1} == 1 ]] && pre=(valgrind --tool=callgrind "--callgrind-out-file=$work/cg.out")
DEVICEHUB__SERVER__BIND=127.0.0.1:$port DEVICEHUB__STORAGE__PATH=$work/db.redb \
    DEVICEHUB__AUTH__HS256_SECRET=$secret RUST_LOG=warn \
    "${pre[@]}" "$bin" serve >"$work/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    kill -0 $pid || { cat "$work/server.log" >&2; exit 1; }
    curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
SEED_THREADS=4 python3 "$ROOT/bench/seed.py" "http://127.0.0.1:$port" "$secret" 1 200 "$work/seed" >/dev/null
sleep 1
[[ ${CG:-1} == 1 ]] && callgrind_control -z $pid >/dev/null
written() { awk '$1 == "write_bytes:" {print $2}' /proc/$pid/io; }
before=$(written)
python3 - "http://127.0.0.1:$port" "$(cat "$work/seed/admin.txt")" "$work/seed/ids.txt" "$n" <<'PY'
import http.client, json, sys
from urllib.parse import urlparse
url, token, ids, n = urlparse(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
ids = [line.strip() for line in open(ids) if line.strip()]
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
for i in range(n):
    body = json.dumps({"name": f"bench 0-{i}", "pimEnabled": i % 2 == 0})
    conn.request("PATCH", "/api/tenant/devices/" + ids[(i * 7919) % len(ids)], body,
                 {"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 200:
        raise SystemExit(f"PATCH answered {resp.status}")
PY
after=$(written)
echo "$label: $(( (after - before) / n )) bytes written per PATCH"
if [[ ${CG:-1} == 1 ]]; then
    callgrind_control -d $pid >/dev/null
    until grep -qs '^totals:' "$work/cg.out.1"; do sleep 0.2; done
    total=$(awk '/^summary:/ {print $2}' "$work/cg.out.1")
    echo "$label: $(( total / n )) instructions per PATCH ($work/cg.out.1)"
fi
