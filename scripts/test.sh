#!/usr/bin/env bash
# The whole test suite: installs what the tests need on a fresh Debian
# machine (Chromium and chromedriver for the dashboard tests, Python 3 and
# Node.js for the webhook receiver examples, PostgreSQL for the second store;
# the fault tests mount a tmpfs, so they run as root), starts a throwaway
# PostgreSQL cluster (stopped and deleted on exit), then runs cargo test:
#   1. every test, on the embedded redb store, and tests/postgres.rs (several
#      instances on one database, faults, TLS) on the cluster;
#   2. the HTTP integration tests again, each app on a fresh PostgreSQL
#      database (DEVICEHUB_TEST_POSTGRES), and the store's own unit tests
#      (store::tests, each on a fresh database; the tests of the redb file
#      skip) with the PostgreSQL committer's (store::postgres): the same
#      tests on both stores.
# Arguments go to the first cargo test; with arguments, step 2 is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
command -v python3 >/dev/null || missing+=(python3)
command -v node >/dev/null || missing+=(nodejs)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || missing+=(postgresql)
if (( ${#missing[@]} )); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "the tests need: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cluster=$(mktemp -d -u /tmp/devicehub-test-pg.XXXXXX)
trap 'scripts/pg-cluster.sh stop "$cluster"' EXIT
url=$(scripts/pg-cluster.sh start "$cluster")

DEVICEHUB_TEST_PG_CLUSTER=$url cargo test "$@"

if (( $# == 0 )); then
    echo "== the HTTP integration tests again, on PostgreSQL"
    DEVICEHUB_TEST_POSTGRES=$url cargo test \
        --test api --test events --test fleet --test hardening --test idempotency \
        --test key_rotation --test limits --test ops --test properties --test tokens \
        --test webhooks
    echo "== the store's unit tests again, on PostgreSQL"
    DEVICEHUB_TEST_POSTGRES=$url cargo test --lib -- store::tests:: store::postgres::
fi
