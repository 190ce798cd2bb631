import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// No-op jobs through one real worker process on a local Redis: push rate, processing rate and
/// dispatch latency (push to start on an idle worker).
struct QueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Push rate, processing rate and dispatch latency of the queue with one worker process."
    )

    @Option(help: "No-op jobs for the throughput run.")
    var jobs = 50000

    @Option(help: "Concurrency of the worker in the throughput run.")
    var concurrency = 256

    @Option(help: "Jobs pushed one at a time to an idle worker for the dispatch-latency run.")
    var samples = 1000

    @Option(help: "Use this Redis instead of starting a private one.")
    var url: String?

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        var server: RedisServer?
        let redisURL: String
        if let url {
            redisURL = url
        } else {
            server = try RedisServer()
            redisURL = server!.url
        }
        defer { server?.stop() }
        var redis = try RedisConfiguration(url: redisURL)
        redis.poolSize = 4

        // Throughput: fill the queue, then let one worker process drain it.
        let throughputQueue = "bench-\(UUID().uuidString.prefix(6))"
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: throughputQueue), redis: pool)
        try await queue.ensureGroups()
        let batch = (0..<jobs).map { i in
            Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "job \(i)")]), maxAttempts: 3)
        }
        let clock = ContinuousClock()
        let pushStart = clock.now
        _ = try await queue.push(batch)
        let pushSeconds = seconds(clock.now - pushStart)

        let worker = try WorkerProcess(
            redisURL: redisURL,
            id: "bench-throughput",
            arguments: ["--queue", throughputQueue, "--executor", "noop", "--concurrency", String(concurrency), "--log-level", "warning"]
        )
        while (try await queue.status().counters["succeeded"] ?? 0) < jobs {
            try await Task.sleep(for: .milliseconds(100))
        }
        _ = worker.terminate()
        let results = try await queue.results(of: batch.map(\.id)).compactMap { $0 }
        let firstStart = results.compactMap(\.timings.started).min() ?? 0
        let lastFinish = results.compactMap(\.timings.finished).max() ?? 0
        let processingRate = Double(results.count) / max(lastFinish - firstStart, 1e-6)

        // Dispatch latency: an idle worker, one job at a time, push to start.
        let latencyQueue = "bench-\(UUID().uuidString.prefix(6))"
        let idleQueue = JobQueue(configuration: QueueConfiguration(name: latencyQueue), redis: pool)
        try await idleQueue.ensureGroups()
        let idle = try WorkerProcess(
            redisURL: redisURL,
            id: "bench-latency",
            arguments: ["--queue", latencyQueue, "--executor", "noop", "--concurrency", "1", "--log-level", "warning"]
        )
        defer { _ = idle.terminate() }
        // Let the worker reach its blocking read.
        try await Task.sleep(for: .seconds(1))
        var latencies: [Double] = []
        for i in 0..<(samples + 20) {
            let job = Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "\(i)")]))
            _ = try await idleQueue.push(job)
            var result: JobResult?
            while result == nil {
                try await Task.sleep(for: .microseconds(500))
                result = try await idleQueue.result(of: job.id)
            }
            // Idle again: the worker is back in its blocking read before the next push.
            try await Task.sleep(for: .milliseconds(2))
            if i >= 20, let started = result?.timings.started { latencies.append((started - job.queuedAt) * 1000) }
        }
        latencies.sort()
        let p50 = percentile(latencies, 50)
        let p99 = percentile(latencies, 99)

        print("Queue: no-op jobs, one worker process, local Redis")
        print(pad("measurement", 44) + "value")
        print(pad("push rate (pipelined, \(jobs) jobs)", 44) + String(format: "%.0f jobs/s", Double(jobs) / pushSeconds))
        print(pad("processing rate (concurrency \(concurrency))", 44) + String(format: "%.0f jobs/s   (target >= 20000)", processingRate))
        print(pad("dispatch latency p50, idle worker", 44) + String(format: "%.3f ms   (target <= 0.5)", p50))
        print(pad("dispatch latency p99, idle worker", 44) + String(format: "%.3f ms   (target <= 2)", p99))
        let report: [String: Any] = [
            "benchmark": "queue",
            "jobs": jobs,
            "concurrency": concurrency,
            "samples": latencies.count,
            "push_jobs_per_second": Double(jobs) / pushSeconds,
            "processing_jobs_per_second": processingRate,
            "dispatch_p50_ms": p50,
            "dispatch_p99_ms": p99,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }
}
