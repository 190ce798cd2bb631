#!/usr/bin/env bash
# The main job: a local Switchyard cluster doing real work. Installs what is missing (including
# the one-time llama-cpp-python build), builds Switchyard, then `switchyard demo`: it starts a
# private Redis and two workers, each keeping a real llama.cpp server warm with the project's tiny
# generated model, pushes a batch of chat jobs with a progress bar, and prints the results, the
# timings, the cold starts and the model loads. Everything it started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== building (release)"
swift build -c release --product switchyard
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.build/release/switchyard demo --redis-url "redis://127.0.0.1:$port" --workers 2 --jobs 24 "$@"
