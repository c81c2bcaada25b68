#!/usr/bin/env bash
# The whole test suite: installs what the tests need on a fresh Debian
# machine (Chromium and chromedriver for the dashboard tests, Python 3 and
# Node.js for the webhook receiver examples; the fault tests mount a tmpfs,
# so they run as root), then runs cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
command -v python3 >/dev/null || missing+=(python3)
command -v node >/dev/null || missing+=(nodejs)
if (( ${#missing[@]} )); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "the tests need: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test "$@"
