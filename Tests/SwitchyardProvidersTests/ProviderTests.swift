import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

@Suite("Provider adapters against the stand-in server")
struct ProviderTests {
    static let key = "sk-or-v1-0123456789abcdef"

    func openai(_ server: StandinServer, stream: Bool = false, key: String? = key) -> (OpenAICompatibleProvider, HTTPClient) {
        let client = HTTPClient()
        let configuration = ProviderConfiguration(
            name: "openrouter",
            kind: .openai,
            baseURL: server.baseURL + "/v1",
            maxAttempts: 3,
            stream: stream
        )
        return (OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: key.map(Secret.init)), client)
    }

    func chatJob(_ prompt: String) -> Job {
        Job(
            kind: .chat,
            model: "standin-chat",
            input: JobInput(messages: [ChatMessage(role: "user", content: prompt)], parameters: ["temperature": .number(0)])
        )
    }

    @Test func chatEmbeddingsImagesAndModels() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server)
        defer { client.shutdown() }
        let chat = try await provider.run(chatJob("hello"), model: "standin-chat")
        #expect(chat.output["content"] == .string("echo: hello"))
        #expect(chat.output["finish_reason"] == .string("stop"))
        #expect(chat.usage?.totalTokens == 3)
        let embedded = try await provider.embeddings(model: "standin-embed", texts: ["a", "b c"])
        #expect(embedded.output.array?.count == 2)
        #expect(embedded.output.array?.first?.array?.count == 8)
        let images = try await provider.images(model: "dall-e", prompt: "a cat", size: "512x512", count: 2)
        #expect(images.output["images"]?.array?.count == 2)
        #expect(images.output["images"]?.array?.first?["url"]?.string?.hasPrefix("https://") == true)
        // An image job's parameters reach the provider: here the format of the answer.
        let imageJob = Job(
            kind: .image,
            model: "dall-e",
            input: JobInput(parameters: ["response_format": .string("b64_json")], prompt: "a dog", count: 1)
        )
        let encoded = try await provider.run(imageJob, model: "dall-e")
        #expect(encoded.output["images"]?.array?.first?["b64_json"]?.string == Data("standin image 0".utf8).base64EncodedString())
        let completion = try await provider.completion(model: "standin-chat", prompt: "once")
        #expect(completion.output["text"] == .string("echo: once"))
        #expect(try await provider.models().contains("standin-chat"))
        #expect(client.statistics.connectionsOpened == 1)  // one keep-alive connection for all five calls
    }

    @Test func streamingChatGathersDeltasUntilDone() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server, stream: true)
        defer { client.shutdown() }
        let output = try await provider.run(chatJob("tokens arrive one by one"), model: "standin-chat")
        #expect(output.output["content"] == .string("echo: tokens arrive one by one"))
        #expect(output.usage?.completionTokens == 6)  // "echo:" and five words
    }

    @Test func streamingRetriesAnErrorStatusBeforeTheStream() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server, stream: true)
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/chat", "status": 503, "retry_after_ms": 20, "times": 2]])
        let output = try await provider.run(chatJob("after two 503s"), model: "standin-chat")
        #expect(output.output["content"] == .string("echo: after two 503s"))
        try await server.setFaults([["path": "/v1/chat", "status": 400, "times": 1]])
        await #expect {
            try await provider.run(chatJob("bad"), model: "standin-chat")
        } throws: { error in
            guard let error = error as? ProviderError else { return false }
            return error.code == .badRequest && error.jobFailure.code == "provider_bad_request" && !error.jobFailure.retryable
        }
    }

    @Test func anErrorEventMidStreamIsAnError() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server, stream: true)
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/chat", "stream_error": true, "times": 1]])
        await #expect {
            try await provider.run(chatJob("this stream breaks half way"), model: "standin-chat")
        } throws: { error in
            guard let error = error as? ProviderError else { return false }
            return error.code == .failed && error.message.contains("mid-stream") && error.retryable
        }
    }

    @Test func wrongKeyIsANonRetryableErrorThatNeverShowsTheKey() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let wrong = "sk-or-v1-wrongwrongwrong42"
        let (provider, client) = openai(server, key: wrong)
        defer { client.shutdown() }
        await #expect {
            try await provider.run(chatJob("hi"), model: "standin-chat")
        } throws: { error in
            guard let error = error as? ProviderError else { return false }
            let text = "\(error) \(error.jobFailure)"
            return error.code == .authentication && error.status == 401 && error.providerCode == "invalid_api_key"
                && !error.retryable && !text.contains(wrong) && !text.contains(Self.key)
        }
        #expect("\(Secret(wrong))" == "<redacted>")
        #expect(String(reflecting: Secret(wrong)) == "<redacted>")
    }

    @Test func retriesRateLimitsAndServerErrorsThenMapsWhatRemains() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server)
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/chat", "status": 503, "retry_after_ms": 50, "times": 2]])
        #expect(try await provider.run(chatJob("eventually"), model: "standin-chat").output["content"] == .string("echo: eventually"))
        try await server.setFaults([["path": "/v1/chat", "status": 429, "retry_after_ms": 10, "times": 5]])
        await #expect {
            try await provider.run(chatJob("never"), model: "standin-chat")
        } throws: { error in
            (error as? ProviderError)?.code == .rateLimited && (error as? ProviderError)?.retryable == true
        }
    }

    @Test func malformedAndTruncatedAnswersAreInvalidResponsesOrTransportErrors() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let (provider, client) = openai(server)
        defer { client.shutdown() }
        try await server.setFaults([["path": "/v1/chat", "malformed": true, "times": 1]])
        await #expect {
            try await provider.run(chatJob("x"), model: "standin-chat")
        } throws: { error in
            (error as? ProviderError)?.code == .invalidResponse
        }
        try await server.setFaults([["path": "/v1/chat", "truncate": true, "times": 1]])
        await #expect {
            try await provider.run(chatJob("x"), model: "standin-chat")
        } throws: { error in
            (error as? ProviderError)?.code == .transport
        }
    }

    @Test func leonardoCreatesThenPolls() async throws {
        let server = try StandinServer(apiKey: Self.key, leonardoPolls: 3)
        let client = HTTPClient()
        defer { client.shutdown() }
        let configuration = ProviderConfiguration(
            name: "leonardo",
            kind: .leonardo,
            baseURL: server.baseURL + "/api/rest/v1",
            pollIntervalMs: 20,
            pollTimeoutMs: 5_000
        )
        let leonardo = LeonardoProvider(configuration: configuration, client: client, apiKey: Secret(Self.key))
        let job = Job(kind: .image, model: "leonardo-diffusion", input: JobInput(prompt: "a lighthouse", size: "512x768", count: 2))
        let output = try await leonardo.run(job, model: "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3")
        #expect(output.output["images"]?.array?.count == 2)
        #expect((try await server.stats()["by_path"] as? [String: Int])?.filter { $0.key.hasPrefix("/api/rest/v1/generations/") }.values.first == 3)

        let failing = Job(kind: .image, model: "m", input: JobInput(prompt: "please fail"))
        await #expect {
            try await leonardo.run(failing, model: "m")
        } throws: { error in
            (error as? ProviderError)?.code == .failed
        }
        var impatient = configuration
        impatient.pollTimeoutMs = 30
        let slowServer = try StandinServer(apiKey: Self.key, leonardoPolls: 1000)
        impatient.baseURL = slowServer.baseURL + "/api/rest/v1"
        let timedOut = LeonardoProvider(configuration: impatient, client: client, apiKey: Secret(Self.key))
        await #expect {
            try await timedOut.run(job, model: "m")
        } throws: { error in
            (error as? ProviderError)?.code == .timeout
        }
    }

    @Test func runwareTaskAPI() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let configuration = ProviderConfiguration(name: "runware", kind: .runware, baseURL: server.baseURL + "/v1")
        let runware = RunwareProvider(configuration: configuration, client: client, apiKey: Secret(Self.key))
        let job = Job(kind: .image, model: "runware:100@1", input: JobInput(prompt: "a harbour", size: "512x512", count: 3))
        let output = try await runware.run(job, model: "runware:100@1")
        #expect(output.output["images"]?.array?.count == 3)
        let denied = RunwareProvider(configuration: configuration, client: client, apiKey: Secret("bad-key-123456789"))
        await #expect {
            try await denied.run(job, model: "runware:100@1")
        } throws: { error in
            (error as? ProviderError)?.code == .authentication && (error as? ProviderError)?.providerCode == "invalidApiKey"
        }
    }

    @Test func executorRoutesModelsAndMapsFailures() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let file = ProvidersFile(
            providers: [ProviderConfiguration(name: "remote", kind: .openai, baseURL: server.baseURL + "/v1", apiKeyEnv: "TEST_KEY")],
            models: ["qwen3-30b": .init(provider: "remote", model: "standin-chat")]
        )
        let executor = try ProviderExecutor(file: file, client: client, environment: ["TEST_KEY": Self.key])
        let context = JobContext(attempt: 1, workerID: "w")
        var job = chatJob("routed")
        job.model = "qwen3-30b"
        #expect(try await executor.execute(job, context: context).output["content"] == .string("echo: routed"))
        job.model = "unknown-model"
        await #expect {
            try await executor.execute(job, context: context)
        } throws: { error in
            (error as? JobFailure)?.code == "no_provider" && (error as? JobFailure)?.retryable == false
        }
        #expect {
            try ProviderExecutor(file: file, client: client, environment: [:])
        } throws: { error in
            "\(error)".contains("TEST_KEY")
        }
    }
}
