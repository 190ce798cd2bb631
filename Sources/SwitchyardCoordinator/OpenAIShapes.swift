import Foundation
import Hummingbird
import SwitchyardCore

/// The endpoints of the OpenAI-compatible front, and the job kind each becomes.
enum OpenAIEndpoint: Sendable {
    /// `POST /v1/chat/completions`: a chat job.
    case chat
    /// `POST /v1/completions`: a chat job of one user message, answered as a text completion.
    case completion
    /// `POST /v1/embeddings`: an embedding job.
    case embedding
    /// `POST /v1/images/generations`: an image job.
    case image

    var kind: JobKind {
        switch self {
        case .chat, .completion: return .chat
        case .embedding: return .embedding
        case .image: return .image
        }
    }
}

/// An OpenAI request translated into a job, with how to answer it.
///
/// Every field is accounted for: the sampling settings a job carries go to the job, the
/// documented fields a worker's provider passes through go to the job's `parameters`, and a
/// field whose effect Switchyard cannot deliver (tools, log probabilities, several choices) is
/// refused with a 400 that names it, rather than dropped. Switchyard's own job fields
/// (`priority`, `cache`, `cache_namespace`, `cache_ttl`, `idempotency_key`, `max_attempts`,
/// `timeout`, `route`, `metadata`) may be added (the `openai` package's `extra_body`).
struct OpenAIRequest: Sendable {
    var endpoint: OpenAIEndpoint
    var job: Job
    var stream = false
    /// `stream_options.include_usage`: a last chunk carries the usage.
    var includeUsage = false
    /// Embeddings as base64 float32s (`encoding_format: base64`, what the `openai` package asks
    /// for by default) rather than arrays of numbers.
    var base64 = false

    /// Switchyard's job fields a request may add; `Job.fromRequest` checks them.
    static let jobFields: Set<String> = [
        "priority", "cache", "cache_namespace", "cache_ttl", "idempotency_key", "max_attempts", "timeout", "route", "metadata",
    ]
    /// Sampling settings a chat job carries itself; `Job.fromRequest` checks them.
    static let samplingFields: Set<String> = ["temperature", "top_p", "max_tokens", "seed", "stop"]
    /// Documented OpenAI chat and completion fields the OpenAI-compatible adapter sends on as
    /// they are, and llama.cpp's sampling extras (`ProviderParameters.openAIChat`).
    static let textParameters: Set<String> = [
        "presence_penalty", "frequency_penalty", "logit_bias", "user", "top_k", "min_p", "repeat_penalty", "typical_p", "grammar",
        "mirostat", "mirostat_mode", "mirostat_tau", "mirostat_eta",
    ]
    /// Chat fields sent on as they are, beside `textParameters`.
    static let chatParameters: Set<String> = ["response_format", "json_schema"]
    /// Images fields sent on as they are (`ProviderParameters.openAIImages`).
    static let imageParameters: Set<String> = [
        "response_format", "quality", "style", "user", "background", "output_format", "output_compression", "moderation",
    ]
    /// Embeddings fields sent on as they are, beside `encoding_format`, which the front applies.
    static let embeddingParameters: Set<String> = ["dimensions", "user"]

    /// OpenAI fields whose effect a job cannot deliver, with why; accepted only when null or
    /// when they ask for what happens anyway (`n: 1`, `logprobs: false`, `stream: false`...).
    static let unsupported: [String: String] = [
        "tools": "results carry no tool calls",
        "tool_choice": "results carry no tool calls",
        "parallel_tool_calls": "results carry no tool calls",
        "functions": "results carry no function calls",
        "function_call": "results carry no function calls",
        "logprobs": "results carry no log probabilities",
        "top_logprobs": "results carry no log probabilities",
        "n": "a job runs one completion: only 1 is supported",
        "best_of": "a job runs one completion: only 1 is supported",
        "echo": "the prompt is not echoed",
        "suffix": "a job has no suffix",
        "store": "completions are not stored",
        "audio": "jobs carry text only",
        "modalities": "jobs carry text only",
        "prediction": "predicted outputs are not supported",
        "service_tier": "Switchyard has its own lanes: use 'priority' (high, default, low)",
        "reasoning_effort": "it is not passed to providers",
        "verbosity": "it is not passed to providers",
        "web_search_options": "web search is not supported",
        "prompt_cache_key": "it is not passed to providers",
        "prompt_cache_retention": "it is not passed to providers",
        "safety_identifier": "it is not passed to providers",
        "partial_images": "images are not streamed",
    ]

