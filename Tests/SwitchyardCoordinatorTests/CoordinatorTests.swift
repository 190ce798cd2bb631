import CoreMetrics
import Foundation
import Logging
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardTestSupport
import Testing

@testable import SwitchyardCoordinator

/// The coordinator against a real redis-server and real worker processes, over real HTTP.
@Suite("The coordinator: metrics, API, tokens, reclaim")
struct CoordinatorTests {
    static let workerArguments = ["--queue", CoordinatorFixture.queueName, "--executor", "echo", "--concurrency", "4"]

    static func chat(_ prompt: String, metadata: [String: String] = [:], maxAttempts: Int = 3) -> Job {
        Job(
            kind: .chat,
            model: "echo",
            input: JobInput(messages: [ChatMessage(role: "user", content: prompt)]),
            maxAttempts: maxAttempts,
            metadata: metadata
        )
    }

    /// Sample lines of `name` in a Prometheus text, by their label set.
    static func samples(_ text: String, _ name: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
            guard let space = line.lastIndex(of: " ") else { continue }
            out[String(line[line.startIndex..<space])] = Double(line[line.index(after: space)...])
        }
        return out
    }

    static func runPromtool(_ text: String) throws -> (status: Int32, output: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("promtool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let input = directory.appendingPathComponent("metrics.txt")
        try Data(text.utf8).write(to: input)
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: FileManager.default.isExecutableFile) else {
            throw FixtureError("promtool is not installed: run scripts/setup.sh (Debian package 'prometheus')")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(promtool) check metrics < '\(input.path)' 2>&1"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    @Test func metricsPassPromtoolAndAddUpTheWorkers() async throws {
        let f = try await CoordinatorFixture()
        let a = try WorkerProcess(redisURL: f.server.url, id: "prom-a", arguments: Self.workerArguments)
        let b = try WorkerProcess(redisURL: f.server.url, id: "prom-b", arguments: Self.workerArguments)
        defer {
            _ = a.terminate()
            _ = b.terminate()
        }
        let jobs =
            (0..<30).map { Self.chat("job \($0)", metadata: ["echo.sleep_ms": "\(5 + $0 % 20)"]) }
            + [Self.chat("fatal", metadata: ["echo.fail": "fatal"])]
        _ = try await f.queue.push(jobs)
        let succeeded = "switchyard_attempts_total{lane=\"default\",queue=\"test\",status=\"succeeded\"}"
        var text = ""
        let published = try await eventually(timeout: .seconds(30)) {
            text = try await f.text("/metrics")
            return Self.samples(text, "switchyard_attempts_total")[succeeded] == 30
                && Self.samples(text, "switchyard_attempts_total")["switchyard_attempts_total{lane=\"default\",queue=\"test\",status=\"failed\"}"]
                    == 1
        }
        #expect(published, "\(text.prefix(3000))")
        // Both workers ran some; the merged counter is their sum.
        let snapshots = try await f.queue.metricsSnapshots().map { try JSONDecoder().decode(MetricsSnapshot.self, from: Data($0)) }
        let key = MetricsRegistry.Key("switchyard_attempts_total", [("lane", "default"), ("queue", "test"), ("status", "succeeded")])
        #expect(snapshots.compactMap { $0.counters[key] }.reduce(0, +) == 30)

        let (status, output) = try Self.runPromtool(text)
        #expect(status == 0, "promtool: \(output)")
        // Histograms: the count, +Inf and the last finite bucket agree, buckets never decrease.
        let runCount = Self.samples(text, "switchyard_run_seconds_count").values.reduce(0, +)
        #expect(runCount == 31)
        let buckets = text.split(separator: "\n").filter { $0.hasPrefix("switchyard_run_seconds_bucket{lane=\"default\",queue=\"test\"") }
        let values = buckets.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }
        #expect(values.count == LatencyHistogram.prometheusBounds.count + 1)
        #expect(zip(values, values.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(values.last == 31)
        // Queue and workers.
        #expect(Self.samples(text, "switchyard_workers")["switchyard_workers{queue=\"test\"}"] == 2)
        #expect(Self.samples(text, "switchyard_worker_info").count == 2)
        #expect(Self.samples(text, "switchyard_queue_jobs_total")["switchyard_queue_jobs_total{queue=\"test\",event=\"pushed\"}"] == 31)
        #expect(Self.samples(text, "switchyard_queue_waiting")["switchyard_queue_waiting{queue=\"test\",lane=\"default\"}"] == 0)
        await f.close()
    }

    @Test func theOldestWaitingJobsAgeIsShownPerLane() async throws {
        let f = try await CoordinatorFixture()
        _ = try await f.queue.push(Self.chat("waits"))
        try await Task.sleep(for: .milliseconds(1200))
        let summary = try await f.json("/api/v1/cluster")
        let lane = summary.object?["lanes"]?.array?.first { $0.object?["name"]?.string == "default" }?.object
        #expect(lane?["waiting"]?.integer == 1)
        let age = lane?["oldest_waiting_seconds"]?.number ?? 0
        #expect(age >= 1.0 && age < 30, "age \(age)")
        let text = try await f.text("/metrics")
        let exported = Self.samples(text, "switchyard_queue_oldest_waiting_seconds")[
            "switchyard_queue_oldest_waiting_seconds{queue=\"test\",lane=\"default\"}"
        ]
        #expect((exported ?? 0) >= 1.0)
        await f.close()
    }

    /// Four workers' snapshots with different latency distributions, published as workers do:
    /// the coordinator's p99 is within the histogram's stated error of the exact p99 of all
    /// samples, where averaging the workers' own p99s is far off.
    @Test func theMergedP99OverFourWorkersIsATrueClusterQuantile() async throws {
        let f = try await CoordinatorFixture()
        var generator = SystemRandomNumberGenerator()
        var all: [Double] = []
        var perWorkerP99: [Double] = []
        for worker in 0..<4 {
            let registry = MetricsRegistry()
            let timer = CoreMetrics.Timer(label: "switchyard_run_seconds", dimensions: [("lane", "default"), ("queue", "test")], factory: registry)
            var samples: [Double] = []
            for _ in 0..<5000 {
                // µs: fast, slow, bimodal, long-tailed.
                let us: Double =
                    switch worker {
                    case 0: Double.random(in: 1000...5000, using: &generator)
                    case 1: Double.random(in: 200_000...400_000, using: &generator)
                    case 2: Bool.random(using: &generator) ? 10_000 : Double.random(in: 900_000...1_000_000, using: &generator)
                    default: exp(Double.random(in: log(100)...log(5_000_000), using: &generator))
                    }
                let rounded = us.rounded()
                timer.recordNanoseconds(Int64(rounded) * 1000)
                samples.append(rounded)
            }
            all += samples
            perWorkerP99.append(samples.sorted()[Int((0.99 * Double(samples.count)).rounded(.up)) - 1])
            let json = Array(try JSONEncoder().encode(registry.snapshot(worker: "w\(worker)")))
            try await f.queue.publishMetrics(worker: "w\(worker)", series: registry.series, json: json)
        }
        let exact = all.sorted()[Int((0.99 * Double(all.count)).rounded(.up)) - 1] / 1e6
        let summary = try await f.json("/api/v1/cluster")
        let p99 = summary.object?["total"]?.object?["run"]?.object?["p99"]?.number ?? 0
        #expect(abs(p99 - exact) / exact <= LatencyHistogram.relativeError, "merged p99 \(p99) vs exact \(exact)")
        let averaged = perWorkerP99.reduce(0, +) / 4 / 1e6
        #expect(abs(averaged - exact) / exact > 0.1, "the distributions must tell a true merge from an average")
        #expect(summary.object?["total"]?.object?["run"]?.object?["count"]?.integer == 20_000)
        #expect(summary.object?["series"]?.integer == 4)
        await f.close()
    }

    @Test func twoCoordinatorsAnswerTheSame() async throws {
        let first = try await CoordinatorFixture()
        let second = try await CoordinatorFixture(server: first.server)
        let worker = try WorkerProcess(redisURL: first.server.url, id: "shared", arguments: Self.workerArguments)
        defer { _ = worker.terminate() }
        let jobs = (0..<20).map { Self.chat("job \($0)", metadata: ["echo.sleep_ms": "\($0)"]) }
        _ = try await first.queue.push(jobs)
        #expect(
            try await eventually(timeout: .seconds(30)) {
                let total = try await first.json("/api/v1/cluster").object?["total"]?.object?["attempts"]?.object?["succeeded"]?.integer
                return total == 20
            }
        )
        // What does not depend on the moment of reading is equal.
        func stable(_ summary: JSONValue) -> [String: JSONValue] {
            var object = summary.object ?? [:]
            object["now"] = nil
            var total = object["total"]?.object ?? [:]
            total["to"] = nil
            total["throughput"] = nil
            object["total"] = .object(total)
            object["windows"] = .object(
                (object["windows"]?.object ?? [:]).mapValues { window in
                    var w = window.object ?? [:]
                    w["to"] = nil
                    w["throughput"] = nil
                    return .object(w)
                }
            )
            object["lanes"] = .array(
                (object["lanes"]?.array ?? []).map { lane in
                    var l = lane.object ?? [:]
                    l["oldest_waiting_seconds"] = nil
                    return .object(l)
                }
            )
            return object
        }
        let a = try await first.json("/api/v1/cluster")
        let b = try await second.json("/api/v1/cluster")
        #expect(stable(a) == stable(b))
        func stableText(_ text: String) -> [Substring] {
            text.split(separator: "\n").filter { !$0.contains("heartbeat_age") && !$0.contains("oldest_waiting") && !$0.contains("rss_bytes") }
        }
        let metricsA = try await first.text("/metrics")
        let metricsB = try await second.text("/metrics")
        #expect(stableText(metricsA) == stableText(metricsB))
        await second.close()
        await first.close()
    }

    @Test func withoutATokenOnlyLoopbackAndEveryLocalRequestIsAllowed() async throws {
        let f = try await CoordinatorFixture { $0.host = "0.0.0.0" }
        #expect(f.logs.text.contains("listening on 127.0.0.1 only"))
        let job: JSONValue = .object(["model": .string("echo"), "prompt": .string("hi")])
        let (status, _, _) = try await f.request("POST", "/api/v1/jobs", json: job)
        #expect(status == 201)
        // What a page on another site could make a local browser send is refused: a write from
        // another origin, a body that is not JSON, and (DNS rebinding) a Host that is not loopback.
        func send(
            _ headers: [(name: String, value: String)],
            body: [UInt8] = job.jsonBytes,
            method: String = "POST",
            path: String = "/api/v1/jobs"
        )
            async throws -> Int
        {
            try await f.client.execute(.init(method: method, url: f.baseURL + path, headers: headers, body: body, idempotent: false)).status
        }
        #expect(try await send([("Content-Type", "application/json"), ("Origin", "http://evil.example")]) == 403)
        #expect(try await send([("Content-Type", "text/plain")]) == 415)
        #expect(try await send([("Content-Type", "application/x-www-form-urlencoded")]) == 415)
        #expect(try await send([("Host", "evil.example:\(f.port)")], method: "GET", path: "/api/v1/workers") == 403)
        #expect(try await send([("Content-Type", "application/json"), ("Origin", "http://127.0.0.1:\(f.port)")]) == 201)
        // Too large a body: 413, not a 500.
        let big = Array(repeating: UInt8(ascii: " "), count: 17 << 20)
        #expect(try await send([("Content-Type", "application/json")], body: big) == 413)
        #expect(try await f.queue.status().counters["pushed"] == 2)
        await f.close()
    }

    @Test func writesNeedARightTokenAndNoTokenIsLogged() async throws {
        let right = "right-token-0123456789abcdef"
        let wrong = "wrong-token-0123456789abcdef"
        let f = try await CoordinatorFixture { $0.tokens = ["another-token-aaaaaaaaaaaaaaaa", right] }
        let job: JSONValue = .object(["model": .string("echo"), "prompt": .string("hi")])

        let missing = try await f.request("POST", "/api/v1/jobs", json: job)
        #expect(missing.status == 401)
        #expect(try JSONValue.parse(missing.body).object?["error"]?.object?["code"]?.string == "missing_token")
        #expect(missing.headers.contains { $0.name.lowercased() == "www-authenticate" && $0.value == "Bearer" })
        let bad = try await f.request("POST", "/api/v1/jobs", json: job, token: wrong)
        #expect(bad.status == 401)
        #expect(try JSONValue.parse(bad.body).object?["error"]?.object?["code"]?.string == "invalid_token")
        // A token that is a prefix of a right one is wrong.
        #expect(try await f.request("POST", "/api/v1/jobs", json: job, token: String(right.dropLast())).status == 401)
        let good = try await f.request("POST", "/api/v1/jobs", json: job, token: right)
        #expect(good.status == 201)
        #expect(try await f.queue.status().lanes.first { $0.name == "default" }?.waiting == 1)
        // Reads are open by default; health always.
        #expect(try await f.request("GET", "/api/v1/cluster").status == 200)
        #expect(try await f.request("GET", "/healthz").status == 200)
        #expect(!f.logs.text.contains(right) && !f.logs.text.contains(wrong))
        await f.close()

        let closed = try await CoordinatorFixture {
            $0.tokens = [right]
            $0.reads = .token
        }
        #expect(try await closed.request("GET", "/api/v1/cluster").status == 401)
        #expect(try await closed.request("GET", "/metrics").status == 401)
        #expect(try await closed.request("GET", "/api/v1/cluster", token: wrong).status == 401)
        #expect(try await closed.request("GET", "/api/v1/cluster", token: right).status == 200)
        #expect(try await closed.request("GET", "/metrics", token: right).status == 200)
        #expect(try await closed.request("GET", "/healthz").status == 200)
        #expect(!closed.logs.text.contains(right) && !closed.logs.text.contains(wrong))
        await closed.close()
    }

    @Test func jobsAndBatchesThroughTheAPI() async throws {
        let f = try await CoordinatorFixture()
        let worker = try WorkerProcess(redisURL: f.server.url, id: "api", arguments: Self.workerArguments)
        defer { _ = worker.terminate() }

        // One job, waiting for its result.
        let one = try await f.request("POST", "/api/v1/jobs?wait=20", json: .object(["model": .string("echo"), "prompt": .string("hello there")]))
        #expect(one.status == 200)
        let result = try JSONValue.parse(one.body).object ?? [:]
        #expect(result["status"]?.string == "succeeded")
        let id = result["id"]?.string ?? ""
        #expect(try await f.json("/api/v1/jobs/\(id)").object?["status"]?.string == "succeeded")
        #expect(try await f.request("GET", "/api/v1/jobs/no-such-job").status == 404)

        // Bad input: a 400 naming the field, and nothing pushed.
        let before = try await f.queue.status().counters["pushed"] ?? 0
        let hot = try await f.request(
            "POST",
            "/api/v1/jobs",
            json: .object(["model": .string("echo"), "prompt": .string("x"), "temperature": .number(5)])
        )
        #expect(hot.status == 400)
        #expect(try JSONValue.parse(hot.body).object?["error"]?.object?["param"]?.string == "temperature")
        let batchBad = try await f.request(
            "POST",
            "/api/v1/batches",
            json: .object(["jobs": .array([.object(["model": .string("echo"), "prompt": .string("a")]), .object(["prompt": .string("b")])])])
        )
        #expect(batchBad.status == 400)
        let batchError = try JSONValue.parse(batchBad.body).object?["error"]?.object
        #expect(batchError?["param"]?.string == "jobs[1].model", "\(String(decoding: batchBad.body, as: UTF8.self))")
        #expect(try await f.request("POST", "/api/v1/jobs", json: .string("not an object")).status == 400)
        let notJSON = try await f.client.execute(
            .init(method: "POST", url: f.baseURL + "/api/v1/jobs", headers: [("Content-Type", "application/json")], body: Array("{oops".utf8))
        )
        #expect(notJSON.status == 400)
        #expect(try await f.queue.status().counters["pushed"] ?? 0 == before)

        // A batch, its progress and results.
        let batch = try await f.request(
            "POST",
            "/api/v1/batches",
            json: .object([
                "model": .string("echo"), "batch": .string("b-api"), "jobs": .array((0..<5).map { .object(["prompt": .string("p\($0)")]) }),
            ])
        )
        #expect(batch.status == 201)
        #expect(try JSONValue.parse(batch.body).object?["pushed"]?.integer == 5)
        #expect(
            try await eventually(timeout: .seconds(20)) {
                try await f.json("/api/v1/batches/b-api").object?["complete"]?.bool == true
            }
        )
        let progress = try await f.json("/api/v1/batches/b-api?results=true").object ?? [:]
        #expect(progress["succeeded"]?.integer == 5)
        #expect(progress["results"]?.array?.count == 5)
        #expect(try await f.request("GET", "/api/v1/batches/nope").status == 404)

        // Cancel: a delayed job, then again (already final), then one nobody pushed.
        let delayed = try await f.request(
            "POST",
            "/api/v1/jobs",
            json: .object(["model": .string("echo"), "prompt": .string("later"), "delay": .number(60)])
        )
        let delayedID = try JSONValue.parse(delayed.body).object?["id"]?.string ?? ""
        #expect(try await f.request("POST", "/api/v1/jobs/\(delayedID)/cancel").status == 200)
        #expect(try await f.request("POST", "/api/v1/jobs/\(delayedID)/cancel").status == 409)
        #expect(try await f.request("POST", "/api/v1/jobs/never-pushed/cancel").status == 404)

        // A dead letter: listed, retried, purged.
        let doomed = try await f.request(
            "POST",
            "/api/v1/jobs",
            json: .object([
                "model": .string("echo"), "prompt": .string("doomed"), "max_attempts": .number(1),
                "metadata": .object(["echo.fail_attempts": .string("5")]),
            ])
        )
        #expect(doomed.status == 201)
        var letters: [JSONValue] = []
        #expect(
            try await eventually(timeout: .seconds(20)) {
                letters = try await f.json("/api/v1/dead-letters").array ?? []
                return letters.count == 1
            }
        )
        let entry = letters.first?.object?["entry_id"]?.string ?? ""
        let retried = try await f.request("POST", "/api/v1/dead-letters/\(entry)/retry")
        #expect(retried.status == 200, "\(String(decoding: retried.body, as: UTF8.self))")
        #expect(try await f.request("POST", "/api/v1/dead-letters/999-0/retry").status == 404)
        #expect(try await f.request("POST", "/api/v1/dead-letters/x;y/retry").status == 400)
        #expect(try await f.request("POST", "/api/v1/dead-letters/---/retry").status == 400)
        #expect(try await f.request("POST", "/api/v1/dead-letters/99999999999999999999999999-0/retry").status == 400)
        #expect(
            try await eventually(timeout: .seconds(20)) {
                try await f.json("/api/v1/dead-letters").array?.count == 1
            }
        )
        let purged = try await f.request("DELETE", "/api/v1/dead-letters")
        #expect(try JSONValue.parse(purged.body).object?["purged"]?.integer == 1)

        // The windows count what ran since the coordinator's first minute record (once the
        // worker's next heartbeat has published it).
        var summary: [String: JSONValue] = [:]
        #expect(
            try await eventually(timeout: .seconds(10)) {
                summary = try await f.json("/api/v1/cluster").object ?? [:]
                return (summary["windows"]?.object?["5m"]?.object?["attempts"]?.object?["succeeded"]?.integer ?? 0) >= 6
            },
            "\(summary)"
        )
        #expect(summary["workers"]?.object?["alive"]?.integer == 1)
        let timeline = try await f.json("/api/v1/timeline?minutes=5").array ?? []
        #expect(!timeline.isEmpty)
        #expect(try await f.request("GET", "/api/v1/timeline?minutes=0").status == 400)
        #expect(try await f.request("GET", "/api/v1/cluster?queue=other").status == 404)
        await f.close()
    }

    @Test func theCoordinatorReclaimsJobsOfALostWorker() async throws {
        let f = try await CoordinatorFixture {
            $0.lease = .seconds(1)
            $0.reclaimInterval = .milliseconds(200)
        }
        try await f.queue.ensureGroups()
        _ = try await f.queue.push(Self.chat("lost"))
        // Taken by a worker that then vanishes: it never finishes nor refreshes its lease.
        let taken = try await f.queue.take(consumer: "vanished", count: 1)
        #expect(taken.count == 1)
        #expect(
            try await eventually(timeout: .seconds(10)) {
                let status = try await f.queue.status()
                return status.counters["reclaimed"] == 1 && status.lanes.first { $0.name == "default" }?.waiting == 1
            }
        )
        #expect(f.logs.text.contains("reclaimed entries whose lease ran out"))
        await f.close()
    }

    @Test func breakersAreListedForcedAndExported() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("coordinator-breakers-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("providers.json")
        try Data(
            #"{"providers": [{"name": "remote", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}], "models": {"m": {"provider": "remote", "model": "up-m"}}}"#
                .utf8
        ).write(to: file)
        let f = try await CoordinatorFixture { $0.providersFile = file.path }
        let listed = try await f.json("/api/v1/breakers").array ?? []
        #expect(listed.compactMap { $0.object?["target"]?.string } == ["remote/up-m"])
        #expect(listed.first?.object?["state"]?.string == "closed")

        let opened = try await f.request(
            "POST",
            "/api/v1/breakers/open",
            json: .object(["target": .string("remote/up-m"), "note": .string("maintenance")])
        )
        #expect(opened.status == 200)
        #expect(try JSONValue.parse(opened.body).object?["state"]?.string == "forced_open")
        #expect(try await f.request("POST", "/api/v1/breakers/open", json: .object(["target": .string("nope/x")])).status == 404)
        #expect(try await f.request("POST", "/api/v1/breakers/open", json: .object(["note": .string("no target")])).status == 400)
        #expect((try await f.json("/api/v1/breakers").array?.first?.object?["forced_by"]?.string ?? "").contains("maintenance"))

        _ = try await f.request("POST", "/api/v1/breakers/reset", json: .object(["target": .string("remote/up-m")]))
        let text = try await f.text("/metrics")
        let state = Self.samples(text, "switchyard_breaker_state")
        #expect(state["switchyard_breaker_state{target=\"remote/up-m\",state=\"closed\"}"] == 1)
        #expect(state["switchyard_breaker_state{target=\"remote/up-m\",state=\"forced_open\"}"] == 0)
        let transitions = Self.samples(text, "switchyard_breaker_transitions_total")
        #expect(transitions["switchyard_breaker_transitions_total{target=\"remote/up-m\",to=\"forced_open\"}"] == 1)
        #expect(transitions["switchyard_breaker_transitions_total{target=\"remote/up-m\",to=\"closed\"}"] == 1)
        let (status, output) = try Self.runPromtool(text)
        #expect(status == 0, "promtool: \(output)")
        await f.close()
    }

    /// The coordinator's fast snapshot reader gives what `Codable` gives, and refuses what it refuses.
    /// In a minute's first seconds, before an upkeep round has recorded it, the timeline still
    /// ends with the span in progress, from the last minute's record.
    @Test func theTimelineHasNoGapAtAMinutesStart() async throws {
        let f = try await CoordinatorFixture { $0.reclaimInterval = nil }
        let reader = ClusterReader(queue: f.queue, logger: Logger(label: "test"))
        // After the upkeep's first round (the next is 5 s later), as if the minute had just begun.
        #expect(try await eventually { try await f.pool.send("HLEN", f.queue.keys.metricsHistory).int == 1 })
        _ = try await f.pool.send("DEL", f.queue.keys.metricsHistory, f.queue.keys.metricsTimeline)
        try await reader.recordMinute(now: Date().timeIntervalSince1970 - 60)
        let timeline = try await reader.timeline(minutes: 5)
        #expect(timeline.count == 1, "\(timeline)")
        await f.close()
    }

    /// `/readyz` follows Redis while `/healthz` does not, and the upkeep makes the lanes and their
    /// group again after Redis lost them, so an autoscaler reading the group's lag finds them
    /// while no worker runs.
    @Test func readinessFollowsRedisAndTheGroupsComeBack() async throws {
        let f = try await CoordinatorFixture { $0.reclaimInterval = .milliseconds(200) }
        #expect(try await f.request("GET", "/readyz").status == 200)
        let lane = f.queue.keys.lane(.default)
        _ = try await f.pool.send("FLUSHALL")
        let recreated = try await eventually(timeout: .seconds(10)) {
            guard let groups = try? await f.pool.send("XINFO", "GROUPS", lane) else { return false }
            return "\(groups)".contains("workers")
        }
        #expect(recreated, "the coordinator makes the lane and its group again")
        f.server.stop()
        let notReady = try await f.request("GET", "/readyz", timeout: .seconds(10))
        #expect(notReady.status == 503 && String(decoding: notReady.body, as: UTF8.self).contains("Redis does not answer"))
        #expect(try await f.request("GET", "/healthz").status == 200)
        try f.server.restart()
        #expect(try await eventually(timeout: .seconds(15)) { try await f.request("GET", "/readyz").status == 200 })
        await f.close()
    }

    @Test func theFastSnapshotReaderAgreesWithCodable() throws {
        let registry = MetricsRegistry()
        let timer = CoreMetrics.Timer(label: "switchyard_run_seconds", dimensions: [("lane", "default"), ("queue", "q\"x")], factory: registry)
        for us in [1, 90, 1000, 123_456, 9_000_000] { timer.recordNanoseconds(Int64(us) * 1000) }
        Counter(label: "switchyard_attempts_total", dimensions: [("status", "succeeded")], factory: registry).increment(by: 7)
        Gauge(label: "g", factory: registry).record(2.5)
        // An empty histogram too: its minimum is Int64.max.
        _ = CoreMetrics.Timer(label: "empty", factory: registry)
        let json = Array(try JSONEncoder().encode(registry.snapshot(worker: "w")))
        let fast = try SnapshotDecoding.snapshot(json)
        let slow = try JSONDecoder().decode(MetricsSnapshot.self, from: Data(json))
        #expect(fast.counters == slow.counters && fast.gauges == slow.gauges && fast.histograms == slow.histograms)
        #expect(fast.worker == "w" && fast.series == slow.series && fast.takenAt == slow.takenAt)
        let text = String(decoding: json, as: UTF8.self)
        for corrupt in [
            text.replacingOccurrences(of: "\"p\":7", with: "\"p\":6"),  // another layout
            text.replacingOccurrences(of: "\"n\":5", with: "\"n\":6"),  // count is not the buckets' sum
            text.replacingOccurrences(of: "\"worker\":\"w\"", with: "\"worker\":1"),
            "[]", "{",
        ] {
            #expect(throws: (any Error).self) { try SnapshotDecoding.snapshot(Array(corrupt.utf8)) }
        }
    }
}
