import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardResilience

/// The OpenAI-compatible API: OpenRouter, llama.cpp's llama-server and llama-cpp-python's server,
/// mlx_lm.server, vLLM, Ollama's /v1.
public struct OpenAICompatibleProvider: Provider {
    public let name: String
    let transport: ProviderTransport

    public init(configuration: ProviderConfiguration, client: HTTPClient, apiKey: Secret?) {
        self.name = configuration.name
        self.transport = ProviderTransport(name: configuration.name, configuration: configuration, client: client, apiKey: apiKey)
    }

    public func run(_ job: Job, model: String) async throws -> JobOutput {
        switch job.kind {
        case .chat:
            let messages = job.input.messages ?? []
            return transport.configuration.stream
                ? try await chatStreaming(model: model, messages: messages, parameters: job.input.parameters ?? [:])
                : try await chat(model: model, messages: messages, parameters: job.input.parameters ?? [:])
        case .embedding:
            return try await embeddings(model: model, texts: job.input.texts ?? [], parameters: job.input.parameters ?? [:])
        case .image:
            return try await images(
                model: model,
                prompt: job.input.prompt ?? "",
                size: job.input.size,
                count: job.input.count ?? 1,
                parameters: job.input.parameters ?? [:]
            )
        }
    }

    static func chatBody(model: String, messages: [ChatMessage], parameters: [String: JSONValue], stream: Bool) -> JSONValue {
        var body = parameters
        body["model"] = .string(model)
        body["messages"] = .array(messages.map { .object(["role": .string($0.role), "content": .string($0.content)]) })
        if stream {
            body["stream"] = .bool(true)
            body["stream_options"] = .object(["include_usage": .bool(true)])
        }
        return .object(body)
    }

    /// POST /chat/completions. `parameters` must be documented chat parameters (see
    /// `ProviderParameters.openAIChat`); any other key throws `unsupportedParameter` first.
    public func chat(model: String, messages: [ChatMessage], parameters: [String: JSONValue] = [:]) async throws -> JobOutput {
        try ProviderParameters.checkOpenAIChat(parameters, provider: name)
        let reply = try await transport.json(
            transport.request(
                "POST",
                "/chat/completions",
                body: Self.chatBody(model: model, messages: messages, parameters: parameters, stream: false)
            )
        )
        guard let choice = reply["choices"]?.array?.first, let message = choice["message"] else {
            throw ProviderError(.invalidResponse, "chat completion without choices[0].message", provider: name)
        }
        var output: [String: JSONValue] = [
            "role": message["role"] ?? .string("assistant"),
            "content": message["content"] ?? .string(""),
        ]
        if let reason = choice["finish_reason"], reason != .null { output["finish_reason"] = reason }
        if let served = reply["model"] { output["model"] = served }
        return JobOutput(output: .object(output), usage: Self.usage(reply["usage"]))
    }

