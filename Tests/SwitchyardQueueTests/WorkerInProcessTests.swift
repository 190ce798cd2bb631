import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import SwitchyardWorker
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The tests' own executor: runs a closure per job.
struct ClosureExecutor: JobExecutor {
    let body: @Sendable (Job, JobContext) async throws -> JobOutput
    func execute(_ job: Job, context: JobContext) async throws -> JobOutput { try await body(job, context) }
}

/// Things an executor saw, for the test to check.
final class Seen: Sendable {
    private let events = Mutex<[String]>([])
    func add(_ event: String) { events.withLock { $0.append(event) } }
    var all: [String] { events.withLock { $0 } }
    func contains(_ event: String) -> Bool { all.contains(event) }
}

/// A worker configuration for in-process tests: quick loops, two slots.
func testWorkerConfiguration(id: String = "in-process") -> WorkerConfiguration {
    WorkerConfiguration(
        id: id,
        concurrency: 2,
        blockTimeout: .milliseconds(300),
        shutdownGrace: .seconds(5),
        heartbeatInterval: .milliseconds(500),
        promoteInterval: .milliseconds(50),
        watchInterval: .milliseconds(50),
        executorName: "closure"
    )
}

/// Runs a `Worker` inside this process, under a graceful-shutdown trigger, while `body` runs;
/// then shuts it down gracefully and waits for `run()` to return.
func withWorker(
    _ queue: JobQueue,
    executor: any JobExecutor,
    configuration: WorkerConfiguration = testWorkerConfiguration(),
    _ body: (Worker) async throws -> Void
) async throws {
    var logger = Logger(label: "test.worker")
    logger.logLevel = .warning
    let worker = Worker(queue: queue, executor: executor, configuration: configuration, logger: logger)
    try await testGracefulShutdown { trigger in
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await worker.run() }
            do {
                try await body(worker)
            } catch {
                trigger.triggerGracefulShutdown()
                try? await group.waitForAll()
                throw error
            }
            trigger.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }
}

func reply(_ text: String) -> JobOutput { JobOutput(output: .object(["content": .string(text)])) }

/// An executor's body that runs until it is cancelled, and records that in `seen`.
func runUntilCancelled(_ seen: Seen) async throws -> JobOutput {
    do {
        try await Task.sleep(for: .seconds(60))
    } catch {
        seen.add("cancelled")
        throw error
    }
    return reply("never")
}

