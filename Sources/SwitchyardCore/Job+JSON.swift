/// Hand-written JSON for the queue's hot path: the same format as the Codable conformances
/// (tests check both ways), without their generic machinery.
extension Job {
    /// Decodes a job from its JSON payload, naming the field when one is missing or mistyped.
    public init(json bytes: [UInt8]) throws(JobValidationError) {
        let value: JSONValue
        do {
            value = try JSONValue.parse(bytes)
        } catch {
            throw JobValidationError(field: "(payload)", problem: error.description)
        }
        guard let o = value.object else { throw JobValidationError(field: "(payload)", problem: "expected an object, got \(value.brief)") }
        var reader = FieldReader(object: o, path: "")
        version = try reader.int("v")
        id = try reader.string("id")
        kind = try reader.choice("kind", JobKind.self)
        model = try reader.string("model")
        route = try reader.optionalString("route")
        let inputObject = try reader.object("input")
        var input = FieldReader(object: inputObject, path: "input.")
        var messages: [ChatMessage]?
        if let items = try input.optionalArray("messages") {
            messages = []
            for (i, item) in items.enumerated() {
                guard let m = item.object else { throw JobValidationError(field: "input.messages[\(i)]", problem: "expected an object") }
                var r = FieldReader(object: m, path: "input.messages[\(i)].")
                messages!.append(ChatMessage(role: try r.string("role"), content: try r.string("content")))
            }
        }
        var texts: [String]?
        if let items = try input.optionalArray("texts") {
            texts = try items.enumerated().map { (i, item) throws(JobValidationError) -> String in
                guard let s = item.string else { throw JobValidationError(field: "input.texts[\(i)]", problem: "expected a string") }
                return s
            }
        }
        self.input = JobInput(
            messages: messages,
            parameters: try input.optionalObject("parameters"),
            prompt: try input.optionalString("prompt"),
            size: try input.optionalString("size"),
            count: try input.optionalInt("count"),
            texts: texts
        )
        priority = try reader.choice("priority", JobPriority.self)
        maxAttempts = try reader.int("max_attempts")
        timeout = try reader.number("timeout")
        cache = try reader.choice("cache", CachePolicy.self)
        idempotencyKey = try reader.optionalString("idempotency_key")
        cacheNamespace = try reader.optionalString("cache_namespace")
        cacheTTL = try reader.optionalNumber("cache_ttl")
        batch = try reader.optionalString("batch")
        notBefore = try reader.optionalNumber("not_before")
        var metadata: [String: String] = [:]
        for (k, v) in try reader.object("metadata") {
            guard let s = v.string else { throw JobValidationError(field: "metadata.\(k)", problem: "expected a string, got \(v.brief)") }
            metadata[k] = s
        }
        self.metadata = metadata
        queuedAt = try reader.number("queued_at")
        notify = try reader.optionalBool("notify")
    }

