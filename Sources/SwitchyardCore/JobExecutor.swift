import Foundation

/// What an executor returns for a job that succeeded.
public struct JobOutput: Sendable {
    public var output: JSONValue
    public var usage: JobUsage?
    /// How the response cache served the job, when it was consulted.
    public var cache: JobResult.CacheInfo?
    /// Which target answered and the steps on the way, for executors with chains of targets.
    public var route: JobRoute?

    public init(output: JSONValue, usage: JobUsage? = nil, cache: JobResult.CacheInfo? = nil, route: JobRoute? = nil) {
        self.output = output
        self.usage = usage
        self.cache = cache
        self.route = route
    }
}

/// An executor whose answers the response cache may keep: it says what a job would be sent to
/// (a provider and its upstream model, or a local model and its file), or nil when it cannot tell.
public protocol CacheTargetReporting: Sendable {
    func cacheTarget(for job: Job) -> String?
    /// How long answers for this job's model are kept, in seconds, when its configuration says
    /// (the providers file's or the catalog's `cache_ttl`); nil: the worker's default (the default).
    func cacheTTL(for job: Job) -> Double?
}

extension CacheTargetReporting {
    public func cacheTTL(for job: Job) -> Double? { nil }
}

/// A failed attempt. `retryable` failures are retried with backoff until the attempt limit;
/// others end the job as `failed` at once (bad input, a 4xx from a provider).
public struct JobFailure: Error, Sendable, CustomStringConvertible {
    public var code: String
    public var message: String
    public var retryable: Bool
    /// The soonest a retry can help (every target's breaker is open for this long, say); the
    /// retry waits at least this, up to the queue's backoff cap. Default nil.
    public var retryAfter: Duration?

    public init(code: String, message: String, retryable: Bool = true, retryAfter: Duration? = nil) {
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retryAfter = retryAfter
    }

    public var description: String { "\(code): \(message)" }
}

/// Facts about the attempt an executor is running.
public struct JobContext: Sendable {
    /// 1 for the first attempt.
    public var attempt: Int
    public var workerID: String

    public init(attempt: Int, workerID: String) {
        self.attempt = attempt
        self.workerID = workerID
    }
}

/// Runs jobs. Providers and local model servers plug in here; the worker runtime owns retries,
/// timeouts (it cancels the task) and results.
public protocol JobExecutor: Sendable {
    func execute(_ job: Job, context: JobContext) async throws -> JobOutput
    /// The name of a built-in test executor (`echo`, `noop`), which calls no model; nil for real
    /// ones (the default). Every result a test executor writes carries it as `test_executor`, and
    /// `switchyard status` labels its workers, so a fabricated answer is never mistaken for one.
    var testExecutorName: String? { get }
}

extension JobExecutor {
    public var testExecutorName: String? { nil }
}

/// An executor that keeps models loaded and can say which: workers use it for warm-model
/// routing, preferring jobs for these models.
public protocol WarmModelReporting: Sendable {
    /// Models loaded or loading now, most recently used first.
    func warmModels() async -> [String]
    /// How many models fit at once.
    var modelCacheSize: Int { get }
    /// Requests one model server runs at once (`HardwareProfile.parallel`); the worker takes no
    /// more jobs of a model than that. Default: 1.
    var slotsPerServer: Int { get }
}

extension WarmModelReporting {
    public var slotsPerServer: Int { 1 }
}

/// A built-in executor for tests and benchmarks only: it calls no model.
///
/// Chat jobs get the last user message back; image jobs their prompt; embedding jobs a vector of
/// text lengths. Metadata knobs make test jobs misbehave on purpose:
/// `echo.sleep_ms` sleeps first (`echo.sleep_ms_after_first` instead on every attempt after the
/// first: a retry, a reclaimed run); `echo.fail_attempts` fails that many first attempts
/// (retryable); `echo.fail` = "fatal" fails for good.
public struct EchoExecutor: JobExecutor {
    public init() {}
    public var testExecutorName: String? { "echo" }

    public func execute(_ job: Job, context: JobContext) async throws -> JobOutput {
        let later = context.attempt > 1 ? job.metadata["echo.sleep_ms_after_first"] : nil
        if let ms = (later ?? job.metadata["echo.sleep_ms"]).flatMap(Int.init), ms > 0 {
            try await Task.sleep(for: .milliseconds(ms))
        }
        if let failing = job.metadata["echo.fail_attempts"].flatMap(Int.init), context.attempt <= failing {
            throw JobFailure(code: "echo_failure", message: "failing attempt \(context.attempt) of \(failing) on purpose")
        }
        if job.metadata["echo.fail"] == "fatal" {
            throw JobFailure(code: "echo_fatal", message: "failing for good on purpose", retryable: false)
        }
        switch job.kind {
        case .chat:
            let text = job.input.messages?.last(where: { $0.role == "user" })?.content ?? ""
            return JobOutput(
                output: .object(["role": .string("assistant"), "content": .string(text)]),
                usage: JobUsage(promptTokens: text.count, completionTokens: text.count, totalTokens: text.count * 2)
            )
        case .image:
            return JobOutput(output: .object(["prompt": .string(job.input.prompt ?? "")]), usage: JobUsage(images: job.input.count ?? 1))
        case .embedding:
            let vectors = (job.input.texts ?? []).map { JSONValue.array([.number(Double($0.count))]) }
            return JobOutput(output: .array(vectors))
        }
    }
}

/// Does nothing and returns null: for measuring the queue itself.
public struct NoopExecutor: JobExecutor {
    public init() {}
    public var testExecutorName: String? { "noop" }
    public func execute(_ job: Job, context: JobContext) async throws -> JobOutput { JobOutput(output: .null) }
}
