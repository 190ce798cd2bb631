import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// Operating a queue from the command line with real worker processes: pause and resume, purge,
/// delayed jobs, batches, retrying one job and reading its attempts.
@Suite("Queue control from the command line", .serialized)
struct QueueControlTests {
    static func cli(_ f: QueueFixture, _ arguments: [String]) async throws -> (code: Int32, output: String) {
        try await offThePool { try WorkerControlTests.cli(f, arguments) }
    }

    static func pushFile(_ f: QueueFixture, batch: String, _ lines: [String]) async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jobs-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try lines.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        let pushed = try await cli(f, ["push", "--file", file.path, "--batch", batch])
        #expect(pushed.code == 0, "\(pushed.output)")
    }

    static func json(_ output: String) -> [JSONValue] {
        output.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap { try? JSONValue.parse(Array($0.utf8)) }
    }

    @Test func aPausedQueueOrLaneIsLeftAloneUntilResumed() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "pauser", arguments: ["--queue", "test", "--executor", "echo"])
        defer { worker.kill() }
        #expect(try await Self.cli(f, ["queue", "pause"]).code == 0)
        try await Self.pushFile(f, batch: "p1", [#"{"model": "echo", "prompt": "a"}"#, #"{"model": "echo", "prompt": "b", "priority": "low"}"#])
        try await Task.sleep(for: .seconds(2))
        #expect(try await f.queue.batchProgress("p1").finished == 0, "a paused queue runs nothing")
        let status = try await Self.cli(f, ["status"])
        #expect(status.output.contains("PAUSED: the whole queue"), "\(status.output)")
        let queues = Self.json(try await Self.cli(f, ["queues", "--json"]).output)
        #expect(queues.first { $0["queue"]?.string == "test" }?["paused"]?.array == [.string("*")], "\(queues)")

        // Resume the queue but pause the low lane: the default job runs, the low one waits.
        #expect(try await Self.cli(f, ["queue", "pause", "--lane", "low"]).code == 0)
        #expect(try await Self.cli(f, ["queue", "resume", "--lane", "high"]).output.contains("was not paused"))
        let resumed = try await Self.cli(f, ["queue", "resume", "--lane", "low"])
        #expect(resumed.output.contains("the whole queue is still paused"), "\(resumed.output)")
        try await f.queue.resume(lane: nil)
        try await f.queue.pause(lane: .low, by: "test")
        #expect(await eventually { (try? await f.queue.result(of: "p1-1"))?.status == .succeeded })
        try await Task.sleep(for: .seconds(1.5))
        #expect(try await f.queue.result(of: "p1-2") == nil, "the paused lane's job waits")
        #expect(worker.log.contains("lanes paused: low"), "\(worker.log)")

        // A burst worker does not wait for jobs on a paused lane.
        let burst = try WorkerProcess(redisURL: f.server.url, id: "burster", arguments: ["--queue", "test", "--executor", "echo", "--burst"])
        #expect(burst.process.waitForExit(timeout: .seconds(30)), "\(burst.log)")
        #expect(burst.log.contains("burst: nothing left on the queue (paused: low; jobs there are left)"), "\(burst.log)")

        #expect(try await Self.cli(f, ["queue", "resume"]).code == 0)
        #expect(await eventually { (try? await f.queue.result(of: "p1-2"))?.status == .succeeded })
        #expect(try await Self.cli(f, ["queue", "pause", "--lane", "urgent"]).output.contains("'urgent' is not a lane"))
    }

    @Test func purgeCancelsWhatWaitsAndFinishesItsBatches() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await Self.pushFile(
            f,
            batch: "doomed",
            [
                #"{"model": "echo", "prompt": "a"}"#, #"{"model": "echo", "prompt": "b", "priority": "high"}"#,
                #"{"model": "echo", "prompt": "c", "delay": 600}"#,
            ]
        )
        let refused = try await Self.cli(f, ["queue", "purge"])
        #expect(refused.code == 64 && refused.output.contains("add --yes"), "\(refused.output)")
        #expect(try await f.queue.batchProgress("doomed").finished == 0, "nothing purged without confirmation")

        let purged = try await Self.cli(f, ["queue", "purge", "--yes", "--json"])
        let counts = try #require(Self.json(purged.output).first, "\(purged.output)")
        #expect(counts["waiting"]?.integer == 2 && counts["delayed"]?.integer == 1, "\(purged.output)")
        let progress = try await f.queue.batchProgress("doomed")
        #expect(progress.cancelled == 3 && progress.isComplete)
        let result = try #require(try await f.queue.result(of: "doomed-3"))
        #expect(result.status == .cancelled && result.error?.message.hasPrefix("purged from the queue by ") == true)
        #expect(try await f.queue.status().lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 })
        // The purge leaves no consumer of its own in the group.
        let consumers = try await f.pool.send("XINFO", "CONSUMERS", "sy:{test}:lane:default", "workers").array ?? []
        #expect(consumers.isEmpty, "\(consumers)")

        // A worker started now finds nothing to run.
        let again = try await Self.cli(f, ["queue", "purge", "--yes"])
        #expect(again.output.contains("cancelled 0 waiting jobs and 0 delayed jobs"), "\(again.output)")
    }

    @Test func retryRunsAFailedOrDeadJobAgainAndJobShowsEveryAttempt() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "retrier",
            arguments: ["--queue", "test", "--executor", "echo", "--retry-base", "50ms"]
        )
        defer { worker.kill() }
        try await Self.pushFile(
            f,
            batch: "r",
            [
                #"{"model": "echo", "prompt": "fatal", "metadata": {"echo.fail": "fatal"}}"#,
                #"{"model": "echo", "prompt": "flaky", "metadata": {"echo.fail_attempts": "1"}}"#,
                #"{"model": "echo", "prompt": "doomed", "max_attempts": 2, "metadata": {"echo.fail_attempts": "2"}}"#,
            ]
        )
        #expect(await eventually { (try? await f.queue.batchProgress("r").isComplete) == true })
        #expect(
            try await f.queue.batchProgress("r")
                == {
                    var p = BatchProgress()
                    p.total = 3
                    p.succeeded = 1
                    p.failed = 1
                    p.dead = 1
                    return p
                }()
        )

        // Every attempt: the flaky job's failed first one (retried), then its success.
        let flaky = Self.json(try await Self.cli(f, ["job", "r-2", "--json"]).output).first
        let attempts = flaky?["attempts"]?.array ?? []
        #expect(attempts.map { $0["outcome"]?.string } == ["retried", "succeeded"], "\(String(describing: flaky))")
        #expect(attempts.first?["worker"]?.string == "retrier" && attempts.first?["error"]?["code"]?.string == "echo_failure")
        #expect(attempts.first?["next_attempt_at"]?.number != nil)
        let text = try await Self.cli(f, ["job", "r-2"])
        #expect(text.output.contains("#1 retried  on retrier") && text.output.contains("#2 succeeded  on retrier"), "\(text.output)")

        // The failed job runs again (and fails again: the payload asks for it), counted in the batch.
        let retried = try await Self.cli(f, ["retry", "r-1"])
        #expect(retried.code == 0 && retried.output.contains("r-1: queued again on lane default"), "\(retried.output)")
        #expect(
            await eventually {
                let failed = try? await f.queue.batchProgress("r").failed
                let result = try? await f.queue.result(of: "r-1")
                return failed == 1 && result != nil
            }
        )
        let failedTwice = Self.json(try await Self.cli(f, ["job", "r-1", "--json"]).output).first
        #expect((failedTwice?["attempts"]?.array ?? []).map { $0["outcome"]?.string } == ["failed", "failed"], "\(String(describing: failedTwice))")
        #expect(failedTwice?["job"]?["input"]?["messages"]?.array?.first?["content"]?.string == "fatal", "a failed job's payload is kept")

        // The dead one too: its dead letter goes back on its lane (and leaves the stream).
        #expect(try await f.queue.deadLetters().map(\.jobID) == ["r-3"])
        #expect(try await Self.cli(f, ["retry", "r-3"]).code == 0)
        #expect(
            await eventually {
                let result = try? await f.queue.result(of: "r-3")
                let dead = try? await f.queue.batchProgress("r").dead
                return result?.status == .dead && dead == 1
            }
        )

        // `processed` counts jobs that ended on the worker (five, the two retried ones twice), not
        // attempts (eight).
        #expect(await eventually { (try? await f.queue.workers().first { $0.id == "retrier" })??.processed == 5 })

        // Not retried: a success (exit 1), an unknown id (exit 4).
        let succeeded = try await Self.cli(f, ["retry", "r-2"])
        #expect(succeeded.code == 1 && succeeded.output.contains("ended succeeded; only failed or dead jobs are retried"), "\(succeeded.output)")
        #expect(try await Self.cli(f, ["retry", "nope"]).code == 4)
    }

    @Test func delayedJobsAreListedAndPromotedAndBatchesListed() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await Self.pushFile(f, batch: "older", [#"{"model": "echo", "prompt": "x"}"#])
        try await Task.sleep(for: .milliseconds(20))
        try await Self.pushFile(f, batch: "later", [#"{"model": "echo", "prompt": "tomorrow", "delay": 86400}"#])
        let listed = Self.json(try await Self.cli(f, ["delayed", "list"]).output)
        #expect(listed.count == 1 && listed[0]["id"]?.string == "later-1" && listed[0]["attempt"]?.integer == 1, "\(listed)")
        let due = listed.first?["due"]?.number ?? 0
        #expect(due > Date().timeIntervalSince1970 + 86000)

        let batches = Self.json(try await Self.cli(f, ["batches", "--json"]).output)
        #expect(batches.map { $0["batch"]?.string } == ["later", "older"], "newest first: \(batches)")
        #expect(batches.first?["total"]?.integer == 1 && batches.first?["finished"]?.integer == 0)

        #expect(try await Self.cli(f, ["delayed", "promote", "later-1"]).code == 0)
        #expect(try await f.queue.delayedJobs().isEmpty)
        let job = try await f.queue.locate(jobID: "later-1")
        #expect(job.place == .waiting(position: 2), "promoted onto its lane, behind the job pushed earlier")
        #expect(try await Self.cli(f, ["delayed", "promote", "later-1"]).code == 4, "no longer delayed")
    }

    /// Bad input and scripting: `--json` where commands print, ids that name nothing.
    @Test func commandsAnswerInJSONAndNameWhatIsWrong() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let ping = Self.json(try await Self.cli(f, ["ping", "--json", "--count", "2"]).output).first
        #expect(ping?["redis_version"]?.string?.isEmpty == false && ping?["median_ms"]?.number != nil)
        let config = Self.json(try await Self.cli(f, ["config", "--json"]).output).first
        #expect(config?["queue"]?.string == "test" && config?["redis"]?["password_set"] == .bool(false), "\(String(describing: config))")
        _ = try await f.queue.push(chatJob("known"))
        let cancel = try await Self.cli(f, ["cancel", "--json", chatJob("x").id, "missing"])
        #expect(cancel.code == 4)
        let outcomes = Self.json(cancel.output).compactMap { $0["outcome"]?.string }
        #expect(outcomes.contains("unknown"), "\(cancel.output)")
        let badEntry = try await Self.cli(f, ["dlq", "retry", "not-an-id"])
        #expect(badEntry.code == 64 && badEntry.output.contains("'not-an-id' is not a dead letter's entry id"), "\(badEntry.output)")
        let emptyAll = try await Self.cli(f, ["dlq", "retry", "--all"])
        #expect(emptyAll.code == 0 && emptyAll.output.contains("no dead letters to retry"), "\(emptyAll.output)")
    }

    /// A promoted job goes first, however many others are overdue (the promote moves 500 at a
    /// time).
    @Test func aPromotedJobGoesBeforeAnOverdueBacklog() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let past = Int64(Date().timeIntervalSince1970 * 1000) - 60_000
        var arguments: [any RedisArgument] = ["sy:{test}:delayed"]
        for i in 0..<600 {
            let json = String(decoding: chatJob("old \(i)").encodedJSON(), as: UTF8.self)
            arguments += [past + Int64(i), "default\u{1F}old-\(i)\u{1F}1\u{1F}3\u{1F}\u{1F}" + json]
        }
        _ = try await f.pool.send(RedisCommand("ZADD", arguments: arguments))
        var later = chatJob("later")
        later.notBefore = Date().timeIntervalSince1970 + 3600
        _ = try await f.queue.push(later)
        let promoted = try await Self.cli(f, ["delayed", "promote", later.id])
        #expect(promoted.code == 0, "\(promoted.output)")
        let location = try await f.queue.locate(jobID: later.id)
        #expect(location.place == .waiting(position: 1), "on its lane, first: \(location.place)")
    }

    /// A push whose jobs all were duplicates (no batch record) waits for the jobs themselves: it
    /// never exits 0 with a pending line.
    @Test func aWaitOnDuplicatesWaitsForTheJobsThemselves() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dup-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try #"{"model": "echo", "prompt": "once", "idempotency_key": "k1"}"#.write(to: file, atomically: true, encoding: .utf8)
        #expect(try await Self.cli(f, ["push", "--file", file.path]).code == 0)
        let waiting = try await Self.cli(f, ["push", "--file", file.path, "--wait", "--wait-timeout", "1"])
        #expect(waiting.code == 3 && waiting.output.contains(#""status":"pending""#), "no worker: still pending, exit 3: \(waiting.output)")
        let worker = try WorkerProcess(redisURL: f.server.url, id: "dups", arguments: ["--queue", "test", "--executor", "echo"])
        defer { worker.kill() }
        let done = try await Self.cli(f, ["push", "--file", file.path, "--wait", "--wait-timeout", "30"])
        #expect(done.code == 0 && done.output.contains(#""status":"succeeded""#), "\(done.output)")
    }

    /// A retry due later than the job's keys would live (a long `Retry-After` against a short
    /// result TTL) keeps them: its record, batch and batch list outlive the retry's due time.
    @Test func aLateRetryKeepsTheJobsKeysAlive() async throws {
        let f = try QueueFixture { $0.resultTTL = .seconds(2) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("late")
        job.batch = "short"
        _ = try await f.queue.push(job)
        let delivery = try #require(try await f.queue.take(consumer: "w", count: 1).first)
        #expect(try await f.queue.retry(delivery, after: .seconds(60), record: AttemptRecord(attempt: 1, outcome: "retried")))
        for key in ["sy:{test}:job:\(job.id)", "sy:{test}:batch:short", "sy:{test}:batchjobs:short", "sy:{test}:attempts:\(job.id)"] {
            let ttl = try await f.pool.send("TTL", key).int ?? -2
            #expect(ttl >= 60, "\(key) lives past the retry: \(ttl) s")
        }
    }
}
