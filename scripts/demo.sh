#!/usr/bin/env bash
# The main job. Today: builds Switchyard, starts a private Redis, and shows the Redis layer at
# work (PING round trips and the benchmark against redis-benchmark). The full local cluster
# (`switchyard up` / `switchyard demo` with workers and a local llama.cpp server) arrives with
# the queue and model-server work.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
swift build -c release --product switchyard --product switchyard-bench
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$port"
.build/release/switchyard config
.build/release/switchyard ping --count 1000
.build/release/switchyard-bench redis --url "$SWITCHYARD_REDIS_URL" --requests 20000 --rounds 3
