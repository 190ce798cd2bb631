import SwitchyardCore

/// The Redis key layout of one queue. Every key carries the queue's name as a hash tag
/// (`sy:{default}:...`), so every multi-key script touches one slot and the layout stays valid on
/// Redis Cluster. docs/ARCHITECTURE.md has the full table.
public struct QueueKeys: Sendable, Hashable {
    public let queue: String
    /// `sy:{<queue>}:`, the prefix of every key.
    public let prefix: String

    public init(queue: String) {
        self.queue = queue
        self.prefix = "sy:{\(queue)}:"
    }

    /// The stream of one priority lane.
    public func lane(_ priority: JobPriority) -> String { prefix + "lane:" + priority.rawValue }
    public var lanes: [String] { JobPriority.inOrder.map(lane) }
    /// Sorted set of jobs waiting for a retry or a not-before time, scored by due time (ms).
    public var delayed: String { prefix + "delayed" }
    /// The final result of a job (a JSON string with a TTL).
    public func result(_ id: String) -> String { prefix + "result:" + id }
    /// Idempotency key to job id.
    public func idempotency(_ key: String) -> String { prefix + "idem:" + key }
    /// Hash of a batch's counts: total, succeeded, failed, dead, cancelled.
    public func batch(_ id: String) -> String { prefix + "batch:" + id }
    /// A job's record, written at push: its batch id ('' for none). While it lives (the result
    /// TTL counted from the job's due time) the id cannot be pushed again, and `cancel` knows the
    /// job and its batch.
    public func job(_ id: String) -> String { prefix + "job:" + id }
    /// List of a batch's job ids, in push order.
    public func batchJobs(_ id: String) -> String { prefix + "batchjobs:" + id }
    /// List of a job's attempts that did not end it (a retry scheduled, a lease that ran out), as
    /// JSON `AttemptRecord`s, oldest first; the attempt that ended the job is its result. Absent
    /// for a job that succeeded at once. Lives as long as the job's result could.
    public func attempts(_ id: String) -> String { prefix + "attempts:" + id }
    /// What `switchyard retry <id>` needs to run a job that ended `failed` again: its lane, its
    /// max attempts and its JSON (`lane \31 max \31 json`), written when it failed, with the
    /// result's TTL.
    public func failedJob(_ id: String) -> String { prefix + "failed:" + id }
    /// Hash of paused lanes (`*` for the whole queue) to who paused them and when (JSON): workers
    /// take nothing from a paused lane (`switchyard queue pause`).
    public var paused: String { prefix + "paused" }
    /// Sorted set of batch ids scored by when their first job was pushed (ms): `switchyard
    /// batches`. Ids whose batch hash expired are dropped when read.
    public var batches: String { prefix + "batches" }
    /// The dead-letter stream.
    public var dead: String { prefix + "dead" }
    /// The Pub/Sub channel on which the finish script publishes the id of every job that asked
    /// for it (`Job.notify`) once the job is finished, for those waiting on its result (the
    /// coordinator). A hint only: a lost message costs a waiter its next poll, never a result.
    public var done: String { prefix + "done" }
    /// Hash of cumulative counters: pushed, succeeded, failed, dead, cancelled, retried, reclaimed,
    /// unparked, requeued (failed or dead jobs run again by `switchyard retry` or `dlq retry`).
    public var stats: String { prefix + "stats" }
    /// Sorted set of worker ids scored by last heartbeat (ms).
    public var workers: String { prefix + "workers" }
    /// A worker's registry entry (JSON with a TTL).
    public func worker(_ id: String) -> String { prefix + "worker:" + id }
    /// A request that the worker with this id drain and exit (`switchyard workers drain`): the
    /// token of the process it was meant for, so a later process with the id ignores it; 10
    /// minutes' TTL.
    public func drainRequest(_ id: String) -> String { prefix + "drain:" + id }
    /// Sorted set of the workers holding `model` warm (loaded or loading), scored by when that
    /// claim expires (ms). Read by warm-model routing.
    public func warm(_ model: String) -> String { prefix + "warm:" + model }
    /// One worker process's cumulative metrics (a JSON snapshot), per series (a new one each
    /// time the process starts), with a TTL of `JobQueue.metricsRetention`.
    public func metrics(worker: String, series: String) -> String { prefix + "metrics:" + worker + ":" + series }
    /// Sorted set of metrics keys scored by their last update (ms): what the merged view reads.
    public var metricsIndex: String { prefix + "metricsets" }
    /// Hash of minute (Unix time / 60) to the cluster's merged metrics snapshot at that minute's
    /// start, written once per minute by whichever coordinator gets there first (HSETNX) and
    /// kept two hours: what windows ("the last 5 minutes") are measured against.
    public var metricsHistory: String { prefix + "metricshistory" }
    /// Hash of minute to a summary of what happened in it (jobs by outcome, latency quantiles),
    /// kept two hours: the dashboard's charts.
    public var metricsTimeline: String { prefix + "metricstimeline" }
    /// Set by every take and heartbeat of a worker with warm-model routing, expiring after its claim TTL: while
    /// it exists, the reclaim keeps parked entries in place instead of handing them back.
    public var routing: String { prefix + "routing" }
    /// The consumer group every worker of the queue reads with.
    public static let group = "workers"
    /// The consumer that holds entries parked by warm-model routing (read by a routing take but
    /// not taken yet) until a worker takes them.
    /// Not a worker: worker ids may not take this name.
    public static let parkedConsumer = "~parked"
}
