#!/usr/bin/env bash
# The main job: a local Switchyard cluster doing work. Builds Switchyard, starts a private Redis
# and two workers, pushes a batch of chat jobs with a progress bar, prints a summary of the
# results, and benchmarks the Redis layer and the queue. Until the model-server work lands the
# workers run the built-in echo executor (it answers with the prompt and calls no model).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "== building (release)"
swift build -c release --product switchyard --product switchyard-bench
bin=.build/release
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

echo "== starting Redis on 127.0.0.1:$port"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$port"

echo "== starting 2 workers (echo executor)"
for i in 1 2; do
    "$bin/switchyard" worker --worker-id "demo-$i" --concurrency 8 --log-level warning &
    pids+=($!)
done

echo "== pushing 500 chat jobs as one batch"
python3 - > "$dir/jobs.jsonl" <<'PY'
import json
for i in range(500):
    print(json.dumps({"model": "tiny", "prompt": f"Say something about switchyards, #{i}", "temperature": 0}))
PY
"$bin/switchyard" push --file "$dir/jobs.jsonl" --wait --out "$dir/results.jsonl"
"$bin/switchyard" status
python3 - "$dir/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
by_status = {}
for r in rows:
    by_status[r["status"]] = by_status.get(r["status"], 0) + 1
waits = [(r["timings"]["started"] - r["timings"]["queued"]) * 1000 for r in rows if r.get("timings", {}).get("started")]
workers = {}
for r in rows:
    workers[r.get("worker")] = workers.get(r.get("worker"), 0) + 1
print("results:", by_status, "| by worker:", workers)
if waits:
    print("queue wait ms: p50 %.2f  max %.2f" % (statistics.median(waits), max(waits)))
print("first result:", json.dumps(rows[0])[:200])
PY

echo "== benchmarks"
"$bin/switchyard-bench" redis --url "$SWITCHYARD_REDIS_URL" --requests 20000 --rounds 3 | head -9
"$bin/switchyard-bench" queue --url "$SWITCHYARD_REDIS_URL" --jobs 20000 --samples 300 | head -6
