import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Synchronization

struct PushCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push a job (--prompt) or a JSONL file of jobs (--file), optionally waiting for the results.",
        discussion: """
            Each JSONL line is an object such as {"model": "qwen3-30b", "prompt": "..."} or
            {"kind": "embedding", "model": "e5", "input": ["a", "b"]}. Every line is checked before anything is
            pushed; an error names the line and the field. A file becomes one batch.
            Exit status: 0 pushed (with --wait: every job succeeded), 2 Redis failed, 3 the wait timed out (or a result is
            missing), 5 every job finished and some did not succeed, 64 a bad option, 65 a bad job, 73 --out could not be
            written, 130 interrupted (Ctrl-C; the jobs keep running).
            """
    )

    @OptionGroup var redis: RedisOptions

    @Option(help: "Model (required unless every line names one).")
    var model: String?

    @Option(help: "A prompt for a single chat job (or an image job with --kind image).")
    var prompt: String?

    @Option(help: "A JSONL file of jobs; '-' reads standard input.")
    var file: String?

    @Option(help: "Kind for --prompt and for lines without one: chat, image, embedding.")
    var kind = "chat"

    @Option(help: "Priority for jobs without one: high, default, low.")
    var priority = "default"

    @Option(parsing: .unconditional, help: "Attempts before a job is dead-lettered, for jobs without max_attempts.")
    var maxAttempts = 3

    @Option(parsing: .unconditional, help: "Timeout of one attempt in seconds, for jobs without one.")
    var timeout: Double = 300

    @Option(help: "Idempotency key for --prompt: pushing the same key again returns the first job.")
    var idempotencyKey: String?

    @Option(parsing: .unconditional, help: "Seconds to wait before the job may start (--prompt).")
    var delay: Double?

    @Option(
        help:
            "Batch id for --file (default: a new one). Lines without an id get '<batch>-<line number>', so pushing the same file again with the same --batch adds only the jobs that are missing."
    )
    var batch: String?

    @Flag(
        help:
            "Wait for the results, with a progress bar. Exit status 0 when every job succeeded, 5 when all finished and some did not succeed, 3 when the wait timed out."
    )
    var wait = false

    @Flag(help: "Without --wait: print {\"batch\", \"jobs\", \"pushed\", \"duplicates\"} as one JSON object instead of the ids.")
    var json = false

    @Option(help: "With --wait: write the results as JSONL to this file (default: standard output).")
    var out: String?

    @Option(parsing: .unconditional, help: "With --wait: give up after this many seconds (the jobs keep running).")
    var waitTimeout: Double = 3600

    func validate() throws {
        if (prompt == nil) == (file == nil) { throw ValidationError("give exactly one of --prompt or --file") }
        if out != nil && !wait { throw ValidationError("--out needs --wait") }
        // Found now, not after an hour's wait.
        if let out, !FileManager.default.isWritableFile(atPath: out) {
            let directory = URL(fileURLWithPath: out).deletingLastPathComponent().path
            if FileManager.default.fileExists(atPath: out) || !FileManager.default.isWritableFile(atPath: directory) {
                throw ValidationError("--out: cannot write \(out)")
            }
        }
        if !(1...100).contains(maxAttempts) { throw ValidationError("--max-attempts: must be from 1 to 100") }
        if !(timeout > 0 && timeout <= 86400) { throw ValidationError("--timeout: must be more than 0 and at most 86400 seconds") }
        if file != nil && (idempotencyKey != nil || delay != nil) {
            throw ValidationError("--idempotency-key and --delay apply to --prompt; in a file, put idempotency_key or delay on each line")
        }
        if prompt != nil && batch != nil { throw ValidationError("--batch applies to --file") }
        if let batch, !(Job.isValidID(batch) && batch.count <= 100) {
            throw ValidationError("--batch: must be 1-100 letters, digits, '-', '_', '.' or ':'")
        }
        if !(waitTimeout.isFinite && waitTimeout > 0 && waitTimeout <= 365 * 86400) {
            throw ValidationError("--wait-timeout: must be more than 0 and at most \(365 * 86400) seconds")
        }
        if let delay, !(delay.isFinite && delay >= 0) { throw ValidationError("--delay: must be a number of seconds, 0 or more") }
    }

    func run() async throws {
        guard let kind = JobKind(rawValue: kind) else { throw ValidationError("--kind: '\(kind)' is not one of chat, image, embedding") }
        guard let priority = JobPriority(rawValue: priority) else {
            throw ValidationError("--priority: '\(priority)' is not one of high, default, low")
        }
        var defaults = JobDefaults(model: model, kind: kind, priority: priority)
        defaults.maxAttempts = maxAttempts
        defaults.timeout = timeout

        let jobs: [Job]
        let batchID: String?
        if let prompt {
            var request: [String: JSONValue] = ["prompt": .string(prompt)]
            if let idempotencyKey { request["idempotency_key"] = .string(idempotencyKey) }
            if let delay { request["delay"] = .number(delay) }
            do {
                jobs = [try Job.fromRequest(.object(request), defaults: defaults)]
            } catch {
                printError(error.description)
                throw ExitCode(65)
            }
            batchID = nil
        } else {
            let id = batch ?? "b" + String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36) + UUID().uuidString.prefix(6).lowercased()
            defaults.batch = id
            jobs = try readJobs(file: file!, defaults: defaults, batch: id)
            batchID = id
        }

        try await withQueue(redis) { queue in
            let outcomes: [PushOutcome]
            if let batchID {
                // Before the first write, so an interrupted push can always be resumed.
                FileHandle.standardError.write(Data("batch \(batchID): pushing \(plural(jobs.count, "job"))\n".utf8))
            }
            do {
                outcomes = try await queue.push(jobs)
            } catch let error as JobValidationError {
                printError("nothing was pushed: \(error)")
                throw ExitCode(65)
            } catch let error as ReplicationTimeout {
                printError("\(error)" + (batchID.map { ": run the same command again with --batch \($0)" } ?? ""))
                throw ExitCode(2)
            } catch let error as PartialPushError {
                let message = (error.error as? RedisError)?.message ?? "\(error.error)"
                printError(
                    "Redis failed after at least \(error.pushed) of \(jobs.count) jobs were pushed as batch \(batchID ?? "?"): \(message). "
                        + "To push the rest, run the same command again with --batch \(batchID ?? "?"): jobs already pushed keep their ids and are not queued twice."
                )
                throw ExitCode(2)
            } catch let error as RedisError where batchID != nil {
                printError(
                    "\(error.message); the batch \(batchID!) may be partly pushed: run the same command again with --batch \(batchID!) to complete it"
                )
                throw ExitCode(2)
            }
            let duplicates = outcomes.filter { if case .duplicate = $0 { return true } else { return false } }.count
            if json && !wait {
                var object: [String: JSONValue] = [
                    "jobs": .array(outcomes.map { .string($0.jobID) }), "pushed": .number(Double(jobs.count - duplicates)),
                    "duplicates": .number(Double(duplicates)),
                ]
                object["batch"] = batchID.map { .string($0) } ?? .null
                printJSON(object)
            }
            if let batchID {
                FileHandle.standardError.write(
                    Data(
                        "pushed \(plural(jobs.count - duplicates, "job")) as batch \(batchID)\(duplicates > 0 ? " (\(duplicates) already pushed or duplicate keys)" : "")\n"
                            .utf8
                    )
                )
                // For scripts: the batch id on standard output (`BATCH=$(switchyard push --file …)`).
                if !wait && !json { print(batchID) }
            } else if !wait && !json {
                switch outcomes[0] {
                case .queued(let id): print(id)
                case .duplicate(let id): print(id)
                }
            }
            guard wait else { return }
            let latestDue = jobs.compactMap(\.notBefore).max()
            try await waitForResults(queue: queue, ids: outcomes.map(\.jobID), batchID: batchID, latestDue: latestDue)
        }
    }

    /// How `--wait` ended.
    private enum WaitEnd {
        case finished, timedOut, interrupted
    }

    /// Waits for the jobs' results until all are final, the wait times out or the user presses
    /// Ctrl-C. Redis going away (a restart, a failover) does not end the wait: it reconnects with
    /// backoff until `--wait-timeout`. Whatever ends it, the results it has are written (with
    /// `pending` lines for the rest).
    private func waitForResults(queue: JobQueue, ids: [String], batchID: String?, latestDue: Double?) async throws {
        let interrupt = InterruptFlag()
        defer { interrupt.restore() }
        let deadline = Date().addingTimeInterval(waitTimeout)
        var expected: Int? = batchID == nil ? 1 : nil
        var progress: ProgressBar?
        var finished = 0
        var end = WaitEnd.timedOut
        var outageSince: Date?
        var backoff = 0.2
        while Date() < deadline {
            if interrupt.isSet {
                end = .interrupted
                break
            }
            do {
                let p: BatchProgress
                if let batchID, case let counts = try await queue.batchProgress(batchID), counts.total > 0 {
                    p = counts
                    // The batch's own count: a resumed push waits for the jobs of the earlier run
                    // too, and a duplicate idempotency key (a job outside the batch) is not counted.
                    if expected == nil { expected = p.total }
                } else if batchID != nil {
                    // No batch record (every line a duplicate key, or Redis came back empty):
                    // wait for the jobs themselves.
                    p = BatchProgress(results: try await queue.results(of: ids))
                    expected = ids.count
                } else {
                    p = BatchProgress(single: try await queue.result(of: ids[0]))
                }
                if let since = outageSince {
                    printNote("Redis is back after \(Int(Date().timeIntervalSince(since).rounded())) s; still waiting")
                    outageSince = nil
                    backoff = 0.2
                }
                if progress == nil { progress = ProgressBar(total: expected ?? 1, latestDue: latestDue) }
                finished = p.finished
                progress?.update(p)
                if finished >= expected ?? 1 {
                    end = .finished
                    break
                }
                await interrupt.sleep(seconds: 0.2)
            } catch let error as RedisError {
                if outageSince == nil {
                    outageSince = Date()
                    printNote(
                        "warning: Redis unreachable (\(error.message)); the jobs keep running, and this wait keeps trying until --wait-timeout (\(formatSeconds(waitTimeout)))"
                    )
                }
                await interrupt.sleep(seconds: backoff)
                backoff = min(backoff * 2, 5)
            }
        }
        if end == .timedOut && interrupt.isSet { end = .interrupted }
        progress?.finish()
        // What is known now: a few quick tries, so an outage at the very end still writes the file.
        var results: [JobResult?]?
        // Interrupted: one try only (a second Ctrl-C quits without writing).
        let tries = end == .interrupted ? 1 : 4
        if end == .interrupted && outageSince != nil { printNote("writing what is known (Ctrl-C again quits without writing)") }
        for attempt in 0..<tries {
            do {
                results = try await queue.results(of: ids)
                break
            } catch let error as RedisError {
                if attempt == tries - 1 { printError("could not read the results (\(error.message)); writing every job as pending") }
                try? await Task.sleep(for: .milliseconds(500))
            }
        }
        let known = results ?? Array(repeating: nil, count: ids.count)
        var lines = ""
        for (id, result) in zip(ids, known) {
            lines += (result.map(jsonLine) ?? pendingLine(id)) + "\n"
        }
        if let out {
            do {
                try Data(lines.utf8).write(to: URL(fileURLWithPath: out))
            } catch {
                printError("--out: cannot write \(out): \(error.localizedDescription)")
                throw ExitCode(73)
            }
            let pending = known.filter { $0 == nil }.count
            FileHandle.standardError.write(
                Data("wrote \(plural(ids.count, "result")) to \(out)\(pending > 0 ? " (\(pending) pending)" : "")\n".utf8)
            )
        } else {
            print(lines, terminator: "")
        }
        let later = batchID.map { "switchyard results \($0)" } ?? "switchyard results \(ids[0])"
        let queueOption = redis.queue.map { " --queue \($0)" } ?? ""
        switch end {
        case .interrupted:
            printNote("interrupted: the jobs keep running; fetch their results later with `\(later)\(queueOption)`")
            throw ExitCode(130)
        case .timedOut:
            let missing = known.filter { $0 == nil }.count
            printError(
                "gave up waiting after \(formatSeconds(waitTimeout)): \(missing) jobs not finished; they keep running, fetch their results later with `\(later)\(queueOption)`"
            )
            throw ExitCode(3)
        case .finished:
            // Counted finished, yet a result is missing (expired, or lost with Redis's data).
            let missing = known.filter { $0 == nil }.count
            if missing > 0 {
                printError(
                    "\(plural(missing, "job")) of \(known.count) without a result (expired, or lost by Redis); `\(later)\(queueOption)` says more"
                )
                throw ExitCode(3)
            }
            // Every job finished: 0 only when every one succeeded.
            let unsuccessful = known.compactMap { $0 }.filter { $0.status != .succeeded }
            if !unsuccessful.isEmpty {
                let counts = Dictionary(grouping: unsuccessful, by: \.status.rawValue).map { "\($0.key) \($0.value.count)" }.sorted()
                printError("\(unsuccessful.count) of \(known.count) jobs did not succeed (\(counts.joined(separator: ", ")))")
                throw ExitCode(5)
            }
        }
    }

    /// Reads and checks every line; reports all bad lines (up to 20) and pushes nothing if any is bad.
    private func readJobs(file: String, defaults: JobDefaults, batch: String) throws -> [Job] {
        let data: Data
        if file == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let d = FileManager.default.contents(atPath: file) else {
                printError("--file: cannot read \(file)")
                throw ExitCode(66)
            }
            data = d
        }
        let decoder = JSONDecoder()
        var jobs: [Job] = []
        var errors: [String] = []
        var seenIDs: [String: Int] = [:]
        for (index, line) in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let trimmed = line.drop { $0 == 32 || $0 == 9 || $0 == 13 }
            if trimmed.isEmpty || trimmed.first == UInt8(ascii: "#") { continue }
            do {
                let value = try decoder.decode(JSONValue.self, from: Data(line))
                var lineDefaults = defaults
                lineDefaults.id = "\(batch)-\(number)"
                let job = try Job.fromRequest(value, defaults: lineDefaults)
                if let first = seenIDs[job.id] {
                    errors.append("\(file) line \(number): field 'id': '\(job.id)' was already used on line \(first)")
                    continue
                }
                seenIDs[job.id] = number
                jobs.append(job)
            } catch let error as JobValidationError {
                errors.append("\(file) line \(number): \(error)")
            } catch {
                errors.append("\(file) line \(number): not valid JSON")
            }
        }
        if !errors.isEmpty {
            for e in errors.prefix(20) { printError(e) }
            if errors.count > 20 { printError("... and \(errors.count - 20) more") }
            printError("nothing was pushed: \(plural(errors.count, "bad line"))")
            throw ExitCode(65)
        }
        if jobs.isEmpty {
            printError("\(file): no jobs in the file")
            throw ExitCode(65)
        }
        return jobs
    }
}

