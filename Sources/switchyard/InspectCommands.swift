import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardRedis

struct ResultsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "results",
        abstract: "Print the result of a job, or the progress and results of a batch, as JSON lines.",
        discussion: "A job without a result yet prints status pending; an id this queue does not know prints status unknown and exits 4."
    )

    @OptionGroup var redis: RedisOptions

    @Argument(help: "A job id or a batch id.")
    var id: String

    func run() async throws {
        try await withQueue(redis) { queue in
            let progress = try await queue.batchProgress(id)
            if progress.total > 0 {
                FileHandle.standardError.write(
                    Data(
                        "batch \(id): \(progress.finished)/\(progress.total) finished (ok \(progress.succeeded), failed \(progress.failed), dead \(progress.dead), cancelled \(progress.cancelled))\n"
                            .utf8
                    )
                )
                let ids = try await queue.batchJobIDs(id)
                for (jobID, result) in zip(ids, try await queue.results(of: ids)) {
                    print(result.map(jsonLine) ?? pendingLine(jobID))
                }
                return
            }
            if let result = try await queue.result(of: id) {
                print(jsonLine(result))
            } else if try await queue.isKnown(jobID: id) {
                print(pendingLine(id))
                FileHandle.standardError.write(
                    Data("no final result for \(id) yet: queued, running or retrying (switchyard job \(id) says where)\n".utf8)
                )
            } else {
                print(unknownLine(id))
                FileHandle.standardError.write(
                    Data("no job or batch '\(id)' on queue '\(queue.configuration.name)' (never pushed here, or expired)\n".utf8)
                )
                throw ExitCode(4)
            }
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the queue: depth per lane, pending, delayed, dead, counters and live workers."
    )

    @OptionGroup var redis: RedisOptions

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    @Flag(help: "Keep watching: redraw the view (or print a JSON line) every --interval until interrupted, like top.")
    var watch = false

    @Option(parsing: .unconditional, help: "With --watch: time between redraws, for example 1s or 500ms.")
    var interval = "1s"

    func run() async throws {
        let every = try parseDuration(interval, field: "--interval")
        guard every >= .milliseconds(100) else { throw ValidationError("--interval: must be at least 100ms") }
        try await withQueue(redis) { queue in
            repeat {
                // Clear the screen and draw from the top, as top does; JSON lines just follow one another.
                if watch && !json { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                try await show(queue)
                if watch { try await Task.sleep(for: every) }
            } while watch
        }
    }

    func show(_ queue: JobQueue) async throws {
        do {
            let status = try await queue.status()
            if json {
                print(jsonLine(status))
                return
            }
            print("queue \(status.queue)")
            for (lane, info) in (status.paused ?? [:]).sorted(by: { $0.key < $1.key }) {
                let since = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: info.at))
                print(
                    "  PAUSED: \(lane == "*" ? "the whole queue" : "lane \(lane)") (by \(info.by) at \(since)); workers take no new jobs from it until `switchyard queue resume\(lane == "*" ? "" : " --lane \(lane)")`"
                )
            }
            print("  lane      waiting  pending  (of waiting: parked by warm-model routing)")
            for lane in status.lanes {
                print(
                    "  " + lane.name.padding(toLength: 8, withPad: " ", startingAt: 0)
                        + String(format: "%9d %8d %8d", lane.waiting, lane.pending, lane.parked)
                )
            }
            print("  delayed \(status.delayed)   dead \(status.dead)")
            let counters = status.counters.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: "  ")
            print("  totals: \(counters.isEmpty ? "none yet" : counters)")
            // The response cache across live workers (each counts since it started).
            let cache = status.workers.compactMap(\.cache).reduce(into: [String: Int]()) { sum, c in sum.merge(c, uniquingKeysWith: +) }
            if !cache.isEmpty {
                let served = (cache["hits"] ?? 0) + (cache["coalesced"] ?? 0)
                let looked = served + (cache["misses"] ?? 0)
                let ratio = looked == 0 ? 0 : Double(served) / Double(looked) * 100
                print(
                    String(
                        format:
                            "response cache: hit ratio %.1f%%  (hits %d, coalesced %d, misses %d, bypassed %d, stores %d, too large %d, errors %d)",
                        ratio,
                        cache["hits"] ?? 0,
                        cache["coalesced"] ?? 0,
                        cache["misses"] ?? 0,
                        cache["bypassed"] ?? 0,
                        cache["stores"] ?? 0,
                        cache["too_large"] ?? 0,
                        cache["errors"] ?? 0
                    )
                )
            }
            // Breakers and rate limits as live workers have met them (each counts since it started).
            let resilience = status.workers.compactMap(\.resilience).reduce(into: [String: Int]()) { sum, c in
                sum.merge(c, uniquingKeysWith: +)
            }
            if !resilience.isEmpty {
                print(
                    "breakers: refused \(resilience["breaker_refused"] ?? 0), probes \(resilience["breaker_probes"] ?? 0), "
                        + "redis errors \(resilience["breaker_redis_errors"] ?? 0)   rate limits: admitted \(resilience["limit_admitted"] ?? 0), "
                        + "waited \(resilience["limit_waits"] ?? 0), refused \(resilience["limit_refused"] ?? 0), "
                        + "redis errors \(resilience["limit_redis_errors"] ?? 0)   (switchyard breakers lists each target)"
                )
            }
            // Latency merged from every worker process's histograms: true cluster quantiles.
            // Best effort: the latency line is an extra, never a reason for status to fail.
            let snapshots = ((try? await queue.metricsSnapshots()) ?? []).compactMap {
                try? JSONDecoder().decode(MetricsSnapshot.self, from: Data($0))
            }
            if !snapshots.isEmpty {
                let merged = MetricsSnapshot.merge(snapshots)
                func line(_ label: String, _ name: String) -> String? {
                    let histogram = merged.histograms.filter { $0.key.label == name }.values.reduce(into: LatencyHistogram()) { $0.merge($1) }
                    guard let p50 = histogram.quantile(0.5), let p99 = histogram.quantile(0.99) else { return nil }
                    return String(format: "%@ p50 %.1f ms, p99 %.1f ms", label, p50 / 1000, p99 / 1000) + " (\(histogram.count))"
                }
                let parts = [line("queue wait", "switchyard_queue_wait_seconds"), line("run", "switchyard_run_seconds")].compactMap { $0 }
                if !parts.isEmpty { print("latency (\(snapshots.count) worker series): " + parts.joined(separator: "; ")) }
            }
            print("workers alive: \(status.workers.count)")
            for w in status.workers.sorted(by: { $0.id < $1.id }) {
                let age = Date().timeIntervalSince1970 - w.heartbeatAt
                print(
                    String(
                        format: "  %@  %@  profile %@  in flight %d/%d  processed %d  rss %.0f MB  up %.0fs  seen %.1fs ago  v%@",
                        w.id,
                        w.testExecutor == true ? "\(w.executor) (TEST EXECUTOR: calls no model)" : w.executor,
                        w.profile,
                        w.inFlight,
                        w.concurrency,
                        w.processed,
                        Double(w.rssBytes) / 1_048_576,
                        Date().timeIntervalSince1970 - w.startedAt,
                        age,
                        w.version
                    )
                )
                if let models = w.models { print("    warm models: \(models.isEmpty ? "none" : models.joined(separator: ", "))") }
            }
            if watch { print("\(Date()) — every \(interval), Ctrl-C to stop") }
        } catch let error as RedisError where watch {
            // Redis away a moment: say so, and the next redraw tries again.
            print("cannot read the queue: \(error.message); trying again in \(interval)")
        }
    }
}

