import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

@Suite("Response size limits through the provider executor")
struct ResponseLimitProviderTests {
    static let key = "sk-or-v1-0123456789abcdef"
    static let mib = 1 << 20

    /// A worker's set-up from a providers file: its http section sets the client's limits.
    func executor(_ server: StandinServer) throws -> (ProviderExecutor, HTTPClient) {
        let text = """
            {"providers": [
               {"name": "plain", "kind": "openai", "base_url": "\(server.baseURL)/v1", "api_key_env": "K"},
               {"name": "streaming", "kind": "openai", "base_url": "\(server.baseURL)/v1", "api_key_env": "K", "stream": true}],
             "models": {"chat-plain": {"provider": "plain", "model": "standin-chat"},
                        "chat-stream": {"provider": "streaming", "model": "standin-chat"}},
             "http": {"max_response_bytes": 1048576, "max_event_bytes": 65536}}
            """
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try ProvidersFile.load(path: path)
        let client = HTTPClient(configuration: try #require(try file.http?.clientConfiguration()))
        return (try ProviderExecutor(file: file, client: client, environment: ["K": Self.key]), client)
    }

    func job(_ model: String) -> Job {
        Job(kind: .chat, model: model, input: JobInput(messages: [ChatMessage(role: "user", content: "hi")]))
    }

    func chatRequests(_ server: StandinServer) async throws -> Int {
        (try await server.stats()["by_path"] as? [String: Int])?["/v1/chat/completions"] ?? 0
    }

    func failure(_ executor: ProviderExecutor, _ job: Job) async -> JobFailure? {
        do {
            _ = try await executor.execute(job, context: JobContext(attempt: 1, workerID: "w"))
            return nil
        } catch {
            return error as? JobFailure
        }
    }

    @Test func anAnswerOverTheLimitFailsTheJobAtOnce() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (executor, client) = try executor(server)
        defer { client.shutdown() }

        try await server.setFaults([["path": "/v1/chat", "body_bytes": 2 * Self.mib, "times": 5]])
        let big = await failure(executor, job("chat-plain"))
        #expect(big?.code == "provider_response_too_large")
        #expect(big?.retryable == false)
        #expect(big?.message.contains("1 MiB (1048576 bytes)") == true)
        #expect(big?.message.contains("http.max_response_bytes") == true)
        #expect(try await chatRequests(server) == 1)  // not retried by the HTTP retry policy either

        try await server.reset()
        try await server.setFaults([["path": "/v1/chat", "gzip_bomb": 32 * Self.mib, "times": 5]])
        let bomb = await failure(executor, job("chat-plain"))
        #expect(bomb?.code == "provider_response_too_large" && bomb?.retryable == false)
        #expect(try await chatRequests(server) == 1)

        try await server.reset()
        try await server.setFaults([["path": "/v1/chat", "sse_event_bytes": 8 * Self.mib, "times": 5]])
        let event = await failure(executor, job("chat-stream"))
        #expect(event?.code == "provider_event_too_large")
        #expect(event?.retryable == false)
        #expect(event?.message.contains("64 KiB (65536 bytes)") == true)
        #expect(event?.message.contains("http.max_event_bytes") == true)
        #expect(try await chatRequests(server) == 1)
    }

    @Test func answersWithinTheLimitsStillSucceed() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (executor, client) = try executor(server)
        defer { client.shutdown() }
        let context = JobContext(attempt: 1, workerID: "w")
        try await server.setFaults([["path": "/v1/chat", "body_bytes": Self.mib - 1000, "times": 1]])
        let plain = try await executor.execute(job("chat-plain"), context: context)
        #expect((plain.output["content"]?.string?.count ?? 0) > Self.mib - 2000)
        try await server.setFaults([["path": "/v1/chat", "gzip_bomb": Self.mib - 1000, "times": 1]])
        let packed = try await executor.execute(job("chat-plain"), context: context)
        #expect((packed.output["content"]?.string?.count ?? 0) > Self.mib - 2000)
        try await server.setFaults([["path": "/v1/chat", "sse_event_bytes": 60_000, "times": 1]])
        let streamed = try await executor.execute(job("chat-stream"), context: context)
        #expect((streamed.output["content"]?.string?.count ?? 0) > 59_000)
        #expect(streamed.output["finish_reason"] == .string("stop"))
    }
}
