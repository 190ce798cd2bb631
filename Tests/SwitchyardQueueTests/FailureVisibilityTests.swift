import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization
import Testing

@testable import SwitchyardWorker

/// Failures an operator can see: `Retry-After` carried to the queue's next attempt and into the
/// result and dead letter, failures in the worker's log at the default level (rate-limited),
/// JSON logs, and a worker that exits when Redis refuses its password.
@Suite("Failures that reach the operator", .serialized)
struct FailureVisibilityTests {
    /// A providers file with one OpenAI-compatible provider at the stand-in, no HTTP-level retry.
    static func providersFile(_ standin: StandinServer) throws -> String {
        let file: [String: Any] = [
            "providers": [["name": "remote", "kind": "openai", "base_url": standin.baseURL + "/v1", "max_attempts": 1]],
            "models": ["chat": ["provider": "remote", "model": "m1"]],
        ]
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
        try JSONSerialization.data(withJSONObject: file).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test func aProvidersRetryAfterDelaysTheNextAttemptAndIsRecorded() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let standin = try StandinServer()
        try await standin.setFaults([["path": "/v1/chat/completions", "status": 429, "retry_after": 3, "times": 1]])
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "patient",
            arguments: [
                "--queue", "test", "--providers", try Self.providersFile(standin), "--no-cache", "--retry-base", "50ms", "--log-format", "json",
            ]
        )
        defer { worker.kill() }
        var job = chatJob("hello")
        job.model = "chat"
        _ = try await f.queue.push(job)
        #expect(await eventually(timeout: .seconds(30)) { (try? await f.queue.result(of: job.id))?.status == .succeeded }, "\(worker.log)")
        let location = try await f.queue.locate(jobID: job.id)
        let first = try #require(location.attempts.first, "the 429 attempt is in the history")
        #expect(first.outcome == "retried" && first.error?.code == "provider_rate_limited" && first.error?.retryAfter == 3)
        let waited = (location.result?.timings.started ?? 0) - (first.finished ?? .infinity)
        #expect(waited >= 2.9, "the next attempt came no earlier than the provider asked (\(waited) s later), not after the 50 ms backoff")
        #expect(location.result?.attempts == 2)

        // At default level, in JSON: the failed attempt, with the job, the attempt and the target.
        let lines = worker.log.split(separator: "\n").compactMap { try? JSONValue.parse(Array($0.utf8)) }
        #expect(lines.count >= 2 && lines.allSatisfy { $0["ts"] != nil && $0["level"] != nil }, "\(worker.log)")
        let failure = lines.first { $0["message"]?.string?.contains("job \(job.id) attempt 1 of 3 failed at ") == true }
        #expect(failure?["level"]?.string == "warning", "\(worker.log)")
        #expect(
            failure?["message"]?.string?.contains("provider_rate_limited") == true
                && failure?["message"]?.string?.contains("as the provider asked") == true
        )

        // With no attempt left, the dead letter and the result say what the provider asked.
        try await standin.setFaults([["path": "/v1/chat/completions", "status": 429, "retry_after": 120, "times": 1]])
        var last = chatJob("once", maxAttempts: 1)
        last.model = "chat"
        _ = try await f.queue.push(last)
        #expect(await eventually(timeout: .seconds(30)) { (try? await f.queue.result(of: last.id))?.status == .dead })
        #expect(try await f.queue.result(of: last.id)?.error?.retryAfter == 120)
        let letter = try #require(try await f.queue.deadLetters().first { $0.jobID == last.id })
        #expect(letter.reason.contains("the provider asked to retry after 120 s"), "\(letter.reason)")
        #expect(worker.log.contains("dead-lettered at "), "\(worker.log)")
    }

    /// Past the interval's lines, failures are counted, by kind and code, not logged one by one.
    @Test func theFailureLogIsRateLimitedAndCountsWhatItLeavesOut() async throws {
        let captured = CapturedLines()
        let logger = Logger(label: "test") { _ in CapturingHandler(captured: captured) }
        let log = FailureLog(logger: logger, interval: .milliseconds(300), linesPerInterval: 3)
        for i in 0..<10 { log.record(i % 2 == 0 ? .retried : .dead, code: i < 8 ? "provider_unavailable" : "timeout", "failure \(i)") }
        #expect(captured.lines.withLock { $0 } == ["failure 0", "failure 1", "failure 2"])
        try await Task.sleep(for: .milliseconds(350))
        log.flushIfDue()
        let summary = captured.lines.withLock { $0.last } ?? ""
        #expect(summary.hasPrefix("7 more failures not logged in the last"), "\(summary)")
        #expect(summary.contains("retried 3, dead 4") && summary.contains("codes: provider_unavailable 5, timeout 2"), "\(summary)")
        // A new interval logs again.
        log.record(.failed, code: "x", "failure 10")
        #expect(captured.lines.withLock { $0.last } == "failure 10")
        log.flushIfDue()
        #expect(captured.lines.withLock { $0.count } == 5, "nothing left out: no count line")
    }

    /// A refused password will not fix itself: the worker exits (77) instead of looping on warnings.
    @Test func aWorkerRefusedByRedisAuthExits() async throws {
        let server = try RedisServer(arguments: ["--requirepass", "right-password"])
        let (code, output) = try await offThePool {
            try runSwitchyard(
                ["worker", "--executor", "echo", "--redis-url", "redis://:wrong-password@127.0.0.1:\(server.port)"],
                timeout: .seconds(30)
            )
        }
        #expect(code == 77 && output.contains("cannot authenticate to Redis"), "\(output)")
        #expect(!output.contains("wrong-password"), "the password never reaches the log")
    }
}

final class CapturedLines: Sendable {
    let lines = Mutex<[String]>([])
}

struct CapturingHandler: LogHandler {
    let captured: CapturedLines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        captured.lines.withLock { $0.append(event.message.description) }
    }
}
