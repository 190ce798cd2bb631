import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// How long a worker can run: worker processes drain jobs pushed in waves while, every
/// `--sample-every`, each worker's RSS and open descriptors and Redis's memory and key count are
/// sampled. Results expire quickly (`--result-ttl`), so Redis should come back to its baseline.
/// `--llama` runs chat jobs on real llama.cpp servers with a one-model cache, so models are
/// evicted and loaded again all along, and checks that no model-server process or port is left.
struct SoakBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Worker RSS, descriptors and Redis memory over a long run of jobs pushed in waves (no-op jobs, or real llama.cpp with evictions)."
    )

    @Option(help: "Jobs in all (ignored with --duration).")
    var jobs = 1_000_000

    @Option(help: "Run waves until this much time has passed (for example 10m) instead of a number of jobs.")
    var duration: String?

    @Option(help: "Jobs per wave: a wave is pushed, then drained, then the next.")
    var wave = 20_000

    @Option(help: "Worker processes.")
    var workers = 2

    @Option(help: "Each worker's concurrency.")
    var concurrency = 16

    @Option(help: "Time between samples.")
    var sampleEvery = "60s"

    @Option(help: "How long results live (short, so Redis memory returns to its baseline).")
    var resultTTL = "20s"

    @Flag(help: "Chat jobs on real llama.cpp servers (llama-cpp-python's), three models, one fits per worker: evictions all along.")
    var llama = false

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    struct Sample {
        var seconds: Double
        var jobsDone: Int
        var rssKB: [Int]
        var fds: [Int]
        var usedMemory: Int
        var keys: Int
    }

    func run() async throws {
        let every = try parseDuration(sampleEvery, field: "--sample-every")
        let ttl = try parseDuration(resultTTL, field: "--result-ttl")
        let limit = try duration.map { try parseDuration($0, field: "--duration") }
        guard jobs >= 1, wave >= 1, workers >= 1, concurrency >= 1, every >= .seconds(1), ttl >= .seconds(1) else {
            throw ValidationError("--jobs, --wave, --workers and --concurrency must be at least 1; --sample-every and --result-ttl at least 1s")
        }
        let server = try RedisServer()
        defer { server.stop() }
        var redisConfiguration = server.configuration
        redisConfiguration.poolSize = 2
        let pool = RedisConnectionPool(configuration: redisConfiguration)
        defer { pool.shutDown() }
        let name = "soak"
        let queue = JobQueue(configuration: QueueConfiguration(name: name, resultTTL: ttl, idempotencyTTL: ttl), redis: pool)
        try await queue.ensureGroups()

        var catalog: String?
        defer { if let catalog { try? FileManager.default.removeItem(atPath: catalog) } }
        var arguments = ["--queue", name, "--concurrency", String(concurrency), "--result-ttl", resultTTL, "--log-level", "warning"]
        if llama {
            catalog = try LlamaServer.catalogFile(models: ["m1", "m2", "m3"])
            // A short warm wait and no sharing threshold: models move between workers, so they are evicted and loaded all along.
            arguments += [
                "--executor", "local", "--models", catalog!, "--profile", "cpu", "--set", "model_cache_size=1", "--warm-wait", "200ms",
                "--no-cache", "--log-level", "info",
            ]
        } else {
            arguments += ["--executor", "noop"]
        }
        let processes = try (0..<workers).map { i in try WorkerProcess(redisURL: server.url, id: "soak-\(i)", arguments: arguments) }
        defer { for p in processes { _ = p.terminate() } }
        while try await queue.workers().count < workers { try await Task.sleep(for: .milliseconds(50)) }

        let clock = ContinuousClock()
        let start = clock.now
        func sample() async throws -> Sample {
            let info = try await pool.send("INFO", "memory").string ?? ""
            let used = info.split(separator: "\r\n").first { $0.hasPrefix("used_memory:") }.flatMap { Int($0.dropFirst("used_memory:".count)) } ?? 0
            let keys = try await pool.send("DBSIZE").int ?? 0
            let done = try await queue.status().counters["succeeded"] ?? 0
            return Sample(
                seconds: seconds(clock.now - start),
                jobsDone: done,
                rssKB: processes.map { ProcessMemory.rssKB(of: $0.process.pid) },
                fds: processes.map { ProcessMemory.openDescriptors(of: $0.process.pid) },
                usedMemory: used,
                keys: keys
            )
        }
        func keyNames() async throws -> Set<String> {
            Set((try await pool.send("KEYS", "*").array ?? []).compactMap(\.string))
        }
        let baselineKeys = try await keyNames()
        func finalCount() async throws -> Int {
            let counters = try await queue.status().counters
            return ["succeeded", "failed", "dead", "cancelled"].map { counters[$0] ?? 0 }.reduce(0, +)
        }
        let baseline = try await sample()
        var samples = [baseline]
        print(
            "Soak: \(workers) worker processes (\(llama ? "llama.cpp chat jobs, 3 models, a one-model cache each" : "no-op jobs")), concurrency \(concurrency), waves of \(wave), results live \(resultTTL)"
        )
        printHeader()
        printRow(baseline)

        var pushed = 0
        var nextSample = clock.now + every
        let waveSize = llama ? min(wave, 60) : wave
        while true {
            if let limit { if clock.now - start >= limit { break } } else if pushed >= jobs { break }
            let count = limit == nil ? min(waveSize, jobs - pushed) : waveSize
            let batch = (0..<count).map { i -> Job in
                let n = pushed + i
                return Job(
                    kind: .chat,
                    model: llama ? "m\(n % 3 + 1)" : "noop",
                    input: JobInput(
                        messages: [ChatMessage(role: "user", content: "soak \(n)")],
                        parameters: llama ? ["max_tokens": .number(4), "temperature": .number(0)] : [:]
                    ),
                    maxAttempts: 3
                )
            }
            _ = try await queue.push(batch)
            pushed += count
            // Every final status counts; a wave that does not drain within 10 minutes ends the soak.
            let waveDeadline = clock.now + .seconds(600)
            while try await finalCount() < pushed {
                if clock.now > waveDeadline {
                    throw ValidationError(
                        "a wave did not drain in 10 minutes (\(try await finalCount()) of \(pushed) jobs final); see \(processes.map(\.logPath))"
                    )
                }
                if clock.now >= nextSample {
                    let s = try await sample()
                    samples.append(s)
                    printRow(s)
                    nextSample = clock.now + every
                }
                try await Task.sleep(for: .milliseconds(llama ? 200 : 20))
            }
        }
        let drained = try await sample()
        samples.append(drained)
        printRow(drained)
        // Results, records and idempotency keys expire: Redis should come back to where it started.
        try await Task.sleep(for: ttl + .seconds(3))
        let expired = try await sample()
        printRow(expired)
        // What stays once everything per job has expired: the queue's own keys (counters, lane streams), created by the first push.
        let added = try await keyNames().subtracting(baselineKeys).sorted()
        let status = try await queue.status()

        // Model servers: each worker's children now, and whether any outlives its worker.
        var children: [Int32: [Int32]] = [:]
        for p in processes { children[p.process.pid] = ProcessMemory.children(of: p.process.pid) }
        let loads = processes.map { $0.log.components(separatedBy: "ready after").count - 1 }
        let evictions = processes.map { $0.log.components(separatedBy: "evicting").count - 1 }
        for p in processes { _ = p.terminate() }
        try await Task.sleep(for: .seconds(1))
        let leftovers = children.values.flatMap { $0 }.filter { kill($0, 0) == 0 }

        // After warm-up: from the first sample taken once a tenth of the jobs are done.
        let steady = samples.dropFirst().filter { $0.jobsDone * 10 >= pushed }
        let first = steady.first ?? drained
        var rssDrift: [Double] = []
        for w in 0..<workers {
            let values = steady.map { Double($0.rssKB[w]) }
            let reference = Double(first.rssKB[w])
            rssDrift.append(values.map { abs($0 - reference) / max(reference, 1) }.max() ?? 0)
        }
        let fdSpread = (0..<workers).map { w in (steady.map { $0.fds[w] }.max() ?? 0) - (steady.map { $0.fds[w] }.min() ?? 0) }
        let memoryRatio = Double(expired.usedMemory) / Double(max(baseline.usedMemory, 1))
        let succeeded = status.counters["succeeded"] ?? 0
        let counted = status.counters["pushed"] ?? 0
        let left = status.lanes.map { $0.waiting + $0.pending }.reduce(0, +)
        print("")
        print(
            String(
                format: "%d jobs in %.0f s (%.0f jobs/s); pushed %d, succeeded %d, dead %d, left in lanes %d: %@",
                pushed,
                drained.seconds,
                Double(pushed) / max(drained.seconds, 0.001),
                counted,
                succeeded,
                status.counters["dead"] ?? 0,
                left,
                counted == pushed && succeeded == pushed && left == 0 ? "no job lost" : "COUNTS DIFFER"
            )
        )
        print(
            "worker RSS after warm-up, largest drift from the first sample: "
                + rssDrift.map { String(format: "%.1f%%", $0 * 100) }.joined(separator: ", ")
                + " (target within ±5%: \(rssDrift.allSatisfy { $0 <= 0.05 } ? "yes" : "no"))"
        )
        print(
            "open descriptors, largest minus smallest per worker: \(fdSpread.map(String.init).joined(separator: ", ")) (flat: \(fdSpread.allSatisfy { $0 <= 2 } ? "yes" : "no"))"
        )
        print(
            String(
                format: "Redis used_memory after the results expired: %.2fx the baseline (%d vs %d bytes); keys %d vs %d",
                memoryRatio,
                expired.usedMemory,
                baseline.usedMemory,
                expired.keys,
                baseline.keys
            )
        )
        print("keys that were not there at the start: \(added.prefix(20).joined(separator: " "))\(added.count > 20 ? " …" : "")")
        if llama {
            print(
                "model loads per worker: \(loads.map(String.init).joined(separator: ", ")); evictions: \(evictions.map(String.init).joined(separator: ", ")); model servers left after the workers stopped: \(leftovers.count)"
            )
        }
        var report: [String: Any] = [
            "benchmark": "soak", "mode": llama ? "llama" : "noop", "workers": workers, "jobs": pushed, "seconds": drained.seconds,
            "pushed_counter": counted, "succeeded": succeeded, "dead": status.counters["dead"] ?? 0, "left_in_lanes": left,
            "rss_drift_after_warmup": rssDrift, "fd_spread": fdSpread, "redis_used_memory_baseline": baseline.usedMemory,
            "redis_used_memory_after_expiry": expired.usedMemory, "redis_keys_baseline": baseline.keys, "redis_keys_after_expiry": expired.keys,
            "redis_keys_added": added,
            "samples": (samples + [expired]).map { s in
                ["seconds": s.seconds, "jobs_done": s.jobsDone, "rss_kb": s.rssKB, "fds": s.fds, "used_memory": s.usedMemory, "keys": s.keys]
                    as [String: Any]
            },
        ]
        if llama {
            report["model_loads"] = loads
            report["evictions"] = evictions
            report["model_servers_left"] = leftovers.count
        }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    func printHeader() {
        print(pad("seconds", 10) + pad("jobs done", 12) + pad("worker RSS MiB", 22) + pad("worker fds", 14) + pad("Redis MiB", 12) + "keys")
    }

    func printRow(_ s: Sample) {
        print(
            pad(String(format: "%.0f", s.seconds), 10) + pad("\(s.jobsDone)", 12)
                + pad(s.rssKB.map { String(format: "%.1f", Double($0) / 1024) }.joined(separator: " "), 22)
                + pad(s.fds.map(String.init).joined(separator: " "), 14) + pad(String(format: "%.2f", Double(s.usedMemory) / 1_048_576), 12)
                + "\(s.keys)"
        )
        // A soak runs for long: each row shows when it is sampled, also when piped to a file.
        fflush(nil)
    }
}

/// "250ms", "20s", "10m", "1h" as a duration, naming the flag when it is not one.
func parseDuration(_ text: String, field: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast(suffix.count)), value >= 0 { return .milliseconds(Int64(value * scale * 1000)) }
    }
    throw ValidationError("\(field): '\(text)' is not a duration like 250ms, 20s, 10m or 1h")
}

/// Memory, descriptors and children of a process, from /proc (Linux; zeros elsewhere).
enum ProcessMemory {
    static func rssKB(of pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
        else { return 0 }
        return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
    }

    static func openDescriptors(of pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }

    static func children(of pid: Int32) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap(Int32.init).filter { child in
            guard let text = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else {
                return false
            }
            let fields = text[text.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }
    }
}