    /// The job's JSON payload.
    public func encodedJSON() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        var first = true
        out.append(UInt8(ascii: "{"))
        if let batch {
            JSONWriter.key("batch", first: &first, to: &out)
            JSONWriter.string(batch, to: &out)
        }
        JSONWriter.key("cache", first: &first, to: &out)
        JSONWriter.string(cache.rawValue, to: &out)
        if let cacheNamespace {
            JSONWriter.key("cache_namespace", first: &first, to: &out)
            JSONWriter.string(cacheNamespace, to: &out)
        }
        if let cacheTTL {
            JSONWriter.key("cache_ttl", first: &first, to: &out)
            JSONWriter.number(cacheTTL, to: &out)
        }
        JSONWriter.key("id", first: &first, to: &out)
        JSONWriter.string(id, to: &out)
        if let idempotencyKey {
            JSONWriter.key("idempotency_key", first: &first, to: &out)
            JSONWriter.string(idempotencyKey, to: &out)
        }
        JSONWriter.key("input", first: &first, to: &out)
        var inputFirst = true
        out.append(UInt8(ascii: "{"))
        if let count = input.count {
            JSONWriter.key("count", first: &inputFirst, to: &out)
            JSONWriter.int(count, to: &out)
        }
        if let messages = input.messages {
            JSONWriter.key("messages", first: &inputFirst, to: &out)
            out.append(UInt8(ascii: "["))
            for (i, m) in messages.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: Array(#"{"content":"#.utf8))
                JSONWriter.string(m.content, to: &out)
                out.append(contentsOf: Array(#","role":"#.utf8))
                JSONWriter.string(m.role, to: &out)
                out.append(UInt8(ascii: "}"))
            }
            out.append(UInt8(ascii: "]"))
        }
        if let parameters = input.parameters {
            JSONWriter.key("parameters", first: &inputFirst, to: &out)
            JSONValue.object(parameters).write(to: &out)
        }
        if let prompt = input.prompt {
            JSONWriter.key("prompt", first: &inputFirst, to: &out)
            JSONWriter.string(prompt, to: &out)
        }
        if let size = input.size {
            JSONWriter.key("size", first: &inputFirst, to: &out)
            JSONWriter.string(size, to: &out)
        }
        if let texts = input.texts {
            JSONWriter.key("texts", first: &inputFirst, to: &out)
            JSONValue.array(texts.map(JSONValue.string)).write(to: &out)
        }
        out.append(UInt8(ascii: "}"))
        JSONWriter.key("kind", first: &first, to: &out)
        JSONWriter.string(kind.rawValue, to: &out)
        JSONWriter.key("max_attempts", first: &first, to: &out)
        JSONWriter.int(maxAttempts, to: &out)
        JSONWriter.key("metadata", first: &first, to: &out)
        JSONValue.object(metadata.mapValues(JSONValue.string)).write(to: &out)
        JSONWriter.key("model", first: &first, to: &out)
        JSONWriter.string(model, to: &out)
        if let notBefore {
            JSONWriter.key("not_before", first: &first, to: &out)
            JSONWriter.number(notBefore, to: &out)
        }
        if let notify {
            JSONWriter.key("notify", first: &first, to: &out)
            out.append(contentsOf: notify ? Array("true".utf8) : Array("false".utf8))
        }
        JSONWriter.key("priority", first: &first, to: &out)
        JSONWriter.string(priority.rawValue, to: &out)
        JSONWriter.key("queued_at", first: &first, to: &out)
        JSONWriter.number(queuedAt, to: &out)
        if let route {
            JSONWriter.key("route", first: &first, to: &out)
            JSONWriter.string(route, to: &out)
        }
        JSONWriter.key("timeout", first: &first, to: &out)
        JSONWriter.number(timeout, to: &out)
        JSONWriter.key("v", first: &first, to: &out)
        JSONWriter.int(version, to: &out)
        out.append(UInt8(ascii: "}"))
        return out
    }
}

extension JobResult {
    /// The result's JSON, as stored in Redis.
    public func encodedJSON() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        var first = true
        out.append(UInt8(ascii: "{"))
        JSONWriter.key("attempts", first: &first, to: &out)
        JSONWriter.int(attempts, to: &out)
        if let batch {
            JSONWriter.key("batch", first: &first, to: &out)
            JSONWriter.string(batch, to: &out)
        }
        if let cache {
            JSONWriter.key("cache", first: &first, to: &out)
            JSONValue.object(["status": .string(cache.status.rawValue), "lookup_ms": .number(cache.lookupMs)]).write(to: &out)
        }
        if let error {
            JSONWriter.key("error", first: &first, to: &out)
            var fields: [String: JSONValue] = ["code": .string(error.code), "message": .string(error.message)]
            if let retryAfter = error.retryAfter { fields["retry_after"] = .number(retryAfter) }
            JSONValue.object(fields).write(to: &out)
        }
        JSONWriter.key("id", first: &first, to: &out)
        JSONWriter.string(id, to: &out)
        if let metadata {
            JSONWriter.key("metadata", first: &first, to: &out)
            JSONValue.object(metadata.mapValues(JSONValue.string)).write(to: &out)
        }
        if let output {
            JSONWriter.key("output", first: &first, to: &out)
            output.write(to: &out)
        }
        if let route {
            JSONWriter.key("route", first: &first, to: &out)
            route.json.write(to: &out)
        }
        JSONWriter.key("status", first: &first, to: &out)
        JSONWriter.string(status.rawValue, to: &out)
        if let testExecutor {
            JSONWriter.key("test_executor", first: &first, to: &out)
            JSONWriter.string(testExecutor, to: &out)
        }
        JSONWriter.key("timings", first: &first, to: &out)
        var timingsFirst = true
        out.append(UInt8(ascii: "{"))
        for (key, value) in [("finished", timings.finished), ("queued", timings.queued), ("started", timings.started)] {
            guard let value else { continue }
            JSONWriter.key(key, first: &timingsFirst, to: &out)
            JSONWriter.number(value, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        if let usage {
            JSONWriter.key("usage", first: &first, to: &out)
            var usageFirst = true
            out.append(UInt8(ascii: "{"))
            let fields = [
                ("completion_tokens", usage.completionTokens), ("images", usage.images), ("prompt_tokens", usage.promptTokens),
                ("total_tokens", usage.totalTokens),
            ]
            for (key, value) in fields {
                guard let value else { continue }
                JSONWriter.key(key, first: &usageFirst, to: &out)
                JSONWriter.int(value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        JSONWriter.key("v", first: &first, to: &out)
        JSONWriter.int(version, to: &out)
        if let worker {
            JSONWriter.key("worker", first: &first, to: &out)
            JSONWriter.string(worker, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// Decodes a stored result.
    public init(json bytes: [UInt8]) throws(JobValidationError) {
        let value: JSONValue
        do {
            value = try JSONValue.parse(bytes)
        } catch {
            throw JobValidationError(field: "(result)", problem: error.description)
        }
        guard let o = value.object else { throw JobValidationError(field: "(result)", problem: "expected an object") }
        var r = FieldReader(object: o, path: "")
        version = try r.optionalInt("v") ?? Job.formatVersion
        id = try r.string("id")
        status = try r.choice("status", Status.self)
        output = o["output"].flatMap { $0 == .null ? nil : $0 }
        attempts = try r.int("attempts")
        worker = try r.optionalString("worker")
        var t = FieldReader(object: try r.optionalObject("timings") ?? [:], path: "timings.")
        timings = Timings(
            queued: try t.optionalNumber("queued"),
            started: try t.optionalNumber("started"),
            finished: try t.optionalNumber("finished")
        )
        if let u = try r.optionalObject("usage") {
            var ur = FieldReader(object: u, path: "usage.")
            usage = JobUsage(
                promptTokens: try ur.optionalInt("prompt_tokens"),
                completionTokens: try ur.optionalInt("completion_tokens"),
                totalTokens: try ur.optionalInt("total_tokens"),
                images: try ur.optionalInt("images")
            )
        } else {
            usage = nil
        }
        if let e = try r.optionalObject("error") {
            var er = FieldReader(object: e, path: "error.")
            error = ErrorInfo(code: try er.string("code"), message: try er.string("message"), retryAfter: try er.optionalNumber("retry_after"))
        } else {
            error = nil
        }
        batch = try r.optionalString("batch")
        if let m = try r.optionalObject("metadata") {
            metadata = m.compactMapValues(\.string)
        } else {
            metadata = nil
        }
        testExecutor = try r.optionalString("test_executor")
        if let c = try r.optionalObject("cache") {
            var cr = FieldReader(object: c, path: "cache.")
            cache = CacheInfo(status: try cr.choice("status", CacheInfo.Status.self), lookupMs: try cr.number("lookup_ms"))
        } else {
            cache = nil
        }
        if let value = try r.optionalObject("route") {
            guard let parsed = JobRoute(json: .object(value)) else {
                throw JobValidationError(field: "route", problem: "expected an object with target and steps")
            }
            route = parsed
        } else {
            route = nil
        }
    }
}

/// Typed access to an object's fields with errors that name the field.
struct FieldReader {
    let object: [String: JSONValue]
    let path: String

    private func mismatch(_ key: String, _ expected: String, _ value: JSONValue) -> JobValidationError {
        JobValidationError(field: path + key, problem: "expected \(expected), got \(value.brief)")
    }

    private func present(_ key: String) throws(JobValidationError) -> JSONValue {
        guard let value = object[key], value != .null else { throw JobValidationError(field: path + key, problem: "is missing") }
        return value
    }

    private func optional(_ key: String) -> JSONValue? {
        guard let value = object[key], value != .null else { return nil }
        return value
    }

    mutating func string(_ key: String) throws(JobValidationError) -> String {
        let v = try present(key)
        guard let s = v.string else { throw mismatch(key, "a string", v) }
        return s
    }

    mutating func optionalString(_ key: String) throws(JobValidationError) -> String? {
        guard let v = optional(key) else { return nil }
        guard let s = v.string else { throw mismatch(key, "a string", v) }
        return s
    }

    mutating func number(_ key: String) throws(JobValidationError) -> Double {
        let v = try present(key)
        guard let n = v.number else { throw mismatch(key, "a number", v) }
        return n
    }

    mutating func optionalNumber(_ key: String) throws(JobValidationError) -> Double? {
        guard let v = optional(key) else { return nil }
        guard let n = v.number else { throw mismatch(key, "a number", v) }
        return n
    }

    mutating func optionalBool(_ key: String) throws(JobValidationError) -> Bool? {
        guard let v = optional(key) else { return nil }
        guard case .bool(let b) = v else { throw mismatch(key, "true or false", v) }
        return b
    }

    mutating func int(_ key: String) throws(JobValidationError) -> Int {
        let v = try present(key)
        guard let n = v.integer else { throw mismatch(key, "a whole number", v) }
        return n
    }

    mutating func optionalInt(_ key: String) throws(JobValidationError) -> Int? {
        guard let v = optional(key) else { return nil }
        guard let n = v.integer else { throw mismatch(key, "a whole number", v) }
        return n
    }

    mutating func object(_ key: String) throws(JobValidationError) -> [String: JSONValue] {
        let v = try present(key)
        guard let o = v.object else { throw mismatch(key, "an object", v) }
        return o
    }

    mutating func optionalObject(_ key: String) throws(JobValidationError) -> [String: JSONValue]? {
        guard let v = optional(key) else { return nil }
        guard let o = v.object else { throw mismatch(key, "an object", v) }
        return o
    }

    mutating func optionalArray(_ key: String) throws(JobValidationError) -> [JSONValue]? {
        guard let v = optional(key) else { return nil }
        guard let a = v.array else { throw mismatch(key, "an array", v) }
        return a
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ key: String, _ type: T.Type) throws(JobValidationError) -> T
    where T.RawValue == String {
        let raw = try string(key)
        guard let value = T(rawValue: raw) else {
            throw JobValidationError(field: path + key, problem: "'\(raw)' is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }
}