    init(_ endpoint: OpenAIEndpoint, body: JSONValue) throws {
        self.endpoint = endpoint
        guard let object = body.object else {
            throw APIError(.badRequest, "the body must be a JSON object, got \(body.brief)", code: "invalid_body")
        }
        var request: [String: JSONValue] = ["kind": .string(endpoint.kind.rawValue)]
        var parameters: [String: JSONValue] = [:]
        let passed: Set<String>
        switch endpoint {
        case .chat: passed = Self.textParameters.union(Self.chatParameters)
        case .completion: passed = Self.textParameters
        case .embedding: passed = Self.embeddingParameters
        case .image: passed = Self.imageParameters
        }
        if endpoint == .chat, let given = object["max_completion_tokens"], given != .null, let other = object["max_tokens"], other != .null,
            given != other
        {
            throw Self.invalid("max_completion_tokens", "give max_completion_tokens or max_tokens, not both")
        }
        var flags = Flags()
        for key in object.keys.sorted() {
            let value = object[key]!
            if key == "model" || Self.jobFields.contains(key) {
                request[key] = value
            } else if passed.contains(key) {
                if value != .null { parameters[key] = value }
            } else if endpoint != .embedding && endpoint != .image && Self.samplingFields.contains(key) {
                if value != .null { request[key] = value }
            } else if try !Self.handle(key, value, endpoint: endpoint, into: &request, flags: &flags) {
                if let reason = Self.unsupported[key] {
                    throw Self.unsupported(key, reason)
                }
                throw APIError(.badRequest, "field '\(key)': unknown field", param: key, code: "unknown_field")
            }
        }
        guard request["model"].map({ $0 != .null }) == true else {
            throw APIError(.badRequest, "field 'model': is required (a model GET /v1/models lists)", param: "model", code: "invalid_field")
        }
        switch endpoint {
        case .chat:
            guard request["messages"] != nil else {
                throw APIError(.badRequest, "field 'messages': is required, a non-empty array of messages", param: "messages", code: "invalid_field")
            }
        case .completion:
            guard request["prompt"] != nil else {
                throw APIError(.badRequest, "field 'prompt': is required, a string", param: "prompt", code: "invalid_field")
            }
            // OpenAI's documented default for this endpoint.
            if request["max_tokens"] == nil || request["max_tokens"] == .null { request["max_tokens"] = .number(16) }
        case .embedding:
            guard request["input"] != nil else {
                throw APIError(.badRequest, "field 'input': is required, a string or an array of strings", param: "input", code: "invalid_field")
            }
        case .image:
            guard request["prompt"] != nil else {
                throw APIError(.badRequest, "field 'prompt': is required, a non-empty string", param: "prompt", code: "invalid_field")
            }
        }
        if !parameters.isEmpty { request["parameters"] = .object(parameters) }
        stream = flags.stream
        includeUsage = flags.includeUsage
        base64 = flags.base64
        job = try Self.job(.object(request), kind: endpoint.kind)
        job.notify = true
    }

    /// The job `Job.fromRequest` makes of the translated request; its error named as a 400.
    private static func job(_ request: JSONValue, kind: JobKind) throws(APIError) -> Job {
        do {
            return try Job.fromRequest(request, defaults: JobDefaults(kind: kind))
        } catch {
            throw APIError.invalid(error)
        }
    }

    /// How to answer, as the request's fields say.
    private struct Flags {
        var stream = false
        var includeUsage = false
        var base64 = false
    }

