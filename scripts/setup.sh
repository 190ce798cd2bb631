#!/usr/bin/env bash
# Installs what Switchyard needs to build and test, when it is missing.
# Debian/Ubuntu: apt-get (as root, or through sudo). macOS: Homebrew.
set -euo pipefail

need_apt=()
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

if [ "$(uname -s)" = "Darwin" ]; then
    command -v brew >/dev/null || { echo "setup: install Homebrew, then: brew install hiredis redis" >&2; exit 1; }
    brew list hiredis >/dev/null 2>&1 || brew install hiredis
    brew list redis >/dev/null 2>&1 || brew install redis
else
    for pkg in redis-server redis-tools libhiredis-dev libcurl4-openssl-dev pkg-config; do
        have_pkg "$pkg" || need_apt+=("$pkg")
    done
    if [ ${#need_apt[@]} -gt 0 ]; then
        echo "setup: installing ${need_apt[*]}"
        sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need_apt[@]}"
    fi
fi

command -v swift >/dev/null || { echo "setup: Swift 6 is required (https://www.swift.org/install)" >&2; exit 1; }
# A redis-server that the package's post-install started is not used by the tests: each test
# starts a private one on a free port.
