import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardMetrics
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

/// The OpenAI-compatible adapter against a real llama.cpp server (llama-cpp-python's, with the
/// project's tiny generated model). The answers are gibberish; every step is real inference.
@Suite("Real llama.cpp server", .serialized)
struct LlamaCppTests {
    func provider(_ server: LlamaServer, stream: Bool = false) -> (OpenAICompatibleProvider, HTTPClient) {
        let client = HTTPClient()
        let configuration = ProviderConfiguration(name: "local", kind: .openai, baseURL: server.baseURL, stream: stream)
        return (OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: nil), client)
    }

    @Test func chatStreamingAndModelsOverOnePooledConnection() async throws {
        let server = try await LlamaServer()
        let (local, client) = provider(server)
        defer { client.shutdown() }
        #expect(try await local.models().contains(server.modelPath))
        let messages = [ChatMessage(role: "user", content: "Say hello.")]
        for _ in 0..<3 {
            let output = try await local.chat(model: "tiny", messages: messages, parameters: ["max_tokens": .number(12), "temperature": .number(0)])
            #expect(output.output["content"]?.string != nil)
            // The random model never says stop: max_tokens ends it. (llama-cpp-python counts usage by
            // re-tokenising the text, so completion_tokens need not equal max_tokens.)
            #expect(output.output["finish_reason"] == .string("length"))
            #expect(output.usage?.completionTokens ?? 0 > 0)
            #expect(output.usage?.promptTokens ?? 0 > 0)
        }
        let (streaming, streamClient) = provider(server, stream: true)
        defer { streamClient.shutdown() }
        let pieces = Counter()
        let streamed = try await streaming.chatStreaming(
            model: "tiny",
            messages: messages,
            parameters: ["max_tokens": .number(12), "temperature": .number(0)],
            onDelta: { _ in pieces.increment() }
        )
        #expect(pieces.value > 1)
        // Temperature 0 on the same prompt: streaming and not streaming agree.
        let plain = try await local.chat(model: "tiny", messages: messages, parameters: ["max_tokens": .number(12), "temperature": .number(0)])
        #expect(streamed.output["content"] == plain.output["content"])
        // Connection reuse, from the pool's own counters: four calls, one connection.
        #expect(client.statistics.connectionsOpened == 1)
        #expect(client.statistics.reusedConnections == 4)
    }

    /// Through the executor, a streamed answer records its time to first token beside the call's
    /// whole time, for the worker's metrics.
    @Test func aStreamRecordsItsTimeToFirstToken() async throws {
        let server = try await LlamaServer()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
        try Data(
            """
            {"providers": [{"name": "local", "kind": "openai", "base_url": "\(server.baseURL)", "stream": true}],
             "models": {"tiny": {"provider": "local", "model": "tiny"}}}
            """.utf8
        ).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let client = HTTPClient()
        defer { client.shutdown() }
        let registry = MetricsRegistry()
        let executor = try ProviderExecutor(file: try ProvidersFile.load(path: path), client: client, metrics: registry)
        let job = Job(
            kind: .chat,
            model: "tiny",
            input: JobInput(messages: [ChatMessage(role: "user", content: "Say hello.")], parameters: ["max_tokens": .number(24)])
        )
        _ = try await executor.execute(job, context: JobContext(attempt: 1, workerID: "w"))
        let snapshot = registry.snapshot(worker: "w")
        let first = snapshot.histograms[MetricsRegistry.Key("switchyard_time_to_first_token_seconds", [("target", "local/tiny")])]
        let whole = snapshot.histograms[MetricsRegistry.Key("switchyard_target_call_seconds", [("target", "local/tiny")])]
        #expect(first?.count == 1 && whole?.count == 1)
        // The first token comes before the 24th.
        #expect((first?.max ?? .max) < (whole?.max ?? 0))
    }

    @Test func embeddings() async throws {
        let server = try await LlamaServer(embedding: true)
        let (local, client) = provider(server)
        defer { client.shutdown() }
        let output = try await local.embeddings(model: "tiny", texts: ["first", "second text"])
        let vectors = try #require(output.output.array)
        #expect(vectors.count == 2)
        #expect(vectors.allSatisfy { ($0.array?.count ?? 0) == 64 })
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
