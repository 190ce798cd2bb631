import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// `switchyard queue pause|resume|purge`: control what the workers take.
struct QueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queue",
        abstract: "Pause or resume a queue or one lane, or purge the jobs waiting on it.",
        subcommands: [Pause.self, Resume.self, Purge.self]
    )

    struct Pause: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pause the queue (or one lane): workers take no new jobs from it; running jobs finish.",
            discussion: "Retries and scheduled jobs still reach their lanes and wait there. `switchyard status` shows what is paused."
        )
        @OptionGroup var redis: RedisOptions
        @Option(help: "Pause only this lane: high, default or low.")
        var lane: String?

        func validate() throws { _ = try parseLane(lane) }

        func run() async throws {
            let lane = try parseLane(self.lane)
            try await withQueue(redis) { queue in
                try await queue.pause(lane: lane, by: operatorName())
                let what = lane.map { "lane \($0.rawValue) of queue '\(queue.configuration.name)'" } ?? "queue '\(queue.configuration.name)'"
                print(
                    "paused \(what): workers take no new jobs from it (running ones finish); resume with `switchyard queue resume\(lane.map { " --lane \($0.rawValue)" } ?? "")\(queueOption(redis))`"
                )
            }
        }
    }

    struct Resume: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Resume a paused queue (without --lane: the queue and every paused lane)."
        )
        @OptionGroup var redis: RedisOptions
        @Option(help: "Resume only this lane: high, default or low.")
        var lane: String?

        func validate() throws { _ = try parseLane(lane) }

        func run() async throws {
            let lane = try parseLane(self.lane)
            try await withQueue(redis) { queue in
                let lifted = try await queue.resume(lane: lane)
                if lifted == 0 {
                    let wholeQueuePaused = try await queue.pauses()["*"] != nil
                    let whole = lane != nil && wholeQueuePaused
                    print(
                        "nothing to resume: \(lane.map { "lane \($0.rawValue)" } ?? "queue '\(queue.configuration.name)'") was not paused"
                            + (whole ? " (the whole queue is: `switchyard queue resume` lifts that)" : "")
                    )
                    return
                }
                print("resumed \(lane.map { "lane \($0.rawValue)" } ?? "queue '\(queue.configuration.name)'"): workers take its jobs again")
                if lane != nil, try await queue.pauses()["*"] != nil {
                    print("note: the whole queue is still paused (`switchyard queue resume` lifts that)")
                }
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Cancel every job waiting on the queue (and every delayed one); running jobs finish.",
            discussion: """
                Each purged job gets a final `cancelled` result, counted in its batch, so waiting pushers and batches finish. \
                Asks for confirmation on a terminal; elsewhere it needs --yes.
                """
        )
        @OptionGroup var redis: RedisOptions
        @Flag(help: "Do not ask for confirmation.")
        var yes = false
        @Flag(help: "Print what was removed as one JSON object.")
        var json = false

        func run() async throws {
            try await withQueue(redis) { queue in
                let status = try await queue.status()
                let waiting = status.lanes.reduce(0) { $0 + $1.waiting }
                let running = status.lanes.reduce(0) { $0 + $1.pending }
                if !yes {
                    guard isatty(0) != 0 else {
                        printError("queue purge: standard input is not a terminal; add --yes to purge without confirmation")
                        throw ExitCode(64)
                    }
                    FileHandle.standardError.write(
                        Data(
                            "Cancel \(waiting) waiting and \(status.delayed) delayed jobs of queue '\(status.queue)'? (\(running) running jobs are left to finish) [y/N] "
                                .utf8
                        )
                    )
                    let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() ?? ""
                    guard answer == "y" || answer == "yes" else {
                        print("nothing purged")
                        return
                    }
                }
                let counts = try await queue.purge(by: operatorName())
                if json {
                    var object: [String: JSONValue] = [
                        "waiting": .number(Double(counts.waiting + counts.parked)), "delayed": .number(Double(counts.delayed)),
                        "running_left": .number(Double(running)),
                    ]
                    object["queue"] = .string(status.queue)
                    printJSON(object)
                } else {
                    print(
                        "purged queue '\(status.queue)': cancelled \(plural(counts.waiting + counts.parked, "waiting job")) and \(plural(counts.delayed, "delayed job")); \(plural(running, "running job")) left to finish"
                    )
                }
            }
        }
    }
}

