import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

@Suite("Queue operations against a real redis-server")
struct JobQueueTests {
    @Test(arguments: Backend.allCases) func pushTakeFinishAndTheFirstFinalResultWins(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let job = chatJob("hello")
        #expect(try await f.queue.push(job) == .queued(id: job.id))
        let taken = try await f.queue.take(consumer: "a", count: 10)
        #expect(taken.count == 1)
        let delivery = try #require(taken.first)
        #expect(delivery.jobID == job.id && delivery.attempt == 1 && delivery.maxAttempts == 3)
        #expect(try delivery.decodeJob() == job)
        #expect(try await f.queue.finish([succeeded(delivery, output: "first")]) == 1)
        // A re-delivered copy finishing later cannot clobber the result.
        #expect(try await f.queue.finish([succeeded(delivery, output: "second")]) == 0)
        #expect(try await f.queue.result(of: job.id)?.output == .string("first"))
        // Finished entries are deleted, so the stream does not grow with history.
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 0)
        let ttl = try await f.pool.send("TTL", f.queue.keys.result(job.id)).int ?? -1
        #expect(ttl > 0 && ttl <= 86400)
    }

    @Test(arguments: Backend.allCases) func idempotentPush(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        var first = chatJob("once")
        first.idempotencyKey = "order-42"
        var second = chatJob("once again")
        second.idempotencyKey = "order-42"
        #expect(try await f.queue.push(first) == .queued(id: first.id))
        #expect(try await f.queue.push(second) == .duplicate(existingID: first.id))
        #expect(try await f.queue.take(consumer: "a", count: 10).count == 1)
    }

    @Test(arguments: Backend.allCases) func priorityLanesAreTakenInOrder(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push((0..<5).map { chatJob("low \($0)", priority: .low) })
        _ = try await f.queue.push((0..<3).map { chatJob("default \($0)") })
        _ = try await f.queue.push((0..<2).map { chatJob("high \($0)", priority: .high) })
        let first = try await f.queue.take(consumer: "a", count: 4)
        #expect(first.map(\.lane) == [.high, .high, .default, .default])
        let rest = try await f.queue.take(consumer: "a", count: 10)
        #expect(rest.map(\.lane) == [.default] + Array(repeating: JobPriority.low, count: 5))
    }

    @Test(arguments: Backend.allCases) func cancelledQueuedJobIsSkipped(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let keep = chatJob("keep")
        let drop = chatJob("drop")
        _ = try await f.queue.push([drop, keep])
        #expect(try await f.queue.cancel(jobID: drop.id) == .cancelled)
        #expect(try await f.queue.cancel(jobID: drop.id) == .alreadyFinal)
        let taken = try await f.queue.take(consumer: "a", count: 10)
        #expect(taken.map(\.jobID) == [keep.id])
        #expect(try await f.queue.result(of: drop.id)?.status == .cancelled)
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 1)  // only `keep`, pending
    }

    @Test(arguments: Backend.allCases) func retryWaitsInTheDelayedSetUntilDue(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let job = chatJob("flaky")
        _ = try await f.queue.push(job)
        let delivery = try #require(try await f.queue.take(consumer: "a", count: 1).first)
        let due = Date().addingTimeInterval(2)
        #expect(try await f.queue.retry(delivery, after: .seconds(2)))
        #expect(try await f.queue.promoteDue().moved == 0)  // not due yet
        #expect(try await f.queue.take(consumer: "a", count: 1).isEmpty)
        #expect(try await eventually { try await f.queue.promoteDue().moved == 1 })
        #expect(Date() >= due.addingTimeInterval(-0.01))
        let again = try #require(try await f.queue.take(consumer: "a", count: 1).first)
        #expect(again.jobID == job.id && again.attempt == 2)
        #expect(try await f.queue.status().counters["retried"] == 1)
    }

    @Test(arguments: Backend.allCases) func delayedJobStartsOnlyAfterItsTime(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("later")
        job.notBefore = Date().timeIntervalSince1970 + 2
        _ = try await f.queue.push(job)
        #expect(try await f.queue.status().delayed == 1)
        // Never promoted before its time (a machine that stalls past it may promote at once).
        let askedAt = Date().timeIntervalSince1970
        let early = try await f.queue.promoteDue().moved
        if askedAt < job.notBefore! - 0.05 { #expect(early == 0) }
        var moved = early
        #expect(
            try await eventually {
                moved += try await f.queue.promoteDue().moved
                return moved == 1
            }
        )
        #expect(Date().timeIntervalSince1970 >= job.notBefore! - 0.01)
        #expect(try await f.queue.take(consumer: "a", count: 1).first?.jobID == job.id)
    }

    @Test(arguments: Backend.allCases) func expiredLeasesAreReclaimedAsTheNextAttemptThenDeadLettered(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        let job = chatJob("orphan", maxAttempts: 2)
        _ = try await f.queue.push(job)
        let lost = try #require(try await f.queue.take(consumer: "dead-worker", count: 1).first)
        #expect(try await f.queue.reclaimExpired(consumer: "b") == (0, 0))  // lease still live
        try await Task.sleep(for: .milliseconds(1100))
        #expect(try await f.queue.reclaimExpired(consumer: "b") == (1, 0))
        let second = try #require(try await f.queue.take(consumer: "b", count: 1).first)
        #expect(second.jobID == job.id && second.attempt == 2 && second.entryID != lost.entryID)
        try await Task.sleep(for: .milliseconds(1100))
        #expect(try await f.queue.reclaimExpired(consumer: "c") == (0, 1))
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .dead && result.error?.code == "lease_expired")
        let letters = try await f.queue.deadLetters()
        #expect(letters.count == 1 && letters[0].jobID == job.id && letters[0].reason.contains("lease expired"))
    }

    @Test(arguments: Backend.allCases) func reclaimFindsExpiredEntriesBehindManyLiveOnes(on backend: Backend) async throws {
        // A lease long enough that the live entries, refreshed once, stay live through the
        // reclaim even on a loaded machine.
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(3) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push((0..<1500).map { chatJob("live \($0)") })
        _ = try await f.queue.push((0..<5).map { chatJob("orphan \($0)") })
        let live = try await f.queue.take(consumer: "live", count: 1500)
        let orphans = try await f.queue.take(consumer: "gone", count: 5)
        #expect(live.count == 1500 && orphans.count == 5)
        try await Task.sleep(for: .milliseconds(3100))
        _ = try await f.queue.refreshLeases(consumer: "live", entries: [.default: live.map(\.entryID)])
        #expect(try await f.queue.reclaimExpired(consumer: "other") == (5, 0))
    }

    @Test(arguments: Backend.allCases) func aRetryOfAnEntryThatWasReclaimedIsDropped(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push(chatJob("stalled"))
        let stale = try #require(try await f.queue.take(consumer: "slow", count: 1).first)
        try await Task.sleep(for: .milliseconds(1100))
        #expect(try await f.queue.reclaimExpired(consumer: "other") == (1, 0))
        // The stalled worker's late failure must not put a second copy in play.
        #expect(try await f.queue.retry(stale, after: .zero) == false)
        #expect(try await f.queue.deadLetter(stale, reason: "late", result: nil) == false)
        #expect(try await f.queue.status().delayed == 0)
        #expect(try await f.queue.take(consumer: "other", count: 5).count == 1)
    }

    @Test(arguments: Backend.allCases) func refreshedLeasesAreNotReclaimed(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push(chatJob("long"))
        let d = try #require(try await f.queue.take(consumer: "alive", count: 1).first)
        for _ in 0..<5 {
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await f.queue.refreshLeases(consumer: "alive", entries: [.default: [d.entryID]]) == [d.key])
            #expect(try await f.queue.reclaimExpired(consumer: "other") == (0, 0))
        }
    }

    @Test(arguments: Backend.allCases) func deadLettersCanBeRetriedAndPurged(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let job = chatJob("doomed", maxAttempts: 1)
        var batchJob = job
        batchJob.batch = "b1"
        _ = try await f.queue.push(batchJob)
        let d = try #require(try await f.queue.take(consumer: "a", count: 1).first)
        let dead = JobResult(id: job.id, status: .dead, attempts: 1, error: .init(code: "x", message: "boom"), batch: "b1")
        #expect(try await f.queue.deadLetter(d, reason: "failed on attempt 1 of 1: boom", result: dead))
        #expect(try await f.queue.batchProgress("b1").dead == 1)
        let letter = try #require(try await f.queue.deadLetters().first)
        #expect(try await f.queue.retryDeadLetter(entryID: letter.entryID) == job.id)
        #expect(try await f.queue.result(of: job.id) == nil)
        #expect(try await f.queue.batchProgress("b1").dead == 0)
        let again = try #require(try await f.queue.take(consumer: "a", count: 1).first)
        #expect(again.jobID == job.id && again.attempt == 1)
        _ = try await f.queue.deadLetter(again, reason: "again", result: nil)
        #expect(try await f.queue.purgeDeadLetters() == 1)
        #expect(try await f.queue.status().dead == 0)
    }

    @Test(arguments: Backend.allCases) func handBackRequeuesWithoutCountingAnAttempt(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push([chatJob("a"), chatJob("b", priority: .high)])
        let taken = try await f.queue.take(consumer: "draining", count: 2)
        #expect(try await f.queue.handBack(taken) == 2)
        let again = try await f.queue.take(consumer: "other", count: 2)
        #expect(Set(again.map(\.jobID)) == Set(taken.map(\.jobID)))
        #expect(again.allSatisfy { $0.attempt == 1 })
        #expect(try await f.queue.status().lanes.map(\.pending) == [1, 1, 0])
    }

    @Test(arguments: Backend.allCases) func batchesCountProgress(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let jobs = (0..<4).map { i -> Job in
            var j = chatJob("\(i)")
            j.batch = "batch-7"
            return j
        }
        _ = try await f.queue.push(jobs)
        #expect(try await f.queue.batchJobIDs("batch-7") == jobs.map(\.id))
        let taken = try await f.queue.take(consumer: "a", count: 3)
        try await f.queue.finish(taken.map { succeeded($0) })
        #expect(try await f.queue.cancel(jobID: jobs[3].id) == .cancelled)
        #expect(try await f.queue.result(of: jobs[3].id)?.batch == "batch-7")
        let progress = try await f.queue.batchProgress("batch-7")
        #expect(progress.total == 4 && progress.succeeded == 3 && progress.cancelled == 1 && progress.isComplete)
    }

    @Test(arguments: Backend.allCases) func idsThatWouldBreakKeysAreRefusedAndBatchNamesDoNotCollide(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        var bad = chatJob("x")
        bad.id = "a\u{1F}b"
        await #expect {
            try await f.queue.push(bad)
        } throws: { error in
            (error as? JobValidationError)?.field == "id"
        }
        var one = chatJob("one")
        one.batch = "x"
        var two = chatJob("two")
        two.batch = "x:jobs"
        _ = try await f.queue.push([one, two])
        #expect(try await f.queue.batchProgress("x").total == 1)
        #expect(try await f.queue.batchProgress("x:jobs").total == 1)
        #expect(try await f.queue.batchJobIDs("x") == [one.id])
    }

    @Test(arguments: Backend.allCases) func scriptsSurviveAScriptFlush(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push(chatJob("before"))
        _ = try await f.pool.forEachPrimary { try await $0.send("SCRIPT", "FLUSH") }
        _ = try await f.queue.push([chatJob("after 1"), chatJob("after 2")])
        #expect(try await f.queue.take(consumer: "a", count: 10).count == 3)
    }
}