    /// The fields with a translation of their own. Returns false for a field it does not know,
    /// or one asking for what cannot be done.
    private static func handle(
        _ key: String,
        _ value: JSONValue,
        endpoint: OpenAIEndpoint,
        into request: inout [String: JSONValue],
        flags: inout Flags
    ) throws -> Bool {
        switch (key, endpoint) {
        case ("messages", .chat):
            request["messages"] = try Self.messages(value)
        case ("max_completion_tokens", .chat):
            guard value != .null else { return true }
            guard let n = value.integer, (1...1_000_000).contains(n) else {
                throw Self.invalid(key, "expected a whole number from 1 to 1000000, got \(value.brief)")
            }
            request["max_tokens"] = .number(Double(n))
        case ("stream", .chat), ("stream", .completion), ("stream", .image):
            guard value != .null else { return true }
            guard let flag = value.bool else { throw Self.invalid(key, "expected true or false, got \(value.brief)") }
            if flag && endpoint == .image { throw Self.unsupported(key, "images are not streamed") }
            flags.stream = flag
        case ("stream_options", .chat), ("stream_options", .completion):
            guard value != .null else { return true }
            guard let options = value.object else { throw Self.invalid(key, "expected an object, got \(value.brief)") }
            for option in options.keys.sorted() {
                guard option == "include_usage" || option == "include_obfuscation" else {
                    throw Self.invalid("stream_options.\(option)", "unknown field (known: include_usage)")
                }
            }
            if let include = options["include_usage"], include != .null {
                guard let flag = include.bool else { throw Self.invalid("stream_options.include_usage", "expected true or false") }
                flags.includeUsage = flag
            }
        case ("prompt", .completion):
            if let text = value.string {
                request["prompt"] = .string(text)
            } else if let items = value.array, items.count == 1, let text = items[0].string {
                request["prompt"] = .string(text)
            } else if let items = value.array, items.allSatisfy({ $0.string != nil }), items.count > 1 {
                throw Self.unsupported(key, "one prompt per request (a job runs one completion)")
            } else if value.array != nil {
                throw Self.unsupported(key, "token arrays are not supported: send the text")
            } else {
                throw Self.invalid(key, "expected a string, got \(value.brief)")
            }
        case ("prompt", .image):
            request["prompt"] = value
        case ("input", .embedding):
            if let items = value.array, items.contains(where: { $0.number != nil || $0.array != nil }) {
                throw Self.unsupported(key, "token arrays are not supported: send the texts")
            }
            request["input"] = value
        case ("encoding_format", .embedding):
            switch value {
            case .null, .string("float"): flags.base64 = false
            case .string("base64"): flags.base64 = true
            default: throw Self.invalid(key, "expected 'float' or 'base64', got \(value.brief)")
            }
        case ("n", .image):
            if value != .null { request["n"] = value }
        case ("size", .image):
            // "auto": the provider's default size.
            if value != .null && value != .string("auto") { request["size"] = value }
        case ("n", _), ("best_of", _):
            guard value == .null || value.integer == 1 else { return false }
        case ("logprobs", _), ("echo", _), ("store", _), ("parallel_tool_calls", _):
            guard value == .null || value == .bool(false) else { return false }
        case ("tools", _), ("functions", _):
            guard value == .null || value.array?.isEmpty == true else { return false }
        case ("tool_choice", _), ("function_call", _):
            guard value == .null || value == .string("none") else { return false }
        case ("top_logprobs", _), ("suffix", _), ("audio", _), ("prediction", _), ("web_search_options", _), ("reasoning_effort", _),
            ("verbosity", _), ("service_tier", _), ("prompt_cache_key", _), ("prompt_cache_retention", _), ("safety_identifier", _),
            ("partial_images", _):
            guard value == .null else { return false }
        case ("modalities", _):
            guard value == .null || value == .array([.string("text")]) else { return false }
        default:
            return false
        }
        return true
    }

