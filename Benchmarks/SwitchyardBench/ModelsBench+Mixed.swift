import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// One run of the mixed workload: jobs for three models, interleaved, on two worker processes
/// that each fit one model.
struct MixedRun {
    var warmRouting: Bool
    var loads: [Int]
    var seconds: Double
    var latencies: [Double]
    var succeeded: Int

    var totalLoads: Int { loads.reduce(0, +) }
}

extension ModelsBench {
    func mixedWorkload(redisURL: String, catalog: String, warmRouting: Bool) async throws -> MixedRun {
        let name = "bench-mixed-\(UUID().uuidString.prefix(6))"
        var redis = try RedisConfiguration(url: redisURL)
        redis.poolSize = 2
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: pool)
        try await queue.ensureGroups()
        var arguments = [
            "--queue", name, "--executor", "local", "--models", catalog, "--profile", "cpu", "--set", "model_cache_size=1",
            "--concurrency", "1", "--warm-wait", warmWait, "--log-level", "info",
        ]
        if !warmRouting { arguments.append("--no-warm-routing") }
        let workers = try ["a", "b"].map { try WorkerProcess(redisURL: redisURL, id: "\(name)-\($0)", arguments: arguments) }
        // Both workers are up (registered) before the jobs arrive, so neither starts with a head start.
        while try await queue.workers().count < 2 { try await Task.sleep(for: .milliseconds(50)) }
        let jobs = (0..<mixedJobs).map { i in
            Job(
                kind: .chat,
                model: "m\(i % 3 + 1)",
                input: JobInput(
                    messages: [ChatMessage(role: "user", content: "job \(i)")],
                    parameters: ["max_tokens": .number(4), "temperature": .number(0)]
                )
            )
        }
        let clock = ContinuousClock()
        let start = clock.now
        _ = try await queue.push(jobs)
        var results: [JobResult] = []
        let deadline = clock.now + .seconds(600)
        while true {
            results = try await queue.results(of: jobs.map(\.id)).compactMap { $0 }
            if results.count == jobs.count { break }
            if clock.now > deadline {
                for worker in workers { _ = worker.terminate() }
                throw ValidationError(
                    "the mixed workload did not finish in 10 minutes (\(results.count) of \(jobs.count) results); see \(workers.map(\.logPath))"
                )
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        let elapsed = clock.now - start
        for worker in workers { _ = worker.terminate() }
        let latencies = results.compactMap { r in r.timings.finished.flatMap { f in r.timings.queued.map { (f - $0) * 1000 } } }.sorted()
        return MixedRun(
            warmRouting: warmRouting,
            loads: workers.map { $0.log.components(separatedBy: "ready after").count - 1 },
            seconds: seconds(elapsed),
            latencies: latencies,
            succeeded: results.filter { $0.status == .succeeded }.count
        )
    }
}
