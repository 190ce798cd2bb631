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

/// Real `switchyard worker` processes against a real redis-server: crashes, restarts, drains.
@Suite("Worker processes", .serialized)
struct WorkerProcessTests {
    @Test func killedWorkersJobFinishesOnAnotherWorker() async throws {
        let f = try QueueFixture { $0.lease = .seconds(1) }
        defer { f.close() }
        let a = try WorkerProcess(redisURL: f.server.url, id: "a", arguments: ["--queue", "test", "--executor", "echo", "--lease", "1s"])
        let job = chatJob("slow", metadata: ["echo.sleep_ms": "1500"])
        _ = try await f.queue.push(job)
        // Wait until worker a holds it, then kill it mid-job.
        #expect(try await eventually { try await f.queue.status().lanes.map(\.pending).reduce(0, +) == 1 })
        a.kill()
        let b = try WorkerProcess(redisURL: f.server.url, id: "b", arguments: ["--queue", "test", "--executor", "echo", "--lease", "1s"])
        defer { _ = b.terminate() }
        #expect(try await eventually { try await f.queue.result(of: job.id) != nil })
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.worker == "b" && result.attempts == 2)
    }

    @Test func fiveThousandJobsSurviveRandomKills() async throws {
        let f = try QueueFixture { $0.lease = .seconds(1) }
        defer { f.close() }
        let args = ["--queue", "test", "--executor", "echo", "--lease", "1s", "--concurrency", "16", "--log-level", "warning"]
        var workers = try (0..<3).map { try WorkerProcess(redisURL: f.server.url, id: "w\($0)-0", arguments: args) }
        // 80 ms a job on 3 x 16 slots: about 8 s of work, long enough for several kills mid-job.
        let jobs = (0..<5000).map { chatJob("job \($0)", maxAttempts: 20, metadata: ["echo.sleep_ms": "80"]) }
        _ = try await f.queue.push(jobs)
        var kills = 0
        let deadline = ContinuousClock.now + .seconds(240)
        while ContinuousClock.now < deadline {
            let done = try await f.queue.status().counters["succeeded"] ?? 0
            if done >= jobs.count { break }
            try await Task.sleep(for: .seconds(1))
            if (try await f.queue.status().counters["succeeded"] ?? 0) >= jobs.count { break }
            if kills < 12 {
                let victim = Int.random(in: 0..<workers.count)
                workers[victim].kill()
                kills += 1
                workers[victim] = try WorkerProcess(redisURL: f.server.url, id: "w\(victim)-\(kills)", arguments: args)
            }
        }
        for w in workers { _ = w.terminate() }
        let results = try await f.queue.results(of: jobs.map(\.id))
        let missing = results.filter { $0 == nil }.count
        #expect(missing == 0, "jobs without a final result: \(missing)")
        #expect(results.allSatisfy { $0?.status == .succeeded })
        // Exactly one final result each: the succeeded counter counts only results that were written.
        let status = try await f.queue.status()
        #expect(status.counters["succeeded"] == jobs.count)
        #expect(status.counters["pushed"] == jobs.count)
        #expect(status.lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 })
        #expect(kills >= 3)
    }

    @Test func workersRecoverWhenRedisRestarts() async throws {
        let f = try QueueFixture(serverArguments: ["--appendonly", "yes", "--appendfsync", "always"]) { $0.lease = .seconds(2) }
        defer { f.close() }
        let args = ["--queue", "test", "--executor", "echo", "--lease", "2s", "--concurrency", "8", "--log-level", "warning"]
        let workers = try (0..<2).map { try WorkerProcess(redisURL: f.server.url, id: "r\($0)", arguments: args) }
        let jobs = (0..<1500).map { chatJob("job \($0)", maxAttempts: 10, metadata: ["echo.sleep_ms": "2"]) }
        _ = try await f.queue.push(jobs)
        #expect(try await eventually { (try await f.queue.status().counters["succeeded"] ?? 0) > 100 })
        f.server.stop()  // SIGTERM: the AOF is flushed
        try await Task.sleep(for: .seconds(1))
        try f.server.restart()
        #expect(
            try await eventually(timeout: .seconds(120)) { (try await f.queue.status().counters["succeeded"] ?? 0) >= jobs.count }
        )
        let results = try await f.queue.results(of: jobs.map(\.id))
        #expect(results.allSatisfy { $0?.status == .succeeded })
        for w in workers {
            #expect(w.process.isRunning, "worker \(w.id) should have survived the restart")
            #expect(w.terminate() == 0)
        }
    }

    @Test func badPayloadsAreDeadLetteredAndTheWorkerGoesOn() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let lane = f.queue.keys.lane(.default)
        // Not JSON at all, and a job whose model is a number.
        try await f.pool.send("XADD", lane, "*", "id", "broken-1", "attempt", 1, "max", 3, "batch", "", "job", [0xff, 0x00, 0x7b] as [UInt8])
        var wrongType = try JSONEncoder().encode(chatJob("x"))
        let text = String(decoding: wrongType, as: UTF8.self).replacingOccurrences(of: #""model":"tiny""#, with: #""model":5"#)
        wrongType = Data(text.utf8)
        try await f.pool.send("XADD", lane, "*", "id", "broken-2", "attempt", 1, "max", 3, "batch", "", "job", Array(wrongType))
        // A timeout no worker could schedule, and an entry whose id does not match its payload.
        var huge = chatJob("forever")
        huge.timeout = 1e300
        try await f.pool.send("XADD", lane, "*", "id", huge.id, "attempt", 1, "max", 3, "batch", "", "job", huge.encodedJSON())
        let impostor = chatJob("impostor")
        try await f.pool.send("XADD", lane, "*", "id", "someone-else", "attempt", 1, "max", 3, "batch", "", "job", impostor.encodedJSON())
        let good = chatJob("still works")
        _ = try await f.queue.push(good)
        let w = try WorkerProcess(redisURL: f.server.url, id: "bad", arguments: ["--queue", "test", "--executor", "echo"])
        #expect(try await eventually { try await f.queue.result(of: good.id)?.status == .succeeded })
        let letters = try await f.queue.deadLetters()
        #expect(Set(letters.map(\.jobID)) == ["broken-1", "broken-2", huge.id, "someone-else"])
        #expect(letters.first { $0.jobID == huge.id }?.reason.contains("timeout") == true)
        #expect(try await f.queue.result(of: impostor.id) == nil)
        let typed = try #require(letters.first { $0.jobID == "broken-2" })
        #expect(typed.reason.contains("model"))
        #expect(try await f.queue.result(of: "broken-1")?.status == .dead)
        #expect(w.process.isRunning)
        #expect(w.terminate() == 0)
    }

    @Test func retriesHonourTheBackoff() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let w = try WorkerProcess(redisURL: f.server.url, id: "r", arguments: ["--queue", "test", "--executor", "echo", "--retry-base", "300ms"])
        defer { _ = w.terminate() }
        let job = chatJob("flaky", maxAttempts: 5, metadata: ["echo.fail_attempts": "2"])
        _ = try await f.queue.push(job)
        #expect(try await eventually { try await f.queue.result(of: job.id) != nil })
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .succeeded && result.attempts == 3)
        // Delays of at least half of 300 ms and half of 600 ms (jitter draws from the upper half).
        let waited = (result.timings.started ?? 0) - (result.timings.queued ?? 0)
        #expect(waited >= 0.45, "started \(waited) s after the push")
    }

    @Test func prioritiesAreHonoured() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let low = (0..<10).map { chatJob("low \($0)", priority: .low) }
        let high = (0..<4).map { chatJob("high \($0)", priority: .high) }
        _ = try await f.queue.push(low + high)
        let w = try WorkerProcess(redisURL: f.server.url, id: "p", arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "1"])
        defer { _ = w.terminate() }
        let ids = (low + high).map(\.id)
        #expect(try await eventually { try await f.queue.results(of: ids).allSatisfy { $0 != nil } })
        let results = try await f.queue.results(of: ids).compactMap { $0 }
        let order = results.sorted { ($0.timings.started ?? 0) < ($1.timings.started ?? 0) }.map(\.id)
        #expect(Set(order.prefix(4)) == Set(high.map(\.id)))
    }

    @Test func cancelStopsQueuedAndRunningJobs() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let w = try WorkerProcess(redisURL: f.server.url, id: "c", arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "1"])
        defer { _ = w.terminate() }
        let running = chatJob("long", metadata: ["echo.sleep_ms": "60000"])
        let queued = chatJob("never runs")
        _ = try await f.queue.push([running, queued])
        #expect(try await eventually { try await f.queue.status().lanes[1].pending == 1 })
        #expect(try await f.queue.cancel(jobID: queued.id) == .cancelled)
        #expect(try await f.queue.cancel(jobID: running.id) == .cancelled)
        let after = chatJob("after")
        _ = try await f.queue.push(after)
        // The running job is stopped (its 60 s sleep would block the only slot), and the worker moves on.
        #expect(try await eventually(timeout: .seconds(20)) { try await f.queue.result(of: after.id)?.status == .succeeded })
        #expect(try await f.queue.result(of: running.id)?.status == .cancelled)
        let skipped = try #require(try await f.queue.result(of: queued.id))
        #expect(skipped.status == .cancelled && skipped.output == nil)
    }

    @Test func sigtermDrainsInFlightWorkThenExitsZero() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "d",
            arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "2", "--shutdown-grace", "10s"]
        )
        let job = chatJob("finish me", metadata: ["echo.sleep_ms": "700"])
        _ = try await f.queue.push(job)
        #expect(try await eventually { try await f.queue.status().lanes[1].pending == 1 })
        #expect(w.terminate() == 0)
        #expect(try await f.queue.result(of: job.id)?.status == .succeeded)
        #expect(try await f.queue.workers().isEmpty)  // deregistered
        // ... and gone from the consumer groups, since it left nothing pending.
        let consumers = try await f.pool.send("XINFO", "CONSUMERS", f.queue.keys.lane(.default), "workers").array ?? []
        #expect(consumers.isEmpty)
    }

    @Test func sigtermHandsBackWhatCannotFinishInTheGracePeriod() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "h",
            arguments: ["--queue", "test", "--executor", "echo", "--shutdown-grace", "300ms"]
        )
        let job = chatJob("too long", metadata: ["echo.sleep_ms": "30000"])
        _ = try await f.queue.push(job)
        #expect(try await eventually { try await f.queue.status().lanes[1].pending == 1 })
        #expect(w.terminate(timeout: .seconds(20)) == 0)
        #expect(try await f.queue.result(of: job.id) == nil)
        let status = try await f.queue.status()
        #expect(status.lanes[1].waiting == 1 && status.lanes[1].pending == 0)
        // Another worker takes it at once, as the same attempt.
        let next = try #require(try await f.queue.take(consumer: "next", count: 1).first)
        #expect(next.jobID == job.id && next.attempt == 1)
    }

    @Test func workerRunsChatJobsOnARealLlamaServer() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let llama = try await LlamaServer()
        let providers = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json")
        let file = """
            {"providers": [{"name": "local", "kind": "openai", "base_url": "\(llama.baseURL)", "stream": true}],
             "models": {"tiny": {"provider": "local"}}}
            """
        try file.write(to: providers, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: providers) }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "llama",
            arguments: ["--queue", "test", "--executor", "provider", "--providers", providers.path, "--concurrency", "2"]
        )
        let jobs = (0..<4).map { i -> Job in
            var job = chatJob("question \(i)")
            job.input.parameters = ["max_tokens": .number(8), "temperature": .number(0)]
            return job
        }
        _ = try await f.queue.push(jobs)
        #expect(try await eventually(timeout: .seconds(60)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } })
        for result in try await f.queue.results(of: jobs.map(\.id)) {
            #expect(result?.status == .succeeded)
            #expect(result?.output?["content"]?.string != nil)
            #expect(result?.output?["finish_reason"] == .string("length"))
            // llama-cpp-python sends no usage in a stream, even when asked (stream_options.include_usage).
        }
        #expect(w.terminate() == 0)
    }

    @Test func workerKeepsALocalModelServerWarmAndStopsItOnSIGTERM() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["tiny"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "local",
            arguments: ["--queue", "test", "--executor", "local", "--models", catalog, "--profile", "cpu", "--concurrency", "2"]
        )
        let jobs = (0..<6).map { i -> Job in
            var job = chatJob("local \(i)")
            job.model = "tiny"
            job.input.parameters = ["max_tokens": .number(6), "temperature": .number(0)]
            return job
        }
        _ = try await f.queue.push(jobs)
        #expect(try await eventually(timeout: .seconds(60)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } })
        let results = try await f.queue.results(of: jobs.map(\.id))
        #expect(results.allSatisfy { $0?.status == .succeeded && $0?.output?["content"]?.string != nil })
        // One model load served all six jobs; the server's pid is in the worker's log.
        let loads = w.log.components(separatedBy: "model server for tiny ready after").dropFirst()
        #expect(loads.count == 1)
        let pid = try #require(loads.first.flatMap(firstPID))
        #expect(kill(pid, 0) == 0)
        #expect(w.terminate() == 0)
        #expect(kill(pid, 0) != 0, "the model server outlived its worker")
    }

    @Test func aKilledWorkersModelServersDieWithIt() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["tiny"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "doomed",
            arguments: ["--queue", "test", "--executor", "local", "--models", catalog, "--profile", "cpu"]
        )
        var job = chatJob("load it")
        job.input.parameters = ["max_tokens": .number(2)]
        _ = try await f.queue.push(job)
        let done = try await eventually(timeout: .seconds(60)) { try await f.queue.result(of: job.id) != nil }
        #expect(done)
        let pid = try #require(w.log.components(separatedBy: "model server for tiny ready after").last.flatMap(firstPID))
        #expect(kill(pid, 0) == 0)
        w.kill()
        // No drain, no shutdown: the kernel's parent-death signal takes the server down.
        let gone = try await eventually(timeout: .seconds(10)) { kill(pid, 0) != 0 }
        #expect(gone, "model server \(pid) outlived its killed worker")
    }

    /// The hardening issue's recipe: `a` is pinned and fills a one-model cache, so a job for `b`
    /// could only wait, for ever, for room that never comes.
    @Test func aJobForAModelThatCanNeverLoadEndsAndCancelWorks() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["a", "b"], pinned: ["a"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let w = try WorkerProcess(
            redisURL: f.server.url,
            id: "pinned",
            arguments: [
                "--queue", "test", "--executor", "local", "--models", catalog, "--profile", "cpu", "--concurrency", "1", "--retry-base", "100ms",
            ]
        )
        defer { _ = w.terminate() }
        let loaded = try await eventually(timeout: .seconds(60)) { w.log.contains("model server for a ready after") }
        #expect(loaded, "the pinned model is loaded at start")
        var job = chatJob("for b")
        job.model = "b"
        job.timeout = 5
        _ = try await f.queue.push(job)
        let ended = try await eventually(timeout: .seconds(15)) { try await f.queue.result(of: job.id) != nil }
        #expect(ended)
        let result = try #require(try await f.queue.result(of: job.id))
        #expect(result.status == .dead && result.error?.code == "model_cannot_fit", "\(result)")
        #expect(w.log.components(separatedBy: "ready after").count - 1 == 1, "b was never loaded, a never evicted")
        // A job for b with attempts to spare is still cancellable between them.
        var other = chatJob("for b, cancelled")
        other.model = "b"
        other.maxAttempts = 100
        _ = try await f.queue.push(other)
        #expect(try await f.queue.cancel(jobID: other.id) == .cancelled)
        let stopped = try await eventually(timeout: .seconds(10)) {
            let status = try await f.queue.status()
            return status.lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 } && status.delayed == 0
        }
        #expect(stopped)
        #expect(try await f.queue.result(of: other.id)?.status == .cancelled)
    }

    /// With llama-cpp-python's server (the cpu profile), and with llama.cpp's llama-server run by
    /// the `rtx3090-wsl` profile's own argv (`--set gpu_layers=0`, llama-server found in PATH).
    @Test(arguments: ServerKind.allCases) func twoWorkersShareAMixedWorkloadWithoutReloadingModels(server: ServerKind) async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["m1", "m2", "m3"], server: server)
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        // One model fits per worker. A long wait keeps the test free of timing: jobs for a model
        // warm on a busy worker wait for it rather than load the model a second time.
        let profile = server == .llamaServer ? ["--profile", "rtx3090-wsl", "--set", "gpu_layers=0"] : ["--profile", "cpu"]
        let arguments =
            ["--queue", "test", "--executor", "local", "--models", catalog] + profile + [
                "--set", "model_cache_size=1", "--concurrency", "1", "--warm-wait", "5m", "--lease", "20m",
            ]
        let environment = server == .llamaServer ? try LlamaServer.environmentWithLlamaServer() : [:]
        let jobs = (0..<12).map { i -> Job in
            var job = chatJob("mixed \(i)")
            job.model = "m\(i % 3 + 1)"
            job.input.parameters = ["max_tokens": .number(4), "temperature": .number(0)]
            return job
        }
        _ = try await f.queue.push(jobs)
        let workers = try ["a", "b"].map {
            try WorkerProcess(redisURL: f.server.url, id: "warm-\($0)", arguments: arguments, environment: environment)
        }
        #expect(try await eventually(timeout: .seconds(120)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } })
        let results = try await f.queue.results(of: jobs.map(\.id))
        #expect(results.allSatisfy { $0?.status == .succeeded })
        for w in workers { #expect(w.terminate() == 0) }
        // Interleaved m1 m2 m3 on two one-model workers: without routing nearly every job loads a
        // model (11 of 12 when tried). With it, each model is loaded once: one worker takes m1,
        // the other m2, and the first to run out of its model's jobs takes m3.
        let loads = workers.map { $0.log.components(separatedBy: "ready after").count - 1 }
        #expect(loads.reduce(0, +) == 3, "model loads per worker: \(loads)")
        // Each model's jobs ran on one worker.
        for model in ["m1", "m2", "m3"] {
            let ran = Set(zip(jobs, results).filter { $0.0.model == model }.compactMap { $0.1?.worker })
            #expect(ran.count == 1, "\(model) ran on \(ran.sorted())")
        }
    }

    @Test func demoRunsALocalClusterEndToEnd() async throws {
        _ = try LlamaServer.tinyModel()  // the llama.cpp environment exists (scripts/setup.sh)
        let port = try RedisServer.freePort()
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("demo-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_LLAMA_VENV"] = URL(fileURLWithPath: LlamaServer.python).deletingLastPathComponent().deletingLastPathComponent().path
        let demo = try ChildProcess(
            executable: try WorkerProcess.switchyardExecutable(),
            arguments: ["demo", "--redis-url", "redis://127.0.0.1:\(port)", "--workers", "1", "--jobs", "4"],
            environment: environment,
            outputPath: output
        )
        #expect(demo.waitForExit(timeout: .seconds(180)))
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        #expect(demo.waitForExit() == 0, "\(text.suffix(1500))")
        #expect(text.contains("results: succeeded 4"))
        // One worker with room for one model, jobs alternating over two: routing takes one
        // model's jobs, then the other's, so each model is loaded once.
        #expect(text.contains("model loads: 2 "))
        #expect(text.contains("tiny-a ran on: ") && text.contains("tiny-b ran on: "))
        // Four distinct requests: nothing to answer from the response cache.
        #expect(text.contains("response cache: 0 of 4 answered from the cache, 4 computed"))
        #expect(text.contains("redis-server stopped"))
        // Nothing left listening on the port it used.
        #expect(!RedisServer.isListening(port: port))
    }
}

/// The first number after "(pid " in a log excerpt: the pid of the model server it announces.
func firstPID(_ text: some StringProtocol) -> Int32? {
    text.components(separatedBy: "(pid ").dropFirst().first.flatMap { Int32($0.prefix { $0.isNumber }) }
}