    /// OpenAI's messages as a job's: text content (a string, or text parts joined by newlines),
    /// `developer` as `system`. What a job cannot carry (images, audio, tool calls, names) is
    /// refused naming the field.
    static func messages(_ value: JSONValue) throws -> JSONValue {
        guard let items = value.array, !items.isEmpty else {
            throw invalid("messages", "expected a non-empty array of messages")
        }
        var out: [JSONValue] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            let path = "messages[\(i)]"
            guard let message = item.object else { throw invalid(path, "expected an object with role and content") }
            guard let role = message["role"]?.string else {
                throw invalid("\(path).role", "expected one of system, developer, user, assistant")
            }
            switch role {
            case "system", "user", "assistant": break
            case "developer": break
            case "tool", "function": throw unsupported("\(path).role", "'\(role)' messages answer tool calls, which results do not carry")
            default: throw invalid("\(path).role", "'\(role)' is not one of system, developer, user, assistant")
            }
            for key in message.keys.sorted() where key != "role" && key != "content" {
                let field = message[key]!
                switch key {
                case "tool_calls":
                    guard field == .null || field.array?.isEmpty == true else {
                        throw unsupported("\(path).tool_calls", "results carry no tool calls")
                    }
                case "function_call", "tool_call_id", "audio", "refusal":
                    guard field == .null else { throw unsupported("\(path).\(key)", "a job's messages carry a role and text only") }
                case "name":
                    guard field == .null else { throw unsupported("\(path).name", "a job's messages carry a role and text only") }
                case "annotations":
                    break  // an assistant answer sent back as it came: nothing to send on
                default:
                    throw invalid("\(path).\(key)", "unknown field")
                }
            }
            let content: String
            switch message["content"] {
            case .string(let text)?:
                content = text
            case .array(let parts)?:
                var texts: [String] = []
                for (j, part) in parts.enumerated() {
                    guard let type = part["type"]?.string else { throw invalid("\(path).content[\(j)].type", "is required") }
                    guard type == "text" else {
                        throw unsupported("\(path).content[\(j)].type", "'\(type)' parts are not supported: a job's messages carry text only")
                    }
                    guard let text = part["text"]?.string else { throw invalid("\(path).content[\(j)].text", "expected a string") }
                    texts.append(text)
                }
                content = texts.joined(separator: "\n")
            default:
                throw invalid("\(path).content", "expected a string or an array of text parts")
            }
            out.append(.object(["role": .string(role == "developer" ? "system" : role), "content": .string(content)]))
        }
        return .array(out)
    }

    static func invalid(_ field: String, _ problem: String) -> APIError {
        APIError(.badRequest, "field '\(field)': \(problem)", param: field, code: "invalid_field")
    }

    static func unsupported(_ field: String, _ why: String) -> APIError {
        APIError(.badRequest, "field '\(field)': not supported here (\(why))", param: field, code: "unsupported_field")
    }
}

/// OpenAI's response shapes, built from a job's result.
enum OpenAIShapes {
    /// The answer's id: `chatcmpl-<job id>` for chat, `cmpl-<job id>` for a text completion.
    static func id(_ endpoint: OpenAIEndpoint, _ job: String) -> String {
        endpoint == .completion ? "cmpl-" + job : "chatcmpl-" + job
    }

    static func text(_ result: JobResult) -> String { result.output?["content"]?.string ?? "" }

    static func finishReason(_ result: JobResult) -> String { result.output?["finish_reason"]?.string ?? "stop" }

    /// OpenAI's usage object, when the provider reported any.
    static func usage(_ usage: JobUsage?) -> JSONValue? {
        guard let usage, usage.promptTokens != nil || usage.completionTokens != nil || usage.totalTokens != nil else { return nil }
        let prompt = usage.promptTokens ?? 0
        let completion = usage.completionTokens ?? 0
        return .object([
            "prompt_tokens": .number(Double(prompt)), "completion_tokens": .number(Double(completion)),
            "total_tokens": .number(Double(usage.totalTokens ?? prompt + completion)),
        ])
    }

    /// What Switchyard adds to every answer, under `switchyard`: the job, its attempts and
    /// worker, how the cache served it, the target that answered, and the test executor that
    /// made the answer up when one did.
    static func extras(_ result: JobResult) -> JSONValue {
        var object: [String: JSONValue] = ["job_id": .string(result.id), "attempts": .number(Double(result.attempts))]
        if let worker = result.worker { object["worker"] = .string(worker) }
        if let cache = result.cache { object["cache"] = .string(cache.status.rawValue) }
        if let route = result.route { object["target"] = .string(route.target) }
        if let test = result.testExecutor { object["test_executor"] = .string(test) }
        return .object(object)
    }

