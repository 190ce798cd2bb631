import Foundation
import SwitchyardCore
import SwitchyardRedis

/// A job entry handed to this worker by the consumer group: a pending entry until it is finished.
public struct Delivery: Sendable, Hashable {
    public let lane: JobPriority
    public let entryID: String
    /// The job's id as the entry names it (empty when a foreign producer left it out).
    public let jobID: String
    /// 1 for the first run.
    public let attempt: Int
    public let maxAttempts: Int
    public let batch: String
    /// The job's JSON, exactly as pushed.
    public let payload: [UInt8]

    /// The entry's identity in the queue: its lane and its id. An entry id alone is not one:
    /// each lane is a stream of its own, and entries added to two lanes in the same millisecond
    /// get the same id.
    public var key: String { Self.key(lane: lane, entryID: entryID) }

    public static func key(lane: JobPriority, entryID: String) -> String { lane.rawValue + "/" + entryID }

    private static let idField = Array("id".utf8)
    private static let attemptField = Array("attempt".utf8)
    private static let maxField = Array("max".utf8)
    private static let batchField = Array("batch".utf8)
    private static let jobField = Array("job".utf8)

    /// An entry known only by lane and id (a pending entry to hand back).
    init(lane: JobPriority, entryID: String) {
        self.lane = lane
        self.entryID = entryID
        self.jobID = ""
        self.attempt = 1
        self.maxAttempts = 1
        self.batch = ""
        self.payload = []
    }

    /// From a take's compact form of an entry in the push's own layout: its id, attempt, max,
    /// batch and job values in that order (`QueueScripts.deliveryOf`).
    init?(lane: JobPriority, entryID: String, values: ArraySlice<RESPValue>) {
        guard values.count == 5 else { return nil }
        let v = Array(values)
        self.lane = lane
        self.entryID = entryID
        self.jobID = v[0].string ?? ""
        self.attempt = v[1].int ?? 1
        self.maxAttempts = v[2].int ?? 1
        self.batch = v[3].string ?? ""
        self.payload = v[4].bytes ?? []
    }

    init?(lane: JobPriority, entryID: String, fields: [RESPValue]) {
        var id = ""
        var attempt = 1
        var max = 1
        var batch = ""
        var payload: [UInt8] = []
        var i = 0
        // Field names compared as bytes: this runs for every job a worker takes.
        while i + 1 < fields.count {
            guard case .bulk(let name) = fields[i] else {
                i += 2
                continue
            }
            let value = fields[i + 1]
            switch name {
            case Self.idField: id = value.string ?? ""
            case Self.attemptField: attempt = value.int ?? 1
            case Self.maxField: max = value.int ?? 1
            case Self.batchField: batch = value.string ?? ""
            case Self.jobField: payload = value.bytes ?? []
            default: break
            }
            i += 2
        }
        self.lane = lane
        self.entryID = entryID
        self.jobID = id
        self.attempt = attempt
        self.maxAttempts = max
        self.batch = batch
        self.payload = payload
    }

    /// Decodes the job, or says which field is wrong.
    public func decodeJob() throws(JobValidationError) -> Job {
        let job = try Job(json: payload)
        guard job.timeout.isFinite, job.timeout > 0, job.timeout <= 86400 else {
            throw JobValidationError(field: "timeout", problem: "must be more than 0 and at most 86400 seconds, got \(job.timeout)")
        }
        guard job.maxAttempts >= 1 else { throw JobValidationError(field: "max_attempts", problem: "must be at least 1") }
        guard job.version <= Job.formatVersion else {
            throw JobValidationError(field: "v", problem: "format version \(job.version) is newer than this worker's \(Job.formatVersion)")
        }
        return job
    }
}

/// The outcome of one delivery, for `JobQueue.finish`.
public struct Completion: Sendable {
    public var delivery: Delivery
    public var result: JobResult {
        didSet { encodedResult = nil }
    }
    /// `result.encodedJSON()`, when the caller has it already (the worker measures a result's
    /// size before writing it): written as it is.
    public private(set) var encodedResult: [UInt8]?
    /// Whether `finish` publishes the job's id on the queue's done channel (`QueueKeys.done`):
    /// set for jobs that ask for it (`Job.notify`), which someone waits for. Default false.
    public var notify: Bool

    public init(delivery: Delivery, result: JobResult, encodedResult: [UInt8]? = nil, notify: Bool = false) {
        self.delivery = delivery
        self.result = result
        self.encodedResult = encodedResult
        self.notify = notify
    }
}

/// Whether a push queued a job or found it already queued under the same idempotency key.
public enum PushOutcome: Sendable, Hashable {
    case queued(id: String)
    case duplicate(existingID: String)

    public var jobID: String {
        switch self {
        case .queued(let id), .duplicate(let id): return id
        }
    }
}

/// What `JobQueue.cancel` did.
public enum CancelOutcome: Sendable, Hashable {
    /// A final `cancelled` result was written.
    case cancelled
    /// The job already had a final result, which stays.
    case alreadyFinal
    /// No job with this id is known (never pushed, or its record has expired): nothing was written.
    case unknown
}

