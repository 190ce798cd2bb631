import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// Network faults between worker hosts and Redis, with real hosts on one machine (network
/// namespaces joined by veth pairs; `TestNetwork`) and a fault-injecting TCP proxy: partitions
/// shorter and longer than a lease, a stalled connection, added latency. Each test counts jobs,
/// executions and fenced results.
@Suite("Network faults between hosts", .serialized)
struct NetworkFaultTests {
    static let unavailable = TestNetwork.unavailableReason

    /// The queue as the test process sees it, through the test's own link to the Redis host.
    static func queue(_ net: TestNetwork, name: String = "net") throws -> (JobQueue, RedisConnectionPool) {
        let pool = RedisConnectionPool(configuration: try RedisConfiguration(url: net.redisURL), logger: Logger(label: "test"))
        return (JobQueue(configuration: QueueConfiguration(name: name), redis: pool, logger: Logger(label: "test")), pool)
    }

    static func jobs(_ count: Int, sleepMs: Int, tag: String, laterAttemptsMs: Int? = nil) -> [Job] {
        (0..<count).map { i in
            var metadata = ["echo.sleep_ms": String(sleepMs)]
            if let laterAttemptsMs { metadata["echo.sleep_ms_after_first"] = String(laterAttemptsMs) }
            var job = chatJob("\(tag) \(i)", metadata: metadata)
            job.id = "\(tag)-\(i)"
            return job
        }
    }

    /// Every job has exactly one final result; returns them.
    static func allFinished(_ queue: JobQueue, _ jobs: [Job], within: Duration = .seconds(60)) async throws -> [JobResult] {
        let ids = jobs.map(\.id)
        let done = await eventually(timeout: within) { ((try? await queue.results(of: ids)) ?? []).allSatisfy { $0 != nil } }
        #expect(done, "every job finished")
        return try await queue.results(of: ids).compactMap { $0 }
    }

    /// Cut off for less than a lease: the worker's connections stall, it carries on when the link
    /// is back, and nothing runs twice.
    @Test(.enabled(if: unavailable == nil, "needs network namespaces (root and iproute2)"))
    func aHostCutOffForLessThanALeaseCarriesOn() async throws {
        let net = try TestNetwork(workers: 2)
        defer { net.close() }
        let (queue, pool) = try Self.queue(net)
        defer { pool.shutDown() }
        let arguments = ["--queue", "net", "--executor", "echo", "--lease", "6s", "--concurrency", "2"]
        let a = try WorkerProcess(redisURL: net.hosts[0].redisURL, id: "a", arguments: arguments, namespace: net.hosts[0].namespace)
        let b = try WorkerProcess(redisURL: net.hosts[1].redisURL, id: "b", arguments: arguments, namespace: net.hosts[1].namespace)
        defer { for w in [a, b] { w.kill() } }
        #expect(await eventually { (try? await queue.workers().count) == 2 }, "both hosts' workers register\n\(a.log)\n\(b.log)")
        let jobs = Self.jobs(20, sleepMs: 500, tag: "short")
        _ = try await queue.push(jobs)
        try await Task.sleep(for: .milliseconds(700))
        try net.partition(net.hosts[0])
        try await Task.sleep(for: .seconds(2))
        try net.heal(net.hosts[0])
        let results = try await Self.allFinished(queue, jobs)
        #expect(results.count == 20 && results.allSatisfy { $0.status == .succeeded })
        let twice = results.filter { $0.attempts > 1 }.count
        #expect(twice == 0, "a cut shorter than the lease runs nothing twice (\(twice) ran twice)")
        #expect(Set(results.compactMap(\.worker)) == ["a", "b"], "both hosts worked")
        // It consumes again after the cut, without a restart.
        let after = Self.jobs(6, sleepMs: 0, tag: "after")
        b.kill()
        _ = try await queue.push(after)
        let again = try await Self.allFinished(queue, after, within: .seconds(30))
        #expect(again.allSatisfy { $0.worker == "a" && $0.status == .succeeded }, "\(a.log.suffix(1500))")
        print("partition 2 s < lease 6 s: 20 jobs, \(twice) executed twice, 0 lost")
    }

