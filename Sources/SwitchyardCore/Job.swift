import Foundation

/// What kind of inference a job asks for.
public enum JobKind: String, Sendable, Codable, CaseIterable {
    case chat
    case image
    case embedding
}

/// The queue lane a job waits in; workers take high before default before low.
public enum JobPriority: String, Sendable, Codable, CaseIterable, Comparable {
    case high
    case `default`
    case low

    /// Lanes in the order workers check them.
    public static let inOrder: [JobPriority] = [.high, .default, .low]

    public static func < (a: JobPriority, b: JobPriority) -> Bool {
        inOrder.firstIndex(of: a)! < inOrder.firstIndex(of: b)!
    }
}

/// How the shared response cache treats a job (used by the cache; stored with the job now).
public enum CachePolicy: String, Sendable, Codable, CaseIterable {
    /// Cache deterministic requests only (temperature 0 or a fixed seed).
    case auto
    /// Never read or write the cache.
    case bypass
    /// Read and write the cache even for non-deterministic requests.
    case force
    /// Skip the read, and store the new answer.
    case refresh
}

/// One message of a chat job, OpenAI-style.
public struct ChatMessage: Sendable, Codable, Hashable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The input of a job; which fields are set depends on its kind.
public struct JobInput: Sendable, Codable, Hashable {
    /// chat: the conversation.
    public var messages: [ChatMessage]?
    /// chat, image, embedding: provider parameters (temperature, max_tokens, seed, ...).
    public var parameters: [String: JSONValue]?
    /// image: what to draw.
    public var prompt: String?
    /// image: "WIDTHxHEIGHT".
    public var size: String?
    /// image: how many images.
    public var count: Int?
    /// embedding: the texts to embed.
    public var texts: [String]?

    public init(
        messages: [ChatMessage]? = nil,
        parameters: [String: JSONValue]? = nil,
        prompt: String? = nil,
        size: String? = nil,
        count: Int? = nil,
        texts: [String]? = nil
    ) {
        self.messages = messages
        self.parameters = parameters
        self.prompt = prompt
        self.size = size
        self.count = count
        self.texts = texts
    }
}

/// A job as it travels through the queue. The encoding carries a format version, `v`.
public struct Job: Sendable, Codable, Hashable, Identifiable {
    public static let formatVersion = 1

    public var version: Int
    public var id: String
    public var kind: JobKind
    public var model: String
    /// A provider route that overrides the model's configured fallback chain (e.g. "openrouter").
    public var route: String?
    public var input: JobInput
    public var priority: JobPriority
    /// How many times the job may run before it is dead-lettered (at least 1).
    public var maxAttempts: Int
    /// Seconds one attempt may take before it is cancelled and counted as failed.
    public var timeout: Double
    public var cache: CachePolicy
    public var idempotencyKey: String?
    /// A key space of its own in the response cache (for example per tenant); nil: the queue's.
    public var cacheNamespace: String?
    /// How long the response cache keeps this job's answer, in seconds (the worker keeps it
    /// within its `--cache-max-ttl`); nil: the worker's `--cache-ttl`.
    public var cacheTTL: Double?
    public var batch: String?
    /// Unix time (seconds) before which the job must not start.
    public var notBefore: Double?
    public var metadata: [String: String]
    /// Unix time (seconds) the job was pushed.
    public var queuedAt: Double
    /// Someone waits for this job's result (the coordinator's OpenAI-compatible front, a push
    /// with `wait`): when it is finished, the worker has its id published on the queue's done
    /// channel, so the waiter need not poll. Encoded only when set; workers that predate it
    /// ignore it (the waiter's own polls then find the result). Default nil.
    public var notify: Bool?

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case id, kind, model, route, input, priority
        case maxAttempts = "max_attempts"
        case timeout, cache
        case idempotencyKey = "idempotency_key"
        case cacheNamespace = "cache_namespace"
        case cacheTTL = "cache_ttl"
        case batch
        case notBefore = "not_before"
        case metadata
        case queuedAt = "queued_at"
        case notify
    }

    public init(
        id: String = Job.newID(),
        kind: JobKind,
        model: String,
        route: String? = nil,
        input: JobInput,
        priority: JobPriority = .default,
        maxAttempts: Int = 3,
        timeout: Double = 300,
        cache: CachePolicy = .auto,
        idempotencyKey: String? = nil,
        cacheNamespace: String? = nil,
        cacheTTL: Double? = nil,
        batch: String? = nil,
        notBefore: Double? = nil,
        metadata: [String: String] = [:],
        queuedAt: Double = Date().timeIntervalSince1970,
        notify: Bool? = nil
    ) {
        self.version = Job.formatVersion
        self.id = id
        self.kind = kind
        self.model = model
        self.route = route
        self.input = input
        self.priority = priority
        self.maxAttempts = maxAttempts
        self.timeout = timeout
        self.cache = cache
        self.idempotencyKey = idempotencyKey
        self.cacheNamespace = cacheNamespace
        self.cacheTTL = cacheTTL
        self.batch = batch
        self.notBefore = notBefore
        self.metadata = metadata
        self.queuedAt = queuedAt
        self.notify = notify
    }

    /// A new job id: time-ordered and unique across hosts (a UUID's random bits after a ms timestamp).
    public static func newID() -> String {
        let ms = UInt64(Date().timeIntervalSince1970 * 1000)
        let random = UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(16)
        return "j" + String(ms, radix: 36) + random
    }
}

