# bench/servers.sh - sourced by the bench scripts that start servers of their
# own: a scratch folder and a token secret, and on exit every server in PIDS
# stopped and the folder removed.
#
#   source "$ROOT/bench/servers.sh" NAME     # sets WORK, SECRET and PIDS

WORK=$(mktemp -d "/tmp/devicehub-$1.XXXXXX")
SECRET=bench-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
declare -A PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
