import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// `switchyard job <id>` and unknown ids: where a job is, what it carries, how it ended.
@Suite("Job inspection", .serialized)
struct JobInspectionTests {
    @Test func jobSaysWhereAJobIsAtEveryStage() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let slow = chatJob("slow", metadata: ["echo.sleep_ms": "2500", "api_token": "sekrit-value"])
        let others = [chatJob("two"), chatJob("three")]
        var later = chatJob("later")
        later.notBefore = Date().timeIntervalSince1970 + 600
        _ = try await f.queue.push([slow] + others + [later])

        // No worker yet: waiting, in order; the delayed one until its time.
        let third = try WorkerControlTests.cli(f, ["job", others[1].id])
        #expect(third.code == 0 && third.output.contains("waiting on lane default, position 3 (attempt 1 of 3)"), "\(third.output)")
        let delayed = try WorkerControlTests.cli(f, ["job", later.id, "--json"])
        let delayedObject = try JSONValue.parse(Array(delayed.output.utf8)).object ?? [:]
        #expect(delayedObject["state"]?.string == "delayed" && delayedObject["lane"]?.string == "default", "\(delayed.output)")
        #expect(abs((delayedObject["due"]?.number ?? 0) - later.notBefore!) < 1)

        // Running on a worker (one slot): the slow job; the next waits at position 1.
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "inspector",
            arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "1"]
        )
        defer { _ = worker.terminate() }
        var running = (code: Int32(-1), output: "")
        #expect(
            try await eventually(timeout: .seconds(10)) {
                running = try WorkerControlTests.cli(f, ["job", slow.id])
                return running.output.contains("running on inspector")
            },
            "\(running.output)"
        )
        #expect(running.output.contains("\"api_token\":\"***\"") && !running.output.contains("sekrit-value"), "\(running.output)")
        #expect(try WorkerControlTests.cli(f, ["job", others[0].id]).output.contains("position 1"))

        // Finished: the result, redacted as well.
        #expect(try await eventually(timeout: .seconds(20)) { try await f.queue.result(of: slow.id) != nil })
        let done = try WorkerControlTests.cli(f, ["job", slow.id])
        #expect(done.code == 0 && done.output.contains("succeeded by inspector after 1 attempt"), "\(done.output)")
        #expect(!done.output.contains("sekrit-value"), "\(done.output)")
    }

    @Test func unknownIdsAreUnknownWithExitFourEverywhere() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let queued = chatJob("queued")
        _ = try await f.queue.push(queued)
        for command in [["job", "no-such-job"], ["results", "no-such-job"], ["cancel", "no-such-job"]] {
            let out = try WorkerControlTests.cli(f, command)
            #expect(out.code == 4, "\(command): \(out.code) \(out.output)")
        }
        let results = try WorkerControlTests.cli(f, ["results", "no-such-job"])
        #expect(results.output.contains("\"status\":\"unknown\"") && !results.output.contains("pending"), "\(results.output)")
        // A known job without a result is pending, exit 0; also when its record expired while it waited.
        let pending = try WorkerControlTests.cli(f, ["results", queued.id])
        #expect(pending.code == 0 && pending.output.contains("\"status\":\"pending\""), "\(pending.output)")
        _ = try await f.pool.send("DEL", f.queue.keys.job(queued.id))
        let stillPending = try WorkerControlTests.cli(f, ["results", queued.id])
        #expect(stillPending.code == 0 && stillPending.output.contains("\"status\":\"pending\""), "\(stillPending.output)")
        #expect(try WorkerControlTests.cli(f, ["job", queued.id]).output.contains("waiting on lane default, position 1"))
    }

    /// Ids with glob characters are found in the delayed set; redaction hides secrets by name and
    /// leaves counts such as `max_tokens` alone.
    @Test func oddIdsAndRedaction() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        var odd = chatJob("odd", metadata: ["x-api-key": "hidden-1", "refresh_token": "hidden-2", "note": "visible"])
        odd.id = "a[1]*?"
        odd.notBefore = Date().timeIntervalSince1970 + 600
        _ = try await f.queue.push(odd)
        let out = try WorkerControlTests.cli(f, ["job", odd.id, "--json"])
        let object = try JSONValue.parse(Array(out.output.utf8)).object ?? [:]
        #expect(object["state"]?.string == "delayed", "\(out.output)")
        #expect(!out.output.contains("hidden-1") && !out.output.contains("hidden-2") && out.output.contains("visible"), "\(out.output)")
    }
}
