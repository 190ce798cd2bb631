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

    @Flag(help: "Also run with the worker behind a TCP proxy that adds --latency each way (a remote Redis), beside the direct run.")
    var viaProxy = false

    @Option(help: "With --via-proxy: the delay the proxy adds each way, for example 50ms.")
    var latency = "50ms"

    @Flag(
        help:
            "Also run on a private Redis Cluster (3 masters, 3 replicas) beside the single server: one queue, three queues on three shards, and --durability replicated."
    )
    var cluster = false

    @Option(help: "With --cluster: jobs per run on the cluster and in the side-by-side runs.")
    var clusterJobs = 20000

    @Option(
        help: "Also run with this many worker processes, one run each (for example 1,2,4): total rate, dispatch latency and CPU per job by process."
    )
    var workers: String?

    /// One run's figures.
    struct Figures {
        /// Redis's own CPU (user + system, `INFO cpu`) per job over push, take and finish, in µs.
        var redisCPUPerJob = 0.0
        /// The push's share of it (the rest is take, finish and the worker's other calls).
        var redisCPUPushPerJob = 0.0
        /// Per command (`INFO commandstats`): calls and µs per job. Commands a script calls are
        /// counted under their own names too, and inside `evalsha`'s time.
        var commands: [(name: String, callsPerJob: Double, usPerJob: Double)] = []
        var jobs = 0
        var pushPerSecond = 0.0
        var processingPerSecond = 0.0
        var samples = 0
        var p50 = 0.0
        var p99 = 0.0
    }

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
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }

        let direct = try await measure(pool: pool, workerRedisURL: redisURL, jobs: jobs, samples: samples)
        print("Queue: no-op jobs, one worker process, local Redis")
        print(pad("measurement", 44) + "value")
        print(pad("push rate (pipelined, \(jobs) jobs)", 44) + String(format: "%.0f jobs/s", direct.pushPerSecond))
        print(pad("processing rate (concurrency \(concurrency))", 44) + String(format: "%.0f jobs/s   (target >= 20000)", direct.processingPerSecond))
        print(pad("dispatch latency p50, idle worker", 44) + String(format: "%.3f ms   (target <= 0.5)", direct.p50))
        print(pad("dispatch latency p99, idle worker", 44) + String(format: "%.3f ms   (target <= 2)", direct.p99))
        print(pad("Redis CPU per job (push + take + finish)", 44) + String(format: "%.1f µs   (target <= 25)", direct.redisCPUPerJob))
        print(
            pad("  of which the push / the worker's calls", 44)
                + String(format: "%.1f µs / %.1f µs", direct.redisCPUPushPerJob, direct.redisCPUPerJob - direct.redisCPUPushPerJob)
        )
        print(
            pad("one Redis core's ceiling at that cost", 44)
                + String(format: "%.0f jobs/s   (measured %.0f)", 1e6 / max(direct.redisCPUPerJob, 1e-9), direct.processingPerSecond)
        )
        let split = try await scriptSplit(pool: pool, jobs: min(jobs, 20000))
        print(
            pad("  by script: push / take / finish", 44)
                + String(format: "%.1f / %.1f / %.1f µs   (%d jobs, no worker)", split.push, split.take, split.finish, split.jobs)
        )
        print("Redis commands per job (INFO commandstats; a script's own calls count inside evalsha too):")
        for command in direct.commands.prefix(8) {
            print("  " + pad(command.name, 42) + String(format: "%.2f calls  %.1f µs", command.callsPerJob, command.usPerJob))
        }
        var report: [String: Any] = [
            "benchmark": "queue",
            "jobs": jobs,
            "concurrency": concurrency,
            "samples": direct.samples,
            "push_jobs_per_second": direct.pushPerSecond,
            "processing_jobs_per_second": direct.processingPerSecond,
            "dispatch_p50_ms": direct.p50,
            "dispatch_p99_ms": direct.p99,
            "redis_cpu_us_per_job": direct.redisCPUPerJob,
            "redis_cpu_us_per_job_push": direct.redisCPUPushPerJob,
            "redis_core_ceiling_jobs_per_second": 1e6 / max(direct.redisCPUPerJob, 1e-9),
            "redis_cpu_us_per_job_by_script": ["push": split.push, "take": split.take, "finish": split.finish, "jobs": Double(split.jobs)],
            "redis_commands_per_job": Dictionary(
                uniqueKeysWithValues: direct.commands.map { ($0.name, ["calls": $0.callsPerJob, "us": $0.usPerJob]) }
            ),
        ]
        if viaProxy {
            guard let port = URL(string: redisURL)?.port, redisURL.hasPrefix("redis://127.0.0.1") || redisURL.hasPrefix("redis://localhost") else {
                throw ValidationError("--via-proxy needs a Redis on 127.0.0.1 (the proxy forwards to loopback only)")
            }
            let delay = try parseMilliseconds(latency)
            let proxy = try FaultProxy(target: port, faults: ["--delay-ms", String(delay)])
            // Fewer jobs and samples: every round trip now costs twice the delay.
            let far = try await measure(
                pool: pool,
                workerRedisURL: "redis://127.0.0.1:\(proxy.port)",
                jobs: max(1000, jobs / 10),
                samples: max(100, samples / 10),
                idleGap: .milliseconds(4 * delay + 2)
            )
            print("")
            print("Worker behind a proxy adding \(latency) each way (a remote Redis), beside the direct run")
            print(pad("measurement", 44) + pad("direct", 16) + pad("via proxy", 16) + "ratio")
            printSideBySide("processing rate", direct.processingPerSecond, far.processingPerSecond, "jobs/s")
            printSideBySide("dispatch latency p50", direct.p50, far.p50, "ms")
            printSideBySide("dispatch latency p99", direct.p99, far.p99, "ms")
            report["via_proxy"] = [
                "latency_each_way_ms": delay, "jobs": far.jobs, "samples": far.samples,
                "processing_jobs_per_second": far.processingPerSecond, "dispatch_p50_ms": far.p50, "dispatch_p99_ms": far.p99,
            ]
        }
        if cluster {
            report["cluster"] = try await compareWithCluster(singlePool: pool, singleURL: redisURL)
        }
        if let workers {
            let counts = workers.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !counts.isEmpty, counts.allSatisfy({ (1...32).contains($0) }) else {
                throw ValidationError("--workers: '\(workers)' is not a comma-separated list of worker counts from 1 to 32 (example: 1,2,4)")
            }
            report["scale_out"] = try await scaleOut(pool: pool, redisURL: redisURL, counts: counts)
        }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// One row of a side-by-side table: the name, both figures, and the second over the first.
    func printSideBySide(_ name: String, _ a: Double, _ b: Double, _ unit: String, note: String = "") {
        print(
            pad(name, 44) + pad(String(format: "%.1f %@", a, unit), 16) + pad(String(format: "%.1f %@", b, unit), 16)
                + String(format: "%.2fx", b / max(a, 1e-9)) + note
        )
    }

    /// "50ms", "0.1s" or "50" as whole milliseconds.
    func parseMilliseconds(_ text: String) throws -> Int {
        let value: Double?
        if text.hasSuffix("ms") {
            value = Double(text.dropLast(2))
        } else if text.hasSuffix("s") {
            value = Double(text.dropLast()).map { $0 * 1000 }
        } else {
            value = Double(text)
        }
        guard let value, value.isFinite, value >= 0, value <= 10_000 else {
            throw ValidationError("--latency: '\(text)' is not a delay from 0 to 10s (examples: 50ms, 0.2s)")
        }
        return Int(value)
    }

    /// Throughput (fill a queue, let one worker drain it) and dispatch latency (one job at a time
    /// to an idle worker), with the worker reaching Redis at `workerRedisURL`.
    /// `idleGap`: the pause between samples, so the worker is back in its blocking read.
    func measure(
        pool: RedisConnectionPool,
        workerRedisURL: String,
        jobs: Int,
        samples: Int,
        idleGap: Duration = .milliseconds(2),
        durability: Durability = .acknowledged
    ) async throws -> Figures {
        var figures = Figures()
        figures.jobs = jobs
        let throughputQueue = "bench-\(UUID().uuidString.prefix(6))"
        var queueConfiguration = QueueConfiguration(name: throughputQueue)
        queueConfiguration.durability = durability
        let queue = JobQueue(configuration: queueConfiguration, redis: pool)
        let durabilityArguments = durability == .acknowledged ? [] : ["--durability", "replicated"]
        try await queue.ensureGroups()
        let batch = (0..<jobs).map { i in
            Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "job \(i)")]), maxAttempts: 3)
        }
        let before = try await RedisCost(pool)
        let clock = ContinuousClock()
        let pushStart = clock.now
        _ = try await queue.push(batch)
        figures.pushPerSecond = Double(jobs) / seconds(clock.now - pushStart)
        let afterPush = try await RedisCost(pool)
        figures.redisCPUPushPerJob = (afterPush.cpuSeconds - before.cpuSeconds) * 1e6 / Double(jobs)

        let worker = try WorkerProcess(
            redisURL: workerRedisURL,
            id: "bench-throughput",
            arguments: ["--queue", throughputQueue, "--executor", "noop", "--concurrency", String(concurrency), "--log-level", "warning"]
                + durabilityArguments
        )
        while (try await queue.status().counters["succeeded"] ?? 0) < jobs {
            try await Task.sleep(for: .milliseconds(100))
        }
        _ = worker.terminate()
        let after = try await RedisCost(pool)
        figures.redisCPUPerJob = (after.cpuSeconds - before.cpuSeconds) * 1e6 / Double(jobs)
        figures.commands = after.commands.compactMap { name, now in
            let then = before.commands[name] ?? (0, 0)
            let calls = now.calls - then.calls
            guard calls > 0 else { return nil }
            return (name, Double(calls) / Double(jobs), (now.usec - then.usec) / Double(jobs))
        }.sorted { $0.usPerJob > $1.usPerJob }
        let results = try await queue.results(of: batch.map(\.id)).compactMap { $0 }
        let firstStart = results.compactMap(\.timings.started).min() ?? 0
        let lastFinish = results.compactMap(\.timings.finished).max() ?? 0
        figures.processingPerSecond = Double(results.count) / max(lastFinish - firstStart, 1e-6)

        // Dispatch latency: an idle worker, one job at a time, push to start.
        let latencyQueue = "bench-\(UUID().uuidString.prefix(6))"
        var idleConfiguration = QueueConfiguration(name: latencyQueue)
        idleConfiguration.durability = durability
        let idleQueue = JobQueue(configuration: idleConfiguration, redis: pool)
        try await idleQueue.ensureGroups()
        let idle = try WorkerProcess(
            redisURL: workerRedisURL,
            id: "bench-latency",
            arguments: ["--queue", latencyQueue, "--executor", "noop", "--concurrency", "1", "--log-level", "warning"] + durabilityArguments
        )
        defer { _ = idle.terminate() }
        // Let the worker reach its blocking read.
        try await Task.sleep(for: .seconds(1))
        let latencies = try await dispatchLatencies(idleQueue, samples: samples, idleGap: idleGap)
        figures.samples = latencies.count
        figures.p50 = percentile(latencies, 50)
        figures.p99 = percentile(latencies, 99)
        return figures
    }
}

