import Foundation

/// A job request that cannot be accepted: names the field and the problem.
public struct JobValidationError: Error, Sendable, CustomStringConvertible, Equatable {
    public var field: String
    public var problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "field '\(field)': \(problem)" }
}

/// Defaults a request falls back on (from CLI flags).
public struct JobDefaults: Sendable {
    public var model: String?
    public var kind: JobKind = .chat
    public var priority: JobPriority = .default
    public var maxAttempts = 3
    public var timeout: Double = 300
    public var batch: String?
    /// The id of a request that names none (a fresh unique one when nil).
    public var id: String?

    public init(model: String? = nil, kind: JobKind = .chat, priority: JobPriority = .default, batch: String? = nil) {
        self.model = model
        self.kind = kind
        self.priority = priority
        self.batch = batch
    }
}

extension Job {
    /// Whether `id` may name a job: 1-128 ASCII letters, digits, '-', '_', '.' or ':'.
    public static func isValidID(_ id: String) -> Bool {
        (1...128).contains(id.count) && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) }
    }

    /// Fields a request line may carry; anything else is a typo and is rejected.
    static let requestFields: Set<String> = [
        "id", "kind", "model", "route", "messages", "prompt", "parameters", "temperature", "max_tokens", "seed", "top_p",
        "stop", "size", "n", "count", "input", "texts", "priority", "max_attempts", "timeout", "cache", "cache_namespace", "cache_ttl",
        "idempotency_key",
        "delay", "not_before", "metadata",
    ]

    /// Keys that `parameters` may not hold because the worker's adapter sets them, with why.
    static let adapterOwnParameters: [String: String] = [
        "model": "is set by the worker from the job's 'model' (and the providers file); it cannot be a parameter",
        "messages": "is set by the worker from the job's 'messages' or 'prompt'; it cannot be a parameter",
        "stream": "is set by the worker (streaming is the provider's 'stream' setting in the providers file); it cannot be a parameter",
        "stream_options": "is set by the worker along with 'stream'; it cannot be a parameter",
    ]

    /// Builds a job from one request object (a JSONL line or an HTTP body), checking every field.
    ///
    /// Accepts `prompt` as a shorthand for a one-message chat, and the common sampling parameters
    /// (`temperature`, `max_tokens`, `seed`, `top_p`, `stop`) at the top level.
    public static func fromRequest(
        _ request: JSONValue,
        defaults: JobDefaults = JobDefaults(),
        now: Double = Date().timeIntervalSince1970
    ) throws(JobValidationError) -> Job {
        guard let object = request.object else {
            throw JobValidationError(field: "(line)", problem: "expected a JSON object, got \(request.brief)")
        }
        if let unknown = object.keys.sorted().first(where: { !requestFields.contains($0) }) {
            throw JobValidationError(field: unknown, problem: "unknown field")
        }
        func string(_ key: String) throws(JobValidationError) -> String? {
            guard let value = object[key], value != .null else { return nil }
            guard let s = value.string else { throw JobValidationError(field: key, problem: "expected a string, got \(value.brief)") }
            return s
        }
        func number(_ key: String, _ range: ClosedRange<Double>) throws(JobValidationError) -> Double? {
            guard let value = object[key], value != .null else { return nil }
            guard let n = value.number, range.contains(n) else {
                throw JobValidationError(field: key, problem: "expected a number from \(range.lowerBound) to \(range.upperBound), got \(value.brief)")
            }
            return n
        }
        func integer(_ key: String, _ range: ClosedRange<Int>) throws(JobValidationError) -> Int? {
            guard let value = object[key], value != .null else { return nil }
            guard let n = value.integer, range.contains(n) else {
                throw JobValidationError(
                    field: key,
                    problem: "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \(value.brief)"
                )
            }
            return n
        }
        func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ type: T.Type) throws(JobValidationError) -> T?
        where T.RawValue == String {
            guard let raw = try string(key) else { return nil }
            guard let value = T(rawValue: raw) else {
                let allowed = T.allCases.map(\.rawValue).joined(separator: ", ")
                throw JobValidationError(field: key, problem: "'\(raw)' is not one of \(allowed)")
            }
            return value
        }

        let id = try string("id") ?? defaults.id ?? Job.newID()
        guard Job.isValidID(id) else {
            throw JobValidationError(field: "id", problem: "must be 1-128 letters, digits, '-', '_', '.' or ':'")
        }
        let kind = try choice("kind", JobKind.self) ?? defaults.kind
        guard let model = try string("model") ?? defaults.model, !model.isEmpty else {
            throw JobValidationError(field: "model", problem: "is required (give it on the line or with --model)")
        }

        var parameters: [String: JSONValue] = [:]
        if let p = object["parameters"], p != .null {
            guard let o = p.object else { throw JobValidationError(field: "parameters", problem: "expected an object, got \(p.brief)") }
            parameters = o
        }
        // Fields every provider adapter sets itself: refused here, where it is cheap, rather than
        // when a worker runs the job (the adapters refuse them too, with other unsupported keys).
        for key in parameters.keys.sorted() {
            if let problem = adapterOwnParameters[key] {
                throw JobValidationError(field: "parameters.\(key)", problem: problem)
            }
        }
        // Sampling settings mean nothing to an image or embedding endpoint, and strict APIs refuse
        // unknown body fields: say so at push rather than fail at the provider.
        if kind != .chat {
            for field in ["temperature", "max_tokens", "top_p", "stop"] where object[field] != nil && object[field] != .null {
                throw JobValidationError(
                    field: field,
                    problem: "applies to chat jobs only; put settings for a \(kind.rawValue) provider in parameters"
                )
            }
        }
        if let t = try number("temperature", 0...2) { parameters["temperature"] = .number(t) }
        if let m = try integer("max_tokens", 1...1_000_000) { parameters["max_tokens"] = .number(Double(m)) }
        if let s = try integer("seed", Int(Int32.min)...Int(Int32.max)) { parameters["seed"] = .number(Double(s)) }
        if let p = try number("top_p", 0...1) { parameters["top_p"] = .number(p) }
        if let stop = object["stop"], stop != .null { parameters["stop"] = stop }

        var input = JobInput(parameters: parameters.isEmpty ? nil : parameters)
        switch kind {
        case .chat:
            if let raw = object["messages"], raw != .null {
                guard let items = raw.array, !items.isEmpty else {
                    throw JobValidationError(field: "messages", problem: "expected a non-empty array of {role, content}")
                }
                var messages: [ChatMessage] = []
                for (i, item) in items.enumerated() {
                    guard let role = item["role"]?.string, ["system", "user", "assistant", "tool"].contains(role) else {
                        throw JobValidationError(field: "messages[\(i)].role", problem: "expected one of system, user, assistant, tool")
                    }
                    guard let content = item["content"]?.string else {
                        throw JobValidationError(field: "messages[\(i)].content", problem: "expected a string")
                    }
                    messages.append(ChatMessage(role: role, content: content))
                }
                input.messages = messages
            } else if let prompt = try string("prompt") {
                input.messages = [ChatMessage(role: "user", content: prompt)]
            } else {
                throw JobValidationError(field: "messages", problem: "a chat job needs messages or a prompt")
            }
        case .image:
            guard let prompt = try string("prompt"), !prompt.isEmpty else {
                throw JobValidationError(field: "prompt", problem: "an image job needs a non-empty prompt")
            }
            input.prompt = prompt
            if let size = try string("size") {
                let parts = size.split(separator: "x")
                guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]), (64...4096).contains(w), (64...4096).contains(h) else {
                    throw JobValidationError(field: "size", problem: "expected WIDTHxHEIGHT with sides from 64 to 4096, got '\(size)'")
                }
                input.size = size
            }
            let n = try integer("n", 1...16)
            let count = try integer("count", 1...16)
            input.count = n ?? count ?? 1
        case .embedding:
            let raw = object["texts"] ?? object["input"]
            let field = object["texts"] != nil ? "texts" : "input"
            if let one = raw?.string {
                input.texts = [one]
            } else if let many = raw?.array, !many.isEmpty, many.allSatisfy({ $0.string != nil }) {
                input.texts = many.compactMap(\.string)
            } else {
                throw JobValidationError(field: field, problem: "an embedding job needs a string or a non-empty array of strings")
            }
        }

        var metadata: [String: String] = [:]
        if let raw = object["metadata"], raw != .null {
            guard let o = raw.object else { throw JobValidationError(field: "metadata", problem: "expected an object of strings") }
            for (k, v) in o {
                guard let s = v.string else { throw JobValidationError(field: "metadata.\(k)", problem: "expected a string, got \(v.brief)") }
                metadata[k] = s
            }
        }
        func cacheNamespace() throws(JobValidationError) -> String? {
            guard let namespace = try string("cache_namespace") else { return nil }
            guard (1...64).contains(namespace.count), namespace.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            else {
                throw JobValidationError(field: "cache_namespace", problem: "must be 1-64 letters, digits, '-', '_' or '.'")
            }
            return namespace
        }
        func idempotencyKey() throws(JobValidationError) -> String? {
            guard let key = try string("idempotency_key") else { return nil }
            guard !key.isEmpty, key.utf8.count <= 256, !key.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }) else {
                throw JobValidationError(field: "idempotency_key", problem: "must be 1-256 bytes without control characters")
            }
            return key
        }
        var notBefore = try number("not_before", 0...1e11)
        if let delay = try number("delay", 0...(30 * 86400)), delay > 0 { notBefore = now + delay }

        return Job(
            id: id,
            kind: kind,
            model: model,
            route: try string("route"),
            input: input,
            priority: try choice("priority", JobPriority.self) ?? defaults.priority,
            maxAttempts: try integer("max_attempts", 1...100) ?? defaults.maxAttempts,
            timeout: try number("timeout", 0.001...86400) ?? defaults.timeout,
            cache: try choice("cache", CachePolicy.self) ?? .auto,
            idempotencyKey: try idempotencyKey(),
            cacheNamespace: try cacheNamespace(),
            cacheTTL: try number("cache_ttl", 1...(30 * 86400)),
            batch: defaults.batch,
            notBefore: notBefore,
            metadata: metadata,
            queuedAt: now
        )
    }
}