    /// A `chat.completion`, or a `text_completion` for the legacy endpoint.
    static func completion(_ endpoint: OpenAIEndpoint, job: Job, result: JobResult) -> JSONValue {
        let choice: JSONValue
        if endpoint == .completion {
            choice = .object([
                "index": .number(0), "text": .string(text(result)), "logprobs": .null, "finish_reason": .string(finishReason(result)),
            ])
        } else {
            choice = .object([
                "index": .number(0),
                "message": .object(["role": .string("assistant"), "content": .string(text(result)), "refusal": .null]),
                "logprobs": .null, "finish_reason": .string(finishReason(result)),
            ])
        }
        var object: [String: JSONValue] = [
            "id": .string(id(endpoint, job.id)), "object": .string(endpoint == .completion ? "text_completion" : "chat.completion"),
            "created": .number(Double(Int(job.queuedAt))), "model": .string(job.model), "choices": .array([choice]),
            "switchyard": extras(result),
        ]
        if let usage = usage(result.usage) { object["usage"] = usage }
        return .object(object)
    }

    /// The stream of a finished job, as Server-Sent Events: for chat a role delta, the whole
    /// content in one chunk, a chunk with the finish reason, the usage chunk when asked for, then
    /// `[DONE]`; for a text completion the text, the finish reason, the usage, `[DONE]`.
    static func stream(_ endpoint: OpenAIEndpoint, job: Job, result: JobResult, includeUsage: Bool) -> [UInt8] {
        let base: [String: JSONValue] = [
            "id": .string(id(endpoint, job.id)),
            "object": .string(endpoint == .completion ? "text_completion" : "chat.completion.chunk"),
            "created": .number(Double(Int(job.queuedAt))), "model": .string(job.model),
        ]
        func chunk(_ choice: [String: JSONValue]?, usage: JSONValue? = nil) -> JSONValue {
            var object = base
            object["choices"] = .array(choice.map { [.object($0.merging(["index": .number(0), "logprobs": .null]) { a, _ in a })] } ?? [])
            if includeUsage { object["usage"] = usage ?? .null }
            return .object(object)
        }
        var events: [JSONValue] = []
        if endpoint == .completion {
            events.append(chunk(["text": .string(text(result)), "finish_reason": .null]))
            events.append(chunk(["text": .string(""), "finish_reason": .string(finishReason(result))]))
        } else {
            events.append(chunk(["delta": .object(["role": .string("assistant"), "content": .string("")]), "finish_reason": .null]))
            events.append(chunk(["delta": .object(["content": .string(text(result))]), "finish_reason": .null]))
            events.append(chunk(["delta": .object([:]), "finish_reason": .string(finishReason(result))]))
        }
        if includeUsage {
            var last = chunk(nil, usage: usage(result.usage) ?? .null)
            if case .object(var object) = last {
                object["switchyard"] = extras(result)
                last = .object(object)
            }
            events.append(last)
        }
        var out: [UInt8] = []
        for event in events {
            out += Array("data: ".utf8)
            out += event.jsonBytes
            out += Array("\n\n".utf8)
        }
        out += Array("data: [DONE]\n\n".utf8)
        return out
    }

    /// The embeddings list: one item per input, in order, as numbers or base64 float32s.
    static func embeddings(job: Job, result: JobResult, base64: Bool) throws -> JSONValue {
        guard let vectors = result.output?.array, vectors.count == (job.input.texts?.count ?? 0) else {
            throw APIError(
                .badGateway,
                "job \(job.id): the worker's answer is not one vector per input",
                type: "server_error",
                code: "invalid_result"
            )
        }
        var data: [JSONValue] = []
        data.reserveCapacity(vectors.count)
        for (index, vector) in vectors.enumerated() {
            guard let numbers = vector.array?.compactMap(\.number), numbers.count == vector.array?.count else {
                throw APIError(.badGateway, "job \(job.id): vector \(index) is not an array of numbers", type: "server_error", code: "invalid_result")
            }
            let embedding: JSONValue = base64 ? .string(float32Base64(numbers)) : .array(numbers.map(JSONValue.number))
            data.append(.object(["object": .string("embedding"), "index": .number(Double(index)), "embedding": embedding]))
        }
        var object: [String: JSONValue] = [
            "object": .string("list"), "data": .array(data), "model": .string(job.model), "switchyard": extras(result),
        ]
        if let usage = result.usage, usage.promptTokens != nil || usage.totalTokens != nil {
            let prompt = usage.promptTokens ?? usage.totalTokens ?? 0
            object["usage"] = .object(["prompt_tokens": .number(Double(prompt)), "total_tokens": .number(Double(usage.totalTokens ?? prompt))])
        }
        return .object(object)
    }

