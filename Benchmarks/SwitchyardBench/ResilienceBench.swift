import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardResilience
import SwitchyardTestSupport
import Synchronization

/// Circuit breakers and rate limits shared through Redis: how many calls a dead target gets from
/// one worker against four, how fast a breaker change reaches every worker, what the hot path's
/// check costs, and how close a cluster-wide rate limit holds its rate.
struct ResilienceBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "resilience",
        abstract: "Breakers and rate limits: wasted calls on a dead target (1 vs 4 workers), propagation, hot-path cost, RPM accuracy."
    )

    @Option(help: "Which parts to run: all, or a comma-separated list of wasted, propagation, hotpath, rpm.")
    var parts = "all"

    @Option(help: "Seconds jobs are pushed in each wasted-calls run (1 worker, then 4).")
    var deadWindow = 10.0

    @Option(help: "Each worker's --concurrency in the wasted-calls runs.")
    var workerConcurrency = 4

    @Option(help: "Breaker transitions (forced open, reset, alternating) for the propagation latency.")
    var transitions = 300

    @Option(help: "Calls of refusesLocally and of permit for the hot-path cost.")
    var hotCalls = 1_000_000

    @Option(help: "Seconds the rate limiters are offered calls for the RPM accuracy.")
    var rpmWindow = 20.0

    @Option(help: "The rate limit's requests per period.")
    var rpmRequests = 600

    @Option(help: "The rate limit's period in seconds.")
    var rpmPeriod = 10.0

    @Option(help: "The rate limit's request_burst.")
    var rpmBurst = 2

    @Option(help: "A second RPM run with this request_burst, for comparison (0: none).")
    var rpmCompareBurst = 1

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        let known = ["wasted", "propagation", "hotpath", "rpm"]
        let chosen = parts == "all" ? known : parts.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        for part in chosen where !known.contains(part) {
            throw ValidationError("--parts: '\(part)' is not one of all, \(known.joined(separator: ", "))")
        }
        guard deadWindow > 0, rpmWindow > 0, rpmPeriod > 0 else { throw ValidationError("windows and the period must be above 0") }
        guard workerConcurrency >= 1, transitions >= 2, hotCalls >= 1, rpmRequests >= 1, rpmBurst >= 1, rpmCompareBurst >= 0 else {
            throw ValidationError("--worker-concurrency, --hot-calls, --rpm-requests and --rpm-burst must be at least 1, --transitions at least 2")
        }
        let server = try RedisServer()
        defer { server.stop() }
        var logger = Logger(label: "bench.resilience")
        logger.logLevel = .error
        var report: [String: Any] = ["benchmark": "resilience"]
        var lines: [String] = []
        if chosen.contains("wasted") {
            let (figures, text) = try await wastedCalls(server: server)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        if chosen.contains("propagation") {
            try await flush(server)
            let (figures, text) = try await propagation(server: server, logger: logger)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        if chosen.contains("hotpath") {
            try await flush(server)
            let (figures, text) = try await hotPath(server: server, logger: logger)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        if chosen.contains("rpm") {
            try await flush(server)
            let (figures, text) = try await rpmAccuracy(server: server, logger: logger)
            report.merge(figures, uniquingKeysWith: { $1 })
            lines += text
        }
        print("")
        print("Resilience: breakers and rate limits shared through a local Redis")
        for line in lines { print(line) }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    func flush(_ server: RedisServer) async throws {
        let connection = RedisConnection(configuration: server.configuration)
        defer { connection.close() }
        try await connection.send("FLUSHALL")
    }

    func pool(_ server: RedisServer, size: Int = 2) -> RedisConnectionPool {
        var configuration = server.configuration
        configuration.poolSize = size
        return RedisConnectionPool(configuration: configuration)
    }

    // MARK: - 1. Wasted calls on a dead target

    struct WastedRun {
        var workers: Int
        var concurrency: Int
        var deadCalls: Int
        var healthyCalls: Int
        var pushed: Int
        var succeeded: Int
        var seconds: Double
        var breakerState: String
        var openings: Int
        var counters: [String: Int]
        /// When the dead target's calls reached it, seconds after the first push, in 50 ms samples.
        var timeline: [(seconds: Double, calls: Int)]

        var timelineText: String { timeline.map { String(format: "%d@%.2fs", $0.calls, $0.seconds) }.joined(separator: " ") }
    }

    func wastedCalls(server: RedisServer) async throws -> ([String: Any], [String]) {
        let dead = try StandinServer()
        let healthy = try StandinServer()
        let deadFault: [[String: Any]] = [["path": "/v1/chat/completions", "status": 503, "times": 1_000_000]]
        let providers = FileManager.default.temporaryDirectory.appendingPathComponent("bench-resilience-\(UUID().uuidString).json")
        try """
        {"providers": [{"name": "dead", "kind": "openai", "base_url": "\(dead.baseURL)/v1", "max_attempts": 1},
                       {"name": "healthy", "kind": "openai", "base_url": "\(healthy.baseURL)/v1", "max_attempts": 1}],
         "models": {"chat": {"targets": [
           {"provider": "dead", "model": "m", "breaker": {"window": "count", "window_size": 20, "minimum_calls": 5,
            "failure_rate_threshold": 50, "wait_ms": 1000, "wait_multiplier": 2, "max_wait_ms": 4000, "half_open_calls": 2,
            "jitter": 0.2}},
           {"provider": "healthy", "model": "m"}]}}}
        """.write(to: providers, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: providers) }
        guard let deadTarget = try ProvidersFile.load(path: providers.path).sharedTargets.first(where: { $0.id == "dead/m" }) else {
            throw ValidationError("the bench's providers file has no target dead/m")
        }

        var runs: [WastedRun] = []
        // 1 worker, 4 workers, and 1 worker with as many slots as the 4 together: calls already in
        // flight when the target dies reach it whatever any breaker does, so the fair measure of
        // sharing compares the same number of slots.
        for (count, concurrency) in [(1, workerConcurrency), (4, workerConcurrency), (1, 4 * workerConcurrency)] {
            try await flush(server)
            try await dead.reset()
            try await dead.setFaults(deadFault)
            try await healthy.reset()
            runs.append(
                try await wastedRun(
                    server: server,
                    workers: count,
                    concurrency: concurrency,
                    providers: providers.path,
                    dead: dead,
                    healthy: healthy,
                    target: deadTarget
                )
            )
        }
        let one = runs[0]
        let four = runs[1]
        let sameSlots = runs[2]
        let ratio = Double(four.deadCalls) / Double(max(one.deadCalls, 1))
        let sameSlotsRatio = Double(four.deadCalls) / Double(max(sameSlots.deadCalls, 1))
        var text = [
            "",
            String(
                format: "1. Wasted calls on a dead target (always 503), %.0f s of jobs per run, chain dead -> healthy, --concurrency %d",
                deadWindow,
                workerConcurrency
            ),
            pad("workers", 9) + pad("slots", 7) + pad("calls to dead", 15) + pad("jobs ok / pushed", 18) + pad("jobs/s", 9)
                + pad("breaker at end", 22)
                + "refused / probes (sum over workers)",
        ]
        for run in runs {
            text.append(
                pad("\(run.workers)", 9) + pad("\(run.workers * run.concurrency)", 7) + pad("\(run.deadCalls)", 15)
                    + pad("\(run.succeeded) / \(run.pushed)", 18)
                    + pad(String(format: "%.0f", Double(run.succeeded) / run.seconds), 9)
                    + pad("\(run.breakerState), \(run.openings) in a row", 22)
                    + "\(run.counters["breaker_refused"] ?? 0) / \(run.counters["breaker_probes"] ?? 0)"
            )
        }
        for run in runs {
            let probes = run.counters["breaker_probes"] ?? 0
            text.append(
                "\(run.workers) worker(s) x \(run.concurrency): \(run.deadCalls - probes) calls while closed + \(probes) half-open probes; arrivals: \(run.timelineText)"
            )
        }
        text.append(
            String(
                format: "calls to the dead target, 4 workers / 1 worker with the same %d slots: %.2f   (target <= 1.2)",
                4 * workerConcurrency,
                sameSlotsRatio
            )
        )
        text.append(String(format: "calls to the dead target, 4 workers / 1 worker with %d slots: %.2f", workerConcurrency, ratio))
        text.append(
            String(
                format: "half-open probes, 4 workers / 1 worker: %.2f; calls while closed are bounded by the slots busy when it died (%d vs %d)",
                Double(four.counters["breaker_probes"] ?? 0) / Double(max(one.counters["breaker_probes"] ?? 0, 1)),
                workerConcurrency,
                4 * workerConcurrency
            )
        )
        var figures: [String: Any] = [
            "dead_window_seconds": deadWindow, "dead_ratio_4_vs_1": ratio, "dead_ratio_4_vs_1_same_slots": sameSlotsRatio,
            "worker_concurrency": workerConcurrency,
        ]
        for run in runs.prefix(2) {
            figures["dead_calls_\(run.workers)_worker"] = run.deadCalls
            figures["dead_jobs_pushed_\(run.workers)_worker"] = run.pushed
            figures["dead_jobs_succeeded_\(run.workers)_worker"] = run.succeeded
            figures["dead_healthy_calls_\(run.workers)_worker"] = run.healthyCalls
            figures["dead_breaker_openings_\(run.workers)_worker"] = run.openings
            figures["dead_breaker_refused_\(run.workers)_worker"] = run.counters["breaker_refused"] ?? 0
            figures["dead_breaker_probes_\(run.workers)_worker"] = run.counters["breaker_probes"] ?? 0
            figures["dead_calls_while_closed_\(run.workers)_worker"] = run.deadCalls - (run.counters["breaker_probes"] ?? 0)
            figures["dead_timeline_\(run.workers)_worker"] = run.timeline.map { ["seconds": $0.seconds, "calls": $0.calls] }
        }
        figures["dead_calls_1_worker_same_slots"] = sameSlots.deadCalls
        figures["dead_breaker_probes_1_worker_same_slots"] = sameSlots.counters["breaker_probes"] ?? 0
        return (figures, text)
    }

    func wastedRun(
        server: RedisServer,
        workers count: Int,
        concurrency: Int,
        providers: String,
        dead: StandinServer,
        healthy: StandinServer,
        target: ResilienceTarget
    ) async throws -> WastedRun {
        let redis = pool(server, size: 2)
        defer { redis.shutDown() }
        let name = "bench-resilience-\(count)x\(concurrency)"
        let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: redis)
        try await queue.ensureGroups()
        let workers = try (0..<count).map {
            try WorkerProcess(
                redisURL: server.url,
                id: "\(name)-\($0)",
                arguments: [
                    "--queue", name, "--providers", providers, "--concurrency", String(concurrency), "--no-cache", "--log-level", "error",
                ]
            )
        }
        defer { for w in workers where w.process.isRunning { w.kill() } }
        // Every worker registered and subscribed to the breakers' changes before the first job.
        let clock = ContinuousClock()
        let ready = clock.now + .seconds(30)
        while true {
            let registered = try await queue.workers().count
            let subscribers = try await redis.send("PUBSUB", "NUMSUB", ResilienceKeys.changesChannel).array?.last?.int ?? 0
            if registered >= count && subscribers >= count { break }
            if clock.now > ready {
                throw ValidationError("\(count) workers did not start in 30 s; see \(workers.map(\.logPath).joined(separator: " "))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        try await Task.sleep(for: .milliseconds(200))  // the subscription's first read of every breaker

        // Keep a backlog of two jobs per slot, topped up every few ms, for the whole window.
        let batch = "bench-dead-\(count)x\(concurrency)-\(UUID().uuidString.prefix(8))"
        let backlog = count * concurrency * 2
        var pushed = 0
        let start = clock.now
        // When the dead target's calls came: its count every 50 ms, kept when it grew.
        let sampler = Task { () -> [(seconds: Double, calls: Int)] in
            var timeline: [(seconds: Double, calls: Int)] = []
            var last = 0
            while !Task.isCancelled {
                let now = try? await calls(dead)
                if let now, now > last {
                    timeline.append((seconds(clock.now - start), now - last))
                    last = now
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return timeline
        }
        defer { sampler.cancel() }
        let end = start + .milliseconds(Int64(deadWindow * 1000))
        while clock.now < end {
            let finished = try await queue.batchProgress(batch).finished
            let missing = backlog - (pushed - finished)
            if missing > 0 {
                let jobs = (0..<missing).map { i in
                    Job(
                        kind: .chat,
                        model: "chat",
                        input: JobInput(messages: [ChatMessage(role: "user", content: "job \(pushed + i)")], parameters: ["max_tokens": .number(8)]),
                        maxAttempts: 1,
                        cache: .bypass,
                        batch: batch
                    )
                }
                _ = try await queue.push(jobs)
                pushed += missing
            }
            try await Task.sleep(for: .milliseconds(5))
        }
        var progress = BatchProgress()
        let drained = clock.now + .seconds(60)
        while true {
            progress = try await queue.batchProgress(batch)
            if progress.finished >= pushed { break }
            if clock.now > drained {
                throw ValidationError("\(pushed - progress.finished) of \(pushed) jobs did not finish within 60 s of the window")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        let elapsed = seconds(clock.now - start)
        // The counters come with the heartbeat (every 2 s): wait for one made after the last job.
        let drainedAt = Date().timeIntervalSince1970
        var infos = try await queue.workers()
        let beat = clock.now + .seconds(10)
        while infos.count < count || infos.contains(where: { $0.heartbeatAt <= drainedAt }), clock.now < beat {
            try await Task.sleep(for: .milliseconds(100))
            infos = try await queue.workers()
        }
        var counters: [String: Int] = [:]
        for info in infos {
            for (key, value) in info.resilience ?? [:] { counters[key, default: 0] += value }
        }
        let board = BreakerBoard(redis: redis)
        let status = try await board.status(target)
        for w in workers {
            _ = w.terminate()
            try? FileManager.default.removeItem(atPath: w.logPath)
        }
        sampler.cancel()
        let timeline = await sampler.value
        return WastedRun(
            workers: count,
            concurrency: concurrency,
            deadCalls: try await calls(dead),
            healthyCalls: try await calls(healthy),
            pushed: pushed,
            succeeded: progress.succeeded,
            seconds: elapsed,
            breakerState: status.state.rawValue,
            openings: status.openingsInARow,
            counters: counters,
            timeline: timeline
        )
    }

    /// Calls the stand-in answered on the chat path.
    func calls(_ standin: StandinServer) async throws -> Int {
        (try await standin.stats()["by_path"] as? [String: Int])?["/v1/chat/completions"] ?? 0
    }

    // MARK: - 2. Propagation

    /// Each board's first sight of each generation, with its latency.
    final class Sightings: Sendable {
        struct State {
            var latencies: [Double] = []
            var seen: [[Int: Bool]]
            var highest: [Int]
        }

        let state: Mutex<State>

        init(boards: Int) { state = Mutex(State(seen: Array(repeating: [:], count: boards), highest: Array(repeating: -1, count: boards))) }

        func record(board: Int, _ change: BreakerBoard.Change) {
            state.withLock { s in
                guard s.seen[board][change.generation] == nil else { return }
                s.seen[board][change.generation] = true
                s.highest[board] = max(s.highest[board], change.generation)
                s.latencies.append(change.receivedAtMs - change.madeAtMs)
            }
        }

        func allSeen(_ generation: Int) -> Bool { state.withLock { $0.highest.allSatisfy { $0 >= generation } } }
        var latencies: [Double] { state.withLock { $0.latencies } }
    }

    func propagation(server: RedisServer, logger: Logger) async throws -> ([String: Any], [String]) {
        let target = ResilienceTarget(id: "bench/propagation")
        let sightings = Sightings(boards: 4)
        let pools = (0..<5).map { _ in pool(server, size: 1) }
        defer { for p in pools { p.shutDown() } }
        let boards = (0..<4).map { i in
            BreakerBoard(redis: pools[i], targets: [target], logger: logger) { change in
                if change.target == target.id { sightings.record(board: i, change) }
            }
        }
        let controller = BreakerBoard(redis: pools[4], targets: [target], logger: logger)
        let tasks = boards.map { board in Task { try await board.run() } }
        defer { for task in tasks { task.cancel() } }
        let clock = ContinuousClock()
        let ready = clock.now + .seconds(10)
        while !boards.allSatisfy(\.isTrusted) {
            if clock.now > ready { throw ValidationError("the 4 breaker boards did not subscribe within 10 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        var missed = 0
        for k in 0..<transitions {
            let status = try await controller.force(target, k % 2 == 0 ? .open : .reset, note: "bench transition \(k)")
            let deadline = clock.now + .seconds(2)
            while !sightings.allSeen(status.generation) {
                if clock.now > deadline {
                    missed += 1
                    break
                }
                try await Task.sleep(for: .microseconds(100))
            }
        }
        for task in tasks { task.cancel() }
        for task in tasks { _ = try? await task.value }
        let latencies = sightings.latencies.sorted()
        let p50 = percentile(latencies, 50)
        let p99 = percentile(latencies, 99)
        let worst = latencies.last ?? 0
        let text = [
            "",
            "2. Propagation of a breaker change (Redis PUBLISH inside the script to each board's onChange), 4 boards",
            pad("transitions x boards", 24) + pad("p50 ms", 10) + pad("p99 ms", 10) + pad("max ms", 10) + "missed",
            pad("\(transitions) x 4 = \(latencies.count)", 24) + pad(String(format: "%.3f", p50), 10) + pad(String(format: "%.3f", p99), 10)
                + pad(String(format: "%.3f", worst), 10) + "\(missed)   (target p99 <= 50 ms)",
        ]
        return (
            [
                "propagation_transitions": transitions, "propagation_samples": latencies.count, "propagation_p50_ms": p50,
                "propagation_p99_ms": p99, "propagation_max_ms": worst, "propagation_missed": missed,
            ],
            text
        )
    }

    // MARK: - 3. The hot path's check

    func hotPath(server: RedisServer, logger: Logger) async throws -> ([String: Any], [String]) {
        let target = ResilienceTarget(id: "bench/hot")
        let redis = pool(server, size: 1)
        defer { redis.shutDown() }
        let board = BreakerBoard(redis: redis, targets: [target], logger: logger)
        let task = Task { try await board.run() }
        defer { task.cancel() }
        let clock = ContinuousClock()
        let ready = clock.now + .seconds(10)
        while !(board.isTrusted && board.localState(target.id) == .closed) {
            if clock.now > ready { throw ValidationError("the breaker board did not subscribe within 10 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let info = RedisConnection(configuration: server.configuration)
        defer { info.close() }
        func commandsProcessed() async throws -> Int {
            let text = try await info.send("INFO", "stats").string ?? ""
            let line = text.split(whereSeparator: \.isNewline).first { $0.hasPrefix("total_commands_processed:") }
            return line.flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? -1
        }
        let before = try await commandsProcessed()
        var refused = 0
        var start = clock.now
        for _ in 0..<hotCalls where board.refusesLocally(target) != nil { refused += 1 }
        let localNs = milliseconds(clock.now - start) * 1e6 / Double(hotCalls)
        var granted = 0
        start = clock.now
        for _ in 0..<hotCalls {
            if case .success = await board.permit(target) { granted += 1 }
        }
        let permitNs = milliseconds(clock.now - start) * 1e6 / Double(hotCalls)
        let after = try await commandsProcessed()
        // The second INFO counts the first one.
        let roundTrips = after - before - 1
        task.cancel()
        _ = try? await task.value
        let text = [
            "",
            "3. Hot-path check, closed breaker, trusted local copy, \(hotCalls) calls each",
            pad("call", 22) + pad("ns per call", 14) + "outcome",
            pad("refusesLocally", 22) + pad(String(format: "%.1f", localNs), 14) + "\(refused) refused   (target < 5000 ns)",
            pad("permit", 22) + pad(String(format: "%.1f", permitNs), 14) + "\(granted) granted   (target < 5000 ns)",
            "Redis commands processed during both loops: \(roundTrips) (INFO stats total_commands_processed, the INFO excluded)",
        ]
        return (
            [
                "hot_calls": hotCalls, "hot_refuses_locally_ns": localNs, "hot_permit_ns": permitNs, "hot_permit_granted": granted,
                "hot_refused": refused, "hot_redis_commands_during_loops": roundTrips,
            ],
            text
        )
    }

    // MARK: - 4. Rate limit accuracy

    struct RPMRun {
        var burst: Int
        var offered: Int
        var admitted: Int
        var perLimiter: [Int]
        var drained: Int
    }

    func rpmAccuracy(server: RedisServer, logger: Logger) async throws -> ([String: Any], [String]) {
        var runs: [RPMRun] = []
        for burst in [rpmBurst] + (rpmCompareBurst > 0 && rpmCompareBurst != rpmBurst ? [rpmCompareBurst] : []) {
            try await flush(server)
            runs.append(try await rpmRun(server: server, logger: logger, burst: burst))
        }
        let expected = rpmWindow * Double(rpmRequests) / rpmPeriod
        var text = [
            "",
            String(
                format:
                    "4. Rate limit accuracy: %d requests per %.0f s, max_wait_ms 0, 4 limiters each offered the full rate (4x in all), %.0f s window",
                rpmRequests,
                rpmPeriod,
                rpmWindow
            ),
            pad("request_burst", 15) + pad("offered", 10) + pad("admitted", 10) + pad("expected", 10) + pad("admitted / expected", 22)
                + "per limiter",
        ]
        for run in runs {
            text.append(
                pad("\(run.burst)", 15) + pad("\(run.offered)", 10) + pad("\(run.admitted)", 10) + pad(String(format: "%.0f", expected), 10)
                    + pad(String(format: "%.4f", Double(run.admitted) / expected), 22) + run.perLimiter.map(String.init).joined(separator: " + ")
            )
        }
        text.append(
            String(format: "admitted / expected at request_burst %d: %.4f   (target within 2%%)", rpmBurst, Double(runs[0].admitted) / expected)
        )
        var figures: [String: Any] = [
            "rpm_requests": rpmRequests, "rpm_period_seconds": rpmPeriod, "rpm_burst": rpmBurst, "rpm_window_seconds": rpmWindow,
            "rpm_expected": expected, "rpm_offered": runs[0].offered, "rpm_admitted": runs[0].admitted,
            "rpm_ratio": Double(runs[0].admitted) / expected, "rpm_admitted_per_limiter": runs[0].perLimiter,
            "rpm_drained_first": runs[0].drained,
        ]
        if runs.count > 1 {
            figures["rpm_compare_burst"] = runs[1].burst
            figures["rpm_compare_admitted"] = runs[1].admitted
            figures["rpm_compare_ratio"] = Double(runs[1].admitted) / expected
            figures["rpm_compare_admitted_per_limiter"] = runs[1].perLimiter
        }
        return (figures, text)
    }

    func rpmRun(server: RedisServer, logger: Logger, burst: Int) async throws -> RPMRun {
        let limit = RateLimitSettings(requests: rpmRequests, periodSeconds: rpmPeriod, requestBurst: burst, maxWaitMs: 0)
        let target = ResilienceTarget(id: "bench/rpm", rateLimit: limit)
        let pools = (0..<4).map { _ in pool(server, size: 1) }
        defer { for p in pools { p.shutDown() } }
        let limiters = pools.map { RateLimiter(redis: $0, logger: logger) }
        // Empty the bucket first: the window then measures the rate alone.
        var drained = 0
        while case .admitted = try await limiters[0].acquire(target, tokens: 0) { drained += 1 }
        // Each limiter offers the limit's rate, evenly spaced and staggered by a quarter interval.
        let interval = rpmPeriod / Double(rpmRequests)
        let clock = ContinuousClock()
        let start = clock.now + .milliseconds(20)
        let end = start + .milliseconds(Int64(rpmWindow * 1000))
        let counts = try await withThrowingTaskGroup(of: (limiter: Int, offered: Int, admitted: Int).self) { group in
            for (i, limiter) in limiters.enumerated() {
                group.addTask {
                    var offered = 0
                    var admitted = 0
                    while true {
                        let at = start + .microseconds(Int64((Double(i) / 4 + Double(offered)) * interval * 1e6))
                        if at >= end { break }
                        try await Task.sleep(until: at, tolerance: .zero, clock: clock)
                        offered += 1
                        if case .admitted = try await limiter.acquire(target, tokens: 0) { admitted += 1 }
                    }
                    return (i, offered, admitted)
                }
            }
            var all: [(limiter: Int, offered: Int, admitted: Int)] = []
            for try await c in group { all.append(c) }
            return all.sorted { $0.limiter < $1.limiter }
        }
        return RPMRun(
            burst: burst,
            offered: counts.map(\.offered).reduce(0, +),
            admitted: counts.map(\.admitted).reduce(0, +),
            perLimiter: counts.map(\.admitted),
            drained: drained
        )
    }
}
