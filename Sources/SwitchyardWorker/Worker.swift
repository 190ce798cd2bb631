import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCache
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardRedis
import Synchronization

/// A stateless worker: takes jobs from the queue, runs them on an executor, writes results.
///
/// Runs as a `Service`: on graceful shutdown (SIGTERM) it stops reading, lets in-flight jobs
/// finish within `shutdownGrace`, hands the rest back to the queue for another worker to run at
/// once, writes what it has, deregisters, and returns. Every loop survives Redis going away and
/// picks up again when it returns.
///
/// Its parts, one file each: taking jobs (`Worker+Fetch`), running them and watching their time,
/// cancellation and leases (`Worker+Jobs`), writing outcomes (`Worker+Flush`), draining
/// (`Worker+Drain`), and the heartbeat and queue upkeep (`Worker+Upkeep`). Each job runs as a child
/// task of the worker's job group, so the worker ends only when every job has.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    let queue: JobQueue
    let executor: any JobExecutor
    /// Set when the executor reports warm models and routing is on.
    let warmSource: (any WarmModelReporting)?
    /// The response cache, for executors that say what a job is sent to (`CacheTargetReporting`).
    let cache: ResponseCache?
    let metrics: WorkerMetrics
    let logger: Logger
    /// Failed attempts, retries and dead letters, rate-limited.
    let failureLog: FailureLog
    let blocking: RedisConnection
    let state = Mutex(State())
    /// A job ended, or its outcome was written: a slot may be free.
    let slotFreed = Signal()
    /// An outcome is waiting to be written.
    let outcomeReady = Signal()
    /// A running job ended (the drain waits for these).
    let jobEnded = Signal()
    let startedAt = Date().timeIntervalSince1970
    let hostName = ProcessInfo.processInfo.hostName
    /// Tells this worker's registration from another process's with the same id.
    let token = UUID().uuidString

    /// Why a running job's task was cancelled.
    enum StopReason: Sendable {
        case timeout
        case cancelledByRequest
        case leaseLost
        case shutdown
    }

    struct InFlight: Sendable {
        var delivery: Delivery
        /// The job's model ('' until decoded, or for a bad payload).
        var model = ""
        /// The executor's task; cancelled to stop the job.
        var task: Task<Void, Never>?
        /// Ends the job's wait for its executor early when the executor ignores cancellation.
        var attempt: Attempt?
        var deadline: ContinuousClock.Instant
        var running = true
        var stopReason: StopReason?
        var stoppedAt: ContinuousClock.Instant?
    }

    /// What to tell the queue about a finished attempt.
    enum Outcome: Sendable {
        case finished(Completion)
        /// A retry after the delay, with the attempt for the job's history.
        case retry(Delivery, after: Duration, record: AttemptRecord?)
        case dead(Delivery, reason: String, result: JobResult?)
        /// Nothing to write (the lease was lost, or the job is handed back): just forget it.
        case forget(Delivery)

        var delivery: Delivery {
            switch self {
            case .finished(let c): return c.delivery
            case .retry(let d, _, _), .dead(let d, _, _), .forget(let d): return d
            }
        }
    }

    struct State: Sendable {
        /// By `Delivery.key` (lane and entry id: entry ids repeat across lanes).
        var inFlight: [String: InFlight] = [:]
        var outcomes: [Outcome] = []
        var processed = 0
        var draining = false
        /// Models this worker has claimed in the warm-model index.
        var publishedWarm: Set<String> = []
        /// Outcomes that failed to be written on their own, by `Delivery.key`: how many times.
        var writeFailures: [String: Int] = [:]
        /// The fetch loop's blocking read in progress, cancelled by a drain.
        var cancelBlockingRead: (@Sendable () -> Void)?
        /// Set by the drain: when the worker stops trying to write to Redis.
        var shutdownDeadline: ContinuousClock.Instant?
        /// A write during shutdown found Redis unreachable.
        var unreachableAtShutdown = false
        /// Another process registered this worker's id (found by a heartbeat): stop, and touch
        /// nothing pending under the id.
        var displaced = false
        /// The metrics registry's version last published, and when.
        var publishedMetricsVersion = 0
        var publishedMetricsAt = ContinuousClock.now
        /// The worker holds its id in the registry (for `health`).
        var registered = false
        /// When a heartbeat last reached Redis (for `health`).
        var lastHeartbeat: ContinuousClock.Instant?
        /// The lanes the last take found paused (`*`: the whole queue).
        var pausedLanes: Set<String> = []
        /// When the watch loop last ran; it starts with the worker (for `health`).
        var lastWatchTick = ContinuousClock.now
    }

    public init(
        queue: JobQueue,
        executor: any JobExecutor,
        configuration: WorkerConfiguration,
        cache: ResponseCache? = nil,
        logger: Logger
    ) {
        self.queue = queue
        self.executor = executor
        self.cache = executor is any CacheTargetReporting ? cache : nil
        self.metrics = WorkerMetrics(registry: configuration.metrics ?? MetricsRegistry())
        self.warmSource = configuration.warmRouting == nil ? nil : executor as? any WarmModelReporting
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
        self.failureLog = FailureLog(logger: logger)
        // Blocking reads get a connection of their own, so they never hold a pooled one.
        self.blocking = RedisConnection(configuration: queue.redis.configuration, logger: logger)
    }

    /// Jobs this worker has finished (results written, retries scheduled, dead-lettered).
    public var processed: Int { state.withLock { $0.processed } }
    public var inFlightCount: Int { state.withLock { $0.inFlight.count } }
    /// Slots free for new jobs: `concurrency` minus the jobs running. A job frees its slot when
    /// its executor ends, not when its outcome is written, so the next job is taken while the
    /// last one's outcome is on its way to Redis. Outcomes not yet written are bounded all the
    /// same: at most `concurrency` of them beside a full set of running jobs (when Redis is slow
    /// to take writes, the worker stops taking jobs rather than pile up results).
    var freeSlots: Int {
        state.withLock { s in
            let running = s.inFlight.values.reduce(0) { $0 + ($1.running ? 1 : 0) }
            return min(configuration.concurrency - running, 2 * configuration.concurrency - s.inFlight.count)
        }
    }
    var isDraining: Bool { state.withLock { $0.draining } }

    public func run() async throws {
        logger.info(
            "worker starting",
            metadata: [
                "queue": "\(queue.configuration.name)", "concurrency": "\(configuration.concurrency)", "executor": "\(configuration.executorName)",
            ]
        )
        if let test = executor.testExecutorName {
            logger.warning("executor '\(test)' is a test executor: it calls no model, and its results say so (test_executor)")
        }
        // Inside the shutdown handler, so SIGTERM also stops a worker still waiting for Redis.
        let holder = await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await self.admit()
            } onCancel: {
                self.beginDrain()
            }
        } onGracefulShutdown: {
            self.beginDrain()
        }
        if let holder {
            // Not registered, and nothing of the id touched: its entries belong to the live worker.
            blocking.close()
            throw WorkerError(
                .duplicateID,
                "a live worker already uses the id '\(configuration.id)' (pid \(holder.pid) on \(holder.host), seen "
                    + "\(String(format: "%.1f", Date().timeIntervalSince1970 - holder.heartbeatAt)) s ago); "
                    + "give each worker its own --worker-id (the default is unique), or stop that one first"
            )
        }
        if isDraining {
            blocking.close()
            try? await queue.deregister(workerID: configuration.id)
            logger.info("worker stopped before it started")
            return
        }
        noteHeartbeat()
        await configuration.whenRegistered?()
        await withDiscardingTaskGroup { background in
            background.addTask { await self.heartbeatLoop() }
            background.addTask { await self.maintenanceLoop() }
            background.addTask { await self.watchLoop() }
            background.addTask { await self.flushLoop() }
            // The fetch loop runs in the job group's body and each job it admits runs as a child;
            // a drain cuts the loop's blocking read short (`beginDrain`).
            await withDiscardingTaskGroup { jobs in
                await withGracefulShutdownHandler {
                    await withTaskCancellationHandler {
                        await self.fetchLoop { delivery in
                            if let job = self.admitJob(delivery) { jobs.addTask { await self.runJob(job, delivery: delivery) } }
                        }
                    } onCancel: {
                        self.beginDrain()
                    }
                } onGracefulShutdown: {
                    self.beginDrain()
                }
                await self.drain()
            }
            await self.flushNow(until: self.shutdownDeadline)
            background.cancelAll()
        }
        // A write the flush loop had in flight when it was cancelled put its outcomes back: write them.
        await flushNow(until: shutdownDeadline)
        blocking.close()
        let (unreachable, displaced) = state.withLock { ($0.unreachableAtShutdown, $0.displaced) }
        if displaced {
            // Another process holds this id now: what is pending under it is that one's.
            throw WorkerError(
                .displaced,
                "another process registered the id '\(configuration.id)' while this worker could not reach Redis; it stopped without "
                    + "touching the jobs pending under that id"
            )
        }
        if unreachable {
            logger.warning("Redis is unreachable: jobs left pending here run again after their lease; the registry entry runs out by itself")
        } else if (try? await queue.heartbeat(workerInfo(), ttl: configuration.heartbeatTTL)) == false {
            // Another process registered this id meanwhile: what is pending under it is that one's.
            logger.warning("another process holds this worker's id now; stopping without handing anything back")
        } else {
            await handBackOrphans()
            // The last numbers, so a drained worker's series in the merged view is complete.
            await publishMetricsNow()
            do {
                try await queue.withdrawWarm(workerID: configuration.id, models: Array(state.withLock { $0.publishedWarm }))
                try await queue.deregister(workerID: configuration.id)
            } catch {
                logger.warning("could not deregister (the registry entry runs out by itself): \(error)")
            }
        }
        failureLog.flush()
        logger.info("worker stopped", metadata: ["processed": "\(processed)"])
    }

    /// When a stopping worker gives up on writing to Redis: the end of the grace period plus
    /// `shutdownWriteTime` (or that long from now when the drain has not set it).
    var shutdownDeadline: ContinuousClock.Instant {
        state.withLock { $0.shutdownDeadline } ?? ContinuousClock.now + configuration.shutdownWriteTime
    }

    /// Shutdown found Redis unreachable: no more attempts to write, hand back or deregister.
    func markUnreachableAtShutdown(_ error: any Error) {
        let first = state.withLock { s -> Bool in
            defer { s.unreachableAtShutdown = true }
            return !s.unreachableAtShutdown
        }
        if first { logger.warning("stopping without Redis: \(error)") }
    }

    var redisUnreachableAtShutdown: Bool { state.withLock { $0.unreachableAtShutdown } }

    /// Creates the consumer groups and registers this worker, waiting for Redis as long as it
    /// takes (or until shutdown). Returns the live worker that already holds this id, if any.
    private func admit() async -> WorkerInfo? {
        await retrying("create consumer group") {
            try await self.queue.ensureGroups()
        } until: {
            self.isDraining
        }
        var holder: WorkerInfo?
        await retrying("register") {
            holder = try await self.queue.register(self.workerInfo(), ttl: self.configuration.heartbeatTTL)
            // An earlier run of this worker on this host that died without deregistering (its pid
            // is gone, or is ours again, as in a restarted container): take over.
            if let h = holder, h.host == self.hostName, h.token != self.token,
                h.pid == getpid() || (kill(h.pid, 0) != 0 && errno == ESRCH)
            {
                self.logger.info("taking over the id of an earlier worker (pid \(h.pid)) that is gone")
                try await self.queue.heartbeat(self.workerInfo(), ttl: self.configuration.heartbeatTTL, force: true)
                holder = nil
            }
        } until: {
            self.isDraining
        }
        return holder
    }
}

/// One attempt's wait for its executor: ends with the executor's result, or early (nil) when
/// the worker abandons an executor that ignored cancellation.
final class Attempt: Sendable {
    private struct Slot {
        var result: Result<JobOutput, any Error>??
        var waiter: CheckedContinuation<Result<JobOutput, any Error>?, Never>?
    }
    private let slot = Mutex(Slot())

    /// The executor's result, or nil when abandoned.
    var value: Result<JobOutput, any Error>? {
        get async {
            await withCheckedContinuation { continuation in
                let ready = slot.withLock { s -> Result<JobOutput, any Error>?? in
                    if let result = s.result { return result }
                    s.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        }
    }

    func finish(_ result: Result<JobOutput, any Error>) { settle(result) }
    func abandon() { settle(nil) }

    /// The first of finish and abandon wins.
    private func settle(_ result: Result<JobOutput, any Error>?) {
        let waiter = slot.withLock { s -> CheckedContinuation<Result<JobOutput, any Error>?, Never>? in
            guard s.result == nil else { return nil }
            s.result = .some(result)
            defer { s.waiter = nil }
            return s.waiter
        }
        waiter?.resume(returning: result)
    }
}