/// `switchyard queues`: every queue on this Redis.
struct QueuesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "queues",
        abstract: "List every queue on this Redis with its depth, running jobs, delayed jobs, dead letters and live workers."
    )
    @OptionGroup var redis: RedisOptions
    @Flag(help: "Print one JSON object per queue, one per line.")
    var json = false

    func run() async throws {
        let configuration = try redis.configuration()
        let pool = RedisConnectionPool(configuration: configuration.redis, logger: cliLogger)
        defer { pool.shutDown() }
        do {
            let names = try await JobQueue.queueNames(on: pool)
            if names.isEmpty && !json { print("no queues on \(configuration.redis.redactedURL)") }
            if !json && !names.isEmpty {
                print("queue".padding(toLength: 20, withPad: " ", startingAt: 0) + "  waiting  running  delayed     dead  workers  paused")
            }
            for name in names {
                let status = try await JobQueue(configuration: QueueConfiguration(name: name), redis: pool, logger: cliLogger).status()
                let waiting = status.lanes.reduce(0) { $0 + $1.waiting }
                let running = status.lanes.reduce(0) { $0 + $1.pending }
                let paused = (status.paused ?? [:]).keys.sorted()
                if json {
                    let object: [String: JSONValue] = [
                        "queue": .string(name), "waiting": .number(Double(waiting)), "running": .number(Double(running)),
                        "delayed": .number(Double(status.delayed)), "dead": .number(Double(status.dead)),
                        "workers": .number(Double(status.workers.count)), "paused": .array(paused.map { .string($0) }),
                    ]
                    printJSON(object)
                } else {
                    let pausedText = paused.isEmpty ? "-" : paused.contains("*") ? "all" : paused.joined(separator: ",")
                    print(
                        name.padding(toLength: 20, withPad: " ", startingAt: 0)
                            + String(format: "  %7d  %7d  %7d  %7d  %7d  ", waiting, running, status.delayed, status.dead, status.workers.count)
                            + pausedText
                    )
                }
            }
        } catch let error as RedisError {
            printError(error.message)
            throw ExitCode(2)
        }
    }
}

/// `switchyard batches`: recent batches and their progress.
struct BatchesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batches",
        abstract: "List the queue's recent batches, newest first, with their progress."
    )
    @OptionGroup var redis: RedisOptions
    @Option(parsing: .unconditional, help: "At most this many.")
    var limit = 20
    @Flag(help: "Print one JSON object per batch, one per line.")
    var json = false

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit: must be 1 to 10000, got \(limit)") }
    }

    func run() async throws {
        try await withQueue(redis) { queue in
            let batches = try await queue.recentBatches(limit: limit)
            if batches.isEmpty && !json { print("no batches on queue '\(queue.configuration.name)'") }
            let dates = ISO8601DateFormatter()
            for b in batches {
                let p = b.progress
                if json {
                    let object: [String: JSONValue] = [
                        "batch": .string(b.id), "created": .number(b.created), "total": .number(Double(p.total)),
                        "finished": .number(Double(p.finished)), "succeeded": .number(Double(p.succeeded)), "failed": .number(Double(p.failed)),
                        "dead": .number(Double(p.dead)), "cancelled": .number(Double(p.cancelled)),
                    ]
                    printJSON(object)
                } else {
                    print(
                        "\(b.id)  \(dates.string(from: Date(timeIntervalSince1970: b.created)))  \(p.finished)/\(p.total) finished"
                            + "  (ok \(p.succeeded), failed \(p.failed), dead \(p.dead), cancelled \(p.cancelled))"
                    )
                }
            }
        }
    }
}

