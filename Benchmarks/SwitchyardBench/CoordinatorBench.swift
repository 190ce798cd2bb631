import ArgumentParser
import CoreMetrics
import Foundation
import Logging
import SwitchyardCoordinator
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// The coordinator: how long a Prometheus scrape and the cluster summary take over a hundred
/// workers' metrics, and what the OpenAI-compatible front adds to a chat completion over calling
/// the llama.cpp server directly.
struct CoordinatorBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "GET /metrics and /api/v1/cluster over 100 simulated workers, and the OpenAI front's added latency over llama.cpp direct."
    )

    @Option(help: "Which parts to run: all, or a comma-separated list of scrape, front.")
    var parts = "all"

    @Option(help: "Simulated workers: each publishes a metrics snapshot and holds a live registry entry.")
    var workers = 100

    @Option(help: "Run-time and queue-wait samples per lane in each simulated worker (log-uniform, 1 ms to 60 s).")
    var samples = 2000

    @Option(help: "Call-time and time-to-first-token samples per target in each simulated worker.")
    var targetSamples = 500

    @Option(help: "Requests of each of GET /metrics and GET /api/v1/cluster (alternated), after the warm-up.")
    var requests = 200

    @Option(help: "Warm-up requests of each endpoint, not counted.")
    var warmUp = 20

    @Option(help: "Chat completions each way, direct to llama.cpp and through the front, alternated.")
    var frontRequests = 100

    @Option(help: "Warm-up completions each way, not counted.")
    var frontWarmUp = 10

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    static let scrapeQueue = "bench"
    static let frontQueue = "front"
    static let lanes = ["high", "default", "low"]
    static let statuses = ["succeeded", "failed", "dead", "cancelled", "retried", "handed_back"]
    static let targets = ["openai/gpt-4o-mini", "anthropic/claude-haiku", "groq/llama-3.1-8b", "together/qwen-2.5-7b", "local/tiny"]

    func run() async throws {
        let known = ["scrape", "front"]
        let chosen = parts == "all" ? known : parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        for part in chosen where !known.contains(part) {
            throw ValidationError("--parts: '\(part)' is not one of all, \(known.joined(separator: ", "))")
        }
        guard workers >= 1, samples >= 1, targetSamples >= 1, requests >= 1, frontRequests >= 1, warmUp >= 0, frontWarmUp >= 0 else {
            throw ValidationError("--workers, --samples, --target-samples, --requests and --front-requests must be at least 1")
        }
        var logger = Logger(label: "bench.coordinator")
        logger.logLevel = .error
        var report: [String: Any] = ["benchmark": "coordinator"]
        var lines: [String] = []
        if chosen.contains("scrape") {
            let (figures, text) = try await scrape(logger: logger)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        if chosen.contains("front") {
            let (figures, text) = try await front(logger: logger)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        print("")
        print("Coordinator: a Hummingbird service over a local Redis, in this process")
        for line in lines { print(line) }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// Latency samples in ms.
    struct Latencies {
        let sorted: [Double]

        init(_ samples: [Double]) { sorted = samples.sorted() }

        var p50: Double { percentile(sorted, 50) }
        var p99: Double { percentile(sorted, 99) }
        var mean: Double { sorted.isEmpty ? 0 : sorted.reduce(0, +) / Double(sorted.count) }
        var max: Double { sorted.last ?? 0 }

        func json(_ prefix: String) -> [String: Any] {
            [prefix + "_p50_ms": p50, prefix + "_p99_ms": p99, prefix + "_mean_ms": mean, prefix + "_max_ms": max]
        }

        /// p50, p99, mean and max, each in a column of 10.
        var columns: String { [p50, p99, mean, max].map { pad(String(format: "%.3f", $0), 10) }.joined() }
    }

    /// A coordinator running in this process.
    struct RunningCoordinator {
        let task: Task<Void, any Error>
        let port: Int

        /// Starts one on a free port.
        init(_ configuration: CoordinatorConfiguration, pool: RedisConnectionPool, logger: Logger) async {
            // Critical only: cancelling the task to stop it makes Hummingbird log a
            // CancellationError; a failure while serving shows as the status of a request, which
            // the bench reports.
            var quiet = logger
            quiet.logLevel = .critical
            let coordinator = Coordinator(configuration: configuration, redis: pool, logger: quiet)
            task = Task { try await coordinator.run() }
            port = await coordinator.port()
        }

        func stop() async {
            task.cancel()
            _ = await task.result
        }
    }

    // MARK: - 1. The scrape and the cluster summary

    func scrape(logger: Logger) async throws -> ([String: Any], [String]) {
        let server = try RedisServer()
        defer { server.stop() }
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: Self.scrapeQueue), redis: pool, logger: logger)
        let clock = ContinuousClock()
        let filling = clock.now
        var snapshotBytes = 0
        var published: [MetricsSnapshot] = []
        for w in 0..<workers {
            let id = String(format: "bench-w%03d", w)
            let registry = simulatedRegistry(worker: w)
            let snapshot = registry.snapshot(worker: id)
            let json = try JSONEncoder().encode(snapshot)
            snapshotBytes += json.count
            try await queue.publishMetrics(worker: id, series: snapshot.series, json: Array(json))
            if let holder = try await queue.register(simulatedInfo(worker: w, id: id), ttl: .seconds(3600)) {
                throw ValidationError("worker id \(id) is already registered by pid \(holder.pid)")
            }
            published.append(snapshot)
        }
        let fillSeconds = seconds(clock.now - filling)
        let merged = MetricsSnapshot.merge(published)
        let runKey = MetricsRegistry.Key("switchyard_run_seconds", [("queue", Self.scrapeQueue), ("lane", "default")])
        let bucketsPerWorker = published[0].histograms[runKey]?.buckets.count ?? 0
        let bucketsMerged = merged.histograms[runKey]?.buckets.count ?? 0
        let bucketsInSnapshot = published[0].histograms.values.map(\.buckets.count).reduce(0, +)

        let coordinator = await RunningCoordinator(CoordinatorConfiguration(port: 0, queues: [Self.scrapeQueue]), pool: pool, logger: logger)
        let client = HTTPClient()
        defer { client.shutdown() }
        let base = "http://127.0.0.1:\(coordinator.port)"
        func get(_ path: String) async throws -> (ms: Double, body: [UInt8]) {
            let t0 = clock.now
            let response = try await client.execute(HTTPRequest(url: base + path, timeout: .seconds(60)))
            let ms = milliseconds(clock.now - t0)
            guard response.status == 200 else {
                throw ValidationError("GET \(path) answered \(response.status): \(String(decoding: response.body.prefix(400), as: UTF8.self))")
            }
            return (ms, response.body)
        }
        var metricsMs: [Double] = []
        var clusterMs: [Double] = []
        var metricsBody: [UInt8] = []
        var clusterBody: [UInt8] = []
        do {
            for i in 0..<(warmUp + requests) {
                // Alternated, and each first every other round, so noise hits both alike.
                for path in i % 2 == 0 ? ["/metrics", "/api/v1/cluster"] : ["/api/v1/cluster", "/metrics"] {
                    let (ms, body) = try await get(path)
                    guard i >= warmUp else { continue }
                    if path == "/metrics" {
                        metricsMs.append(ms)
                        metricsBody = body
                    } else {
                        clusterMs.append(ms)
                        clusterBody = body
                    }
                }
            }
        } catch {
            await coordinator.stop()
            throw error
        }
        await coordinator.stop()

        // The same reads, decodes and merge in this process through the public API: where the time goes.
        var readMs: [Double] = []
        var decodeMs: [Double] = []
        var mergeMs: [Double] = []
        var parseMs: [Double] = []
        var valueMs: [Double] = []
        for _ in 0..<20 {
            var t0 = clock.now
            let raw = try await queue.metricsSnapshots()
            readMs.append(milliseconds(clock.now - t0))
            t0 = clock.now
            let decoder = JSONDecoder()
            let decoded = try raw.map { try decoder.decode(MetricsSnapshot.self, from: Data($0)) }
            decodeMs.append(milliseconds(clock.now - t0))
            t0 = clock.now
            _ = MetricsSnapshot.merge(decoded)
            mergeMs.append(milliseconds(clock.now - t0))
            // The same bytes parsed without Decodable: what the JSON itself costs.
            t0 = clock.now
            for bytes in raw { _ = try JSONSerialization.jsonObject(with: Data(bytes)) }
            parseMs.append(milliseconds(clock.now - t0))
            t0 = clock.now
            for bytes in raw { _ = try JSONValue.parse(bytes) }
            valueMs.append(milliseconds(clock.now - t0))
        }
        let read = Latencies(readMs)
        let decode = Latencies(decodeMs)
        let merge = Latencies(mergeMs)
        let parse = Latencies(parseMs)
        let value = Latencies(valueMs)

        // The answers cover every simulated worker.
        let metricsText = String(decoding: metricsBody, as: UTF8.self)
        let metricsLines = metricsText.split(separator: "\n")
        let workersLine = metricsLines.first { $0.hasPrefix("switchyard_workers{") }.map(String.init) ?? "(no switchyard_workers line)"
        let bucketLines = metricsLines.filter { $0.contains("_bucket{") }.count
        let summary = try JSONValue.parse(clusterBody)
        let alive = summary["workers"]?["alive"]?.integer ?? -1
        let series = summary["series"]?.integer ?? -1
        guard alive == workers, series == workers else {
            throw ValidationError("/api/v1/cluster shows \(alive) workers alive and \(series) series, expected \(workers) of each")
        }

        let metrics = Latencies(metricsMs)
        let cluster = Latencies(clusterMs)
        let target = 50.0
        func verdict(_ l: Latencies) -> String {
            "target < \(Int(target)) ms: p50 \(l.p50 < target ? "met" : "MISSED"), p99 \(l.p99 < target ? "met" : "MISSED")"
        }
        let text = [
            "",
            "1. GET /metrics and GET /api/v1/cluster over \(workers) simulated workers' snapshots and \(workers) live registry entries,",
            "   \(requests) requests each, alternated, after \(warmUp) each; HTTP/1.1 keep-alive over loopback",
            String(
                format:
                    "   snapshots: %d x %.0f KB JSON (%.1f MB in all), %d histogram buckets in one worker's, %d in its default-lane run histogram, %d merged",
                workers,
                Double(snapshotBytes) / Double(workers) / 1024,
                Double(snapshotBytes) / 1_048_576,
                bucketsInSnapshot,
                bucketsPerWorker,
                bucketsMerged
            ),
            pad("endpoint", 22) + pad("p50 ms", 10) + pad("p99 ms", 10) + pad("mean ms", 10) + pad("max ms", 10) + pad("bytes", 10) + "target",
            pad("GET /metrics", 22) + metrics.columns + pad("\(metricsBody.count)", 10) + verdict(metrics),
            pad("GET /api/v1/cluster", 22) + cluster.columns + pad("\(clusterBody.count)", 10) + verdict(cluster),
            "   /metrics: \(metricsLines.count) lines, \(bucketLines) of them histogram buckets; \(workersLine)",
            String(
                format:
                    "   the same work in the bench process (public API), p50 of 20: read the snapshots from Redis %.2f ms, decode %.2f ms, merge %.2f ms",
                read.p50,
                decode.p50,
                merge.p50
            ),
            String(
                format: "   (the same bytes parsed without Decodable: JSONSerialization %.2f ms, SwitchyardCore's JSONValue.parse %.2f ms)",
                parse.p50,
                value.p50
            ),
            String(format: "   (simulating and publishing the %d workers took %.1f s)", workers, fillSeconds),
        ]
        var figures: [String: Any] = [
            "scrape_workers": workers, "scrape_samples_per_lane": samples, "scrape_target_samples": targetSamples, "scrape_requests": requests,
            "scrape_warm_up": warmUp, "scrape_snapshot_bytes_total": snapshotBytes, "scrape_buckets_per_snapshot": bucketsInSnapshot,
            "scrape_run_histogram_buckets_worker": bucketsPerWorker, "scrape_run_histogram_buckets_merged": bucketsMerged,
            "metrics_bytes": metricsBody.count, "metrics_lines": metricsLines.count, "cluster_bytes": clusterBody.count, "scrape_target_ms": target,
            "inprocess_read_p50_ms": read.p50, "inprocess_decode_p50_ms": decode.p50, "inprocess_merge_p50_ms": merge.p50,
            "inprocess_jsonserialization_p50_ms": parse.p50, "inprocess_jsonvalue_parse_p50_ms": value.p50,
        ]
        figures.merge(metrics.json("metrics"), uniquingKeysWith: { $1 })
        figures.merge(cluster.json("cluster"), uniquingKeysWith: { $1 })
        return (figures, text)
    }

    /// One simulated worker's registry, filled through swift-metrics with the labels a worker
    /// records: 3 lanes x 6 statuses of attempts, log-uniform run and wait times, cache answers,
    /// tokens, and 5 targets' calls, call times and times to first token. Seeded by `worker`.
    func simulatedRegistry(worker w: Int) -> MetricsRegistry {
        var rng = SplitMix64(seed: UInt64(w) &+ 1)
        let registry = MetricsRegistry()
        let queue = ("queue", Self.scrapeQueue)
        let attempts: [String: ClosedRange<Int>] = [
            "succeeded": 2_000...20_000, "failed": 10...200, "dead": 0...20, "cancelled": 0...50, "retried": 20...400, "handed_back": 0...30,
        ]
        for lane in Self.lanes {
            let dimensions = [queue, ("lane", lane)]
            for status in Self.statuses {
                Counter(label: "switchyard_attempts_total", dimensions: dimensions + [("status", status)], factory: registry)
                    .increment(by: Int.random(in: attempts[status]!, using: &rng))
            }
            let wait = CoreMetrics.Timer(label: "switchyard_queue_wait_seconds", dimensions: dimensions, factory: registry)
            let run = CoreMetrics.Timer(label: "switchyard_run_seconds", dimensions: dimensions, factory: registry)
            for _ in 0..<samples {
                wait.recordNanoseconds(logUniform(1e6, 6e10, using: &rng))
                run.recordNanoseconds(logUniform(1e6, 6e10, using: &rng))
            }
        }
        let cache: [String: ClosedRange<Int>] = ["hit": 500...5_000, "miss": 2_000...20_000, "coalesced": 0...300, "bypass": 0...2_000]
        for (status, range) in cache {
            Counter(label: "switchyard_cache_answers_total", dimensions: [queue, ("status", status)], factory: registry)
                .increment(by: Int.random(in: range, using: &rng))
        }
        for direction in ["in", "out"] {
            Counter(label: "switchyard_tokens_total", dimensions: [queue, ("direction", direction)], factory: registry)
                .increment(by: Int.random(in: 1_000_000...20_000_000, using: &rng))
        }
        let outcomes: [String: ClosedRange<Int>] = ["success": 1_000...10_000, "failure": 0...200, "abandoned": 0...20]
        for target in Self.targets {
            for (outcome, range) in outcomes {
                Counter(label: "switchyard_target_calls_total", dimensions: [("target", target), ("outcome", outcome)], factory: registry)
                    .increment(by: Int.random(in: range, using: &rng))
            }
            let call = CoreMetrics.Timer(label: "switchyard_target_call_seconds", dimensions: [("target", target)], factory: registry)
            let firstToken = CoreMetrics.Timer(label: "switchyard_time_to_first_token_seconds", dimensions: [("target", target)], factory: registry)
            for _ in 0..<targetSamples {
                call.recordNanoseconds(logUniform(5e7, 6e10, using: &rng))
                firstToken.recordNanoseconds(logUniform(2e7, 1e10, using: &rng))
            }
        }
        return registry
    }

    func simulatedInfo(worker w: Int, id: String) -> WorkerInfo {
        var rng = SplitMix64(seed: UInt64(w) &+ 1_000_003)
        let now = Date().timeIntervalSince1970
        return WorkerInfo(
            id: id,
            host: "bench-node-\(w / 8)",
            pid: Int32(10_000 + w),
            profile: "cpu",
            concurrency: 8,
            inFlight: Int.random(in: 0...8, using: &rng),
            startedAt: now - 3_600,
            heartbeatAt: now,
            version: "bench",
            rssBytes: Int.random(in: 100_000_000...400_000_000, using: &rng),
            processed: Int.random(in: 10_000...60_000, using: &rng),
            executor: "provider",
            token: UUID().uuidString,
            cache: ["hits": 1_234, "misses": 5_678, "coalesced": 12, "stores": 5_600, "bypassed": 300, "errors": 0, "bytes_stored": 12_345_678],
            resilience: ["breaker_opened": 2, "breaker_refused": 40, "rate_limited": 7]
        )
    }

    /// Nanoseconds spread log-uniformly from `low` to `high`.
    func logUniform(_ low: Double, _ high: Double, using rng: inout SplitMix64) -> Int64 {
        Int64(exp(Double.random(in: log(low)...log(high), using: &rng)))
    }

    // MARK: - 2. The OpenAI front's added latency

    func front(logger: Logger) async throws -> ([String: Any], [String]) {
        let llama = try await LlamaServer()
        defer { llama.stop() }
        let server = try RedisServer()
        defer { server.stop() }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-coordinator-bench-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let providers = directory.appendingPathComponent("providers.json").path
        let file: [String: Any] = [
            "providers": [["name": "local", "kind": "openai", "base_url": llama.baseURL, "max_attempts": 1]],
            "models": ["tiny": ["provider": "local"]],
        ]
        try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: providers))
        let worker = try WorkerProcess(
            redisURL: server.url,
            id: "bench-front",
            arguments: ["--queue", Self.frontQueue, "--executor", "provider", "--providers", providers, "--concurrency", "1"]
        )
        defer {
            _ = worker.terminate()
            try? FileManager.default.removeItem(atPath: worker.logPath)
        }
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: Self.frontQueue), redis: pool, logger: logger)
        let clock = ContinuousClock()
        let registered = clock.now + .seconds(60)
        while true {
            if try await queue.workers().contains(where: { $0.id == worker.id }) { break }
            guard worker.process.isRunning, clock.now < registered else {
                throw ValidationError("the worker did not register within 60 s:\n\(worker.log.suffix(2000))")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        var configuration = CoordinatorConfiguration(port: 0, queues: [Self.frontQueue], resultTimeout: .seconds(60))
        configuration.providersFile = providers
        let coordinator = await RunningCoordinator(configuration, pool: pool, logger: logger)
        let client = HTTPClient()
        defer { client.shutdown() }
        let directURL = llama.baseURL + "/chat/completions"
        let frontURL = "http://127.0.0.1:\(coordinator.port)/v1/chat/completions"

        struct Answer {
            var ms: Double
            var completionTokens: Int
            var extras: JSONValue?
        }
        /// The same small completion; `n` makes the prompt distinct (same length), and the
        /// front's asks the response cache to stay out.
        func complete(front: Bool, n: Int) async throws -> Answer {
            var body: [String: JSONValue] = [
                "model": .string("tiny"),
                "messages": .array([.object(["role": .string("user"), "content": .string("Reply with one word. Request \(100_000 + n).")])]),
                "max_tokens": .number(4), "temperature": .number(0),
            ]
            if front { body["cache"] = .string("bypass") }
            let request = HTTPRequest(
                method: "POST",
                url: front ? frontURL : directURL,
                headers: [("Content-Type", "application/json")],
                body: JSONValue.object(body).jsonBytes,
                timeout: .seconds(60),
                idempotent: false
            )
            let t0 = clock.now
            let response = try await client.execute(request)
            let ms = milliseconds(clock.now - t0)
            guard response.status == 200 else {
                let hint = front && response.status == 404 ? " (is POST /v1/chat/completions implemented?)" : ""
                throw ValidationError(
                    "\(front ? "the front" : "llama.cpp") answered \(response.status)\(hint): \(String(decoding: response.body.prefix(400), as: UTF8.self))"
                )
            }
            let answer = try JSONValue.parse(response.body)
            return Answer(ms: ms, completionTokens: answer["usage"]?["completion_tokens"]?.integer ?? -1, extras: answer["switchyard"])
        }

        var direct: [Double] = []
        var viaFront: [Double] = []
        var differences: [Double] = []
        var directTokens = 0
        var frontTokens = 0
        var cacheStatuses: [String: Int] = [:]
        var answeredBy: [String: Int] = [:]
        do {
            for i in 0..<(frontWarmUp + frontRequests) {
                // Alternated, each first every other round, so noise hits both alike.
                var pair: [Bool: Answer] = [:]
                for front in i % 2 == 0 ? [false, true] : [true, false] {
                    pair[front] = try await complete(front: front, n: 2 * i + (front ? 1 : 0))
                }
                guard i >= frontWarmUp, let d = pair[false], let f = pair[true] else { continue }
                direct.append(d.ms)
                viaFront.append(f.ms)
                differences.append(f.ms - d.ms)
                directTokens += d.completionTokens
                frontTokens += f.completionTokens
                cacheStatuses[f.extras?["cache"]?.string ?? "none", default: 0] += 1
                answeredBy[f.extras?["target"]?.string ?? "?", default: 0] += 1
            }
        } catch {
            await coordinator.stop()
            throw error
        }
        await coordinator.stop()

        let straight = Latencies(direct)
        let through = Latencies(viaFront)
        let paired = Latencies(differences)
        let added = through.p50 - straight.p50
        let target = 2.0
        let text = [
            "",
            "2. The OpenAI front's added latency: the same chat completion (max_tokens 4, temperature 0, distinct prompts,",
            "   the front's with cache: bypass) straight to llama.cpp and through the coordinator, a worker (--concurrency 1) and",
            "   Redis to the same llama.cpp server, \(frontRequests) each, alternated, after \(frontWarmUp) each",
            pad("path", 34) + pad("p50 ms", 10) + pad("p99 ms", 10) + pad("mean ms", 10) + pad("max ms", 10) + "usage.completion_tokens",
            pad("direct to llama.cpp", 34) + straight.columns + String(format: "%.2f per answer", Double(directTokens) / Double(frontRequests)),
            pad("POST /v1/chat/completions (front)", 34) + through.columns
                + String(format: "%.2f per answer", Double(frontTokens) / Double(frontRequests)),
            String(format: "added latency, front p50 - direct p50: %.3f ms   (target < %.0f ms: ", added, target)
                + (added < target ? "met" : "MISSED") + "; LiteLLM's proxy adds 2 to 12 ms at the median by its docs)",
            String(format: "paired differences (front - direct, same round): p50 %.3f ms, p99 %.3f ms", paired.p50, paired.p99),
            "   front answers by cache status: \(cacheStatuses.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "));"
                + " by target: \(answeredBy.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))",
        ]
        var figures: [String: Any] = [
            "front_requests": frontRequests, "front_warm_up": frontWarmUp, "front_added_p50_ms": added, "front_paired_difference_p50_ms": paired.p50,
            "front_paired_difference_p99_ms": paired.p99, "front_target_ms": target, "front_cache_statuses": cacheStatuses,
            "direct_completion_tokens": directTokens, "front_completion_tokens": frontTokens,
        ]
        figures.merge(straight.json("direct"), uniquingKeysWith: { $1 })
        figures.merge(through.json("front"), uniquingKeysWith: { $1 })
        return (figures, text)
    }
}

/// A small seeded generator: the simulated workers are the same on every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
