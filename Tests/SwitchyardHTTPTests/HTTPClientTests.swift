import Foundation
import SwitchyardHTTP
import SwitchyardTestSupport
import Testing

@Suite("Pooled HTTP client against the stand-in server")
struct HTTPClientTests {
    static let key = "sk-test-9f8e7d6c5b4a"

    func chatRequest(
        _ server: StandinServer,
        stream: Bool = false,
        prompt: String = "hello there",
        timeout: Duration = .seconds(30)
    )
        -> HTTPRequest
    {
        let body = #"{"model":"standin-chat","stream":\#(stream),"messages":[{"role":"user","content":"\#(prompt)"}]}"#
        return HTTPRequest(
            method: "POST",
            url: server.baseURL + "/v1/chat/completions",
            headers: [("Authorization", "Bearer \(Self.key)"), ("Content-Type", "application/json")],
            body: Array(body.utf8),
            timeout: timeout
        )
    }

    @Test func reusesOneKeepAliveConnection() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        for i in 0..<20 {
            let response = try await client.execute(chatRequest(server, prompt: "n\(i)"))
            #expect(response.status == 200)
            let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
            let message = ((json?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
            #expect(message == "echo: n\(i)")
        }
        let stats = client.statistics
        #expect(stats.connectionsOpened == 1)
        #expect(stats.reusedConnections == 19)
        #expect(stats.completed == 20 && stats.inFlight == 0)
    }

    @Test func boundsConnectionsPerHost() async throws {
        let server = try StandinServer()
        let client = HTTPClient(configuration: HTTPClientConfiguration(maxConnectionsPerHost: 2))
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/models", "latency_ms": 150, "times": 8]])
        try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 { group.addTask { try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models")).status } }
            for try await status in group { #expect(status == 200) }
        }
        #expect(client.statistics.connectionsOpened == 2)
    }

    @Test func decodesGzip() async throws {
        let server = try StandinServer()
        let client = HTTPClient()
        defer { client.shutdown() }
        let response = try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]
        #expect((json?["data"] as? [Any])?.count == 22)
        #expect(try await server.stats()["gzip_responses"] as? Int == 1)
    }

    @Test func streamsServerSentEventsIgnoringKeepAlives() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let response = try await client.stream(chatRequest(server, stream: true, prompt: "one two three"))
        #expect(response.head.status == 200)
        #expect(response.head.header("content-type") == "text/event-stream")
        var text = ""
        var sawDone = false
        for try await event in response.events {
            if event.data == "[DONE]" {
                sawDone = true
                break
            }
            let json = try JSONSerialization.jsonObject(with: Data(event.data.utf8)) as? [String: Any]
            let delta = (json?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]
            text += delta?["content"] as? String ?? ""
        }
        #expect(sawDone)
        #expect(text == "echo: one two three")
    }

    @Test func slowStreamArrivesPieceByPiece() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        // Events came as they were written (500 ms apart), not all together at the end: at least
        // one clear gap between arrivals. A test machine busy enough to starve this task for the
        // whole stream bunches them all; a client that buffers the stream bunches them every
        // time, so up to three tries tell the two apart.
        var tries: [[Duration]] = []
        for _ in 0..<3 {
            try await server.setFaults([["path": "/v1/chat/completions", "slow_stream_ms": 500, "times": 1]])
            let clock = ContinuousClock()
            let start = clock.now
            let response = try await client.stream(chatRequest(server, stream: true, prompt: "a b c d"))
            var arrivals: [Duration] = []
            for try await event in response.events where event.data != "[DONE]" { arrivals.append(clock.now - start) }
            #expect(arrivals.count == 6)
            tries.append(arrivals)
            if zip(arrivals.dropFirst(), arrivals).contains(where: { $0 - $1 >= .milliseconds(250) }) { break }
        }
        let gaps = zip(tries.last!.dropFirst(), tries.last!).filter { $0 - $1 >= .milliseconds(250) }.count
        #expect(gaps >= 1, "arrivals: \(tries)")
    }

    @Test func cancellationStopsATransferAtOnce() async throws {
        let server = try StandinServer()
        let client = HTTPClient()
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/models", "latency_ms": 10_000, "times": 1]])
        let task = Task { try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models")) }
        while client.statistics.inFlight == 0 { try await Task.sleep(for: .milliseconds(5)) }
        task.cancel()
        let outcome = await task.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(client.statistics.inFlight == 0)
        // The client keeps working.
        #expect(try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models")).status == 200)
    }

    @Test func timeoutIsAnErrorThatSaysSo() async throws {
        let server = try StandinServer()
        let client = HTTPClient()
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/models", "latency_ms": 3000, "times": 1]])
        await #expect {
            try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models?key=secret-in-query", timeout: .milliseconds(300)))
        } throws: { error in
            guard let error = error as? HTTPClientError else { return false }
            return error.code == .timeout && error.mayHaveReachedServer && !error.message.contains("secret-in-query")
        }
    }

    @Test func refusedResetAndTruncatedConnections() async throws {
        let server = try StandinServer()
        let client = HTTPClient()
        defer { client.shutdown() }
        let closedPort = try RedisServer.freePort()
        await #expect {
            try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(closedPort)/"))
        } throws: { error in
            (error as? HTTPClientError)?.code == .connectFailed && (error as? HTTPClientError)?.mayHaveReachedServer == false
        }
        try await server.setFaults([
            ["path": "/v1/models", "reset": true, "times": 1]
        ])
        await #expect {
            try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        } throws: { error in
            (error as? HTTPClientError)?.code == .connectionLost
        }
        try await server.setFaults([["path": "/v1/models", "truncate": true, "times": 1]])
        await #expect {
            try await client.execute(HTTPRequest(url: server.baseURL + "/v1/models"))
        } throws: { error in
            (error as? HTTPClientError)?.code == .connectionLost
        }
    }

    @Test func retriesHonourRetryAfterAndGiveUpPastTheCeiling() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let policy = RetryPolicy(maxAttempts: 4, base: .milliseconds(50), cap: .seconds(1), maxRetryAfter: .seconds(5))
        try await server.setFaults([["path": "/v1/chat", "status": 429, "retry_after": 1, "times": 1]])
        let clock = ContinuousClock()
        let start = clock.now
        let response = try await client.execute(chatRequest(server), retry: policy)
        #expect(response.status == 200)
        #expect(clock.now - start >= .seconds(1))

        try await server.setFaults([["path": "/v1/chat", "status": 500, "times": 2]])
        let before = try await server.stats()["requests"] as? Int ?? 0
        #expect(try await client.execute(chatRequest(server), retry: policy).status == 200)
        let after = try await server.stats()["requests"] as? Int ?? 0
        #expect(after - before == 4)  // 3 attempts + this stats call

        try await server.setFaults([["path": "/v1/chat", "status": 429, "retry_after": 120, "times": 1]])
        let refused = try await client.execute(chatRequest(server), retry: policy)
        #expect(refused.status == 429)
        #expect(refused.giveUpReason?.contains("ceiling") == true)
    }
}