    /// Cut off for longer than a lease: the other host's worker reclaims the jobs and runs them;
    /// the cut-off worker stops what it was running, its late results are fenced off (never over
    /// the other's), it says so, and it consumes again once the link is back.
    @Test(.enabled(if: unavailable == nil, "needs network namespaces (root and iproute2)"))
    func aHostCutOffForLongerThanALeaseIsFencedOff() async throws {
        let net = try TestNetwork(workers: 2)
        defer { net.close() }
        let (queue, pool) = try Self.queue(net)
        defer { pool.shutDown() }
        let arguments = ["--queue", "net", "--executor", "echo", "--lease", "2s", "--concurrency", "4", "--retry-base", "100ms"]
        let a = try WorkerProcess(redisURL: net.hosts[0].redisURL, id: "a", arguments: arguments, namespace: net.hosts[0].namespace)
        defer { a.kill() }
        #expect(await eventually { (try? await queue.workers().count) == 1 })
        // Two jobs that end during the cut (their results wait to be written), two still running
        // when the lease runs out. b's runs of the quick ones last 12 s: a's late results arrive
        // while b still runs them, before any final result exists. Only the fence keeps them out.
        let quick = Self.jobs(2, sleepMs: 300, tag: "quick", laterAttemptsMs: 12_000)
        let long = Self.jobs(2, sleepMs: 8000, tag: "long")
        _ = try await queue.push(quick + long)
        #expect(await eventually { (try? await queue.status().lanes.reduce(0) { $0 + $1.pending }) == 4 }, "a holds the 4 jobs")
        try net.partition(net.hosts[0])
        let cutAt = ContinuousClock.now
        let b = try WorkerProcess(redisURL: net.hosts[1].redisURL, id: "b", arguments: arguments, namespace: net.hosts[1].namespace)
        defer { b.kill() }
        // b reclaims a's jobs once their lease has run out, and runs them.
        #expect(await eventually { (try? await queue.status().counters["reclaimed"]) == 4 }, "b reclaims a's 4 jobs\n\(b.log)")
        try await Task.sleep(until: cutAt + .seconds(8), clock: .continuous)
        #expect(try await queue.results(of: quick.map(\.id)).allSatisfy { $0 == nil }, "b still runs the quick jobs")
        #expect(a.log.contains("leases not renewed for"), "a stops what it runs once its lease is gone\n\(a.log.suffix(2000))")
        try net.heal(net.hosts[0])
        // a's late results: fenced off, and said so.
        // Both quick results were finished during the cut and held; both are fenced off, and said so.
        let fencedBoth = await eventually(timeout: .seconds(20)) { a.log.components(separatedBy: "result not written").count - 1 == 2 }
        #expect(fencedBoth, "\(a.log.suffix(2000))")
        let fenced = a.log.components(separatedBy: "result not written").count - 1
        let finals = try await Self.allFinished(queue, quick + long, within: .seconds(30))
        #expect(
            finals.count == 4 && finals.allSatisfy { $0.worker == "b" },
            "the taking-over worker's results stand: \(finals.map { $0.worker ?? "?" })"
        )
        // Nothing was lost; and after the cut, a consumes again.
        b.kill()
        let after = Self.jobs(4, sleepMs: 0, tag: "after")
        _ = try await queue.push(after)
        let again = try await Self.allFinished(queue, after, within: .seconds(30))
        #expect(again.allSatisfy { $0.worker == "a" }, "\(a.log.suffix(1500))")
        let executedTwice = finals.filter { $0.attempts > 1 }.count
        print("partition 8 s > lease 2 s: 4 jobs, \(executedTwice) executed twice (a's attempt, then b's), \(fenced) late results fenced off, 0 lost")
    }

    /// A connection that stops answering without closing (a stalled proxy): the worker's blocking
    /// read gives up within its bound (block + command timeout), and once traffic flows again it
    /// takes jobs without a restart.
    @Test func aStalledConnectionIsDetectedAndTheWorkerRecovers() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let control = try LoopbackPort.free()
        let proxy = try FaultProxy(target: f.server.port, faults: ["--control", String(control)])
        let worker = try WorkerProcess(
            redisURL: "redis://127.0.0.1:\(proxy.port)",
            id: "stalled",
            arguments: ["--queue", "test", "--executor", "echo"]
        )
        defer { worker.kill() }
        #expect(await eventually { (try? await f.queue.workers().count) == 1 })
        try proxy.command("stall on")
        let stalledAt = ContinuousClock.now
        let first = chatJob("during the stall")
        _ = try await f.queue.push(first)
        // Detected: a timed-out read (2 s block + 5 s command timeout), well within 15 s.
        #expect(await eventually(timeout: .seconds(15)) { worker.log.contains("Redis timeout") }, "\(worker.log)")
        let detected = ContinuousClock.now - stalledAt
        try proxy.command("stall off")
        #expect(await eventually(timeout: .seconds(30)) { (try? await f.queue.result(of: first.id))?.status == .succeeded }, "\(worker.log)")
        let later = chatJob("after the stall")
        _ = try await f.queue.push(later)
        #expect(await eventually(timeout: .seconds(30)) { (try? await f.queue.result(of: later.id))?.status == .succeeded })
        print("stalled connection detected after \(detected)")
    }

    /// 50 ms each way between worker and Redis: the queue runs with the same guarantees.
    @Test func aSlowLinkRunsEveryJobOnce() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let proxy = try FaultProxy(target: f.server.port, faults: ["--delay-ms", "50"])
        let worker = try WorkerProcess(
            redisURL: "redis://127.0.0.1:\(proxy.port)",
            id: "far",
            arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "4"]
        )
        defer { worker.kill() }
        let jobs = (0..<40).map { chatJob("far \($0)") }
        let start = ContinuousClock.now
        _ = try await f.queue.push(jobs)
        let done = await eventually(timeout: .seconds(60)) { ((try? await f.queue.results(of: jobs.map(\.id))) ?? []).allSatisfy { $0 != nil } }
        #expect(done, "\(worker.log.suffix(1000))")
        let results = try await f.queue.results(of: jobs.map(\.id)).compactMap { $0 }
        #expect(results.count == 40 && results.allSatisfy { $0.status == .succeeded && $0.attempts == 1 })
        print("50 ms each way: 40 jobs in \(ContinuousClock.now - start), each once")
    }

    /// Cut off for over a minute, its connections long dead: the worker reconnects and consumes
    /// again once the link is back, without a restart (the failure queues are known for).
    @Test(.enabled(if: unavailable == nil, "needs network namespaces (root and iproute2)"))
    func aHostCutOffForMinutesConsumesAgainWhenBack() async throws {
        let net = try TestNetwork(workers: 1)
        defer { net.close() }
        let (queue, pool) = try Self.queue(net)
        defer { pool.shutDown() }
        let a = try WorkerProcess(
            redisURL: net.hosts[0].redisURL,
            id: "a",
            arguments: ["--queue", "net", "--executor", "echo", "--lease", "5s"],
            namespace: net.hosts[0].namespace
        )
        defer { a.kill() }
        #expect(await eventually { (try? await queue.workers().count) == 1 })
        let before = Self.jobs(2, sleepMs: 0, tag: "before")
        _ = try await queue.push(before)
        _ = try await Self.allFinished(queue, before, within: .seconds(20))
        try net.partition(net.hosts[0])
        let during = Self.jobs(4, sleepMs: 0, tag: "during")
        _ = try await queue.push(during)
        try await Task.sleep(for: .seconds(65))
        #expect(try await queue.results(of: during.map(\.id)).allSatisfy { $0 == nil }, "nothing ran while the host was cut off")
        try net.heal(net.hosts[0])
        let healedAt = ContinuousClock.now
        let results = try await Self.allFinished(queue, during, within: .seconds(60))
        let back = ContinuousClock.now - healedAt
        // A job the blocked read was handed as the link went down (its reply lost) waits out its
        // lease and runs as attempt 2: counted, but run once.
        #expect(results.count == 4 && results.allSatisfy { $0.status == .succeeded && $0.attempts <= 2 }, "\(a.log.suffix(2000))")
        #expect(back < .seconds(30), "consumes again soon after the link is back")
        let second = results.filter { $0.attempts == 2 }.count
        print(
            "partition 65 s: the worker consumed again \(back) after the link came back; 4 jobs, 0 lost, \(second) counted a second attempt (handed over as the link went down)"
        )
    }

    /// Replies cut in the middle (a reset) and a narrow link: each job still ends once.
    @Test func resetsMidReplyAndANarrowLinkLoseNothing() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let control = try LoopbackPort.free()
        let proxy = try FaultProxy(target: f.server.port, faults: ["--control", String(control), "--bandwidth", "200000"])
        let worker = try WorkerProcess(
            redisURL: "redis://127.0.0.1:\(proxy.port)",
            id: "narrow",
            arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "4", "--lease", "3s"]
        )
        defer { worker.kill() }
        let jobs = (0..<60).map { chatJob("narrow \($0) " + String(repeating: "x", count: 2000), metadata: ["echo.sleep_ms": "50"]) }
        _ = try await f.queue.push(jobs)
        // Reset a reply every 300 ms while the jobs run.
        for _ in 0..<10 {
            try proxy.command("reset-next-reply")
            try await Task.sleep(for: .milliseconds(300))
        }
        let done = await eventually(timeout: .seconds(90)) { ((try? await f.queue.results(of: jobs.map(\.id))) ?? []).allSatisfy { $0 != nil } }
        #expect(done, "\(worker.log.suffix(2000))")
        let results = try await f.queue.results(of: jobs.map(\.id)).compactMap { $0 }
        #expect(results.count == 60 && results.allSatisfy { $0.status == .succeeded }, "\(worker.log.suffix(1500))")
        let resets = proxy.faultsFired
        #expect(resets == 10, "\(proxy.log)")
        let again = results.filter { $0.attempts > 1 }.count
        print("\(resets) replies reset mid-way at 200 kB/s: 60 jobs, each one final result, \(again) counted a second attempt, 0 lost")
    }

    /// The fence needs evidence: a Redis that restarted empty (no stream, no group) has no
    /// record of a reclaim, so a job that was running still gets its result written.
    @Test func aRedisThatRestartedEmptyStillGetsTheRunningJobsResult() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "survivor", arguments: ["--queue", "test", "--executor", "echo"])
        defer { worker.kill() }
        let job = chatJob("outlives Redis", maxAttempts: 1, metadata: ["echo.sleep_ms": "3000"])
        _ = try await f.queue.push(job)
        #expect(await eventually { (try? await f.queue.status().lanes.reduce(0) { $0 + $1.pending }) == 1 })
        try f.server.restart()
        #expect(await eventually(timeout: .seconds(30)) { (try? await f.queue.result(of: job.id))?.status == .succeeded }, "\(worker.log)")
        #expect(!worker.log.contains("result not written"), "\(worker.log)")
    }
}
