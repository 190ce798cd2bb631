#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting, builds, and runs every test
# against private redis-server processes that the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift format lint --strict -r Sources Tests Benchmarks Package.swift
swift build --build-tests
swift test --skip-build