/// A bulk push that Redis cut short after some jobs were written.
public struct PartialPushError: Error, Sendable, CustomStringConvertible {
    /// Jobs known to be pushed (the first ones, in order); some of the chunk that failed may be too.
    public let pushed: Int
    public let error: any Error

    public var description: String { "the push stopped after \(pushed) jobs were written: \(error)" }
}

/// A push with `Durability.replicated` that no replica confirmed in time. The jobs are on the
/// master; if it dies before replicating them they are gone. Pushing the same jobs again is safe:
/// a job whose id is known is not queued twice.
public struct ReplicationTimeout: Error, Sendable, CustomStringConvertible {
    /// Jobs written to the master, the unconfirmed ones among them.
    public let pushed: Int
    public let confirmedBy: Int
    public let wanted: Int
    public let timeout: Duration

    public var description: String {
        "\(pushed) jobs were written to the Redis master but \(confirmedBy) of \(wanted) replica(s) confirmed them within "
            + "\(timeout) (durability replicated); a failover now could lose them; pushing the same jobs again is safe"
    }
}

/// Counts of a batch.
public struct BatchProgress: Sendable, Hashable, Codable {
    public var total = 0
    public var succeeded = 0
    public var failed = 0
    public var dead = 0
    public var cancelled = 0

    public init() {}

    /// From a batch hash's fields (`QueueKeys.batch`).
    init(counts: [String: String]) {
        total = counts["total"].flatMap(Int.init) ?? 0
        succeeded = counts["succeeded"].flatMap(Int.init) ?? 0
        failed = counts["failed"].flatMap(Int.init) ?? 0
        dead = counts["dead"].flatMap(Int.init) ?? 0
        cancelled = counts["cancelled"].flatMap(Int.init) ?? 0
    }

    public var finished: Int { succeeded + failed + dead + cancelled }
    public var isComplete: Bool { total > 0 && finished >= total }
}

/// A dead letter, as `switchyard dlq list` shows it.
public struct DeadLetter: Sendable, Hashable, Codable {
    public var entryID: String
    public var jobID: String
    public var lane: String
    public var attempt: Int
    public var reason: String
    public var failedAt: Double
    public var payload: String

    enum CodingKeys: String, CodingKey {
        case entryID = "entry_id"
        case jobID = "job_id"
        case lane, attempt, reason
        case failedAt = "failed_at"
        case payload
    }
}

/// What `switchyard status` shows.
public struct QueueStatus: Sendable, Codable {
    public struct Lane: Sendable, Codable {
        public var name: String
        /// Entries not yet delivered to any worker.
        public var waiting: Int
        /// Entries delivered and not finished (in flight, or held by a lost worker until reclaimed).
        public var pending: Int
        /// Of the waiting entries, those parked by warm-model routing: read by a routing take and
        /// not taken yet (waiting for a worker with their model warm, or for a free slot).
        public var parked: Int = 0
        /// How long the oldest entry no worker has read yet has been on the lane, in seconds
        /// (from its stream entry id); nil when none waits. Parked entries are not counted.
        public var oldestWaitingSeconds: Double?

        enum CodingKeys: String, CodingKey {
            case name, waiting, pending, parked
            case oldestWaitingSeconds = "oldest_waiting_seconds"
        }
    }

    public var queue: String
    public var lanes: [Lane]
    public var delayed: Int
    public var dead: Int
    public var counters: [String: Int]
    public var workers: [WorkerInfo]
    /// Paused lanes (`*`: the whole queue) and who paused them; nil or empty when none is.
    public var paused: [String: PauseInfo]? = nil
}

/// A worker's registry entry, refreshed by its heartbeat.
public struct WorkerInfo: Sendable, Codable, Hashable {
    public var id: String
    public var host: String
    public var pid: Int32
    public var profile: String
    public var concurrency: Int
    public var inFlight: Int
    public var startedAt: Double
    public var heartbeatAt: Double
    public var version: String
    public var rssBytes: Int
    public var processed: Int
    public var executor: String
    /// Models the worker holds loaded or loading, most recently used first (local executor only).
    public var models: [String]?
    /// True when the executor is a built-in test executor (echo, noop) that calls no model.
    public var testExecutor: Bool?
    /// Random per worker process: tells this process's registration from another's with the
    /// same id (a restarted container can have the same pid).
    public var token: String?
    /// The response cache's counters of this worker since it started (hits, misses, coalesced,
    /// takeovers, stores, too_large, bypassed, errors, bytes_stored); nil without a cache.
    public var cache: [String: Int]?
    /// The breakers' and rate limits' counters of this worker since it started
    /// (`Resilience.counters`); nil for executors without targets.
    public var resilience: [String: Int]?
    /// Ids of the jobs running on the worker (at most `WorkerInfo.jobsListed`); nil from
    /// workers that predate the field.
    public var jobs: [String]?