    /// POST /chat/completions with stream: true, gathering the deltas. `onDelta` sees each piece
    /// of text as it arrives. A `[DONE]` ends the stream; an error event in it throws.
    public func chatStreaming(
        model: String,
        messages: [ChatMessage],
        parameters: [String: JSONValue] = [:],
        onDelta: @Sendable (String) -> Void = { _ in }
    ) async throws -> JobOutput {
        try ProviderParameters.checkOpenAIChat(parameters, provider: name)
        var request = transport.request(
            "POST",
            "/chat/completions",
            body: Self.chatBody(model: model, messages: messages, parameters: parameters, stream: true)
        )
        request.headers.removeAll { $0.name == "Accept" }
        request.headers.append(("Accept", "text/event-stream"))
        let policy = transport.configuration.retryPolicy
        // Inside a chain, each attempt is admitted by the target's breaker and rate limit, and
        // its outcome recorded (a 2xx stream's once it has ended).
        let call = TargetCall.current
        var attempt = 1
        var response: HTTPStreamingResponse
        // The attempt in progress, until its outcome is recorded.
        var open: TargetCall.Ticket?
        // When the answer began: a stream's slowness is measured to there.
        var answeredAt: ContinuousClock.Instant?
        func end(_ outcome: CallOutcome) async {
            if let call, let ticket = open { await call.end(ticket, outcome, answeredAt: answeredAt) }
            open = nil
        }
        do {
            while true {
                open = try await call?.begin()
                do {
                    response = try await transport.client.stream(request)
                    if (200..<300).contains(response.head.status) { break }
                    // An error status arrives before any event: read its body, and retry as for
                    // non-streaming calls (429, 5xx, honouring Retry-After).
                    var raw: [UInt8] = []
                    for try await chunk in response.body { raw += chunk }
                    if let call { await end(call.outcome(head: response.head, error: nil)) }
                    switch policy.decide(attempt: attempt, request: request, response: response.head, error: nil) {
                    case .retry(let delay):
                        if let call { try await call.pause(delay) } else { try await Task.sleep(for: delay) }
                        attempt += 1
                        continue
                    case .giveUp(let reason):
                        throw transport.errorFrom(
                            status: response.head.status,
                            body: try? JSONValue.parse(raw),
                            raw: raw,
                            note: reason,
                            head: response.head
                        )
                    case .done:
                        throw transport.errorFrom(status: response.head.status, body: try? JSONValue.parse(raw), raw: raw, head: response.head)
                    }
                } catch let error as HTTPClientError {
                    if let call { await end(call.outcome(head: nil, error: error)) }
                    switch policy.decide(attempt: attempt, request: request, response: nil, error: error) {
                    case .retry(let delay):
                        if let call { try await call.pause(delay) } else { try await Task.sleep(for: delay) }
                        attempt += 1
                    default:
                        throw ProviderError.from(error, provider: name)
                    }
                }
            }
            // Headers come before the model starts: the first event is when the answer began.
            let output = try await gather(response, onDelta: onDelta, firstEventAt: &answeredAt)
            await end(.success)
            return output
        } catch let error as ProviderError {
            if let call, open != nil {
                // A 2xx stream broke or said it failed.
                let broken = error.code == .transport || error.code == .timeout
                await end(
                    broken
                        ? call.outcome(
                            head: nil,
                            error: HTTPClientError(error.code == .timeout ? .timeout : .connectionLost, "", mayHaveReachedServer: true)
                        )
                        : call.outcome(
                            head: HTTPResponseHead(status: 200),
                            error: nil,
                            invalidResponse: error.code == .invalidResponse || error.code == .failed
                        )
                )
            }
            throw error
        } catch {
            // Cancelled, or passed over: nothing learnt about the target.
            await end(.abandoned)
            throw error
        }
    }

    /// Reads a 2xx stream to its end: the whole answer, or a `ProviderError`.
    private func gather(
        _ response: HTTPStreamingResponse,
        onDelta: @Sendable (String) -> Void,
        firstEventAt: inout ContinuousClock.Instant?
    ) async throws -> JobOutput {
        var content = ""
        var finishReason: JSONValue?
        var usage: JobUsage?
        var servedModel: JSONValue?
        var done = false
        do {
            for try await event in response.events {
                if firstEventAt == nil { firstEventAt = .now }
                if event.data == "[DONE]" {
                    done = true
                    break
                }
                guard let chunk = try? JSONValue.parse(Array(event.data.utf8)) else {
                    throw ProviderError(.invalidResponse, "a stream event is not JSON", provider: name)
                }
                if let error = chunk["error"] {
                    let message = error["message"]?.string ?? "error event in the stream"
                    throw ProviderError(
                        .failed,
                        transport.scrub(message),
                        provider: name,
                        providerCode: error["code"]?.integer.map(String.init) ?? error["code"]?.string
                    )
                }
                if event.event == "error" {
                    throw ProviderError(.failed, transport.scrub(event.data), provider: name)
                }
                servedModel = chunk["model"] ?? servedModel
                if let choice = chunk["choices"]?.array?.first {
                    if let piece = choice["delta"]?["content"]?.string {
                        content += piece
                        onDelta(piece)
                    }
                    if let reason = choice["finish_reason"], reason != .null { finishReason = reason }
                }
                if let u = Self.usage(chunk["usage"]) { usage = u }
            }
        } catch let error as HTTPClientError {
            throw ProviderError.from(error, provider: name)
        }
        // A complete stream always carries a finish_reason; one cut short (a server that
        // interrupts a stream for a newer request, a proxy that gave up) may still end in [DONE].
        guard finishReason != nil else {
            throw ProviderError(
                .invalidResponse,
                done ? "the stream ended without a finish_reason (cut short)" : "the stream ended before [DONE]",
                provider: name
            )
        }
        var output: [String: JSONValue] = ["role": .string("assistant"), "content": .string(content)]
        if let finishReason { output["finish_reason"] = finishReason }
        if let servedModel { output["model"] = servedModel }
        return JobOutput(output: .object(output), usage: usage)
    }