extension BatchProgress {
    /// The progress of some jobs, from their results (nil: not final yet).
    init(results: [JobResult?]) {
        self.init()
        total = results.count
        for result in results {
            let one = BatchProgress(single: result)
            succeeded += one.succeeded
            failed += one.failed
            dead += one.dead
            cancelled += one.cancelled
        }
    }

    /// The progress of one job, from its result (nil: not final yet).
    init(single result: JobResult?) {
        self.init()
        total = 1
        switch result?.status {
        case .succeeded: succeeded = 1
        case .failed: failed = 1
        case .dead: dead = 1
        case .cancelled: cancelled = 1
        case nil: break
        }
    }
}

/// Ctrl-C while `push --wait` waits: the first press ends the wait (the results so far are still
/// written), a second one exits at once.
final class InterruptFlag: @unchecked Sendable {
    private let pressed = Mutex(0)
    // Set once in init, only cancelled after: safe to share.
    private let source: DispatchSourceSignal

    init() {
        signal(SIGINT, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
        self.source = source
        source.setEventHandler { [weak self] in
            guard let self else { return }
            let count = self.pressed.withLock { n -> Int in
                n += 1
                return n
            }
            if count > 1 { _exit(130) }
        }
        source.resume()
    }

    var isSet: Bool { pressed.withLock { $0 > 0 } }

    /// Sleeps for `seconds`, or less when Ctrl-C is pressed meanwhile.
    func sleep(seconds: Double) async {
        var left = seconds
        while left > 0 && !isSet {
            try? await Task.sleep(for: .milliseconds(Int(min(left, 0.1) * 1000)))
            left -= 0.1
        }
    }

    func restore() {
        source.cancel()
        signal(SIGINT, SIG_DFL)
    }
}

/// A one-line progress bar on standard error; plain periodic lines when it is not a terminal.
final class ProgressBar {
    let total: Int
    /// The latest time (Unix seconds) a job of the batch may start: the ETA is never earlier.
    let latestDue: Double?
    private let start = Date()
    private let isTerminal = isatty(2) != 0
    private var lastPrinted = Date.distantPast
    private var last = BatchProgress()

