import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// Generation throughput on llama.cpp's llama-server with its slots (`--parallel`): 1 and N
/// requests in flight, straight to the server and through a worker (the queue, the manager, the
/// provider), interleaved in one run.
extension ModelsBench {
    struct SlotsRun {
        var tokens = 0
        var requests = 0
        var seconds = 0.0
        /// Seconds the requests took in all, each from its send (or its job's start) to its answer.
        var requestSeconds = 0.0
        /// CPU seconds (user + system) over the run: the bench process, the llama-server that
        /// answered, and the worker (0 for direct runs).
        var benchCPU = 0.0
        var serverCPU = 0.0
        var workerCPU = 0.0
        /// Worker runs: from the push to the first job's start, and from the last job's finish to
        /// the bench seeing the count (both in seconds, summed over runs).
        var firstStart = 0.0
        var tail = 0.0
        var runs = 0
        var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }
        var msPerRequest: Double { requests > 0 ? requestSeconds * 1000 / Double(requests) : 0 }
        /// Requests in flight on average: the time they took in all over the run's time.
        var meanInFlight: Double { seconds > 0 ? requestSeconds / seconds : 0 }
        func perRequestMs(_ value: Double) -> Double { requests > 0 ? value * 1000 / Double(requests) : 0 }
    }

    /// CPU seconds of the processes a run involves, read before and after it.
    struct SlotsCPU {
        var server: Int32
        var worker: Int32?
        func read() -> (bench: Double, server: Double, worker: Double) {
            (ProcessCPU.seconds(of: getpid()), ProcessCPU.seconds(of: server), worker.map { ProcessCPU.seconds(of: $0) } ?? 0)
        }
        func measure(_ run: () async throws -> ModelsBench.SlotsRun) async rethrows -> ModelsBench.SlotsRun {
            let before = read()
            var result = try await run()
            let after = read()
            result.benchCPU = after.bench - before.bench
            result.serverCPU = after.server - before.server
            result.workerCPU = after.worker - before.worker
            return result
        }
    }

    func slots() async throws -> [String: Any] {
        guard ["notify", "poll"].contains(slotWait) else { throw ValidationError("--slot-wait: notify or poll, not '\(slotWait)'") }
        var profile = try LlamaServer.gpuProfileOnCPU()
        if let slots { try profile.apply(overrides: ["parallel": String(slots)]) }
        let parallel = profile.parallel
        let levels = parallel > 1 ? [1, parallel] : [1]
        let model = try LlamaServer.tinyModel()
        let binary = try LlamaServer.llamaServerBinary()

        // Straight to a server started with the profile's argv.
        var argvProfile = profile
        argvProfile.serverCommand[0] = binary
        let threads = slotThreads > 0 ? ["--threads", String(slotThreads)] : []
        argvProfile.serverCommand += threads
        let port = try LoopbackPort.free()
        let argv = argvProfile.command(model: model, port: port, contextSize: 256)
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("bench-llama-server-\(port).log").path
        let server = try ChildProcess(executable: argv[0], arguments: Array(argv.dropFirst()), outputPath: log)
        defer { server.terminate(grace: .seconds(3)) }
        let client = HTTPClient()
        defer { client.shutdown() }
        let base = "http://127.0.0.1:\(port)"
        guard try await waitForHealth(client, base: base, process: server) else {
            throw ValidationError("llama-server did not become ready; see \(log)")
        }

        // Through workers: one per level, each with that many jobs in flight, on queues of their own.
        let redis = try RedisServer()
        defer { redis.stop() }
        let catalog = FileManager.default.temporaryDirectory.appendingPathComponent("bench-slots-\(port).json").path
        let entry: [String: Any] = ["file": model, "framework": "llama.cpp", "memory_mb": 64, "context_size": 256, "extra_arguments": threads]
        try JSONSerialization.data(withJSONObject: ["models": ["tiny": entry]]).write(to: URL(fileURLWithPath: catalog))
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        var pools: [RedisConnectionPool] = []
        defer { for pool in pools { pool.shutDown() } }
        var queues: [Int: JobQueue] = [:]
        var workers: [WorkerProcess] = []
        var workerByLevel: [Int: WorkerProcess] = [:]
        defer { for worker in workers { _ = worker.terminate() } }
        let environment = try LlamaServer.environmentWithLlamaServer()
        for level in levels {
            let name = "bench-slots-\(level)"
            var configuration = try RedisConfiguration(url: redis.url)
            configuration.poolSize = 2
            let pool = RedisConnectionPool(configuration: configuration)
            pools.append(pool)
            let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: pool)
            try await queue.ensureGroups()
            queues[level] = queue
            workers.append(
                try WorkerProcess(
                    redisURL: redis.url,
                    id: name,
                    arguments: [
                        "--queue", name, "--executor", "local", "--models", catalog, "--profile", "rtx3090-wsl", "--set", "gpu_layers=0",
                        "--set", "parallel=\(parallel)", "--concurrency", String(level), "--no-cache",
                    ],
                    environment: environment
                )
            )
            workerByLevel[level] = workers.last
            // Warm: the model loaded, not timed.
            _ = try await throughWorker(queue, requests: 1, tag: "warm-\(level)")
        }
        // The llama-server each worker started (its child), for CPU time.
        var workerServer: [Int: Int32] = [:]
        for (level, worker) in workerByLevel {
            workerServer[level] = ProcessMemory.children(of: worker.process.pid).first ?? 0
        }
        _ = try await direct(client, base: base, inFlight: 1, requests: 2, tag: "warm")

        var directRuns: [Int: SlotsRun] = [:]
        var workerRuns: [Int: SlotsRun] = [:]
        for round in 0..<2 {
            for level in levels {
                let d = try await SlotsCPU(server: server.pid).measure {
                    try await direct(client, base: base, inFlight: level, requests: slotRequests, tag: "d\(round)-\(level)")
                }
                let w = try await SlotsCPU(server: workerServer[level]!, worker: workerByLevel[level]!.process.pid).measure {
                    try await throughWorker(queues[level]!, requests: slotRequests, tag: "w\(round)-\(level)")
                }
                directRuns[level, default: SlotsRun()].add(d)
                workerRuns[level, default: SlotsRun()].add(w)
            }
        }

        print("")
        print(
            "Generation on llama-server (rtx3090-wsl's argv, gpu_layers=0, --parallel \(parallel)\(slotThreads > 0 ? ", --threads \(slotThreads)" : "")): \(slotRequests) chat requests of up to \(slotTokens) tokens per run, two rounds; the bench learns of the worker's results by \(slotWait == "notify" ? "the done channel" : "polling every 5 ms")"
        )
        print(
            pad("in flight", 12) + pad("direct tok/s", 15) + pad("worker tok/s", 15) + pad("worker/direct", 15)
                + pad("ms/request (direct, job run)", 30) + "tokens (direct, worker)"
        )
        var out: [String: Any] = [
            "slots_parallel": parallel, "slots_requests": slotRequests, "slots_max_tokens": slotTokens, "slots_threads": slotThreads,
            "slots_wait": slotWait,
        ]
        for level in levels {
            let d = directRuns[level]!
            let w = workerRuns[level]!
            let ratio = w.tokensPerSecond / max(d.tokensPerSecond, 0.001)
            print(
                pad("\(level)", 12) + pad(String(format: "%.0f", d.tokensPerSecond), 15) + pad(String(format: "%.0f", w.tokensPerSecond), 15)
                    + pad(String(format: "%.3f", ratio), 15) + pad(String(format: "%.1f, %.1f", d.msPerRequest, w.msPerRequest), 30)
                    + "\(d.tokens), \(w.tokens)"
            )
            out["slots_direct_tokens_per_s_\(level)"] = d.tokensPerSecond
            out["slots_worker_tokens_per_s_\(level)"] = w.tokensPerSecond
            out["slots_worker_vs_direct_\(level)"] = ratio
            out["slots_direct_ms_per_request_\(level)"] = d.msPerRequest
            out["slots_worker_job_run_ms_\(level)"] = w.msPerRequest
        }
        print("")
        print("Where the time goes (per request, both rounds; CPU from /proc in 10 ms ticks, so rough):")
        print(
            pad("in flight", 12) + pad("mean in flight (d, w)", 24) + pad("idle slot ms (d, w)", 22) + pad("first start, tail ms", 23)
                + pad("CPU ms: bench (d, w)", 23) + pad("llama (d, w)", 16) + "worker"
        )
        for level in levels {
            let d = directRuns[level]!
            let w = workerRuns[level]!
            // A slot is idle when fewer than `level` requests are in flight.
            let idle = { (r: SlotsRun) in r.perRequestMs(Double(level) * r.seconds - r.requestSeconds) }
            print(
                pad("\(level)", 12) + pad(String(format: "%.2f, %.2f", d.meanInFlight, w.meanInFlight), 24)
                    + pad(String(format: "%.2f, %.2f", idle(d), idle(w)), 22)
                    + pad(String(format: "%.1f, %.1f", w.firstStart * 1000 / Double(max(w.runs, 1)), w.tail * 1000 / Double(max(w.runs, 1))), 23)
                    + pad(String(format: "%.2f, %.2f", d.perRequestMs(d.benchCPU), w.perRequestMs(w.benchCPU)), 23)
                    + pad(String(format: "%.1f, %.1f", d.perRequestMs(d.serverCPU), w.perRequestMs(w.serverCPU)), 16)
                    + String(format: "%.2f", w.perRequestMs(w.workerCPU))
            )
            out["slots_direct_mean_in_flight_\(level)"] = d.meanInFlight
            out["slots_worker_mean_in_flight_\(level)"] = w.meanInFlight
            out["slots_direct_idle_slot_ms_\(level)"] = idle(d)
            out["slots_worker_idle_slot_ms_\(level)"] = idle(w)
            out["slots_worker_first_start_ms_\(level)"] = w.firstStart * 1000 / Double(max(w.runs, 1))
            out["slots_worker_tail_ms_\(level)"] = w.tail * 1000 / Double(max(w.runs, 1))
            out["slots_direct_bench_cpu_ms_\(level)"] = d.perRequestMs(d.benchCPU)
            out["slots_worker_bench_cpu_ms_\(level)"] = w.perRequestMs(w.benchCPU)
            out["slots_direct_server_cpu_ms_\(level)"] = d.perRequestMs(d.serverCPU)
            out["slots_worker_server_cpu_ms_\(level)"] = w.perRequestMs(w.serverCPU)
            out["slots_worker_cpu_ms_per_job_\(level)"] = w.perRequestMs(w.workerCPU)
        }
        if levels.count == 2 {
            let gain = directRuns[parallel]!.tokensPerSecond / max(directRuns[1]!.tokensPerSecond, 0.001)
            let workerGain = workerRuns[parallel]!.tokensPerSecond / max(workerRuns[1]!.tokensPerSecond, 0.001)
            print(
                String(
                    format: "%d in flight vs 1: %.2fx directly, %.2fx through the worker (target: worker within 5%% of direct at each level)",
                    parallel,
                    gain,
                    workerGain
                )
            )
            out["slots_gain_direct"] = gain
            out["slots_gain_worker"] = workerGain
        }
        return out
    }

    private func chatBody(_ prompt: String) -> [UInt8] {
        let body: [String: Any] = [
            "model": "tiny", "messages": [["role": "user", "content": prompt]], "max_tokens": slotTokens, "temperature": 0,
        ]
        return Array((try? JSONSerialization.data(withJSONObject: body)) ?? Data())
    }

    /// `requests` distinct chat requests with `inFlight` at once, straight to the server.
    private func direct(_ client: HTTPClient, base: String, inFlight: Int, requests: Int, tag: String) async throws -> SlotsRun {
        let clock = ContinuousClock()
        let start = clock.now
        let (tokens, requestSeconds) = try await withThrowingTaskGroup(of: (Int, Double).self) { group in
            var next = 0
            var total = 0
            var busy = 0.0
            func launch(_ i: Int) {
                let body = chatBody("\(tag) request \(i)")
                group.addTask {
                    let sent = ContinuousClock.now
                    let response = try await client.execute(
                        HTTPRequest(
                            method: "POST",
                            url: base + "/v1/chat/completions",
                            headers: [("Content-Type", "application/json")],
                            body: body,
                            timeout: .seconds(120)
                        )
                    )
                    guard response.status == 200, let reply = try? JSONValue.parse(response.body),
                        let tokens = reply["usage"]?["completion_tokens"]?.number
                    else {
                        throw ValidationError(
                            "llama-server answered \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))"
                        )
                    }
                    return (Int(tokens), seconds(ContinuousClock.now - sent))
                }
            }
            while next < min(inFlight, requests) {
                launch(next)
                next += 1
            }
            while let (tokens, took) = try await group.next() {
                total += tokens
                busy += took
                if next < requests {
                    launch(next)
                    next += 1
                }
            }
            return (total, busy)
        }
        return SlotsRun(tokens: tokens, requests: requests, seconds: seconds(clock.now - start), requestSeconds: requestSeconds)
    }

    /// `requests` distinct chat jobs pushed at once; the worker keeps its concurrency in flight.
    private func throughWorker(_ queue: JobQueue, requests: Int, tag: String) async throws -> SlotsRun {
        var jobs = (0..<requests).map { i in
            Job(
                kind: .chat,
                model: "tiny",
                input: JobInput(
                    messages: [ChatMessage(role: "user", content: "\(tag) request \(i)")],
                    parameters: ["max_tokens": .number(Double(slotTokens)), "temperature": .number(0)]
                )
            )
        }
        // The finished counter says that every job is done (and is read before and after).
        func finished() async throws -> Int {
            let counts = try await queue.redis.send("HMGET", queue.keys.stats, "succeeded", "dead").array ?? []
            return counts.compactMap { $0.string.flatMap { Int($0) } }.reduce(0, +)
        }
        let before = try await finished()
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(600)
        // Waiting: by default as the coordinator waits, told of each result on the queue's done
        // channel (the jobs ask for it), so the bench sleeps until the last result is written,
        // as the direct side sleeps until its last answer. `--slot-wait poll` reads the counter
        // every 5 ms instead: up to 5 ms late at the end, and 200 wake-ups a second of the bench
        // and Redis that the direct side does not have, on a CPU the jobs share.
        let listener = RedisConnection(configuration: queue.redis.configuration)
        defer { listener.close() }
        if slotWait == "notify" {
            _ = try await listener.send(RedisCommand("SUBSCRIBE", queue.keys.done))
            for i in jobs.indices { jobs[i].notify = true }
        }
        let start = clock.now
        let pushedAt = Date().timeIntervalSince1970
        _ = try await queue.push(jobs)
        if slotWait == "notify" {
            var waiting = Set(jobs.map(\.id))
            while !waiting.isEmpty {
                let left = deadline - clock.now
                guard left > .zero else { throw ValidationError("\(tag): not every job finished in 10 minutes") }
                let message = try await listener.receive(timeout: .after(left))
                if let parts = message.array, parts.count == 3, parts[0].string == "message", let id = parts[2].string {
                    waiting.remove(id)
                }
            }
        } else {
            while try await finished() < before + jobs.count {
                if clock.now > deadline { throw ValidationError("\(tag): not every job finished in 10 minutes") }
                try await Task.sleep(for: .milliseconds(5))
            }
        }
        let elapsed = clock.now - start
        let seenAt = Date().timeIntervalSince1970
        guard try await finished() == before + jobs.count else { throw ValidationError("\(tag): the finished count does not add up") }
        let results = try await queue.results(of: jobs.map(\.id)).compactMap { $0 }
        if let failed = results.first(where: { $0.status != .succeeded }) {
            throw ValidationError("\(tag): a job failed: \(failed.error?.message ?? "")")
        }
        let running = results.compactMap { r in r.timings.finished.flatMap { f in r.timings.started.map { f - $0 } } }.reduce(0, +)
        return SlotsRun(
            tokens: results.compactMap { $0.usage?.completionTokens }.reduce(0, +),
            requests: requests,
            seconds: seconds(elapsed),
            requestSeconds: running,
            firstStart: (results.compactMap(\.timings.started).min() ?? pushedAt) - pushedAt,
            tail: seenAt - (results.compactMap(\.timings.finished).max() ?? seenAt),
            runs: 1
        )
    }

    private func waitForHealth(_ client: HTTPClient, base: String, process: ChildProcess) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(120)
        while ContinuousClock.now < deadline, process.isRunning {
            if let response = try? await client.execute(HTTPRequest(url: base + "/health", connectTimeout: .seconds(1), timeout: .seconds(2))),
                response.status == 200
            {
                return true
            }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}

extension ModelsBench.SlotsRun {
    mutating func add(_ other: Self) {
        tokens += other.tokens
        requests += other.requests
        seconds += other.seconds
        requestSeconds += other.requestSeconds
        benchCPU += other.benchCPU
        serverCPU += other.serverCPU
        workerCPU += other.workerCPU
        firstStart += other.firstStart
        tail += other.tail
        runs += other.runs
    }
}