/// `switchyard delayed list|promote`.
struct DelayedCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delayed",
        abstract: "List the delayed jobs (scheduled, or waiting for a retry), or make one due now.",
        subcommands: [List.self, Promote.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List delayed jobs, soonest first, as JSON lines.")
        @OptionGroup var redis: RedisOptions
        @Option(parsing: .unconditional, help: "At most this many.")
        var limit = 50

        func validate() throws {
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit: must be 1 to 100000, got \(limit)") }
        }

        func run() async throws {
            try await withQueue(redis) { queue in
                for job in try await queue.delayedJobs(limit: limit) { print(jsonLine(job)) }
            }
        }
    }

    struct Promote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a delayed job due now: it goes onto its lane at once.",
            discussion: "Exit status 4 when no delayed job has this id."
        )
        @OptionGroup var redis: RedisOptions
        @Argument(help: "The job id.")
        var id: String

        func run() async throws {
            try await withQueue(redis) { queue in
                if try await queue.promote(jobID: id) {
                    print("\(id): due now, on its lane")
                } else {
                    printError("no delayed job '\(id)' on queue '\(queue.configuration.name)' (`switchyard job \(id)` says where it is)")
                    throw ExitCode(4)
                }
            }
        }
    }
}

/// `switchyard retry <job id>`.
struct RetryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Run jobs that ended failed or dead again: attempt 1 with the same payload, counted again in their batch.",
        discussion: "Exit status 4 when an id is unknown, 1 when a job cannot be retried (it has not ended, or it succeeded or was cancelled)."
    )
    @OptionGroup var redis: RedisOptions
    @Argument(help: "Job ids.")
    var ids: [String]

    func validate() throws {
        if ids.isEmpty { throw ValidationError("give one or more job ids") }
    }

    func run() async throws {
        var worst: Int32 = 0
        try await withQueue(redis) { queue in
            for id in ids {
                switch try await queue.retryJob(id: id) {
                case .requeued(let lane):
                    print("\(id): queued again on lane \(lane)")
                case .notFinished:
                    printError("\(id): has not ended yet (`switchyard job \(id)` says where it is); nothing to retry")
                    worst = max(worst, 1)
                case .notRetryable(let status):
                    printError("\(id): ended \(status.rawValue); only failed or dead jobs are retried (push it again to run it anew)")
                    worst = max(worst, 1)
                case .payloadGone(let status):
                    printError(
                        "\(id): ended \(status?.rawValue ?? "failed or dead"), but its payload is no longer kept (expired, or its dead letter was purged); push it again"
                    )
                    worst = max(worst, 1)
                case .unknown:
                    printError("\(id): unknown on queue '\(queue.configuration.name)' (never pushed here, or expired)")
                    worst = 4
                }
            }
        }
        if worst != 0 { throw ExitCode(worst) }
    }
}

/// A lane name from an option, or nil; a clear error for anything else.
func parseLane(_ text: String?) throws -> JobPriority? {
    guard let text else { return nil }
    guard let lane = JobPriority(rawValue: text) else {
        throw ValidationError("--lane: '\(text)' is not a lane (high, default, low)")
    }
    return lane
}

/// `user@host`, for records of who did what.
func operatorName() -> String {
    let account = getpwuid(getuid()).flatMap { $0.pointee.pw_name.map { String(cString: $0) } }
    let user = ProcessInfo.processInfo.environment["USER"] ?? ProcessInfo.processInfo.environment["LOGNAME"] ?? account ?? "unknown"
    return "\(user)@\(ProcessInfo.processInfo.hostName)"
}

/// ` --queue q` when the command was given one, for hints that repeat it.
func queueOption(_ redis: RedisOptions) -> String { redis.queue.map { " --queue \($0)" } ?? "" }

/// "1 job", "3 jobs".
func plural(_ n: Int, _ noun: String) -> String { "\(n) \(noun)\(n == 1 ? "" : "s")" }