extension QueueBench {
    /// Redis CPU per job of each script on its own, through the queue's own calls and no worker:
    /// `jobs` pushed (64 per script call, as `push` does), taken 64 at a time, and finished 64
    /// per call with a small result, each phase between two `INFO cpu` readings.
    func scriptSplit(pool: RedisConnectionPool, jobs: Int) async throws -> (push: Double, take: Double, finish: Double, jobs: Int) {
        let queue = JobQueue(configuration: QueueConfiguration(name: "bench-split-\(UUID().uuidString.prefix(6))"), redis: pool)
        try await queue.ensureGroups()
        let batch = (0..<jobs).map { i in
            Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "job \(i)")]), maxAttempts: 3)
        }
        let start = try await RedisCost(pool)
        _ = try await queue.push(batch)
        let pushed = try await RedisCost(pool)
        var deliveries: [Delivery] = []
        while deliveries.count < jobs {
            let taken = try await queue.take(consumer: "bench-split", count: 64)
            if taken.isEmpty { throw ValidationError("the split run took \(deliveries.count) of \(jobs) jobs") }
            deliveries += taken
        }
        let took = try await RedisCost(pool)
        let now = Date().timeIntervalSince1970
        for chunk in stride(from: 0, to: deliveries.count, by: 64) {
            let completions = deliveries[chunk..<min(chunk + 64, deliveries.count)].map { d in
                Completion(
                    delivery: d,
                    result: JobResult(
                        id: d.jobID,
                        status: .succeeded,
                        output: .object(["text": .string("ok")]),
                        attempts: d.attempt,
                        worker: "bench-split",
                        timings: .init(queued: now, started: now, finished: now)
                    )
                )
            }
            _ = try await queue.finish(completions)
        }
        let finished = try await RedisCost(pool)
        func perJob(_ a: RedisCost, _ b: RedisCost) -> Double { (b.cpuSeconds - a.cpuSeconds) * 1e6 / Double(jobs) }
        return (perJob(start, pushed), perJob(pushed, took), perJob(took, finished), jobs)
    }

    /// Push to start, in ms, sorted: one job at a time to idle workers, after 20 warm-up jobs.
    /// `idleGap`: the pause after each result, so the workers are back in their blocking read.
    func dispatchLatencies(_ queue: JobQueue, samples: Int, idleGap: Duration = .milliseconds(2)) async throws -> [Double] {
        var latencies: [Double] = []
        for i in 0..<(samples + 20) {
            let job = Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "\(i)")]))
            _ = try await queue.push(job)
            var result: JobResult?
            while result == nil {
                try await Task.sleep(for: .microseconds(500))
                result = try await queue.result(of: job.id)
            }
            try await Task.sleep(for: idleGap)
            if i >= 20, let started = result?.timings.started { latencies.append((started - job.queuedAt) * 1000) }
        }
        return latencies.sorted()
    }
}

