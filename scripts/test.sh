#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting and the deploy files, builds,
# and runs every test against private redis-server processes that the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift format lint --strict -r Sources Tests Benchmarks Package.swift
bash scripts/validate-deploy.sh
swift build --build-tests
python3 scripts/check-docs.py   # the docs' examples and command lines, against .build/debug/switchyard
# One test at a time: many tests start servers and worker processes, and the timing-sensitive
# ones must not share two cores (and Swift's cooperative threads) with all of those at once.
# About 3.5 minutes on two cores, against 1 in parallel, and no run that fails for being starved.
swift test --skip-build --no-parallel
