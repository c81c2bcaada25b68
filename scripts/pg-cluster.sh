#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests and benchmarks:
#   scripts/pg-cluster.sh start DIR   makes and starts a cluster in DIR (which
#                                     must not exist) and prints its URL
#   scripts/pg-cluster.sh stop DIR    stops it and deletes DIR
#   scripts/pg-cluster.sh pause DIR   stops it, keeping its data (fault tests)
#   scripts/pg-cluster.sh resume DIR  starts it again on the same port
#   scripts/pg-cluster.sh tls DIR CERT KEY
#                                     serves TLS with that PEM chain and key
# It listens on a unix socket in DIR and on 127.0.0.1 (a free port, for the
# TLS test), trusts local connections (it holds nothing but test data) and
# runs with fsync=off (PG_DURABLE=1: fsync on, as in production, for
# benchmarks). initdb refuses to run as root, so as root the cluster
# belongs to the `postgres` user. Installs PostgreSQL if it is missing.
set -euo pipefail

usage="usage: pg-cluster.sh start|stop|pause|resume DIR, or tls DIR CERT KEY"
cmd=${1:?$usage}
dir=${2:?$usage}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $bin ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "PostgreSQL is missing: sudo apt-get install -y postgresql" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

launch() {
    local port durability="-c fsync=off -c full_page_writes=off"
    port=$(cat "$dir/port")
    [[ ${PG_DURABLE:-0} == 1 ]] && durability=""
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir $durability -c max_connections=300" \
        start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

case $cmd in
start)
    if [[ -e $dir ]]; then
        echo "$dir already exists" >&2
        exit 1
    fi
    mkdir -p "$dir"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; exit 1; }
    echo "$port" >"$dir/port"
    launch
    # The socket folder, percent-encoded as the URL's host.
    echo "postgres://postgres@${dir//\//%2F}:$port/postgres"
    ;;
stop)
    if [[ -d $dir/data ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
pause)
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
resume)
    launch
    ;;
tls)
    cert=${3:?$usage}
    key=${4:?$usage}
    install -m 0600 "$cert" "$dir/data/server.crt"
    install -m 0600 "$key" "$dir/data/server.key"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
    as_owner "$bin/psql" -q -h "$dir" -p "$(cat "$dir/port")" -U postgres -d postgres \
        -c "ALTER SYSTEM SET ssl = on" -c "SELECT pg_reload_conf()" >/dev/null
    ;;
*)
    echo "$usage" >&2
    exit 1
    ;;
esac
