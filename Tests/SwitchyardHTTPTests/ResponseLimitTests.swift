import Foundation
import SwitchyardHTTP
import SwitchyardTestSupport
import Testing

@Suite("Response size limits against the stand-in server")
struct ResponseLimitTests {
    static let mib = 1 << 20

    func client(maxBody: Int = 1 << 20, maxEvent: Int = 64 << 10) -> HTTPClient {
        HTTPClient(configuration: HTTPClientConfiguration(maxResponseBodyBytes: maxBody, maxEventBytes: maxEvent))
    }

    /// What the stand-in wrote for its last sized fault, once it has finished writing (because
    /// the body was all sent or because the client went away).
    func lastFaultBody(_ server: StandinServer) async throws -> (sent: Int, broken: Bool) {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if let record = try await server.stats()["last_fault_body"] as? [String: Any], record["finished"] as? Bool == true {
                return (record["bytes_sent"] as? Int ?? -1, record["broken"] as? Bool ?? false)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("the stand-in did not finish writing its fault body")
        return (-1, false)
    }

    func chatRequest(_ server: StandinServer) -> HTTPRequest {
        let body = #"{"model":"standin-chat","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        return HTTPRequest(
            method: "POST",
            url: server.baseURL + "/v1/chat/completions",
            headers: [("Content-Type", "application/json"), ("Accept", "text/event-stream")],
            body: Array(body.utf8)
        )
    }

    @Test func theDefaultsAre64MiBAnd1MiB() {
        let configuration = HTTPClientConfiguration()
        #expect(configuration.maxResponseBodyBytes == 64 * Self.mib)
        #expect(configuration.maxEventBytes == Self.mib)
    }

    @Test func aBodyOverTheLimitIsStoppedNotBuffered() async throws {
        let server = try StandinServer()
        let client = client()
        defer { client.shutdown() }
        // 256 MiB announced; the client may keep 1 MiB.
        try await server.setFaults([["path": "/v1/models", "body_bytes": 256 * Self.mib, "times": 1]])
        let url = "http://user:hunter2@127.0.0.1:\(server.port)/v1/models?key=secret-in-query"
        await #expect {
            try await client.execute(HTTPRequest(url: url))
        } throws: { error in
            guard let error = error as? HTTPClientError else { return false }
            return error.code == .responseTooLarge && error.message.contains("1 MiB (1048576 bytes)")
                && error.message.contains("GET http://127.0.0.1:\(server.port)/v1/models") && !error.message.contains("secret-in-query")
                && !error.message.contains("hunter2")
        }
        // The transfer was stopped: the stand-in could write only about what the socket buffers
        // hold beyond the limit before the connection was closed under it, not the whole body.
        let written = try await lastFaultBody(server)
        #expect(written.broken)
        #expect(written.sent < 32 * Self.mib, "the stand-in wrote \(written.sent) bytes")
        #expect(client.statistics.inFlight == 0)

        // A streamed body is held to the same limit: what arrives never passes it.
        try await server.setFaults([["path": "/v1/models", "body_bytes": 256 * Self.mib, "times": 1]])
        let response = try await client.stream(HTTPRequest(url: server.baseURL + "/v1/models"))
        var received = 0
        await #expect {
            for try await chunk in response.body { received += chunk.count }
        } throws: { error in
            (error as? HTTPClientError)?.code == .responseTooLarge
        }
        #expect(received <= Self.mib)
        #expect(try await lastFaultBody(server).sent < 32 * Self.mib)

        // The client goes on working.
        #expect(try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models")).status == 200)
    }

    @Test func aGzipBombIsCountedAfterDecoding() async throws {
        let server = try StandinServer()
        let client = client()
        defer { client.shutdown() }
        // 16 MiB of JSON that gzip packs into about 16 KB, far below the 1 MiB limit on the wire.
        try await server.setFaults([["path": "/v1/models", "gzip_bomb": 16 * Self.mib, "times": 1]])
        await #expect {
            try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        } throws: { error in
            guard let error = error as? HTTPClientError else { return false }
            return error.code == .responseTooLarge && error.message.contains("after decoding")
        }
        let written = try await lastFaultBody(server)
        #expect(written.sent < 64 << 10, "the bomb should be a few KB on the wire, was \(written.sent) bytes")
    }

    @Test func anEnormousServerSentEventLineIsStopped() async throws {
        let server = try StandinServer()
        let client = client(maxBody: 64 * Self.mib, maxEvent: 64 << 10)
        defer { client.shutdown() }
        // One data line of 48 MiB: under the body limit, far over the 64 KiB event limit.
        try await server.setFaults([["path": "/v1/chat/completions", "sse_event_bytes": 48 * Self.mib, "times": 1]])
        let response = try await client.stream(chatRequest(server))
        #expect(response.head.status == 200)
        var events = 0
        await #expect {
            for try await _ in response.events { events += 1 }
        } throws: { error in
            guard let error = error as? HTTPClientError else { return false }
            return error.code == .eventTooLarge && error.message.contains("64 KiB (65536 bytes)")
                && error.message.contains("POST http://127.0.0.1:\(server.port)/v1/chat/completions")
        }
        #expect(events == 0)
        let written = try await lastFaultBody(server)
        #expect(written.broken)
        #expect(written.sent < 24 * Self.mib, "the stand-in wrote \(written.sent) bytes")
        let deadline = ContinuousClock.now + .seconds(5)
        while client.statistics.inFlight > 0 && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(client.statistics.inFlight == 0)
    }

    @Test func bodiesAndEventsWithinTheLimitsStillArrive() async throws {
        let server = try StandinServer()
        let client = client()
        defer { client.shutdown() }
        // Exactly at the limit, plain and gzipped.
        try await server.setFaults([["path": "/v1/models", "body_bytes": Self.mib, "times": 1]])
        let plain = try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        #expect(plain.status == 200 && plain.body.count == Self.mib)
        #expect((try JSONSerialization.jsonObject(with: Data(plain.body)) as? [String: Any])?["id"] as? String == "chatcmpl-big")
        try await server.setFaults([["path": "/v1/models", "gzip_bomb": Self.mib, "times": 1]])
        let unpacked = try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        #expect(unpacked.status == 200 && unpacked.body.count == Self.mib)
        #expect(unpacked.header("content-encoding") == "gzip")
        // One byte more is refused.
        try await server.setFaults([["path": "/v1/models", "body_bytes": Self.mib + 1, "times": 1]])
        await #expect {
            try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        } throws: { error in
            (error as? HTTPClientError)?.code == .responseTooLarge
        }
        // An event of 60 KB, under the 64 KiB event limit.
        try await server.setFaults([["path": "/v1/chat/completions", "sse_event_bytes": 60_000, "times": 1]])
        var sizes: [Int] = []
        for try await event in try await client.stream(chatRequest(server)).events { sizes.append(event.data.utf8.count) }
        #expect(sizes.count == 3)  // the padded event, the finish, [DONE]
        #expect(sizes.first == 60_000 - "data: ".count - 2)
    }
}
