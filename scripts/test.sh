#!/usr/bin/env bash
# The whole test suite: installs what the tests need on a fresh Debian
# machine (Chromium and chromedriver for the dashboard tests; the fault tests
# mount a tmpfs, so they run as root), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "the dashboard tests need chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi

cargo test "$@"