    /// Little-endian float32s in base64, as OpenAI's `encoding_format: base64` sends them.
    static func float32Base64(_ numbers: [Double]) -> String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(numbers.count * 4)
        for number in numbers {
            let bits = Float(number).bitPattern
            bytes += [UInt8(bits & 0xff), UInt8(bits >> 8 & 0xff), UInt8(bits >> 16 & 0xff), UInt8(bits >> 24)]
        }
        return Data(bytes).base64EncodedString()
    }

    /// The images answer: each image's `url` or `b64_json`, as the provider gave it.
    static func images(job: Job, result: JobResult) -> JSONValue {
        let images = (result.output?["images"]?.array ?? []).map { image -> JSONValue in
            var item: [String: JSONValue] = [:]
            for key in ["url", "b64_json", "revised_prompt"] {
                if let value = image[key], value != .null { item[key] = value }
            }
            return .object(item)
        }
        return .object([
            "created": .number(Double(Int(job.queuedAt))), "data": .array(images), "switchyard": extras(result),
        ])
    }

    /// The error answer for a job that did not succeed, in OpenAI's error shape: a cancelled job
    /// is a 409; a failed or dead one a 502, unless its error says better: 429 rate limited, 503
    /// every target's breaker open, 504 out of time, 404 no provider serves the model, 400 a
    /// parameter the provider's adapter does not send, or the provider's own 4xx status (not
    /// 401/403: the worker's key is not the caller's) or 502/503/504.
    static func failure(_ result: JobResult, job: String) -> APIError {
        if result.status == .cancelled {
            return APIError(.conflict, "job \(job) was cancelled before it finished", type: "invalid_request_error", code: "cancelled")
        }
        let code = result.error?.code ?? "failed"
        let message = "job \(job) \(result.status == .dead ? "is dead" : "failed") (\(code)): \(result.error?.message ?? "no reason given")"
        let providerStatus = Self.httpStatus(in: result.error?.message ?? "")
        switch code {
        case "rate_limited", "provider_rate_limited":
            return APIError(.tooManyRequests, message, type: "rate_limit_error", code: code)
        case "circuit_open":
            return APIError(.serviceUnavailable, message, type: "server_error", code: code)
        case "timeout", "provider_timeout":
            return APIError(.gatewayTimeout, message, type: "server_error", code: code)
        case "no_provider":
            return APIError(.notFound, message, param: "model", code: "model_not_found")
        case "route_not_allowed":
            return APIError(.badRequest, message, param: "route", code: code)
        case "unsupported_parameter":
            return APIError(.badRequest, message, param: Self.parameterName(in: message), code: code)
        default:
            if let status = providerStatus, (400..<500).contains(status), ![401, 403, 407].contains(status) {
                return APIError(HTTPResponse.Status(code: status), message, code: code)
            }
            if let status = providerStatus, [502, 503, 504].contains(status) {
                return APIError(HTTPResponse.Status(code: status), message, type: "server_error", code: code)
            }
            if code == "provider_bad_request" { return APIError(.badRequest, message, code: code) }
            return APIError(.badGateway, message, type: "server_error", code: code)
        }
    }

    /// The status in a provider error's message (`local badRequest, HTTP 400: …`).
    static func httpStatus(in message: String) -> Int? {
        guard let range = message.range(of: #"HTTP [1-5][0-9][0-9]\b"#, options: .regularExpression) else { return nil }
        return Int(message[range].dropFirst(5))
    }

    /// The parameter an `unsupported_parameter` message names (`parameter 'tools' is not …`).
    static func parameterName(in message: String) -> String? {
        guard let range = message.range(of: #"parameter '[^']+'"#, options: .regularExpression) else { return nil }
        return String(message[range].dropFirst(11).dropLast())
    }
}
