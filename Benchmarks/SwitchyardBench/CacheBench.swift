import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// The response cache through real worker processes and the stand-in provider: what a hit costs
/// next to a bypassed call, how many upstream calls identical concurrent jobs make, and how fast
/// one worker serves distinct hits.
struct CacheBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache",
        abstract: "Response cache: hit latency against bypass, upstream calls for identical concurrent jobs, hit throughput."
    )

    @Option(help: "Jobs, one after another, for each of the hit and bypass latencies.")
    var samples = 300

    @Option(help: "Identical jobs pushed at once for the upstream-call count.")
    var identical = 100

    @Option(help: "Distinct jobs for the hit throughput.")
    var distinct = 2000

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        let server = try RedisServer()
        defer { server.stop() }
        let standin = try StandinServer()
        let providers = FileManager.default.temporaryDirectory.appendingPathComponent("bench-providers-\(UUID().uuidString).json")
        try """
        {"providers": [{"name": "remote", "kind": "openai", "base_url": "\(standin.baseURL)/v1"}],
         "models": {"m": {"provider": "remote"}}}
        """.write(to: providers, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: providers) }
        var redis = server.configuration
        redis.poolSize = 4
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        func queue(_ name: String) -> JobQueue { JobQueue(configuration: QueueConfiguration(name: name), redis: pool) }
        func job(_ prompt: String, cache: CachePolicy = .auto) -> Job {
            Job(
                kind: .chat,
                model: "m",
                input: JobInput(
                    messages: [ChatMessage(role: "user", content: prompt)],
                    parameters: ["temperature": .number(0), "max_tokens": .number(8)]
                ),
                cache: cache
            )
        }
        func workers(_ name: String, count: Int, concurrency: Int) throws -> [WorkerProcess] {
            try (0..<count).map {
                try WorkerProcess(
                    redisURL: server.url,
                    id: "\(name)-\($0)",
                    arguments: ["--queue", name, "--providers", providers.path, "--concurrency", String(concurrency), "--log-level", "warning"]
                )
            }
        }
        func waitFor(_ q: JobQueue, _ ids: [String]) async throws -> [JobResult] {
            while true {
                let results = try await q.results(of: ids)
                if results.allSatisfy({ $0 != nil }) { return results.compactMap { $0 } }
                try await Task.sleep(for: .milliseconds(5))
            }
        }

        // 1. A hit next to a bypassed call, take to finish, one job at a time on one warm worker.
        let latencyQueue = queue("bench-cache-latency")
        try await latencyQueue.ensureGroups()
        let one = try workers("bench-cache-latency", count: 1, concurrency: 1)
        var hits: [Double] = []
        var bypass: [Double] = []
        for i in 0..<(samples * 2 + 20) {
            // Warm-up (the first store, connections), then alternating hit and bypass.
            let policy: CachePolicy = i < 20 || i % 2 == 0 ? .auto : .bypass
            let j = job("the same question", cache: policy)
            _ = try await latencyQueue.push(j)
            let result = try await waitFor(latencyQueue, [j.id])[0]
            guard i >= 20, let started = result.timings.started, let finished = result.timings.finished else { continue }
            let ms = (finished - started) * 1000
            if policy == .auto, result.cache?.status == .hit { hits.append(ms) } else if policy == .bypass { bypass.append(ms) }
        }
        for w in one { _ = w.terminate() }
        hits.sort()
        bypass.sort()

        // 2. Upstream calls for identical jobs pushed at once, over one and over four workers.
        try await standin.setFaults([["path": "/v1/chat/completions", "latency_ms": 50, "times": 1_000_000]])
        var calls: [Int: Int] = [:]
        for count in [1, 4] {
            let name = "bench-cache-flight-\(count)"
            let q = queue(name)
            try await q.ensureGroups()
            let ws = try workers(name, count: count, concurrency: 32)
            while try await q.workers().count < count { try await Task.sleep(for: .milliseconds(20)) }
            try await standin.reset()
            try await standin.setFaults([["path": "/v1/chat/completions", "latency_ms": 50, "times": 1_000_000]])
            let jobs = (0..<identical).map { _ in job("identical over \(count) workers") }
            _ = try await q.push(jobs)
            _ = try await waitFor(q, jobs.map(\.id))
            calls[count] = (try await standin.stats()["by_path"] as? [String: Int])?["/v1/chat/completions"] ?? -1
            for w in ws { _ = w.terminate() }
        }
        try await standin.reset()

        // 3. Distinct hits on one worker: fill the cache, then the same jobs again.
        let hitQueue = queue("bench-cache-hits")
        try await hitQueue.ensureGroups()
        let filler = (0..<distinct).map { job("question \($0)") }
        _ = try await hitQueue.push(filler)
        let hitWorker = try workers("bench-cache-hits", count: 1, concurrency: 64)
        _ = try await waitFor(hitQueue, filler.map(\.id))
        let again = (0..<distinct).map { job("question \($0)") }
        _ = try await hitQueue.push(again)
        let served = try await waitFor(hitQueue, again.map(\.id))
        for w in hitWorker { _ = w.terminate() }
        let firstStart = served.compactMap(\.timings.started).min() ?? 0
        let lastFinish = served.compactMap(\.timings.finished).max() ?? 0
        let hitRate = Double(served.count) / max(lastFinish - firstStart, 1e-6)
        let allHits = served.filter { $0.cache?.status == .hit }.count

        print("Response cache: one worker process per measurement unless stated, stand-in provider, local Redis")
        print(pad("measurement", 52) + "value")
        print(
            pad("hit, take to finish, p50 / p99", 52)
                + String(format: "%.3f / %.3f ms   (target p50 <= 1)", percentile(hits, 50), percentile(hits, 99))
        )
        print(pad("bypass, take to finish, p50 / p99", 52) + String(format: "%.3f / %.3f ms", percentile(bypass, 50), percentile(bypass, 99)))
        print(pad("upstream calls, \(identical) identical jobs, 1 worker", 52) + "\(calls[1] ?? -1)   (target 1)")
        print(pad("upstream calls, \(identical) identical jobs, 4 workers", 52) + "\(calls[4] ?? -1)   (target 1)")
        print(
            pad("distinct hits, one worker (concurrency 64)", 52) + String(format: "%.0f jobs/s (%d of %d were hits)", hitRate, allHits, served.count)
        )
        let report: [String: Any] = [
            "benchmark": "cache",
            "hit_p50_ms": percentile(hits, 50),
            "hit_p99_ms": percentile(hits, 99),
            "bypass_p50_ms": percentile(bypass, 50),
            "bypass_p99_ms": percentile(bypass, 99),
            "hit_samples": hits.count,
            "upstream_calls_1_worker": calls[1] ?? -1,
            "upstream_calls_4_workers": calls[4] ?? -1,
            "identical_jobs": identical,
            "distinct_hits_per_second": hitRate,
            "distinct_hits": allHits,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }
}