    init(total: Int, latestDue: Double? = nil) {
        self.total = total
        self.latestDue = latestDue
    }

    func update(_ p: BatchProgress) {
        last = p
        let now = Date()
        if !isTerminal && now.timeIntervalSince(lastPrinted) < 2 && p.finished < total { return }
        lastPrinted = now
        let fraction = total == 0 ? 1 : Double(p.finished) / Double(total)
        let width = 30
        let filled = Int(fraction * Double(width))
        let elapsed = max(now.timeIntervalSince(start), 0.001)
        let rate = Double(p.finished) / elapsed
        var eta = rate > 0 ? Double(total - p.finished) / rate : 0
        // Delayed jobs cannot finish before they are due, however fast the others went.
        if let latestDue, p.finished < total { eta = max(eta, latestDue - now.timeIntervalSince1970) }
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let text = String(
            format: "[%@] %d/%d %3.0f%%  ok %d  failed %d  dead %d  cancelled %d  %.0f jobs/s  eta %.0fs",
            bar,
            p.finished,
            total,
            fraction * 100,
            p.succeeded,
            p.failed,
            p.dead,
            p.cancelled,
            rate,
            eta
        )
        FileHandle.standardError.write(Data((isTerminal ? "\r" + text : text + "\n").utf8))
    }

    func finish() {
        if isTerminal {
            update(last)
            FileHandle.standardError.write(Data("\n".utf8))
        }
    }
}