/// The worker run inside the test process, in a ServiceGroup-like harness: timeouts, lost
/// leases, cancellation, draining, failed writes and lost replies, each against a real redis-server.
@Suite("Worker in process", .serialized)
struct WorkerInProcessTests {
    /// Each lane is a stream of its own: jobs pushed to two lanes in one push share entry ids
    /// (the same millisecond, the same sequence). Both run, both finish, at once.
    @Test func entriesWithTheSameIDOnTwoLanesBothRun() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let jobs = [
            chatJob("high", priority: .high, maxAttempts: 1), chatJob("default", maxAttempts: 1), chatJob("low", priority: .low, maxAttempts: 1),
        ]
        try await f.queue.ensureGroups()
        _ = try await f.queue.push(jobs)
        let ids = try await f.queue.take(consumer: "peek", count: 3)
        try await f.queue.handBack(ids)
        // The premise: at least two lanes hold the same entry id.
        #expect(Set(ids.map(\.entryID)).count < ids.count, "\(ids.map(\.key))")
        let executor = ClosureExecutor { job, _ in
            // Long enough that the jobs are in flight together.
            try await Task.sleep(for: .milliseconds(200))
            return reply(job.id)
        }
        var configuration = testWorkerConfiguration()
        configuration.concurrency = 3
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let finished = try await eventually(timeout: .seconds(5)) {
                try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0?.status == .succeeded }
            }
            let statuses = try await f.queue.results(of: jobs.map(\.id)).map { $0?.status.rawValue ?? "none" }
            #expect(finished, "\(statuses)")
        }
    }

    @Test func aJobPastItsTimeoutIsStoppedAndDeadLettered() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let seen = Seen()
        var job = chatJob("slow", maxAttempts: 1)
        job.timeout = 0.3
        _ = try await f.queue.push(job)
        let executor = ClosureExecutor { _, _ in
            try await runUntilCancelled(seen)
        }
        try await withWorker(f.queue, executor: executor) { _ in
            let finished = try await eventually(timeout: .seconds(10)) { try await f.queue.result(of: job.id) != nil }
            #expect(finished)
        }
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .dead && result.error?.code == "timeout")
        #expect(seen.contains("cancelled"))
    }

    @Test func anExecutorThatIgnoresBeingStoppedIsAbandonedAndItsSlotFreed() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let seen = Seen()
        var stuckJob = chatJob("stuck", maxAttempts: 1)
        stuckJob.timeout = 0.2
        let stuck = stuckJob
        let next = chatJob("next")
        _ = try await f.queue.push(stuck)
        var configuration = testWorkerConfiguration()
        configuration.concurrency = 1
        configuration.abandonAfter = .milliseconds(300)
        let executor = ClosureExecutor { job, _ in
            if job.id == stuck.id {
                // Blocks a thread of its own for 8 s and takes no notice of cancellation.
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    Thread.detachNewThread {
                        sleep(8)
                        seen.add("stuck executor returned")
                        done.resume()
                    }
                }
            }
            return reply("ok")
        }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let finished = try await eventually(timeout: .seconds(6)) { try await f.queue.result(of: stuck.id) != nil }
            #expect(finished)
            // The only slot is free again while the stuck executor still runs.
            _ = try await f.queue.push(next)
            let succeeded = try await eventually(timeout: .seconds(6)) { try await f.queue.result(of: next.id)?.status == .succeeded }
            #expect(succeeded)
            #expect(!seen.contains("stuck executor returned"))
        }
        let result = try #require(try await f.queue.result(of: stuck.id))
        #expect(result.status == .dead && result.error?.code == "timeout")
    }

    @Test func cancellingARunningJobStopsItsExecutor() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let seen = Seen()
        let job = chatJob("cancel me")
        _ = try await f.queue.push(job)
        let executor = ClosureExecutor { _, _ in
            seen.add("started")
            return try await runUntilCancelled(seen)
        }
        try await withWorker(f.queue, executor: executor) { worker in
            let started = await eventually(timeout: .seconds(5)) { seen.contains("started") }
            #expect(started)
            let cancelled = try await f.queue.cancel(jobID: job.id)
            #expect(cancelled == .cancelled)
            let stopped = await eventually(timeout: .seconds(5)) { seen.contains("cancelled") && worker.inFlightCount == 0 }
            #expect(stopped)
        }
        #expect(try await f.queue.result(of: job.id)?.status == .cancelled)
        #expect(try await f.queue.status().lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 })
    }

    @Test func aLostLeaseStopsTheAttemptAndWritesNothingForIt() async throws {
        let f = try QueueFixture { $0.lease = .seconds(1) }
        defer { f.close() }
        let seen = Seen()
        let job = chatJob("taken from me")
        _ = try await f.queue.push(job)
        let executor = ClosureExecutor { _, context in
            seen.add("started \(context.attempt)")
            guard context.attempt == 1 else { return reply("second attempt") }
            return try await runUntilCancelled(seen)
        }
        try await withWorker(f.queue, executor: executor) { _ in
            let started = await eventually(timeout: .seconds(5)) { seen.contains("started 1") }
            #expect(started)
            // As if this worker had stalled past its lease: its entry looks idle and another
            // worker's reclaim requeues it (the copy is attempt 2, the old entry is gone).
            let reclaimed = try await eventually(timeout: .seconds(5)) {
                for entry in try await f.queue.pendingEntries(consumer: "in-process") {
                    try await f.pool.send(
                        "XCLAIM",
                        f.queue.keys.lane(.default),
                        QueueKeys.group,
                        "in-process",
                        0,
                        entry.entryID,
                        "IDLE",
                        3_600_000,
                        "JUSTID"
                    )
                }
                return try await f.queue.reclaimExpired(consumer: "other").requeued == 1
            }
            #expect(reclaimed)
            let done = try await eventually(timeout: .seconds(5)) { try await f.queue.result(of: job.id) != nil }
            #expect(done)
        }
        #expect(seen.contains("cancelled"))
        // The lost attempt wrote nothing; the reclaimed copy ran as attempt 2.
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.attempts == 2 && result.output?["content"] == .string("second attempt"))
    }

    @Test func aDrainLetsJobsFinishWithinTheGrace() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let seen = Seen()
        let job = chatJob("finish me")
        _ = try await f.queue.push(job)
        var configuration = testWorkerConfiguration()
        configuration.shutdownGrace = .seconds(10)
        let executor = ClosureExecutor { _, _ in
            seen.add("started")
            try await Task.sleep(for: .milliseconds(500))
            return reply("done")
        }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let started = await eventually(timeout: .seconds(5)) { seen.contains("started") }
            #expect(started)
        }
        // run() returned only after the job finished and its result was written.
        #expect(try await f.queue.result(of: job.id)?.status == .succeeded)
        #expect(try await f.queue.workers().isEmpty)
    }

    @Test func aDrainHandsBackWhatOutlastsTheGrace() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let seen = Seen()
        let job = chatJob("too long")
        _ = try await f.queue.push(job)
        var configuration = testWorkerConfiguration()
        configuration.shutdownGrace = .milliseconds(300)
        let executor = ClosureExecutor { _, _ in
            seen.add("started")
            return try await runUntilCancelled(seen)
        }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let started = await eventually(timeout: .seconds(5)) { seen.contains("started") }
            #expect(started)
        }
        #expect(seen.contains("cancelled"))
        #expect(try await f.queue.result(of: job.id) == nil)
        let status = try await f.queue.status()
        #expect(status.lanes[1].waiting == 1 && status.lanes[1].pending == 0)
        let again = try #require(try await f.queue.take(consumer: "next", count: 1).first)
        #expect(again.jobID == job.id && again.attempt == 1)
    }

    @Test func aResultRedisRefusesFailsAloneAndTheOthersAreWritten() async throws {
        // Redis refuses any argument over 1 MB; the worker's own limit is higher.
        let f = try QueueFixture(serverArguments: ["--proto-max-bulk-len", "1mb"])
        defer { f.close() }
        let big = chatJob("big")
        let small = (0..<3).map { chatJob("small \($0)") }
        _ = try await f.queue.push([big] + small)
        var configuration = testWorkerConfiguration()
        configuration.concurrency = 4
        let executor = ClosureExecutor { job, _ in
            // Finish together, so their results share one write.
            try await Task.sleep(for: .milliseconds(200))
            return reply(job.id == big.id ? String(repeating: "x", count: 1_500_000) : "fine")
        }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let allFinished = try await eventually(timeout: .seconds(20)) {
                try await f.queue.results(of: ([big] + small).map(\.id)).allSatisfy { $0 != nil }
            }
            #expect(allFinished)
        }
        for job in small { #expect(try await f.queue.result(of: job.id)?.status == .succeeded) }
        let refused = try #require(try await f.queue.result(of: big.id))
        #expect(refused.status == .failed && refused.error?.code == "result_rejected" && refused.output == nil)
    }

    @Test func aResultOverTheWorkersLimitFailsWithResultTooLarge() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let job = chatJob("verbose")
        _ = try await f.queue.push(job)
        var configuration = testWorkerConfiguration()
        configuration.maxResultBytes = 1000
        let executor = ClosureExecutor { _, _ in
            reply(String(repeating: "y", count: 5000))
        }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let finished = try await eventually(timeout: .seconds(5)) { try await f.queue.result(of: job.id) != nil }
            #expect(finished)
        }
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .failed && result.error?.code == "result_too_large" && result.output == nil)
        #expect(result.error?.message.contains("1000") == true)
    }

    /// A take whose reply is lost (a connection reset after Redis ran it) leaves the entry pending
    /// for this worker. With one attempt allowed, a worker that did not look for such entries
    /// would let the lease run out and the reclaim would dead-letter a job that never ran.
    @Test(arguments: [false, true])
    func aLostTakeReplyDoesNotCostTheJobAnAttempt(pushWhileIdle: Bool) async throws {
        let f = try QueueFixture { $0.lease = .seconds(1) }
        defer { f.close() }
        let marker = "marker-\(UUID().uuidString)"
        let proxy = try FaultProxy(target: f.server.port, faults: ["--drop-reply-containing", marker])
        var redis = try RedisConfiguration(url: "redis://127.0.0.1:\(proxy.port)")
        redis.poolSize = 4
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        var configuration = f.queue.configuration
        configuration.lease = .seconds(1)
        let queue = JobQueue(configuration: configuration, redis: pool)
        let job = chatJob(marker, maxAttempts: 1)
        if !pushWhileIdle { _ = try await f.queue.push(job) }
        let executor = ClosureExecutor { _, _ in reply("ran") }
        try await withWorker(queue, executor: executor) { _ in
            if pushWhileIdle {
                try await Task.sleep(for: .milliseconds(500))  // the worker waits in its blocking read
                _ = try await f.queue.push(job)
            }
            let finished = try await eventually(timeout: .seconds(10)) { try await f.queue.result(of: job.id) != nil }
            #expect(finished)
        }
        #expect(proxy.faultsFired == 1)
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.attempts == 1, "\(result)")
        #expect(try await f.queue.deadLetters().isEmpty)
    }

    @Test func aWorkerRefusesAnIdALiveWorkerHolds() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let twin = workerInfo(id: "twin", host: "another-host", pid: 4242)
        try await f.queue.heartbeat(twin, ttl: .seconds(30))
        _ = try await f.queue.push(chatJob("the twin's job"))
        _ = try await f.queue.take(consumer: "twin", count: 1)
        let seen = Seen()
        var configuration = WorkerConfiguration(id: "twin", executorName: "closure")
        configuration.whenRegistered = { seen.add("registered") }
        let worker = Worker(
            queue: f.queue,
            executor: ClosureExecutor { _, _ in reply("no") },
            configuration: configuration,
            logger: Logger(label: "test")
        )
        await #expect {
            try await testGracefulShutdown { _ in try await worker.run() }
        } throws: { error in
            (error as? WorkerError)?.code == .duplicateID && "\(error)".contains("another-host")
        }
        // The live worker's registration and its running job are untouched, and nothing that
        // waits for registration (model servers, an earlier worker's leftovers) was started.
        #expect(!seen.contains("registered"))
        #expect(try await f.queue.workers().map(\.host) == ["another-host"])
        #expect(try await f.queue.pendingEntries(consumer: "twin").count == 1)
    }

    /// Redis refusing every write for a while (here: out of memory) must not cost a good result:
    /// the worker keeps it and writes it once Redis takes writes again.
    @Test func aRedisThatRefusesAllWritesForAWhileCostsNoResult() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let job = chatJob("patience")
        _ = try await f.queue.push(job)
        let gate = Seen()
        let executor = ClosureExecutor { _, _ in
            while !gate.contains("go") { try await Task.sleep(for: .milliseconds(20)) }
            return reply("kept")
        }
        try await withWorker(f.queue, executor: executor) { _ in
            let started = try await eventually(timeout: .seconds(5)) { try await f.queue.pendingEntries(consumer: "in-process").count == 1 }
            #expect(started)
            try await f.pool.send("CONFIG", "SET", "maxmemory", "1")
            gate.add("go")
            try await Task.sleep(for: .seconds(3))  // many write attempts, each refused (OOM)
            try await f.pool.send("CONFIG", "SET", "maxmemory", "0")
            let finished = try await eventually(timeout: .seconds(10)) { try await f.queue.result(of: job.id) != nil }
            #expect(finished)
        }
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.output?["content"] == .string("kept"), "\(result)")
    }

    /// With Redis gone, a stopping worker gives up on writing soon after its grace period instead
    /// of retrying every step for minutes; its job is reclaimed after the lease like a crashed one's.
    @Test func aWorkerStopsSoonWhenRedisIsGoneAtShutdown() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        _ = try await f.queue.push(chatJob("running when Redis dies"))
        let seen = Seen()
        let executor = ClosureExecutor { _, _ in
            seen.add("started")
            try await Task.sleep(for: .seconds(60))
            return reply("never")
        }
        var configuration = testWorkerConfiguration()
        configuration.shutdownGrace = .seconds(1)
        configuration.shutdownWriteTime = .seconds(2)
        let clock = ContinuousClock()
        var stopped = clock.now
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let started = await eventually(timeout: .seconds(5)) { seen.contains("started") }
            #expect(started)
            f.server.kill()
            stopped = clock.now
        }
        let took = clock.now - stopped
        #expect(took < .seconds(20), "run() returned \(took) after shutdown began")
    }

    /// When its group cancels it (another service failed), a worker with an executor that ignores
    /// cancellation still ends: it abandons the job after `abandonAfter` instead of waiting for it.
    @Test func aCancelledWorkerEndsDespiteAStuckExecutor() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        _ = try await f.queue.push(chatJob("stuck"))
        let seen = Seen()
        let executor = ClosureExecutor { _, _ in
            seen.add("started")
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                Thread.detachNewThread {
                    sleep(8)
                    seen.add("returned")
                    done.resume()
                }
            }
            return reply("late")
        }
        var configuration = testWorkerConfiguration()
        configuration.abandonAfter = .milliseconds(500)
        var logger = Logger(label: "test.worker")
        logger.logLevel = .critical
        let worker = Worker(queue: f.queue, executor: executor, configuration: configuration, logger: logger)
        let running = Task { try await worker.run() }
        let started = await eventually(timeout: .seconds(5)) { seen.contains("started") }
        #expect(started)
        running.cancel()
        _ = try? await running.value
        #expect(!seen.contains("returned"), "run() waited for the stuck executor")
    }

    @Test func aWorkerTakingOverADeadPredecessorsIdRunsWhatItLeft() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        // A pid on this host that no longer runs: a predecessor killed with SIGKILL.
        let gone = try ChildProcess(executable: "true", arguments: [])
        gone.waitForExit()
        let predecessor = workerInfo(id: "restarted", host: ProcessInfo.processInfo.hostName, pid: gone.pid)
        try await f.queue.heartbeat(predecessor, ttl: .seconds(30))
        let job = chatJob("left behind", maxAttempts: 1)
        _ = try await f.queue.push(job)
        _ = try await f.queue.take(consumer: "restarted", count: 1)
        let configuration = testWorkerConfiguration(id: "restarted")
        let executor = ClosureExecutor { _, _ in reply("picked up") }
        try await withWorker(f.queue, executor: executor, configuration: configuration) { _ in
            let finished = try await eventually(timeout: .seconds(5)) { try await f.queue.result(of: job.id) != nil }
            #expect(finished)
        }
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.attempts == 1)
    }
}