    /// The most running job ids an entry lists (`jobs`): an entry stays small with any concurrency.
    public static let jobsListed = 100

    enum CodingKeys: String, CodingKey {
        case id, host, pid, profile, concurrency
        case inFlight = "in_flight"
        case startedAt = "started_at"
        case heartbeatAt = "heartbeat_at"
        case version
        case rssBytes = "rss_bytes"
        case processed, executor, models
        case testExecutor = "test_executor"
        case token, cache, resilience, jobs
    }

    public init(
        id: String,
        host: String,
        pid: Int32,
        profile: String,
        concurrency: Int,
        inFlight: Int,
        startedAt: Double,
        heartbeatAt: Double,
        version: String,
        rssBytes: Int,
        processed: Int,
        executor: String,
        models: [String]? = nil,
        testExecutor: Bool? = nil,
        token: String? = nil,
        cache: [String: Int]? = nil,
        resilience: [String: Int]? = nil,
        jobs: [String]? = nil
    ) {
        self.id = id
        self.host = host
        self.pid = pid
        self.profile = profile
        self.concurrency = concurrency
        self.inFlight = inFlight
        self.startedAt = startedAt
        self.heartbeatAt = heartbeatAt
        self.version = version
        self.rssBytes = rssBytes
        self.processed = processed
        self.models = models
        self.executor = executor
        self.testExecutor = testExecutor
        self.token = token
        self.cache = cache
        self.resilience = resilience
        self.jobs = jobs
    }
}

/// Settings of warm-model routing (see docs/ARCHITECTURE.md, "Warm-model routing").
public struct WarmRouting: Sendable, Hashable {
    /// How long a job waits, set aside, for a worker that holds its model warm before any worker
    /// may run it (and load the model).
    public var longestWait: Duration
    /// How many waiting entries per lane a take looks through for one whose model is warm here.
    public var lookahead: Int
    /// How long a worker's claim in the warm-model index lasts without being renewed.
    public var claimTTL: Duration
    /// A worker with nothing else to do loads a model warm elsewhere too when more than this many
    /// of its jobs per warm worker are set aside (0: never; jobs then wait up to `longestWait`).
    public var shareAfter: Int

    public init(longestWait: Duration = .seconds(2), lookahead: Int = 64, claimTTL: Duration = .seconds(10), shareAfter: Int = 4) {
        self.longestWait = longestWait
        self.lookahead = lookahead
        self.claimTTL = claimTTL
        self.shareAfter = shareAfter
    }
}

/// What a take with warm-model routing found.
public struct WarmTake: Sendable {
    public var deliveries: [Delivery]
    /// The newest entry id of each lane, to wait for anything newer.
    public var lastEntryIDs: [String]
    /// When an entry set aside for another worker may be taken by anyone (nil: none waits).
    public var wakeAfter: Duration?
    /// A model no live worker held warm, whose jobs this take gave to this worker.
    public var claimedModel: String?
    /// The paused lanes' names (`*`: the whole queue), which the take skipped.
    public var paused: Set<String> = []
}

/// One attempt of a job that did not end it (a retry was scheduled, or its lease ran out), as
/// `switchyard job` shows it. The attempt that ended the job is its result.
public struct AttemptRecord: Sendable, Hashable, Codable {
    public var attempt: Int
    /// `retried` or `lease_expired`.
    public var outcome: String
    public var worker: String?
    /// Unix seconds.
    public var started: Double?
    public var finished: Double?
    public var error: JobResult.ErrorInfo?
    /// When the next attempt was due (Unix seconds), for a retry.
    public var nextAttemptAt: Double?

    public init(
        attempt: Int,
        outcome: String,
        worker: String? = nil,
        started: Double? = nil,
        finished: Double? = nil,
        error: JobResult.ErrorInfo? = nil,
        nextAttemptAt: Double? = nil
    ) {
        self.attempt = attempt
        self.outcome = outcome
        self.worker = worker
        self.started = started
        self.finished = finished
        self.error = error
        self.nextAttemptAt = nextAttemptAt
    }

    /// The attempt a final result describes (the run that ended the job).
    public init(ended result: JobResult) {
        self.init(
            attempt: result.attempts,
            outcome: result.status.rawValue,
            worker: result.worker,
            started: result.timings.started,
            finished: result.timings.finished,
            error: result.error
        )
    }

    enum CodingKeys: String, CodingKey {
        case attempt, outcome, worker, started, finished, error
        case nextAttemptAt = "next_attempt_at"
    }

    var jsonBytes: [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data())
    }
}

/// A worker's model-server slots, for a warm take: how many requests one server takes at once and
/// how many of a warm model's are free now (`HardwareProfile.parallel`).
public struct WarmSlots: Sendable, Hashable {
    /// Slots of one model server; a model the take starts gets this many.
    public var perServer: Int
    /// Free slots per warm model; a warm model not listed has all `perServer` free.
    public var free: [String: Int]

    public init(perServer: Int, free: [String: Int] = [:]) {
        self.perServer = perServer
        self.free = free
    }
}
