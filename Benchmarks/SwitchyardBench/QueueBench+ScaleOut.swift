import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

extension QueueBench {
    /// One run per worker count on the same Redis: `jobs` no-op jobs drained by N worker
    /// processes (total rate, from the first start to the last finish), dispatch latency with N
    /// idle workers, and where the CPU went per job: Redis, the workers together, this process.
    func scaleOut(pool: RedisConnectionPool, redisURL: String, counts: [Int]) async throws -> [[String: Any]] {
        var rows: [[String: Any]] = []
        print("")
        print("Scale-out: \(jobs) no-op jobs a run on one Redis, N worker processes of concurrency \(concurrency), one run after another")
        print(
            pad("workers", 10) + pad("jobs/s", 12) + pad("vs 1", 8) + pad("dispatch p50", 15) + pad("p99", 12)
                + pad("CPU µs/job: Redis", 19) + pad("workers", 10) + "bench"
        )
        var first: Double?
        for n in counts {
            let name = "bench-scale-\(n)-\(UUID().uuidString.prefix(4))"
            let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: pool)
            try await queue.ensureGroups()
            let batch = (0..<jobs).map { i in
                Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "job \(i)")]), maxAttempts: 3)
            }
            _ = try await queue.push(batch)
            let redisBefore = try await RedisCost(pool)
            let selfBefore = ProcessCPU.seconds(of: getpid())
            let processes = try (0..<n).map { i in
                try WorkerProcess(
                    redisURL: redisURL,
                    id: "bench-scale-\(n)-\(i)",
                    arguments: ["--queue", name, "--executor", "noop", "--concurrency", String(concurrency), "--log-level", "warning"]
                )
            }
            while (try await queue.status().counters["succeeded"] ?? 0) < jobs { try await Task.sleep(for: .milliseconds(100)) }
            // Read before they exit: /proc forgets a process once it is reaped.
            let workerCPU = processes.map { ProcessCPU.seconds(of: $0.process.pid) }.reduce(0, +)
            let selfCPU = ProcessCPU.seconds(of: getpid()) - selfBefore
            let redisAfter = try await RedisCost(pool)
            for p in processes { _ = p.terminate() }
            let results = try await queue.results(of: batch.map(\.id)).compactMap { $0 }
            let start = results.compactMap(\.timings.started).min() ?? 0
            let end = results.compactMap(\.timings.finished).max() ?? 0
            let rate = Double(results.count) / max(end - start, 1e-6)
            if first == nil { first = rate }

            // Dispatch latency with n idle workers on a fresh queue.
            let idleName = "bench-scale-idle-\(n)-\(UUID().uuidString.prefix(4))"
            let idleQueue = JobQueue(configuration: QueueConfiguration(name: idleName), redis: pool)
            try await idleQueue.ensureGroups()
            let idle = try (0..<n).map { i in
                try WorkerProcess(
                    redisURL: redisURL,
                    id: "bench-scale-idle-\(n)-\(i)",
                    arguments: ["--queue", idleName, "--executor", "noop", "--concurrency", "1", "--log-level", "warning"]
                )
            }
            try await Task.sleep(for: .seconds(1))
            let latencies = try await dispatchLatencies(idleQueue, samples: max(100, samples / 2))
            for p in idle { _ = p.terminate() }
            let redisPerJob = (redisAfter.cpuSeconds - redisBefore.cpuSeconds) * 1e6 / Double(jobs)
            let workersPerJob = workerCPU * 1e6 / Double(jobs)
            let selfPerJob = selfCPU * 1e6 / Double(jobs)
            print(
                pad("\(n)", 10) + pad(String(format: "%.0f", rate), 12) + pad(String(format: "%.2fx", rate / (first ?? rate)), 8)
                    + pad(String(format: "%.3f ms", percentile(latencies, 50)), 15) + pad(String(format: "%.3f ms", percentile(latencies, 99)), 12)
                    + pad(String(format: "%.1f", redisPerJob), 19) + pad(String(format: "%.1f", workersPerJob), 10)
                    + String(format: "%.1f", selfPerJob)
            )
            rows.append([
                "workers": n, "jobs_per_second": rate, "dispatch_p50_ms": percentile(latencies, 50), "dispatch_p99_ms": percentile(latencies, 99),
                "redis_cpu_us_per_job": redisPerJob, "workers_cpu_us_per_job": workersPerJob, "bench_cpu_us_per_job": selfPerJob,
            ])
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        print(
            "On \(cores) cores: the CPU columns add up to what one job costs the machine; when their sum times the rate reaches "
                + "\(cores) cores' worth (\(cores * 1_000_000) µs/s), more workers cannot help."
        )
        return rows
    }
}

/// CPU time (user + system) of a process from /proc (Linux); 0 where there is no /proc.
enum ProcessCPU {
    static func seconds(of pid: Int32) -> Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        // Fields after "(comm)": state is field 3; utime and stime are fields 14 and 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return (user + system) / max(ticks, 1)
    }
}
