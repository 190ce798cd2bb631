import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardTestSupport
import Testing

/// `push` for scripts: the batch id on standard output, `--json`, and exit statuses that say how
/// the jobs ended.
@Suite("Push for scripts", .serialized)
struct PushScriptingTests {
    @Test func pushPrintsTheBatchAndExitsByOutcome() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("push-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try """
        {"model": "echo", "prompt": "fine"}
        {"model": "echo", "prompt": "broken", "metadata": {"echo.fail": "fatal"}}

        """.write(to: file, atomically: true, encoding: .utf8)

        // Without --wait: the batch id alone on a line (standard output), or one JSON object.
        let plain = try WorkerControlTests.cli(f, ["push", "--file", file.path, "--batch", "b-plain"])
        #expect(plain.code == 0 && plain.output.split(separator: "\n").contains("b-plain"), "\(plain.output)")
        let json = try WorkerControlTests.cli(f, ["push", "--file", file.path, "--batch", "b-json", "--json"])
        let line = try #require(json.output.split(separator: "\n").first { $0.hasPrefix("{") }, "\(json.output)")
        let object = try JSONValue.parse(Array(line.utf8)).object ?? [:]
        #expect(object["batch"]?.string == "b-json" && object["jobs"]?.array?.count == 2 && object["pushed"]?.integer == 2)

        // With --wait: 5 when every job finished and one did not succeed; 0 when all succeeded;
        // 3 when the wait timed out.
        let worker = try WorkerProcess(redisURL: f.server.url, id: "pusher", arguments: ["--queue", "test", "--executor", "echo"])
        defer { _ = worker.terminate() }
        let mixed = try WorkerControlTests.cli(f, ["push", "--file", file.path, "--batch", "b-mixed", "--wait", "--wait-timeout", "30"])
        #expect(mixed.code == 5 && mixed.output.contains("1 of 2 jobs did not succeed (failed 1)"), "\(mixed.output)")
        let good = try WorkerControlTests.cli(f, ["push", "--model", "echo", "--prompt", "fine", "--wait", "--wait-timeout", "30"])
        #expect(good.code == 0 && good.output.contains("\"status\":\"succeeded\""), "\(good.output)")
        try #"{"model": "echo", "prompt": "slow", "metadata": {"echo.sleep_ms": "3000"}}"#.write(to: file, atomically: true, encoding: .utf8)
        let slow = try WorkerControlTests.cli(f, ["push", "--file", file.path, "--wait", "--wait-timeout", "0.5"])
        #expect(slow.code == 3 && slow.output.contains("gave up waiting"), "\(slow.output)")
    }

    /// A three-second Redis restart (the data kept in an AOF) does not end `push --wait`: it says
    /// Redis is gone, reconnects, and writes every result once the workers, who rode it out too,
    /// have finished.
    @Test func aWaitingPushRidesOutARedisRestart() async throws {
        let f = try QueueFixture(serverArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "rider", arguments: ["--queue", "test", "--executor", "echo"])
        defer { _ = worker.terminate() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("push-\(UUID().uuidString).jsonl")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString).jsonl")
        defer { for url in [file, out] { try? FileManager.default.removeItem(at: url) } }
        try (0..<4).map { #"{"model": "echo", "prompt": "job \#($0)", "metadata": {"echo.sleep_ms": "800"}}"# }.joined(separator: "\n")
            .write(to: file, atomically: true, encoding: .utf8)
        let push = try RunningCommand([
            "push", "--file", file.path, "--batch", "b-outage", "--wait", "--wait-timeout", "60", "--out", out.path,
            "--redis-url", f.server.url, "--queue", "test",
        ])
        #expect(await eventually { (try? await f.queue.batchProgress("b-outage").total) == 4 })
        f.server.stop()
        try await Task.sleep(for: .seconds(3))
        try f.server.restart()
        let code = push.stop(0, timeout: .seconds(60))  // signal 0: only wait
        #expect(code == 0, "\(push.output)")
        #expect(push.output.contains("Redis unreachable") && push.output.contains("Redis is back after"), "\(push.output)")
        let lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 4 && lines.allSatisfy { $0.contains(#""status":"succeeded""#) }, "\(lines)")
    }

    /// Whatever ends the wait, `--out` is written: Ctrl-C writes what is final and `pending` for
    /// the rest, says how to fetch the results later and exits 130; a timeout does the same with 3.
    @Test func anInterruptedOrTimedOutWaitStillWritesItsResults() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let worker = try WorkerProcess(redisURL: f.server.url, id: "slowpoke", arguments: ["--queue", "test", "--executor", "echo"])
        defer { worker.kill() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("push-\(UUID().uuidString).jsonl")
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("out-\(UUID().uuidString).jsonl")
        defer { for url in [file, out] { try? FileManager.default.removeItem(at: url) } }
        try """
        {"model": "echo", "prompt": "quick"}
        {"model": "echo", "prompt": "slow", "metadata": {"echo.sleep_ms": "10000"}}
        """.write(to: file, atomically: true, encoding: .utf8)
        let push = try RunningCommand([
            "push", "--file", file.path, "--batch", "b-int", "--wait", "--out", out.path, "--redis-url", f.server.url, "--queue", "test",
        ])
        #expect(await eventually { (try? await f.queue.batchProgress("b-int").succeeded) == 1 })
        #expect(push.stop(SIGINT, timeout: .seconds(20)) == 130, "\(push.output)")
        #expect(push.output.contains("interrupted: the jobs keep running") && push.output.contains("switchyard results b-int --queue test"))
        var lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2 && lines[0].contains(#""status":"succeeded""#) && lines[1].contains(#""status":"pending""#), "\(lines)")

        let timedOut = try WorkerControlTests.cli(
            f,
            ["push", "--file", file.path, "--batch", "b-int", "--wait", "--wait-timeout", "1", "--out", out.path]
        )
        #expect(timedOut.code == 3 && timedOut.output.contains("(1 pending)"), "\(timedOut.output)")
        lines = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2 && lines[1].contains(#""status":"pending""#), "\(lines)")
    }
}