/// Redis's CPU time and per-command statistics at one moment (`INFO cpu`, `INFO commandstats`).
struct RedisCost {
    var cpuSeconds = 0.0
    var commands: [String: (calls: Int, usec: Double)] = [:]

    /// Summed over every master of a cluster.
    init(_ pool: RedisConnectionPool) async throws {
        let texts = try await pool.forEachPrimary { connection in
            (try await connection.send("INFO", "cpu").string ?? "") + "\n" + (try await connection.send("INFO", "commandstats").string ?? "")
        }
        for line in texts.joined(separator: "\n").split(whereSeparator: \.isNewline) {
            if line.hasPrefix("used_cpu_sys:") || line.hasPrefix("used_cpu_user:") {
                cpuSeconds += Double(line.split(separator: ":").last ?? "") ?? 0
            } else if line.hasPrefix("cmdstat_"), let colon = line.firstIndex(of: ":") {
                let name = String(line[line.index(line.startIndex, offsetBy: 8)..<colon])
                var calls = 0
                var usec = 0.0
                for field in line[line.index(after: colon)...].split(separator: ",") {
                    let pair = field.split(separator: "=")
                    guard pair.count == 2 else { continue }
                    if pair[0] == "calls" { calls = Int(pair[1]) ?? 0 }
                    if pair[0] == "usec" { usec = Double(pair[1]) ?? 0 }
                }
                let known = commands[name] ?? (0, 0)
                commands[name] = (known.calls + calls, known.usec + usec)
            }
        }
    }
}