struct CancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel jobs that have not finished: queued ones are skipped, running ones stopped."
    )

    @OptionGroup var redis: RedisOptions

    @Argument(help: "Job ids.")
    var ids: [String] = []

    @Option(help: "Cancel every unfinished job of this batch.")
    var batch: String?

    @Flag(help: "Print one JSON object per job ({\"id\", \"outcome\": cancelled, already_final or unknown}) instead of text.")
    var json = false

    func validate() throws {
        if ids.isEmpty && batch == nil { throw ValidationError("give job ids or --batch") }
    }

    func run() async throws {
        try await withQueue(redis) { queue in
            var targets = ids
            if let batch {
                let members = try await queue.batchJobIDs(batch)
                if members.isEmpty { throw ValidationError("--batch: no batch '\(batch)' (or its record has expired)") }
                targets += members
            }
            var cancelled = 0
            var unknown = 0
            for id in targets {
                let outcome = try await queue.cancel(jobID: id)
                if json {
                    let name: String
                    switch outcome {
                    case .cancelled: name = "cancelled"
                    case .alreadyFinal: name = "already_final"
                    case .unknown: name = "unknown"
                    }
                    printJSON(["id": .string(id), "outcome": .string(name)])
                }
                switch outcome {
                case .cancelled:
                    cancelled += 1
                    if batch == nil && !json { print("\(id): cancelled") }
                case .alreadyFinal:
                    if batch == nil && !json { print("\(id): already final, unchanged") }
                case .unknown:
                    unknown += 1
                    if !json { print("\(id): unknown job (never pushed to this queue, or its record has expired); nothing written") }
                }
            }
            if batch != nil && !json { print("cancelled \(cancelled) of \(plural(targets.count, "job"))") }
            // Scripts can tell a typo from a job that was already done.
            if unknown > 0 { throw ExitCode(4) }
        }
    }
}

