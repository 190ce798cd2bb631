import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// The response cache with real worker processes: identical deterministic jobs on several
/// workers reach the provider once.
@Suite("Response cache with worker processes", .serialized)
struct ResponseCacheWorkerTests {
    static func providersFile(_ standin: StandinServer) throws -> URL {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json")
        try """
        {"providers": [{"name": "remote", "kind": "openai", "base_url": "\(standin.baseURL)/v1"}],
         "models": {"m": {"provider": "remote"}}}
        """.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    static func question(temperature: Double = 0) -> Job {
        var job = chatJob("what is a switchyard?")
        job.model = "m"
        job.input.parameters = ["temperature": .number(temperature), "max_tokens": .number(8)]
        return job
    }

    @Test func fortyIdenticalJobsOnFourWorkersMakeOneUpstreamCall() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let standin = try StandinServer()
        // Slow answers, so the jobs overlap and have to wait for the one in flight.
        try await standin.setFaults([["path": "/v1/chat/completions", "latency_ms": 500, "times": 100]])
        let providers = try Self.providersFile(standin)
        defer { try? FileManager.default.removeItem(at: providers) }
        let workers = try (0..<4).map {
            try WorkerProcess(
                redisURL: f.server.url,
                id: "cache-\($0)",
                arguments: ["--queue", "test", "--providers", providers.path, "--concurrency", "16", "--log-level", "warning"]
            )
        }
        let registered = try await eventually(timeout: .seconds(20)) { try await f.queue.workers().count == 4 }
        #expect(registered)
        let jobs = (0..<40).map { _ in Self.question() }
        _ = try await f.queue.push(jobs)
        let finished = try await eventually(timeout: .seconds(60)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } }
        #expect(finished)
        let results = try await f.queue.results(of: jobs.map(\.id)).compactMap { $0 }
        #expect(results.allSatisfy { $0.status == .succeeded })
        #expect(Set(results.compactMap(\.output)).count == 1, "every job gets the same answer")
        let byPath = try await standin.stats()["by_path"] as? [String: Int]
        #expect(byPath?["/v1/chat/completions"] == 1, "upstream calls: \(byPath ?? [:])")
        let statuses = results.compactMap(\.cache?.status)
        #expect(statuses.count == 40 && statuses.filter { $0 == .miss }.count == 1)
        #expect(Set(results.compactMap(\.worker)).count > 1, "the jobs were spread over several workers")
        // The workers' counters reach `status` with their heartbeats: 39 of 40 served by the cache.
        var status = ""
        let shown = try await eventually(timeout: .seconds(10)) {
            status = try runSwitchyard(["status", "--redis-url", f.server.url, "--queue", "test"]).output
            return status.contains("response cache: hit ratio 97.5%")
        }
        #expect(shown, "\(status)")
        for w in workers { #expect(w.terminate() == 0) }
    }

