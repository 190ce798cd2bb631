import Foundation
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// Breakers, rate limits and fallback chains with real worker processes, a real Redis and the
/// stand-in provider's fault injection (a real llama.cpp server for the local target).
@Suite("Shared resilience across worker processes", .serialized)
struct ResilienceProcessTests {
    /// A Redis, two stand-in providers (`first` and `second`), and workers with a providers file
    /// whose model `chat` goes to `first` (upstream model `m1`), then to `second` (`m2`).
    final class Cluster: @unchecked Sendable {
        let redis: RedisServer
        let first: StandinServer
        let second: StandinServer
        var workers: [WorkerProcess] = []
        var providersPath = ""

        init() throws {
            redis = try RedisServer()
            first = try StandinServer()
            second = try StandinServer()
        }

        deinit { for worker in workers { worker.kill() } }

        /// Writes the providers file: `firstSettings` go on the first provider (breaker,
        /// rate_limit, ...); `local` is an extra worker-scoped provider put at the head of the chain.
        func writeProviders(firstSettings: [String: Any] = [:], secondSettings: [String: Any] = [:], local: String? = nil) throws {
            var first: [String: Any] = ["name": "first", "kind": "openai", "base_url": self.first.baseURL + "/v1", "max_attempts": 1]
            first.merge(firstSettings) { $1 }
            var second: [String: Any] = ["name": "second", "kind": "openai", "base_url": self.second.baseURL + "/v1", "max_attempts": 1]
            second.merge(secondSettings) { $1 }
            var providers = [first, second]
            var targets: [[String: Any]] = [["provider": "first", "model": "m1"], ["provider": "second", "model": "m2"]]
            if let local {
                providers.append([
                    "name": "local", "kind": "openai", "base_url": local, "max_attempts": 1, "scope": "worker",
                    "breaker": ["minimum_calls": 2, "window_size": 10, "wait_ms": 1500, "jitter": 0, "half_open_calls": 1],
                ])
                targets.insert(["provider": "local", "model": "tiny"], at: 0)
            }
            let file: [String: Any] = ["providers": providers, "models": ["chat": ["targets": targets]]]
            providersPath = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
            try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: providersPath))
        }

        func startWorkers(_ count: Int, concurrency: Int = 2) throws {
            for _ in 0..<count {
                workers.append(
                    try WorkerProcess(
                        redisURL: redis.url,
                        arguments: ["--providers", providersPath, "--concurrency", String(concurrency), "--no-cache", "--retry-base", "100ms"]
                    )
                )
            }
        }

        /// Pushes `count` chat jobs and waits for their results.
        func run(_ count: Int, words: Int = 1, maxTokens: Int? = nil) async throws -> [JSONValue] {
            let text = (0..<words).map { "w\($0)" }.joined(separator: " ")
            var lines = ""
            for i in 0..<count {
                var job: [String: Any] = ["kind": "chat", "model": "chat", "messages": [["role": "user", "content": "\(text) \(i)"]]]
                if let maxTokens { job["max_tokens"] = maxTokens }
                lines += String(decoding: try JSONSerialization.data(withJSONObject: job), as: UTF8.self) + "\n"
            }
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("jobs-\(UUID().uuidString).jsonl").path
            try lines.write(toFile: path, atomically: true, encoding: .utf8)
            let (code, output) = try await offThePool {
                try runSwitchyard(["push", "--redis-url", self.redis.url, "--file", path, "--wait", "--wait-timeout", "120"])
            }
            let results = output.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap { try? JSONValue.parse(Array($0.utf8)) }
            // 0 when every job succeeded, 5 when all finished and some did not.
            let allSucceeded = results.allSatisfy { $0["status"]?.string == "succeeded" }
            #expect(code == (allSucceeded ? 0 : 5), "push --wait: \(output.suffix(800))")
            return results
        }

        /// The breaker of `target` as `switchyard breakers --json` shows it.
        func breaker(_ target: String) async throws -> JSONValue? {
            let (code, output) = try await offThePool {
                try runSwitchyard(["breakers", "--redis-url", self.redis.url, "--providers", self.providersPath, "--json"])
            }
            #expect(code == 0, "breakers: \(output)")
            return output.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)) }.first { $0["target"]?.string == target }
        }

        /// The workers' metrics, merged.
        func metrics() async throws -> MetricsSnapshot {
            let pool = RedisConnectionPool(configuration: redis.configuration)
            defer { pool.shutDown() }
            let queue = JobQueue(configuration: QueueConfiguration(name: "default"), redis: pool)
            return MetricsSnapshot.merge(try await queue.metricsSnapshots().map { try JSONDecoder().decode(MetricsSnapshot.self, from: Data($0)) })
        }

        func breakers(_ arguments: [String]) async throws -> (code: Int32?, output: String) {
            try await offThePool { try runSwitchyard(["breakers"] + arguments + ["--redis-url", self.redis.url, "--providers", self.providersPath]) }
        }
    }

    static func calls(_ server: StandinServer) async throws -> Int {
        let stats = try await server.stats()
        return ((stats["by_path"] as? [String: Any])?["/v1/chat/completions"] as? Int) ?? 0
    }

    static func answeredBy(_ results: [JSONValue]) -> [String: Int] {
        results.reduce(into: [:]) { counts, r in counts[r["route"]?["target"]?.string ?? "(none)", default: 0] += 1 }
    }

    static var deadTarget: [[String: Any]] { [["path": "/v1/chat/completions", "status": 503, "times": 1_000_000]] }

    @Test("a dead target behind 4 workers trips one shared breaker: the cluster wastes about what one worker does")
    func aDeadTargetTripsOneSharedBreaker() async throws {
        var wasted: [Int: Int] = [:]
        for workers in [1, 4] {
            let cluster = try await offThePool { try Cluster() }
            try await cluster.first.setFaults(Self.deadTarget)
            try cluster.writeProviders(firstSettings: [
                "breaker": ["window_size": 20, "minimum_calls": 4, "failure_rate_threshold": 50, "wait_ms": 60_000]
            ])
            try cluster.startWorkers(workers)
            let results = try await cluster.run(40)
            #expect(results.count == 40)
            #expect(results.allSatisfy { $0["status"]?.string == "succeeded" && $0["route"]?["target"]?.string == "second/m2" })
            wasted[workers] = try await Self.calls(cluster.first)
            #expect(try await cluster.breaker("first/m1")?["state"]?.string == "open")
            // Once open, no worker calls it until the wait ends: every job passes it over.
            let later = try await cluster.run(40)
            #expect(try await Self.calls(cluster.first) == wasted[workers])
            #expect(later.allSatisfy { $0["route"]?["steps"]?.array?.first?["outcome"]?.string == "circuit_open" })
            // The workers' metrics count the same calls, and every answer from the second target.
            let failed = MetricsRegistry.Key("switchyard_target_calls_total", [("outcome", "failure"), ("target", "first/m1")])
            let answered = MetricsRegistry.Key("switchyard_target_calls_total", [("outcome", "success"), ("target", "second/m2")])
            #expect(
                try await eventually(timeout: .seconds(10)) {
                    let merged = try await cluster.metrics()
                    return merged.counters[failed] == Double(wasted[workers]!) && merged.counters[answered] == 80
                }
            )
        }
        // Four breakers of their own would need 4 × 4 failures; the shared one trips after 4,
        // plus at most the calls already in flight on the other workers (2 each).
        #expect(wasted[1]! >= 4 && wasted[1]! <= 5, "1 worker wasted \(wasted[1]!)")
        #expect(wasted[4]! >= 4 && wasted[4]! <= 4 + 7, "4 workers wasted \(wasted[4]!)")
    }

    @Test("half-open grants exactly the configured probes across the cluster; a failed probe reopens for longer; recovery closes")
    func halfOpenProbesAcrossTheCluster() async throws {
        let cluster = try await offThePool { try Cluster() }
        try await cluster.first.setFaults(Self.deadTarget)
        try cluster.writeProviders(firstSettings: [
            "breaker": [
                "window_size": 20, "minimum_calls": 4, "wait_ms": 1500, "wait_multiplier": 2, "jitter": 0, "half_open_calls": 2,
            ]
        ])
        try cluster.startWorkers(4)
        _ = try await cluster.run(20)
        let opened = try #require(try await cluster.breaker("first/m1"))
        #expect(opened["state"]?.string == "open")
        let tripped = try await Self.calls(cluster.first)

        // The wait ends: the whole cluster makes exactly two probe calls, both fail, and the
        // breaker opens again for twice as long.
        try await sleepUntil(opened["open_until"]?.number, plus: 0.3)
        let wave2 = try await cluster.run(20)
        #expect(wave2.allSatisfy { $0["status"]?.string == "succeeded" })
        #expect(try await Self.calls(cluster.first) == tripped + 2)
        let reopened = try #require(try await cluster.breaker("first/m1"))
        #expect(reopened["state"]?.string == "open")
        #expect(reopened["openings_in_a_row"]?.integer == 2)
        let period = (reopened["open_until"]?.number ?? 0) - (reopened["since"]?.number ?? 0)
        #expect(abs(period - 3.0) < 0.05, "second open period \(period) s")

        // The target recovers: the next probes succeed and close it; jobs go to it again.
        try await cluster.first.reset()
        try await sleepUntil(reopened["open_until"]?.number, plus: 0.3)
        let wave3 = try await cluster.run(20)
        #expect(wave3.allSatisfy { $0["status"]?.string == "succeeded" })
        let closed = try #require(try await cluster.breaker("first/m1"))
        #expect(closed["state"]?.string == "closed")
        #expect(closed["reason"]?.string == "2 of 2 probes succeeded")
        // Jobs that arrived while the probes were out went to the second target; once it is
        // closed, every job goes to the first again. (How many of wave 3 the first answered
        // depends on how long the probes took: no count is asserted for it.)
        #expect((Self.answeredBy(wave3)["first/m1"] ?? 0) >= 2, "\(Self.answeredBy(wave3))")
        let wave4 = try await cluster.run(10)
        #expect(Self.answeredBy(wave4)["first/m1"] == 10, "\(Self.answeredBy(wave4))")
    }

    @Test("a 429 with Retry-After opens the breaker for every worker for at least that long")
    func retryAfterIsHonouredClusterWide() async throws {
        let cluster = try await offThePool { try Cluster() }
        try await cluster.first.setFaults([["path": "/v1/chat/completions", "status": 429, "retry_after": 4, "times": 1]])
        try cluster.writeProviders(firstSettings: ["breaker": ["minimum_calls": 10, "jitter": 0]])
        try cluster.startWorkers(4)
        let wave1 = try await cluster.run(30)
        #expect(wave1.allSatisfy { $0["status"]?.string == "succeeded" })
        let open = try #require(try await cluster.breaker("first/m1"))
        #expect(open["state"]?.string == "open")
        let period = (open["open_until"]?.number ?? 0) - (open["since"]?.number ?? 0)
        #expect(period >= 3.99, "open for \(period) s")
        // Calls already in flight on the 4 workers (2 each), and the few made before the change
        // reached each worker (milliseconds; more on a loaded machine), reached it; then none
        // until the wait is over.
        let reached = try await Self.calls(cluster.first)
        #expect(reached >= 1 && reached < 30, "\(reached) calls")
        let meanwhile = try await cluster.run(20)
        #expect(try await Self.calls(cluster.first) == reached)
        #expect(Self.answeredBy(meanwhile)["second/m2"] == 20)
        // Once it has passed, the target is called again.
        try await sleepUntil(open["open_until"]?.number, plus: 0.3)
        let wave2 = try await cluster.run(10)
        #expect((Self.answeredBy(wave2)["first/m1"] ?? 0) >= 3, "\(Self.answeredBy(wave2))")
        #expect(try await cluster.breaker("first/m1")?["state"]?.string == "closed")
    }

    @Test("slow calls open the breaker; request errors neither open it nor move on to the next target")
    func slowCallsTripItAndRequestErrorsDoNot() async throws {
        let cluster = try await offThePool { try Cluster() }
        try await cluster.first.setFaults([["path": "/v1/chat/completions", "latency_ms": 300, "times": 1_000]])
        try cluster.writeProviders(firstSettings: [
            "breaker": ["minimum_calls": 4, "slow_call_ms": 150, "slow_call_rate_threshold": 50, "wait_ms": 60_000]
        ])
        try cluster.startWorkers(1, concurrency: 4)
        let slow = try await cluster.run(8)
        #expect(slow.allSatisfy { $0["status"]?.string == "succeeded" })
        let tripped = try #require(try await cluster.breaker("first/m1"))
        #expect(tripped["state"]?.string == "open")
        #expect(tripped["reason"]?.string?.hasPrefix("slow-call rate") == true)

        try #require(try await cluster.breakers(["reset", "first/m1"]).code == 0)
        try await cluster.first.setFaults([["path": "/v1/chat/completions", "status": 400, "times": 1_000]])
        let secondBefore = try await Self.calls(cluster.second)
        let refused = try await cluster.run(6)
        #expect(refused.allSatisfy { $0["status"]?.string == "failed" && $0["error"]?["code"]?.string == "provider_bad_request" })
        #expect(try await Self.calls(cluster.second) == secondBefore)
        let still = try #require(try await cluster.breaker("first/m1"))
        #expect(still["state"]?.string == "closed")
        #expect(still["calls"]?.integer == 6 && still["failures"]?.integer == 0)
    }

    @Test("requests and tokens per period hold across 4 workers; the overflow goes to the next target")
    func rateLimitsHoldAcrossWorkers() async throws {
        let cluster = try await offThePool { try Cluster() }
        try cluster.writeProviders(firstSettings: [
            "rate_limit": ["requests": 10, "period_seconds": 1, "request_burst": 2, "max_wait_ms": 0]
        ])
        try cluster.startWorkers(4)
        let results = try await cluster.run(80)
        #expect(results.allSatisfy { $0["status"]?.string == "succeeded" })
        let served = try await Self.calls(cluster.first)
        let window = Self.window(results)
        #expect(served <= 2 + Int((10 * window).rounded(.up)) + 1, "first served \(served) in \(window) s")
        #expect(served >= 3, "first served \(served)")
        #expect(served + (Self.answeredBy(results)["second/m2"] ?? 0) == 80)

        // Tokens: each job is ~600 (300 words in, 301 out), reserved as its prompt estimate plus max_tokens.
        let tokens = try await offThePool { try Cluster() }
        try tokens.writeProviders(firstSettings: [
            "rate_limit": ["tokens": 3000, "period_seconds": 1, "max_wait_ms": 0]
        ])
        try tokens.startWorkers(4)
        let big = try await tokens.run(40, words: 300, maxTokens: 400)
        #expect(big.allSatisfy { $0["status"]?.string == "succeeded" })
        let used = big.filter { $0["route"]?["target"]?.string == "first/m1" }.reduce(0) { $0 + ($1["usage"]?["total_tokens"]?.integer ?? 0) }
        let tokenWindow = Self.window(big)
        #expect(used <= 3000 + Int(3000 * tokenWindow), "first used \(used) tokens in \(tokenWindow) s")
        #expect(used > 0)
        #expect((Self.answeredBy(big)["second/m2"] ?? 0) > 0)
        // A job whose estimate alone is more than the bucket never goes to the target.
        let huge = try await tokens.run(1, words: 300, maxTokens: 5000)
        #expect(huge.first?["route"]?["steps"]?.array?.first?["code"]?.string == "tokens_over_limit")
    }

    @Test("an operator's forced states: open passes the target over, close keeps calling it, reset makes it automatic")
    func forcedStates() async throws {
        let cluster = try await offThePool { try Cluster() }
        try cluster.writeProviders(firstSettings: ["breaker": ["minimum_calls": 2, "window_size": 10, "wait_ms": 60_000]])
        try cluster.startWorkers(2)
        let open = try await cluster.breakers(["open", "first/m1", "--note", "provider maintenance"])
        #expect(open.code == 0 && open.output.contains("forced_open"))
        let before = try await Self.calls(cluster.first)
        let passed = try await cluster.run(10)
        #expect(try await Self.calls(cluster.first) == before)
        #expect(passed.allSatisfy { $0["route"]?["steps"]?.array?.first?["code"]?.string == "forced_open" })
        #expect(try await cluster.breaker("first/m1")?["forced_by"]?.string?.contains("provider maintenance") == true)

        try await cluster.first.setFaults(Self.deadTarget)
        #expect(try await cluster.breakers(["close", "first/m1"]).code == 0)
        _ = try await cluster.run(8)
        let held = try #require(try await cluster.breaker("first/m1"))
        #expect(held["state"]?.string == "forced_closed")
        #expect(try await Self.calls(cluster.first) == before + 8)

        #expect(try await cluster.breakers(["reset", "first/m1"]).code == 0)
        _ = try await cluster.run(8)
        #expect(try await cluster.breaker("first/m1")?["state"]?.string == "open")
        #expect(try await cluster.breakers(["reset", "no/such"]).code == 64)
    }

    @Test("a Redis restart and a killed subscription: breakers and limits recover with no manual step")
    func redisRestartAndLostSubscription() async throws {
        let cluster = try await offThePool { try Cluster() }
        try cluster.writeProviders(firstSettings: ["rate_limit": ["requests": 1000]])
        try cluster.startWorkers(2)
        _ = try await cluster.run(4)
        // The subscription is killed; an order given right after reaches every worker anyway.
        let admin = RedisConnection(configuration: cluster.redis.configuration)
        defer { admin.close() }
        try await admin.send("CLIENT", "KILL", "TYPE", "pubsub")
        #expect(try await cluster.breakers(["open", "first/m1"]).code == 0)
        let passed = try await cluster.run(10)
        #expect(passed.allSatisfy { $0["route"]?["target"]?.string == "second/m2" })
        #expect(
            try await eventually(timeout: .seconds(10)) {
                let (_, output) = try await offThePool { try runSwitchyard(["status", "--redis-url", cluster.redis.url, "--json"]) }
                let status = try JSONValue.parse(Array(output.utf8))
                let workers = status["workers"]?.array ?? []
                return workers.count == 2 && workers.allSatisfy { ($0["resilience"]?["breaker_resubscribes"]?.integer ?? 0) >= 1 }
            }
        )
        // Redis restarts empty: the forced state is gone, and the workers call the target again.
        try await offThePool { try cluster.redis.restart() }
        let after = try await cluster.run(10)
        #expect(after.allSatisfy { $0["status"]?.string == "succeeded" })
        #expect((Self.answeredBy(after)["first/m1"] ?? 0) == 10)
        #expect(try await cluster.breaker("first/m1")?["state"]?.string == "closed")
    }

    @Test("a dead local llama.cpp server falls back to the remote target, and jobs come back to it once it is up")
    func fallbackFromADeadLocalServerAndBack() async throws {
        let llama = try await LlamaServer()
        let port = llama.port
        let cluster = try await offThePool { try Cluster() }
        try cluster.writeProviders(local: llama.baseURL)
        try cluster.startWorkers(1)
        let local = "local/tiny@\(cluster.workers[0].id)"
        let warm = try await cluster.run(3, maxTokens: 4)
        #expect(Self.answeredBy(warm)[local] == 3, "\(warm)")

        try await offThePool { llama.stop() }
        let away = try await cluster.run(6, maxTokens: 4)
        #expect(Self.answeredBy(away)["first/m1"] == 6)
        let passedOver = away.compactMap { $0["route"]?["steps"]?.array?.first?["outcome"]?.string }
        #expect(passedOver.contains("failed") && passedOver.contains("circuit_open"), "\(passedOver)")

        let back = try await LlamaServer(port: port)
        try await Task.sleep(for: .seconds(1.6))
        let returned = try await cluster.run(4, maxTokens: 4)
        // The first job is the probe; jobs beside it go on to the remote target until it closes.
        #expect((Self.answeredBy(returned)[local] ?? 0) >= 1, "\(Self.answeredBy(returned))")
        #expect(try await cluster.breaker(local)?["state"]?.string == "closed")
        let settled = try await cluster.run(4, maxTokens: 4)
        #expect(Self.answeredBy(settled)[local] == 4, "\(Self.answeredBy(settled))")
        _ = back
    }

    /// From the first job's start to the last one's end, in seconds.
    static func window(_ results: [JSONValue]) -> Double {
        let starts = results.compactMap { $0["timings"]?["started"]?.number }
        let ends = results.compactMap { $0["timings"]?["finished"]?.number }
        return (ends.max() ?? 0) - (starts.min() ?? 0)
    }
}

/// Sleeps until the Unix time `time` plus `plus` seconds.
func sleepUntil(_ time: Double?, plus: Double) async throws {
    guard let time else { return }
    let wait = time + plus - Date().timeIntervalSince1970
    if wait > 0 { try await Task.sleep(for: .milliseconds(Int(wait * 1000))) }
}
