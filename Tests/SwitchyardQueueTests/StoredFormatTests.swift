import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Testing

/// Results that Lua writes (a lease run out on the last attempt, a cancel) have exactly the form
/// the one JSON writer gives them: the same fields, the same format version.
@Suite("Stored formats written by scripts")
struct StoredFormatTests {
    /// The field names of a JSON object, nested ones as `outer.inner`.
    static func fieldPaths(_ value: JSONValue, prefix: String = "") -> Set<String> {
        guard let object = value.object else { return [] }
        var paths: Set<String> = []
        for (key, inner) in object {
            paths.insert(prefix + key)
            if inner.object != nil && key != "output" && key != "metadata" { paths.formUnion(fieldPaths(inner, prefix: prefix + key + ".")) }
        }
        return paths
    }

    static func stored(_ f: QueueFixture, _ id: String) async throws -> JSONValue {
        let bytes = try #require(try await f.pool.send("GET", f.queue.keys.result(id)).bytes)
        return try JSONValue.parse(bytes)
    }

    @Test func aLeaseExpiredResultHasTheWritersForm() async throws {
        let f = try QueueFixture { $0.lease = .milliseconds(200) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("lost", maxAttempts: 1)
        job.batch = "b"
        _ = try await f.queue.push(job)
        _ = try await f.queue.take(consumer: "gone", count: 1)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await f.queue.reclaimExpired(consumer: "reaper").dead == 1)
        let json = try await Self.stored(f, job.id)
        let result = try JobResult(json: json.jsonBytes)
        let expected = JobResult(
            id: job.id,
            status: .dead,
            attempts: 1,
            timings: .init(finished: result.timings.finished),
            error: .init(code: "lease_expired", message: "lease expired on attempt 1 of 1 (worker lost)"),
            batch: "b"
        )
        #expect(result == expected)
        #expect(Self.fieldPaths(json) == Self.fieldPaths(try JSONValue.parse(expected.encodedJSON())))
        #expect(abs((result.timings.finished ?? 0) - Date().timeIntervalSince1970) < 60)
    }

    @Test func aCancelledResultHasTheWritersForm() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        var job = chatJob("cancel me")
        job.batch = "b"
        _ = try await f.queue.push(job)
        #expect(try await f.queue.cancel(jobID: job.id) == .cancelled)
        let json = try await Self.stored(f, job.id)
        let result = try JobResult(json: json.jsonBytes)
        let expected = JobResult(
            id: job.id,
            status: .cancelled,
            attempts: 0,
            timings: .init(finished: result.timings.finished),
            error: .init(code: "cancelled", message: "cancelled by request"),
            batch: "b"
        )
        #expect(result == expected)
        #expect(Self.fieldPaths(json) == Self.fieldPaths(try JSONValue.parse(expected.encodedJSON())))
    }
}
