import Foundation
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardTestSupport
import Testing

/// Every worker process publishes its cumulative metrics with its heartbeat; the merged view
/// sums them, and a worker killed and started again never makes it go backwards.
@Suite("Worker metrics across processes")
struct MetricsProcessTests {
    static let succeeded = MetricsRegistry.Key("switchyard_attempts_total", [("lane", "default"), ("queue", "test"), ("status", "succeeded")])

    static func merged(_ queue: JobQueue) async throws -> MetricsSnapshot {
        let snapshots = try await queue.metricsSnapshots().map { try JSONDecoder().decode(MetricsSnapshot.self, from: Data($0)) }
        return MetricsSnapshot.merge(snapshots)
    }

    static func run(_ count: Int, _ f: QueueFixture) async throws {
        // Long enough that both workers take some (4 slots each).
        let jobs = (0..<count).map { chatJob("job \($0)", metadata: ["echo.sleep_ms": "50"]) }
        _ = try await f.queue.push(jobs)
        let done = try await eventually(timeout: .seconds(30)) { try await f.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } }
        #expect(done)
    }

    @Test func mergedCountersAreTheWorkersSumAndNeverGoBackwards() async throws {
        let f = try await offThePool { try QueueFixture() }
        defer { f.close() }
        let arguments = ["--queue", "test", "--executor", "echo", "--concurrency", "4"]
        let a = try WorkerProcess(redisURL: f.server.url, id: "metrics-a", arguments: arguments)
        var b = try WorkerProcess(redisURL: f.server.url, id: "metrics-b", arguments: arguments)
        defer { _ = a.terminate() }
        try await Self.run(40, f)
        // Published with the next heartbeats.
        #expect(try await eventually(timeout: .seconds(10)) { try await Self.merged(f.queue).counters[Self.succeeded] == 40 })
        let snapshots = try await f.queue.metricsSnapshots().map { try JSONDecoder().decode(MetricsSnapshot.self, from: Data($0)) }
        #expect(Set(snapshots.map(\.worker)) == ["metrics-a", "metrics-b"])
        #expect(snapshots.compactMap { $0.counters[Self.succeeded] }.reduce(0, +) == 40)
        let merged = try await Self.merged(f.queue)
        #expect(merged.histograms.first { $0.key.label == "switchyard_run_seconds" }?.value.count == 40)
        // The echo executor reports a prompt token per character of "job <n>": 40 jobs, 230 tokens.
        #expect(merged.counters[MetricsRegistry.Key("switchyard_tokens_total", [("direction", "in"), ("queue", "test")])] == 230)

        // Killed and started again with its id: a new series; the old one stays in the sum.
        try await offThePool { [b] in b.kill() }
        b = try WorkerProcess(redisURL: f.server.url, id: "metrics-b", arguments: arguments)
        defer { _ = b.terminate() }
        try await Self.run(20, f)
        #expect(try await eventually(timeout: .seconds(10)) { try await Self.merged(f.queue).counters[Self.succeeded] == 60 })
        let series = try await f.queue.metricsSnapshots().map { try JSONDecoder().decode(MetricsSnapshot.self, from: Data($0)) }
        #expect(series.filter { $0.worker == "metrics-b" }.count == 2)
    }

    @Test func statusWatchRedrawsWithTheClusterLatency() async throws {
        let f = try await offThePool { try QueueFixture() }
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "watched", arguments: ["--queue", "test", "--executor", "echo"])
        defer { _ = worker.terminate() }
        try await Self.run(5, f)
        let watch = try RunningCommand(["status", "--redis-url", f.server.url, "--queue", "test", "--watch", "--interval", "200ms"])
        // Redrawn again and again, each time from a cleared screen, with the merged latency once published.
        let redrawn = try await eventually(timeout: .seconds(15)) {
            let output = watch.output
            return output.components(separatedBy: "\u{1B}[H\u{1B}[2J").count >= 4 && output.contains("latency (1 worker series)")
        }
        #expect(redrawn, "\(watch.output.suffix(600))")
        try await offThePool { [watch] in _ = watch.stop(SIGINT) }
    }
}
