import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

@Suite("Which job parameters the adapters send")
struct ParameterAllowListTests {
    static let key = "sk-or-v1-0123456789abcdef"

    func openai(_ server: StandinServer, client: HTTPClient, stream: Bool = false) -> OpenAICompatibleProvider {
        let configuration = ProviderConfiguration(name: "openrouter", kind: .openai, baseURL: server.baseURL + "/v1", stream: stream)
        return OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: Secret(Self.key))
    }

    func chat(_ parameters: [String: JSONValue]) -> Job {
        Job(kind: .chat, model: "standin-chat", input: JobInput(messages: [ChatMessage(role: "user", content: "hi")], parameters: parameters))
    }

    /// The refusal a provider throws for `job`, or nil when the job ran.
    func refusal(_ provider: any Provider, _ job: Job, model: String = "standin-chat") async -> ProviderError? {
        do {
            _ = try await provider.run(job, model: model)
            return nil
        } catch let error as ProviderError {
            return error.code == .unsupportedParameter ? error : nil
        } catch {
            return nil
        }
    }

    func requests(_ server: StandinServer, _ path: String) async throws -> Int {
        (try await server.stats()["by_path"] as? [String: Int])?[path] ?? 0
    }

    @Test func chatSendsOnlyDocumentedParametersAndNeverItsOwnFields() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        for stream in [false, true] {
            let provider = openai(server, client: client, stream: stream)
            let own = try #require(await refusal(provider, chat(["stream": .bool(true)])))
            #expect(own.message.contains("parameter 'stream'") && own.message.contains("openai"))
            #expect(own.jobFailure.code == "unsupported_parameter" && !own.jobFailure.retryable)
            #expect(await refusal(provider, chat(["stream_options": .object([:])])) != nil)
            #expect(await refusal(provider, chat(["model": .string("openai/gpt-4o")])) != nil)
            #expect(await refusal(provider, chat(["messages": .array([])])) != nil)
            let unknown = try #require(await refusal(provider, chat(["temperature": .number(0), "logit_bias_all": .bool(true)])))
            #expect(unknown.message.contains("parameter 'logit_bias_all' is not supported by the openai adapter for chat jobs"))
            let many = try #require(await refusal(provider, chat(["n": .number(50)])))
            #expect(many.message.contains("'n' must be a whole number from 1 to 8"))
            #expect(await refusal(provider, chat(["n": .number(1.5)])) != nil)
        }
        // None of those reached the provider.
        #expect(try await requests(server, "/v1/chat/completions") == 0)

        // Documented parameters and llama.cpp's extras go through, streaming or not.
        let accepted: [String: JSONValue] = [
            "temperature": .number(0), "max_tokens": .number(16), "n": .number(2), "seed": .number(7), "top_k": .number(40),
            "min_p": .number(0.05), "repeat_penalty": .number(1.1), "mirostat_tau": .number(5), "grammar": .string("root ::= \"a\""),
            "response_format": .object(["type": .string("text")]), "stop": .array([.string("\n")]), "user": .string("u1"),
        ]
        for stream in [false, true] {
            let output = try await openai(server, client: client, stream: stream).run(chat(accepted), model: "standin-chat")
            #expect(output.output["content"] == .string("echo: hi"))
        }
        #expect(try await requests(server, "/v1/chat/completions") == 2)
    }

    @Test func theExecutorFailsTheJobAtOnce() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let file = ProvidersFile(
            providers: [ProviderConfiguration(name: "remote", kind: .openai, baseURL: server.baseURL + "/v1", apiKeyEnv: "K")],
            defaultProvider: "remote"
        )
        let executor = try ProviderExecutor(file: file, client: client, environment: ["K": Self.key])
        await #expect {
            try await executor.execute(chat(["stream": .bool(true)]), context: JobContext(attempt: 1, workerID: "w"))
        } throws: { error in
            guard let failure = error as? JobFailure else { return false }
            return failure.code == "unsupported_parameter" && !failure.retryable && failure.message.contains("'stream'")
                && failure.message.contains("remote") && failure.message.contains("openai")
        }
    }

    @Test func imagesAndEmbeddingsTakeTheirDocumentedParameters() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let provider = openai(server, client: client)
        func image(_ parameters: [String: JSONValue]) -> Job {
            Job(kind: .image, model: "dall-e", input: JobInput(parameters: parameters, prompt: "a cat", size: "512x512", count: 1))
        }
        let accepted = try await provider.run(image(["quality": .string("hd"), "style": .string("vivid"), "user": .string("u")]), model: "dall-e")
        #expect(accepted.output["images"]?.array?.count == 1)
        for own in ["n", "size", "prompt", "model"] {
            let refused = try #require(await refusal(provider, image([own: .number(3)]), model: "dall-e"))
            #expect(refused.message.contains("parameter '\(own)' is set by the openai adapter itself for image jobs"))
        }
        let seed = try #require(await refusal(provider, image(["seed": .number(1)]), model: "dall-e"))
        #expect(seed.message.contains("not supported by the openai adapter for image jobs"))

        func embedding(_ parameters: [String: JSONValue]) -> Job {
            Job(kind: .embedding, model: "standin-embed", input: JobInput(parameters: parameters, texts: ["a", "b c"]))
        }
        let plain = try await provider.run(embedding([:]), model: "standin-embed")
        let short = try await provider.run(embedding(["dimensions": .number(4), "user": .string("u")]), model: "standin-embed")
        #expect(short.output.array?.first?.array?.count == 4)
        // base64 vectors come back as the same numbers (to float32 precision).
        let packed = try await provider.run(embedding(["encoding_format": .string("base64")]), model: "standin-embed")
        let a = plain.output.array?.first?.array?.compactMap(\.number) ?? []
        let b = packed.output.array?.first?.array?.compactMap(\.number) ?? []
        #expect(a.count == 8 && b.count == 8 && zip(a, b).allSatisfy { abs($0 - $1) < 1e-6 })
        #expect(await refusal(provider, embedding(["temperature": .number(0)]), model: "standin-embed") != nil)
        #expect(await refusal(provider, embedding(["input": .string("other")]), model: "standin-embed") != nil)
    }

    @Test func leonardoAndRunwareRefuseOnlyKeysThatReplaceTheirOwnFields() async throws {
        let server = try StandinServer(apiKey: Self.key, leonardoPolls: 1)
        let client = HTTPClient()
        defer { client.shutdown() }
        let leonardo = LeonardoProvider(
            configuration: ProviderConfiguration(name: "leo", kind: .leonardo, baseURL: server.baseURL + "/api/rest/v1", pollIntervalMs: 10),
            client: client,
            apiKey: Secret(Self.key)
        )
        func image(_ parameters: [String: JSONValue], size: String? = "512x512") -> Job {
            Job(kind: .image, model: "m", input: JobInput(parameters: parameters, prompt: "a lighthouse", size: size, count: 1))
        }
        for own in ["prompt", "modelId", "num_images", "width"] {
            let refused = try #require(await refusal(leonardo, image([own: .string("x")]), model: "m"))
            #expect(refused.message.contains("parameter '\(own)' would replace a field the leonardo adapter sets"))
            #expect(refused.jobFailure.code == "unsupported_parameter")
        }
        #expect(try await requests(server, "/api/rest/v1/generations") == 0)
        // Other keys still go through, and width is the job's to give when it has no size.
        let passed = try await leonardo.run(image(["alchemy": .bool(true), "guidance_scale": .number(7)]), model: "m")
        #expect(passed.output["images"]?.array?.count == 1)
        #expect(try await leonardo.run(image(["width": .number(768), "height": .number(512)], size: nil), model: "m").usage?.images == 1)

        let runware = RunwareProvider(
            configuration: ProviderConfiguration(name: "rw", kind: .runware, baseURL: server.baseURL + "/v1"),
            client: client,
            apiKey: Secret(Self.key)
        )
        for own in ["taskType", "taskUUID", "positivePrompt", "model", "numberResults", "height"] {
            let refused = try #require(await refusal(runware, image([own: .string("x")]), model: "runware:100@1"))
            #expect(refused.message.contains("parameter '\(own)' would replace a field the runware adapter sets"))
        }
        #expect(try await requests(server, "/v1") == 0)
        let ran = try await runware.run(image(["steps": .number(4), "negativePrompt": .string("fog")]), model: "runware:100@1")
        #expect(ran.output["images"]?.array?.count == 1)
    }
}
