import SwitchyardCore

/// What a job would be sent to, as the response cache keys on it: for a remote provider its name
/// and the upstream model; for a local model server the catalog model and the identity of its
/// model file (so a new file is a new key). Executors that can be cached say what it is.
public struct CacheTarget: Sendable, Hashable, CustomStringConvertible {
    public let description: String

    /// A target as an executor describes it (`CacheTargetReporting`).
    public init(_ description: String) { self.description = description }

    /// A remote or OpenAI-compatible provider and the model name it is sent.
    public static func provider(_ name: String, model: String) -> CacheTarget { CacheTarget("provider:\(name)/\(model)") }

    /// A local model server: the catalog model and its file's identity (path, size, modification time).
    public static func local(_ model: String, file: String) -> CacheTarget { CacheTarget("local:\(model)@\(file)") }
}

/// The key of a request in the response cache: the SHA-256 of its canonical form.
///
/// The canonical form is one JSON object, keys sorted, numbers written one way (`16.0` is `16`),
/// no whitespace: `{"form":1,"input":…,"kind":…,"parameters":{…},"target":…}` where
/// - `target` is `CacheTarget.description`;
/// - `input` is what the model reads: chat `messages` (`[{"content":…,"role":…}]` in order),
///   image `{"count":…,"prompt":…,"size":…}`, embedding `{"texts":[…]}`;
/// - `parameters` are the job's parameters less those that cannot change the answer: `user`,
///   `stream`, `stream_options`, `encoding_format` (answers are decoded to numbers either way),
///   values equal to a default every API shares (`n` 1, `presence_penalty` 0,
///   `frequency_penalty` 0, `logprobs` false), and at `temperature` 0 (greedy decoding) the
///   sampling settings greedy decoding ignores (`top_p`, `top_k`, `min_p`, `typical_p`, `seed`).
/// docs/ARCHITECTURE.md ("The response cache") has the same, with examples.
public struct CacheKey: Sendable, Hashable {
    /// The canonical request, as hashed.
    public let canonical: [UInt8]
    /// SHA-256 of `canonical`, 64 hex digits.
    public let digest: String

    /// The version of the canonical form: a change to it is a new key space.
    public static let form = 1

    public init(job: Job, target: CacheTarget) {
        var object: [String: JSONValue] = [
            "form": .number(Double(Self.form)),
            "target": .string(target.description),
            "kind": .string(job.kind.rawValue),
            "parameters": .object(Self.canonicalParameters(job.input.parameters ?? [:])),
        ]
        switch job.kind {
        case .chat:
            object["input"] = .array(
                (job.input.messages ?? []).map { .object(["role": .string($0.role), "content": .string($0.content)]) }
            )
        case .image:
            var input: [String: JSONValue] = ["prompt": .string(job.input.prompt ?? ""), "count": .number(Double(job.input.count ?? 1))]
            if let size = job.input.size { input["size"] = .string(size) }
            object["input"] = .object(input)
        case .embedding:
            object["input"] = .object(["texts": .array((job.input.texts ?? []).map(JSONValue.string))])
        }
        canonical = JSONValue.object(object).jsonBytes
        digest = SHA256.hex(canonical)
    }

    /// Parameters that cannot change the answer.
    static let ignored: Set<String> = ["user", "stream", "stream_options", "encoding_format"]
    /// Defaults every API shares: an explicit one is the same request as an omitted one.
    static let defaults: [String: JSONValue] = [
        "n": .number(1), "presence_penalty": .number(0), "frequency_penalty": .number(0), "logprobs": .bool(false),
    ]
    /// Sampling settings that greedy decoding (temperature 0) does not use.
    static let samplingOnly: Set<String> = ["top_p", "top_k", "min_p", "typical_p", "seed"]

    static func canonicalParameters(_ parameters: [String: JSONValue]) -> [String: JSONValue] {
        let greedy = parameters["temperature"] == .number(0)
        return parameters.filter { key, value in
            !ignored.contains(key) && defaults[key] != value && !(greedy && samplingOnly.contains(key))
        }
    }

    /// The Redis key of the entry: `syc:<queue>:{<digest>}`, and `syc:<queue>:{<digest>}:ns:<namespace>`
    /// in a namespace. The digest is the hash tag, so entries spread over a cluster's slots while
    /// one request's keys (entry, lease, completion signal) share one. A queue name holds no brace
    /// and a namespace no colon, so no two (queue, namespace) pairs share a key.
    public func redisKey(queue: String, namespace: String?) -> String {
        "syc:\(queue):{\(digest)}" + (namespace.map { ":ns:\($0)" } ?? "")
    }

    /// Whether `namespace` may name a key space: 1-64 letters, digits, '-', '_' or '.'.
    public static func isValidNamespace(_ namespace: String) -> Bool {
        (1...64).contains(namespace.count) && namespace.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }
    }
}

/// Whether the cache may serve or store a job's answer, from its `cache` policy and what it asks.
public enum CacheUse: Sendable, Hashable {
    /// Neither read nor write (`bypass`, or `auto` for a request whose answer varies).
    case none
    /// Read, and write a new answer (`auto` for a deterministic request, `force`).
    case readWrite
    /// Skip the read, write the new answer (`refresh`).
    case writeOnly

    public init(job: Job) {
        switch job.cache {
        case .bypass: self = .none
        case .force: self = .readWrite
        case .refresh: self = .writeOnly
        case .auto: self = CacheUse.isDeterministic(job) ? .readWrite : .none
        }
    }

    /// Embeddings always; chat and image requests at temperature 0 or with a fixed seed.
    public static func isDeterministic(_ job: Job) -> Bool {
        if job.kind == .embedding { return true }
        let parameters = job.input.parameters ?? [:]
        return parameters["temperature"] == .number(0) || parameters["seed"]?.integer != nil
    }
}