    @Test func jobsWhoseAnswersVaryAreNotCachedUnlessForced() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let standin = try StandinServer()
        let providers = try Self.providersFile(standin)
        defer { try? FileManager.default.removeItem(at: providers) }
        let w = try WorkerProcess(redisURL: f.server.url, id: "cache-v", arguments: ["--queue", "test", "--providers", providers.path])
        defer { _ = w.terminate() }
        // Sampled at temperature 0.9: each is its own call.
        let sampled = (0..<3).map { _ in Self.question(temperature: 0.9) }
        _ = try await f.queue.push(sampled)
        let done = try await eventually(timeout: .seconds(30)) { try await f.queue.results(of: sampled.map(\.id)).allSatisfy { $0 != nil } }
        #expect(done)
        #expect(try await f.queue.results(of: sampled.map(\.id)).allSatisfy { $0?.cache?.status == .bypass })
        var byPath = try await standin.stats()["by_path"] as? [String: Int]
        #expect(byPath?["/v1/chat/completions"] == 3)
        // Forced: cached all the same.
        var forced = (0..<2).map { _ in Self.question(temperature: 0.9) }
        for i in forced.indices { forced[i].cache = .force }
        _ = try await f.queue.push(forced[0])
        let first = try await eventually(timeout: .seconds(30)) { try await f.queue.result(of: forced[0].id) != nil }
        #expect(first)
        _ = try await f.queue.push(forced[1])
        let second = try await eventually(timeout: .seconds(30)) { try await f.queue.result(of: forced[1].id) != nil }
        #expect(second)
        #expect(try await f.queue.result(of: forced[1].id)?.cache?.status == .hit)
        byPath = try await standin.stats()["by_path"] as? [String: Int]
        #expect(byPath?["/v1/chat/completions"] == 4)
    }

    @Test func withTheCachesRedisDownJobsStillSucceed() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let standin = try StandinServer()
        let providers = try Self.providersFile(standin)
        defer { try? FileManager.default.removeItem(at: providers) }
        let nowhere = "redis://127.0.0.1:\(try LoopbackPort.free())"
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "cache-down",
            arguments: ["--queue", "test", "--providers", providers.path, "--cache-redis-url", nowhere]
        )
        defer { _ = w.terminate() }
        let jobs = (0..<3).map { _ in Self.question() }
        _ = try await f.queue.push(jobs)
        let done = try await eventually(timeout: .seconds(30)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } }
        #expect(done)
        let results = try await f.queue.results(of: jobs.map(\.id))
        // Without its Redis the cache steps aside; identical jobs in one worker may still share a call.
        #expect(results.allSatisfy { $0?.status == .succeeded && [.bypass, .coalesced].contains($0?.cache?.status) }, "\(results)")
        #expect(w.log.contains("response cache: its Redis failed"))
    }

    /// The worker computing an answer is killed mid-call: another worker's waiting jobs take the
    /// work over once its lease on the key runs out, and every job gets an answer.
    @Test func aKilledLeaderIsReplacedAndEveryJobGetsAnAnswer() async throws {
        let f = try QueueFixture { $0.lease = .seconds(2) }
        defer { f.close() }
        let standin = try StandinServer()
        // The first call hangs long enough to kill its worker during it; later calls are quick.
        try await standin.setFaults([["path": "/v1/chat/completions", "latency_ms": 20000, "times": 1]])
        let providers = try Self.providersFile(standin)
        defer { try? FileManager.default.removeItem(at: providers) }
        let arguments = ["--queue", "test", "--providers", providers.path, "--lease", "2s", "--concurrency", "4"]
        let leader = try WorkerProcess(redisURL: f.server.url, id: "leader", arguments: arguments)
        let first = Self.question()
        _ = try await f.queue.push(first)
        // The chat call itself (the stand-in counts its own stats requests under "requests").
        let calling = try await eventually(timeout: .seconds(20)) {
            ((try await standin.stats()["by_path"] as? [String: Int])?["/v1/chat/completions"] ?? 0) >= 1
        }
        #expect(calling)
        let follower = try WorkerProcess(redisURL: f.server.url, id: "follower", arguments: arguments)
        defer { _ = follower.terminate() }
        let rest = (0..<4).map { _ in Self.question() }
        _ = try await f.queue.push(rest)
        try await Task.sleep(for: .milliseconds(500))  // the follower's jobs wait on the leader's lease
        leader.kill()
        let all = ([first] + rest).map(\.id)
        let answered = try await eventually(timeout: .seconds(60)) { try await f.queue.results(of: all).allSatisfy { $0 != nil } }
        #expect(answered)
        let results = try await f.queue.results(of: all).compactMap { $0 }
        #expect(results.allSatisfy { $0.status == .succeeded && $0.worker == "follower" })
        #expect(Set(results.compactMap(\.output)).count == 1)
        // The dead leader's call, and one by the worker that took over.
        let byPath = try await standin.stats()["by_path"] as? [String: Int]
        #expect(byPath?["/v1/chat/completions"] == 2, "\(byPath ?? [:])")
    }

    @Test func identicalJobsOnRealLlamaServersAreInferredOnce() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["tiny"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let arguments = ["--queue", "test", "--models", catalog, "--profile", "cpu", "--concurrency", "4"]
        let workers = try ["a", "b"].map { try WorkerProcess(redisURL: f.server.url, id: "local-cache-\($0)", arguments: arguments) }
        let jobs = (0..<12).map { _ -> Job in
            var job = Self.question()
            job.model = "tiny"
            return job
        }
        _ = try await f.queue.push(jobs)
        let done = try await eventually(timeout: .seconds(90)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } }
        #expect(done)
        let results = try await f.queue.results(of: jobs.map(\.id)).compactMap { $0 }
        #expect(results.allSatisfy { $0.status == .succeeded })
        #expect(Set(results.compactMap(\.output)).count == 1)
        #expect(results.filter { $0.cache?.status == .miss }.count == 1, "\(results.map { $0.cache?.status.rawValue ?? "-" })")
        for w in workers { #expect(w.terminate() == 0) }
    }
}