    /// POST /completions (plain text completion).
    public func completion(model: String, prompt: String, parameters: [String: JSONValue] = [:]) async throws -> JobOutput {
        var body = parameters
        body["model"] = .string(model)
        body["prompt"] = .string(prompt)
        let reply = try await transport.json(transport.request("POST", "/completions", body: .object(body)))
        guard let text = reply["choices"]?.array?.first?["text"]?.string else {
            throw ProviderError(.invalidResponse, "completion without choices[0].text", provider: name)
        }
        return JobOutput(output: .object(["text": .string(text)]), usage: Self.usage(reply["usage"]))
    }

    /// POST /embeddings: one vector per text, in order, as numbers. `parameters` may hold
    /// `dimensions`, `encoding_format` and `user`; with `"encoding_format": "base64"` the
    /// vectors travel as base64 float32s and are decoded.
    public func embeddings(model: String, texts: [String], parameters: [String: JSONValue] = [:]) async throws -> JobOutput {
        try ProviderParameters.check(
            parameters,
            allowed: ProviderParameters.openAIEmbeddings,
            own: ProviderParameters.openAIEmbeddingsOwn,
            kind: .openai,
            jobKind: .embedding,
            provider: name
        )
        var body = parameters
        body["model"] = .string(model)
        body["input"] = .array(texts.map(JSONValue.string))
        let reply = try await transport.json(transport.request("POST", "/embeddings", body: .object(body)))
        guard let data = reply["data"]?.array, data.count == texts.count else {
            throw ProviderError(.invalidResponse, "embeddings: expected \(texts.count) vectors", provider: name)
        }
        let ordered = data.sorted { ($0["index"]?.integer ?? 0) < ($1["index"]?.integer ?? 0) }
        let vectors = try ordered.map { item -> JSONValue in
            if let vector = item["embedding"], vector.array != nil { return vector }
            if let packed = item["embedding"]?.string, let floats = Self.float32s(base64: packed) {
                return .array(floats.map { .number(Double($0)) })
            }
            throw ProviderError(.invalidResponse, "embeddings: an item without an embedding array", provider: name)
        }
        return JobOutput(output: .array(vectors), usage: Self.usage(reply["usage"]))
    }

    /// POST /images/generations. `parameters` (quality, style, response_format, ...) go into the
    /// body as they are; only the documented images parameters are accepted
    /// (`ProviderParameters.openAIImages`), never the job's own fields (model, prompt, n, size).
    public func images(model: String, prompt: String, size: String?, count: Int, parameters: [String: JSONValue] = [:]) async throws -> JobOutput {
        try ProviderParameters.check(
            parameters,
            allowed: ProviderParameters.openAIImages,
            own: ProviderParameters.openAIImagesOwn,
            kind: .openai,
            jobKind: .image,
            provider: name
        )
        var body = parameters
        body["model"] = .string(model)
        body["prompt"] = .string(prompt)
        body["n"] = .number(Double(count))
        if let size { body["size"] = .string(size) }
        let reply = try await transport.json(transport.request("POST", "/images/generations", body: .object(body)))
        guard let data = reply["data"]?.array else {
            throw ProviderError(.invalidResponse, "images: no data array", provider: name)
        }
        let images = data.map { item -> JSONValue in
            var image: [String: JSONValue] = [:]
            if let url = item["url"] { image["url"] = url }
            if let b64 = item["b64_json"] { image["b64_json"] = b64 }
            return .object(image)
        }
        return JobOutput(output: .object(["images": .array(images)]), usage: JobUsage(images: images.count))
    }

    /// GET /models: the ids the server offers.
    public func models() async throws -> [String] {
        let reply = try await transport.json(transport.request("GET", "/models"))
        return (reply["data"]?.array ?? []).compactMap { $0["id"]?.string }
    }

    /// Little-endian float32s from base64 (the embeddings API's `encoding_format: base64`).
    static func float32s(base64: String) -> [Float]? {
        guard let data = Data(base64Encoded: base64), data.count % 4 == 0 else { return nil }
        return stride(from: 0, to: data.count, by: 4).map { i in
            let bits = UInt32(data[i]) | UInt32(data[i + 1]) << 8 | UInt32(data[i + 2]) << 16 | UInt32(data[i + 3]) << 24
            return Float(bitPattern: bits)
        }
    }

    static func usage(_ value: JSONValue?) -> JobUsage? {
        guard let value, value.object != nil else { return nil }
        return JobUsage(
            promptTokens: value["prompt_tokens"]?.integer,
            completionTokens: value["completion_tokens"]?.integer,
            totalTokens: value["total_tokens"]?.integer
        )
    }
}