struct DLQCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dlq",
        abstract: "Inspect and manage the dead-letter stream.",
        subcommands: [List.self, Retry.self, Purge.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List dead letters, newest first, as JSON lines.")
        @OptionGroup var redis: RedisOptions
        @Option(parsing: .unconditional, help: "At most this many.")
        var limit = 50

        func run() async throws {
            try await withQueue(redis) { queue in
                for letter in try await queue.deadLetters(limit: limit) { print(jsonLine(letter)) }
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put dead letters back on their lanes as fresh jobs.")
        @OptionGroup var redis: RedisOptions
        @Argument(help: "Entry ids from `dlq list` (entry_id).")
        var entries: [String] = []
        @Flag(help: "Retry every dead letter.")
        var all = false

        func run() async throws {
            if entries.isEmpty && !all { throw ValidationError("give entry ids (from `switchyard dlq list`) or --all") }
            for entry in entries where !Self.isEntryID(entry) {
                printError("'\(entry)' is not a dead letter's entry id (the entry_id of `switchyard dlq list`, like 1733100000000-0)")
                throw ExitCode(64)
            }
            try await withQueue(redis) { queue in
                var targets = entries
                if all { targets = try await queue.deadLetters(limit: 100_000).map(\.entryID) }
                if targets.isEmpty {
                    print("no dead letters to retry on queue '\(queue.configuration.name)'")
                    return
                }
                var retried = 0
                for entry in targets {
                    if let id = try await queue.retryDeadLetter(entryID: entry) {
                        retried += 1
                        print("\(entry): requeued job \(id.isEmpty ? "(no id)" : id)")
                    } else {
                        print("\(entry): no such dead letter")
                    }
                }
                FileHandle.standardError.write(Data("retried \(retried) of \(targets.count)\n".utf8))
                if retried < targets.count { throw ExitCode(4) }
            }
        }

        /// `<ms>-<seq>` or `<ms>`: what XRANGE accepts as an id.
        static func isEntryID(_ text: String) -> Bool {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            return (1...2).contains(parts.count)
                && parts.allSatisfy { !$0.isEmpty && $0.count <= 20 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete every dead letter.")
        @OptionGroup var redis: RedisOptions
        @Flag(help: "Confirm.")
        var yes = false

        func run() async throws {
            guard yes else { throw ValidationError("purging deletes every dead letter for good; add --yes") }
            try await withQueue(redis) { queue in
                print("purged \(try await queue.purgeDeadLetters()) dead letters")
            }
        }
    }
}