/// Usage a provider reports, in tokens (chat, embedding) or images.
public struct JobUsage: Sendable, Codable, Hashable {
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var totalTokens: Int?
    public var images: Int?

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens"
        case completionTokens = "completion_tokens"
        case totalTokens = "total_tokens"
        case images
    }

    public init(promptTokens: Int? = nil, completionTokens: Int? = nil, totalTokens: Int? = nil, images: Int? = nil) {
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.images = images
    }
}

/// The final outcome of a job. Written once: the first final result wins.
public struct JobResult: Sendable, Codable, Hashable {
    public enum Status: String, Sendable, Codable, CaseIterable {
        case succeeded
        /// Failed for good without using up its attempts (a non-retryable error).
        case failed
        /// Used up its attempts, or could not be decoded; also in the dead-letter stream.
        case dead
        case cancelled
    }

    public struct Timings: Sendable, Codable, Hashable {
        /// Unix times in seconds, with microseconds.
        public var queued: Double?
        public var started: Double?
        public var finished: Double?

        public init(queued: Double? = nil, started: Double? = nil, finished: Double? = nil) {
            self.queued = queued
            self.started = started
            self.finished = finished
        }
    }

    /// How the response cache served a job: `hit` (answered from the cache), `miss` (computed
    /// and stored, or computed because nothing could be stored), `coalesced` (waited for an
    /// identical request in flight on this or another worker, then read its answer), `bypass`
    /// (the cache was not used: the policy, or the cache's Redis failed).
    public struct CacheInfo: Sendable, Codable, Hashable {
        public enum Status: String, Sendable, Codable, CaseIterable {
            case hit, miss, coalesced, bypass
        }

        public var status: Status
        /// Time spent in the cache (lookups, waiting for another worker's answer), in ms.
        public var lookupMs: Double

        enum CodingKeys: String, CodingKey {
            case status
            case lookupMs = "lookup_ms"
        }

        public init(status: Status, lookupMs: Double) {
            self.status = status
            self.lookupMs = lookupMs
        }
    }

    public struct ErrorInfo: Sendable, Codable, Hashable {
        public var code: String
        public var message: String
        /// How long the provider asked to be left alone (`Retry-After`), in seconds, when it did:
        /// the queue's next attempt came no earlier. Nil when it asked nothing.
        public var retryAfter: Double?

        public init(code: String, message: String, retryAfter: Double? = nil) {
            self.code = code
            self.message = message
            self.retryAfter = retryAfter
        }

        enum CodingKeys: String, CodingKey {
            case code, message
            case retryAfter = "retry_after"
        }
    }

    public var version: Int
    public var id: String
    public var status: Status
    public var output: JSONValue?
    public var attempts: Int
    public var worker: String?
    public var timings: Timings
    public var usage: JobUsage?
    public var error: ErrorInfo?
    public var batch: String?
    public var metadata: [String: String]?
    /// Set only when a built-in test executor (`echo`, `noop`) wrote the result: the output is
    /// made up, not a model's answer.
    public var testExecutor: String?
    /// How the response cache served the job (absent when it was not consulted).
    public var cache: CacheInfo?
    /// Which target of the model's chain answered, and each step on the way (absent for
    /// executors without chains, and for answers read from the cache's Redis; an answer shared
    /// in one worker, `coalesced` or from the near cache, carries the route of the job that
    /// computed it).
    public var route: JobRoute?

    enum CodingKeys: String, CodingKey {
        case version = "v"
        case id, status, output, attempts, worker, timings, usage, error, batch, metadata
        case testExecutor = "test_executor"
        case cache, route
    }

    public init(
        id: String,
        status: Status,
        output: JSONValue? = nil,
        attempts: Int,
        worker: String? = nil,
        timings: Timings = Timings(),
        usage: JobUsage? = nil,
        error: ErrorInfo? = nil,
        batch: String? = nil,
        metadata: [String: String]? = nil,
        testExecutor: String? = nil,
        cache: CacheInfo? = nil,
        route: JobRoute? = nil
    ) {
        self.version = Job.formatVersion
        self.id = id
        self.status = status
        self.output = output
        self.attempts = attempts
        self.worker = worker
        self.timings = timings
        self.usage = usage
        self.error = error
        self.batch = batch
        self.metadata = metadata
        self.testExecutor = testExecutor
        self.cache = cache
        self.route = route
    }
}
