import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Testing

/// Pushes that check everything first and never count a job twice; keys that outlive delays;
/// cancel that knows which jobs exist.
@Suite("Queue: pushes, job records, delays and cancel")
struct QueueHardeningTests {
    @Test func aBadJobAnywhereInABulkPushPushesNothing() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        var jobs = (0..<1200).map { chatJob("job \($0)") }
        jobs[700].idempotencyKey = String(repeating: "k", count: 300)
        await #expect {
            _ = try await f.queue.push(jobs, chunkSize: 500)
        } throws: { error in
            (error as? JobValidationError)?.field == "jobs[700].idempotency_key"
        }
        // Not even the first chunk went out.
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 0)
        #expect(try await f.queue.status().counters["pushed"] == nil)
    }

    /// A job whose lane cannot take it (a key of the wrong type) fails the push, and leaves
    /// neither its record nor its idempotency key behind: pushed again once the lane is whole, it
    /// is queued, not called a duplicate. The jobs before it in the call stay queued and counted.
    @Test func aJobThatCouldNotBeQueuedIsNotADuplicateWhenPushedAgain() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let first = chatJob("first")
        var blocked = chatJob("blocked")
        blocked.priority = .high
        blocked.idempotencyKey = "once"
        _ = try await f.pool.send("SET", f.queue.keys.lane(.high), "not a stream")
        await #expect(throws: (any Error).self) { _ = try await f.queue.push([first, blocked]) }
        #expect(try await f.pool.send("EXISTS", f.queue.keys.job(blocked.id), f.queue.keys.idempotency("once")).int == 0)
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 1)
        #expect(try await f.queue.status().counters["pushed"] == 1)
        _ = try await f.pool.send("DEL", f.queue.keys.lane(.high))
        try await f.queue.ensureGroups()
        #expect(try await f.queue.push([first, blocked]) == [.duplicate(existingID: first.id), .queued(id: blocked.id)])
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.high)).int == 1)
        #expect(try await f.queue.status().counters["pushed"] == 2)
    }

    /// A take of more entries than Lua's stack holds values (8,000) still works: the one `EXISTS`
    /// over their results goes in chunks.
    @Test func aTakeOfMoreThanEightThousandEntriesWorks() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let jobs = (0..<8200).map { chatJob("job \($0)") }
        _ = try await f.queue.push(jobs)
        _ = try await f.queue.cancel(jobID: jobs[8100].id)
        let taken = try await f.queue.take(consumer: "a", count: 8200)
        #expect(taken.count == 8199)
        #expect(Set(taken.map(\.jobID)) == Set(jobs.map(\.id)).subtracting([jobs[8100].id]))
    }

    @Test func anIdPushedAgainIsNeitherQueuedNorCountedTwice() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        var jobs = (0..<3).map { chatJob("job \($0)") }
        for i in jobs.indices { jobs[i].batch = "b1" }
        _ = try await f.queue.push(jobs)
        // The same ids again (a resumed push), plus one new job.
        var more = chatJob("job 3")
        more.batch = "b1"
        let outcomes = try await f.queue.push(jobs + [more])
        #expect(outcomes == jobs.map { .duplicate(existingID: $0.id) } + [.queued(id: more.id)])
        #expect(try await f.queue.batchProgress("b1").total == 4)
        #expect(try await f.queue.batchJobIDs("b1") == (jobs + [more]).map(\.id))
        #expect(try await f.queue.take(consumer: "a", count: 10).count == 4)
        #expect(try await f.queue.status().counters["pushed"] == 4)
    }

    @Test func anIdWhoseResultLivesCannotBePushedAgainEvenAfterItsRecordExpired() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("once")
        job.batch = "b"
        _ = try await f.queue.push(job)
        let delivery = try #require(try await f.queue.take(consumer: "a", count: 1).first)
        try await f.queue.finish([succeeded(delivery)])
        try await f.pool.send("DEL", f.queue.keys.job(job.id))  // as if its record had expired first
        #expect(try await f.queue.push(job) == .duplicate(existingID: job.id))
        #expect(try await f.queue.batchProgress("b").total == 1)
    }

    @Test func aHeartbeatNeverOverwritesAnotherProcessesRegistration() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        func info(pid: Int32, host: String) -> WorkerInfo { workerInfo(id: "shared", host: host, pid: pid, heartbeatAt: 0) }
        #expect(try await f.queue.heartbeat(info(pid: 10, host: "h1"), ttl: .seconds(30)))
        #expect(try await f.queue.heartbeat(info(pid: 10, host: "h1"), ttl: .seconds(30)))
        #expect(try await f.queue.heartbeat(info(pid: 11, host: "h1"), ttl: .seconds(30)) == false)
        #expect(try await f.queue.heartbeat(info(pid: 10, host: "h2"), ttl: .seconds(30)) == false)
        #expect(try await f.queue.workers().map(\.pid) == [10])
        #expect(try await f.queue.heartbeat(info(pid: 11, host: "h1"), ttl: .seconds(30), force: true))
        #expect(try await f.queue.workers().map(\.pid) == [11])
        // With tokens, the token decides: the same pid in a restarted container is another process.
        var mine = info(pid: 1, host: "c")
        mine.token = "t1"
        var restarted = mine
        restarted.token = "t2"
        #expect(try await f.queue.heartbeat(mine, ttl: .seconds(30), force: true))
        #expect(try await f.queue.heartbeat(restarted, ttl: .seconds(30)) == false)
        #expect(try await f.queue.heartbeat(mine, ttl: .seconds(30)))
        // A register whose reply was lost, tried again, finds its own entry: registered, not refused.
        try await f.pool.send("DEL", f.queue.keys.worker("shared"))
        #expect(try await f.queue.register(mine, ttl: .seconds(30)) == nil)
        #expect(try await f.queue.register(mine, ttl: .seconds(30)) == nil)
        #expect(try await f.queue.register(restarted, ttl: .seconds(30))?.token == "t1")
    }

    @Test func aDelayedJobsKeysLiveUntilItsResultCouldExpire() async throws {
        let f = try QueueFixture {
            $0.resultTTL = .seconds(60)
            $0.idempotencyTTL = .seconds(60)
        }
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("in ten days")
        job.batch = "later"
        job.idempotencyKey = "once-later"
        job.notBefore = Date().timeIntervalSince1970 + 10 * 86400
        _ = try await f.queue.push(job)
        func ttl(_ key: String) async throws -> Int { try await f.pool.send("TTL", key).int ?? -2 }
        let due = 10 * 86400
        #expect(try await ttl(f.queue.keys.idempotency("once-later")) > due)
        #expect(try await ttl(f.queue.keys.batch("later")) > due)
        #expect(try await ttl(f.queue.keys.batchJobs("later")) > due)
        #expect(try await ttl(f.queue.keys.job(job.id)) > due)
        // A job pushed into the batch later with no delay does not shorten the batch's life.
        var now = chatJob("now")
        now.batch = "later"
        _ = try await f.queue.push(now)
        #expect(try await ttl(f.queue.keys.batch("later")) > due)
        // Cancelled now, it is still cancelled when its day comes.
        #expect(try await f.queue.cancel(jobID: job.id) == .cancelled)
        #expect(try await ttl(f.queue.keys.result(job.id)) > due)
        let cancelled = try #require(try await f.queue.result(of: job.id))
        #expect(cancelled.status == .cancelled && cancelled.batch == "later")
    }

    @Test func aCancelledDelayedJobDoesNotRunWhenItsResultTTLIsShorterThanTheDelay() async throws {
        // The result TTL (3 s) runs out long before the job is due (5 s); the cancelled result
        // must still be there when it is (it lives until the due time plus the result TTL).
        let f = try QueueFixture { $0.resultTTL = .seconds(3) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("delayed")
        job.notBefore = Date().timeIntervalSince1970 + 5
        _ = try await f.queue.push(job)
        #expect(try await f.queue.cancel(jobID: job.id) == .cancelled)
        try await Task.sleep(for: .seconds(5.5))
        try await f.queue.promoteDue()
        #expect(try await f.queue.take(consumer: "a", count: 10).isEmpty)
        #expect(try await f.queue.result(of: job.id)?.status == .cancelled)
    }

    @Test func cancellingAnUnknownIdWritesAndCountsNothing() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        #expect(try await f.queue.cancel(jobID: "no-such-job") == .unknown)
        #expect(try await f.pool.send("EXISTS", f.queue.keys.result("no-such-job")).int == 0)
        #expect(try await f.queue.status().counters["cancelled"] == nil)
        let job = chatJob("real")
        _ = try await f.queue.push(job)
        #expect(try await f.queue.cancel(jobID: job.id) == .cancelled)
        #expect(try await f.queue.cancel(jobID: job.id) == .alreadyFinal)
        #expect(try await f.queue.status().counters["cancelled"] == 1)
    }
}
