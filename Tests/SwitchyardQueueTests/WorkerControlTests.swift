import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Controlling workers from the command line: `worker --burst`, `workers`, `workers drain`.
@Suite("Worker control", .serialized)
struct WorkerControlTests {
    /// Runs `switchyard <arguments>` against the fixture's Redis; exit code and output.
    static func cli(_ f: QueueFixture, _ arguments: [String]) throws -> (code: Int32, output: String) {
        let (code, output) = try runSwitchyard(arguments + ["--redis-url", f.server.url, "--queue", "test"])
        return (code ?? -1, output)
    }

    @Test func aBurstWorkerRunsEverythingDueThenExitsZero() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        // Five jobs, one failing its first attempt (its retry is due about a second later), and
        // one due in ten minutes, which a burst worker leaves for another.
        let jobs =
            (0..<4).map { chatJob("job \($0)", metadata: ["echo.sleep_ms": "200"]) } + [chatJob("flaky", metadata: ["echo.fail_attempts": "1"])]
        var later = chatJob("tomorrow")
        later.notBefore = Date().timeIntervalSince1970 + 600
        _ = try await f.queue.push(jobs + [later])
        let worker = try WorkerProcess(redisURL: f.server.url, id: "burst", arguments: ["--queue", "test", "--executor", "echo", "--burst"])
        #expect(worker.process.waitForExit(timeout: .seconds(60)), "a burst worker exits once nothing is left\n\(worker.log)")
        #expect(worker.terminate(timeout: .seconds(1)) == 0, "\(worker.log)")
        let results = try await f.queue.results(of: jobs.map(\.id))
        #expect(results.allSatisfy { $0?.status == .succeeded }, "every job due ran, the retry included: \(results.map { $0?.status })")
        #expect(results.last??.attempts == 2)
        #expect(try await f.queue.result(of: later.id) == nil, "a job due in ten minutes is left")
        #expect(worker.log.contains("burst: nothing left on the queue; stopping"))
    }

    /// A retry due within the retry cap keeps a burst worker (the default cap is 5 minutes); an
    /// entry delivered and acknowledged but never deleted (held by no worker) does not.
    @Test func aBurstWorkerWaitsForRetriesWithinTheCapAndIgnoresGhostEntries() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let lane = f.queue.keys.lane(.default)
        _ = try await f.pool.send("XADD", lane, "*", "id", "ghost", "attempt", "1", "max", "1", "batch", "", "model", "", "job", "{}")
        let read = try await f.pool.send("XREADGROUP", "GROUP", QueueKeys.group, "someone", "COUNT", 1, "STREAMS", lane, ">")
        let entryID = try #require(read.array?.first?.array?.last?.array?.first?.array?.first?.string)
        _ = try await f.pool.send("XACK", lane, QueueKeys.group, entryID)
        let ghost = try WorkerControlTests.cli(f, ["job", "ghost"])
        #expect(ghost.output.contains("held by no worker"), "\(ghost.output)")

        var retry = chatJob("a retry in 40 s")
        retry.notBefore = Date().timeIntervalSince1970 + 40
        _ = try await f.queue.push(retry)
        let waiting = try WorkerProcess(redisURL: f.server.url, id: "burst-wait", arguments: ["--queue", "test", "--executor", "echo", "--burst"])
        #expect(!waiting.process.waitForExit(timeout: .seconds(3)), "a job due within the retry cap keeps it\n\(waiting.log)")
        _ = waiting.terminate()
        _ = try await f.pool.send("DEL", f.queue.keys.delayed)
        let done = try WorkerProcess(redisURL: f.server.url, id: "burst-done", arguments: ["--queue", "test", "--executor", "echo", "--burst"])
        #expect(done.process.waitForExit(timeout: .seconds(20)), "the ghost entry does not keep it\n\(done.log)")
        #expect(done.terminate(timeout: .seconds(1)) == 0)
    }

    @Test func workersListsRunningJobsAndDrainStopsAWorkerThroughRedis() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "drainee", arguments: ["--queue", "test", "--executor", "echo"])
        defer { worker.kill() }
        let job = chatJob("slow", metadata: ["echo.sleep_ms": "2500"])
        _ = try await f.queue.push(job)
        // Its heartbeat (every 2 s) lists the running job.
        var listed = (code: Int32(-1), output: "")
        #expect(
            try await eventually(timeout: .seconds(10)) {
                listed = try Self.cli(f, ["workers"])
                return listed.output.contains("running: \(job.id)")
            },
            "\(listed.output)"
        )
        #expect(listed.code == 0 && listed.output.contains("drainee"))
        let json = try Self.cli(f, ["workers", "--json"])
        #expect(json.code == 0 && json.output.contains("\"jobs\":[\"\(job.id)\"]") && !json.output.contains("token"), "\(json.output)")

        let drain = try Self.cli(f, ["workers", "drain", "drainee"])
        #expect(drain.code == 0 && drain.output.contains("asked worker drainee"), "\(drain.output)")
        // It finishes the running job, then exits 0 and leaves the registry.
        #expect(worker.process.waitForExit(timeout: .seconds(30)), "\(worker.log)")
        #expect(worker.terminate(timeout: .seconds(1)) == 0, "\(worker.log)")
        #expect(try await f.queue.result(of: job.id)?.status == .succeeded)
        #expect(worker.log.contains("asked to drain through Redis"))
        #expect(try await f.queue.workers().isEmpty)
        let unknown = try Self.cli(f, ["workers", "drain", "drainee"])
        #expect(unknown.code == 4 && unknown.output.contains("no live worker 'drainee'"), "\(unknown.output)")
    }

    /// A drain request names the process it was made for: a later process with the same id (a
    /// supervisor's restart) is not stopped by it.
    @Test func aDrainRequestStopsOnlyTheProcessItNames() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        var first = workerInfo(id: "same", host: "h", pid: 1, heartbeatAt: 0)
        first.token = "t1"
        var second = first
        second.token = "t2"
        #expect(try await f.queue.beat(first, ttl: .seconds(30)) == .recorded)
        #expect(try await f.queue.requestDrain(workerID: "same")?.token == "t1")
        #expect(try await f.queue.beat(first, ttl: .seconds(30)) == .drainRequested)
        // The first process died; a new one takes the id over.
        #expect(try await f.queue.beat(second, ttl: .seconds(30), force: true) == .recorded)
        #expect(try await f.queue.beat(second, ttl: .seconds(30)) == .recorded)
        #expect(try await f.queue.requestDrain(workerID: "nobody") == nil)
    }
}
