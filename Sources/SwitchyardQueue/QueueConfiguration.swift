import SwitchyardCore
import SwitchyardRedis

/// How a queue keeps its promises: leases, retries, and how long things are kept.
public struct QueueConfiguration: Sendable {
    /// The queue's name; the hash tag of every key.
    public var name: String
    /// How long a worker holds a job without refreshing its lease before any worker may reclaim it.
    public var lease: Duration
    /// Backoff between attempts of a failed job (exponential, jittered).
    public var retryBackoff: Backoff
    /// How long final results and batch records are kept.
    public var resultTTL: Duration
    /// How long an idempotency key maps to its job.
    public var idempotencyTTL: Duration
    /// The dead-letter stream is trimmed to about this many entries.
    public var deadLetterLimit: Int
    /// Whether push and finish wait for a replica (`WAIT`). Default `.acknowledged`.
    public var durability: Durability = .acknowledged

    public init(
        name: String = "default",
        lease: Duration = .seconds(30),
        retryBackoff: Backoff = Backoff(base: .seconds(1), cap: .seconds(300)),
        resultTTL: Duration = .seconds(86400),
        idempotencyTTL: Duration = .seconds(86400),
        deadLetterLimit: Int = 10000
    ) {
        self.name = name
        self.lease = lease
        self.retryBackoff = retryBackoff
        self.resultTTL = resultTTL
        self.idempotencyTTL = idempotencyTTL
        self.deadLetterLimit = deadLetterLimit
    }
}

extension Duration {
    var wholeSeconds: Int { max(1, Int(components.seconds)) }
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}
