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
}