@Suite("Job requests: validation names the field")
struct JobRequestTests {
    func request(_ json: String) throws -> JSONValue { try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8)) }

    @Test func promptShorthandAndParameters() throws {
        let job = try Job.fromRequest(try request(#"{"model":"m","prompt":"hi","temperature":0,"max_tokens":5}"#))
        #expect(job.kind == .chat)
        #expect(job.input.messages == [ChatMessage(role: "user", content: "hi")])
        #expect(job.input.parameters?["temperature"] == .number(0))
        #expect(job.input.parameters?["max_tokens"] == .number(5))
    }

    @Test(arguments: [
        (#"{"prompt":"hi"}"#, "model"),
        (#"{"model":"m"}"#, "messages"),
        (#"{"model":"m","prompt":"x","max_attempts":"3"}"#, "max_attempts"),
        (#"{"model":"m","prompt":"x","priority":"urgent"}"#, "priority"),
        (#"{"model":"m","prompt":"x","modle":"typo"}"#, "modle"),
        (#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#, "messages[0].role"),
        (#"{"model":"m","kind":"image","prompt":"x","size":"big"}"#, "size"),
        (#"{"model":"m","kind":"image","prompt":"x","temperature":0.5}"#, "temperature"),
        (#"{"model":"m","kind":"embedding","input":["a"],"max_tokens":5}"#, "max_tokens"),
        (#"{"model":"m","kind":"embedding"}"#, "input"),
        (#"{"model":"m","prompt":"x","temperature":7}"#, "temperature"),
        (#"{"model":"m","prompt":"x","id":"has space"}"#, "id"),
        (#"[1,2]"#, "(line)"),
    ])
    func badRequestsNameTheField(json: String, field: String) throws {
        #expect {
            try Job.fromRequest(try request(json))
        } throws: { error in
            (error as? JobValidationError)?.field == field
        }
    }
}
