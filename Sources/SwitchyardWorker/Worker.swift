import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Synchronization

/// A stateless worker: takes jobs from the queue, runs them on an executor, writes results.
///
/// Runs as a `Service`: on graceful shutdown (SIGTERM) it stops reading, lets in-flight jobs
/// finish within `shutdownGrace`, hands the rest back to the queue for another worker to run at
/// once, writes what it has, deregisters, and returns. Every loop survives Redis going away and
/// picks up again when it returns.
public final class Worker: Service, Sendable {
    public let configuration: WorkerConfiguration
    private let queue: JobQueue
    private let executor: any JobExecutor
    /// Set when the executor reports warm models and routing is on.
    private let warmSource: (any WarmModelReporting)?
    private let logger: Logger
    private let blocking: RedisConnection
    private let state = Mutex(State())
    private let slotFreed = Signal()
    private let outcomeReady = Signal()
    private let startedAt = Date().timeIntervalSince1970
    private let hostName = ProcessInfo.processInfo.hostName

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
        var task: Task<Void, Never>?
        var deadline: ContinuousClock.Instant
        var running = true
        var stopReason: StopReason?
    }

    /// What to tell the queue about a finished attempt.
    enum Outcome: Sendable {
        case finished(Completion)
        case retry(Delivery, after: Duration)
        case dead(Delivery, reason: String, result: JobResult?)
        /// Nothing to write (the lease was lost, or the job is handed back): just forget it.
        case forget(Delivery)

        var delivery: Delivery {
            switch self {
            case .finished(let c): return c.delivery
            case .retry(let d, _), .dead(let d, _, _), .forget(let d): return d
            }
        }
    }

    struct State: Sendable {
        var inFlight: [String: InFlight] = [:]
        var outcomes: [Outcome] = []
        var processed = 0
        var draining = false
        var fetchTask: Task<Void, Never>?
        /// Models this worker has claimed in the warm-model index.
        var publishedWarm: Set<String> = []
    }

    public init(queue: JobQueue, executor: any JobExecutor, configuration: WorkerConfiguration, logger: Logger) {
        self.queue = queue
        self.executor = executor
        self.warmSource = configuration.warmRouting == nil ? nil : executor as? any WarmModelReporting
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "worker"] = "\(configuration.id)"
        self.logger = logger
        // Blocking reads get a connection of their own, so they never hold a pooled one.
        self.blocking = RedisConnection(configuration: queue.redis.configuration, logger: logger)
    }

    /// Jobs this worker has finished (results written, retries scheduled, dead-lettered).
    public var processed: Int { state.withLock { $0.processed } }
    public var inFlightCount: Int { state.withLock { $0.inFlight.count } }

    public func run() async throws {
        logger.info(
            "worker starting",
            metadata: [
                "queue": "\(queue.configuration.name)", "concurrency": "\(configuration.concurrency)", "executor": "\(configuration.executorName)",
            ]
        )
        await withDiscardingTaskGroup { group in
            let fetch = Task {
                // Inside the shutdown handler, so SIGTERM also stops a worker still waiting for Redis.
                await self.retrying("create consumer group") {
                    try await self.queue.ensureGroups()
                } until: {
                    self.isDraining
                }
                if self.isDraining { return }
                if let source = self.warmSource, let routing = self.configuration.warmRouting {
                    let routing = self.effective(routing)
                    await self.fetchLoop { try await self.takeWarm(free: $0, source: source, routing: routing) }
                } else {
                    await self.fetchLoop { try await self.takeInOrder(free: $0) }
                }
            }
            state.withLock { $0.fetchTask = fetch }
            group.addTask { await self.heartbeatLoop() }
            group.addTask { await self.maintenanceLoop() }
            group.addTask { await self.watchLoop() }
            group.addTask { await self.flushLoop() }
            await withGracefulShutdownHandler {
                await withTaskCancellationHandler {
                    await fetch.value
                } onCancel: {
                    self.beginDrain()
                }
            } onGracefulShutdown: {
                self.beginDrain()
            }
            await drain()
            group.cancelAll()
        }
        // A write the flush loop had in flight when it was cancelled put its outcomes back: write them.
        await flushNow()
        blocking.close()
        do {
            try await queue.withdrawWarm(workerID: configuration.id, models: Array(state.withLock { $0.publishedWarm }))
        } catch {
            logger.warning("could not withdraw warm-model claims (they run out by themselves): \(error)")
        }
        do {
            try await queue.deregister(workerID: configuration.id)
        } catch {
            logger.warning("could not deregister: \(error)")
        }
        logger.info("worker stopped", metadata: ["processed": "\(processed)"])
    }

    // MARK: - Taking and running jobs

    private var isDraining: Bool { state.withLock { $0.draining } }

    private func beginDrain() {
        let fetch = state.withLock { s -> Task<Void, Never>? in
            s.draining = true
            return s.fetchTask
        }
        fetch?.cancel()
        slotFreed.notify()
    }

    /// Takes jobs while there are free slots, waiting for one when all are busy; `fill` takes up
    /// to the given number of jobs (or waits a while for some). Survives Redis going away.
    private func fetchLoop(_ fill: (_ free: Int) async throws -> Void) async {
        var failures = 0
        while !isDraining && !Task.isCancelled {
            let free = configuration.concurrency - inFlightCount
            if free <= 0 {
                _ = await slotFreed.wait()
                continue
            }
            do {
                try await fill(free)
                if failures > 0 { logger.info("reading jobs again") }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                if isDraining { return }
                failures += 1
                await handleLoopError(error, in: "read jobs", failures: failures)
            }
        }
    }

    /// Jobs in queue order: the take script, then a blocking read when it finds nothing.
    private func takeInOrder(free: Int) async throws {
        var deliveries = try await queue.take(consumer: configuration.id, count: free)
        if deliveries.isEmpty {
            deliveries = try await queue.waitForWork(on: blocking, consumer: configuration.id, count: free, block: configuration.blockTimeout)
        }
        // COUNT applies per stream, so a read over three lanes can bring up to three times
        // the free slots: keep what fits, hand the rest straight back.
        for delivery in deliveries.prefix(free) { start(delivery) }
        if deliveries.count > free { try await queue.handBack(Array(deliveries[free...])) }
    }

    /// Warm-model routing: the take script picks jobs by model; when it finds none, wait for a new
    /// entry on any lane, or until a job parked for another worker reaches the longest wait.
    private func takeWarm(free: Int, source: any WarmModelReporting, routing: WarmRouting) async throws {
        let (warm, busy) = await warmModels(source)
        let released = state.withLock { Array($0.publishedWarm.subtracting(warm)) }
        let take = try await queue.takeWarm(
            consumer: configuration.id,
            count: free,
            warm: warm,
            released: released,
            cacheSize: source.modelCacheSize,
            // Every slot of the cache serves a running job: taking a job for another model would only make it wait.
            mayLoad: busy < source.modelCacheSize,
            routing: routing
        )
        state.withLock { s in
            // Merged, not assigned: the heartbeat may have published more meanwhile.
            s.publishedWarm.subtract(released)
            s.publishedWarm.formUnion(warm)
            if let claimed = take.claimedModel { s.publishedWarm.insert(claimed) }
        }
        for delivery in take.deliveries { start(delivery) }
        if take.deliveries.isEmpty {
            var block = min(configuration.blockTimeout, take.wakeAfter ?? configuration.blockTimeout)
            // Jobs this worker could not load for now become takeable when a running job ends,
            // which no new entry announces: look again soon.
            if busy >= source.modelCacheSize { block = min(block, .milliseconds(100)) }
            _ = try await queue.waitForNewEntries(on: blocking, after: take.lastEntryIDs, block: block)
        }
    }

    /// Models of running jobs first (a job just taken may not have reached the manager yet), then
    /// the executor's warm models, most recently used first; and how many distinct models run now.
    private func warmModels(_ source: any WarmModelReporting) async -> (warm: [String], busy: Int) {
        let running = state.withLock { s in s.inFlight.values.filter { $0.running && !$0.model.isEmpty }.map(\.model) }
        var warm: [String] = []
        for model in running + (await source.warmModels()) where !warm.contains(model) { warm.append(model) }
        return (warm, Set(running).count)
    }

    /// Entries set aside must be taken (or given back by the reclaim at half a lease) well before
    /// a lease runs out, so the longest wait is at most a quarter of the lease.
    private func effective(_ routing: WarmRouting) -> WarmRouting {
        var routing = routing
        routing.longestWait = min(routing.longestWait, queue.configuration.lease / 4)
        // The reclaim looks at up to 100 parked entries per lane; more could age into "lost".
        routing.lookahead = min(max(routing.lookahead, 1), 100)
        routing.claimTTL = max(routing.claimTTL, configuration.heartbeatTTL)
        return routing
    }

    private func start(_ delivery: Delivery) {
        let job: Job
        do {
            job = try delivery.decodeJob()
            guard !delivery.jobID.isEmpty, delivery.jobID == job.id else {
                // The entry's id names the result key; a missing or different one would mix jobs up.
                throw JobValidationError(field: "id", problem: "the stream entry's id '\(delivery.jobID)' does not match the job's '\(job.id)'")
            }
        } catch {
            // Never crash or stall on a bad payload: dead-letter it with the reason.
            let reason = "payload cannot be decoded: \(error)"
            logger.warning("dead-lettering entry \(delivery.entryID): \(reason)")
            let result =
                delivery.jobID.isEmpty || delivery.jobID.unicodeScalars.contains(where: { $0.value < 32 })
                ? nil
                : JobResult(
                    id: delivery.jobID,
                    status: .dead,
                    attempts: delivery.attempt,
                    worker: configuration.id,
                    timings: .init(finished: Date().timeIntervalSince1970),
                    error: .init(code: "invalid_payload", message: reason),
                    batch: delivery.batch.isEmpty ? nil : delivery.batch
                )
            state.withLock {
                $0.inFlight[delivery.entryID] = InFlight(delivery: delivery, task: nil, deadline: .now, running: false)
                $0.outcomes.append(.dead(delivery, reason: reason, result: result))
            }
            outcomeReady.notify()
            return
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(job.timeout * 1000))
        state.withLock { $0.inFlight[delivery.entryID] = InFlight(delivery: delivery, model: job.model, task: nil, deadline: deadline) }
        let task = Task { await self.runJob(job, delivery: delivery) }
        let stoppedAlready = state.withLock { s -> Bool in
            guard s.inFlight[delivery.entryID]?.running == true else { return false }
            s.inFlight[delivery.entryID]?.task = task
            // Stopped (timeout, cancel, drain) before the task was stored: nobody cancelled it yet.
            return s.inFlight[delivery.entryID]?.stopReason != nil
        }
        if stoppedAlready { task.cancel() }
    }

    private func runJob(_ job: Job, delivery: Delivery) async {
        let started = Date().timeIntervalSince1970
        let context = JobContext(attempt: delivery.attempt, workerID: configuration.id)
        let outcome: Outcome
        do {
            let output = try await executor.execute(job, context: context)
            if let reason = stopReason(delivery), reason == .leaseLost || reason == .shutdown {
                outcome = .forget(delivery)
            } else {
                outcome = .finished(
                    Completion(
                        delivery: delivery,
                        result: result(job, delivery, .succeeded, started: started, output: output.output, usage: output.usage)
                    )
                )
            }
        } catch {
            outcome = failureOutcome(error, job: job, delivery: delivery, started: started)
        }
        state.withLock { s in
            s.inFlight[delivery.entryID]?.running = false
            s.inFlight[delivery.entryID]?.task = nil
            s.outcomes.append(outcome)
        }
        outcomeReady.notify()
    }

    private func stopReason(_ delivery: Delivery) -> StopReason? {
        state.withLock { $0.inFlight[delivery.entryID]?.stopReason }
    }

    private func failureOutcome(_ error: any Error, job: Job, delivery: Delivery, started: Double) -> Outcome {
        let failure: JobFailure
        switch stopReason(delivery) {
        case .leaseLost, .shutdown:
            return .forget(delivery)
        case .cancelledByRequest:
            // The cancelled result is already final; finishing only acknowledges the entry.
            return .finished(Completion(delivery: delivery, result: result(job, delivery, .cancelled, started: started)))
        case .timeout:
            failure = JobFailure(code: "timeout", message: "attempt \(delivery.attempt) ran longer than the job's timeout of \(job.timeout) s")
        case nil:
            failure = (error as? JobFailure) ?? JobFailure(code: "executor_error", message: "\(error)")
        }
        let info = JobResult.ErrorInfo(code: failure.code, message: failure.message)
        if !failure.retryable {
            return .finished(Completion(delivery: delivery, result: result(job, delivery, .failed, started: started, error: info)))
        }
        if delivery.attempt >= delivery.maxAttempts {
            let reason = "failed on attempt \(delivery.attempt) of \(delivery.maxAttempts): \(failure)"
            return .dead(delivery, reason: reason, result: result(job, delivery, .dead, started: started, error: info))
        }
        let delay = queue.configuration.retryBackoff.delay(attempt: delivery.attempt)
        logger.debug("job \(job.id) attempt \(delivery.attempt) failed (\(failure)); retrying in \(delay)")
        return .retry(delivery, after: delay)
    }

    private func result(
        _ job: Job,
        _ delivery: Delivery,
        _ status: JobResult.Status,
        started: Double,
        output: JSONValue? = nil,
        usage: JobUsage? = nil,
        error: JobResult.ErrorInfo? = nil
    ) -> JobResult {
        JobResult(
            id: job.id,
            status: status,
            output: output,
            attempts: delivery.attempt,
            worker: configuration.id,
            timings: .init(queued: job.queuedAt, started: started, finished: Date().timeIntervalSince1970),
            usage: usage,
            error: error,
            batch: job.batch,
            metadata: job.metadata.isEmpty ? nil : job.metadata
        )
    }

    // MARK: - Writing outcomes

    /// Writes outcomes in batches: while one write is in flight, the next batch gathers.
    private func flushLoop() async {
        var failures = 0
        while !Task.isCancelled {
            let pending = state.withLock { s -> [Outcome] in
                defer { s.outcomes.removeAll(keepingCapacity: true) }
                return s.outcomes
            }
            if pending.isEmpty {
                if !(await outcomeReady.wait()) { return }
                continue
            }
            do {
                try await write(pending)
                failures = 0
                state.withLock { s in
                    for outcome in pending { s.inFlight[outcome.delivery.entryID] = nil }
                    s.processed += pending.count
                }
                slotFreed.notify()
            } catch {
                // Keep them: nothing is lost, the write is tried again.
                state.withLock { $0.outcomes.insert(contentsOf: pending, at: 0) }
                if Task.isCancelled { return }
                failures += 1
                await handleLoopError(error, in: "write results", failures: failures)
            }
        }
    }

    private func write(_ outcomes: [Outcome]) async throws {
        var completions: [Completion] = []
        for outcome in outcomes {
            switch outcome {
            case .finished(let completion): completions.append(completion)
            case .retry(let delivery, let delay): try await queue.retry(delivery, after: delay)
            case .dead(let delivery, let reason, let result): try await queue.deadLetter(delivery, reason: reason, result: result)
            case .forget: break
            }
        }
        if !completions.isEmpty { try await queue.finish(completions) }
    }

    /// Writes whatever is pending now (used while draining).
    private func flushNow() async {
        for _ in 0..<20 {
            let pending = state.withLock { s -> [Outcome] in
                defer { s.outcomes.removeAll() }
                return s.outcomes
            }
            if pending.isEmpty { return }
            do {
                try await write(pending)
                state.withLock { s in
                    for outcome in pending { s.inFlight[outcome.delivery.entryID] = nil }
                    s.processed += pending.count
                }
            } catch {
                state.withLock { $0.outcomes.insert(contentsOf: pending, at: 0) }
                logger.warning("could not write results while draining: \(error)")
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    // MARK: - Draining

    private func drain() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        logger.info("draining: \(inFlightCount) jobs in flight, grace \(configuration.shutdownGrace)")
        while ContinuousClock.now < deadline {
            let running = state.withLock { $0.inFlight.values.contains { $0.running } }
            if !running { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        await flushNow()
        // Whatever still runs is handed back for another worker to run at once.
        let unfinished = state.withLock { s -> [Delivery] in
            var out: [Delivery] = []
            for (entry, inFlight) in s.inFlight where inFlight.running {
                s.inFlight[entry]?.stopReason = .shutdown
                inFlight.task?.cancel()
                out.append(inFlight.delivery)
            }
            return out
        }
        if !unfinished.isEmpty {
            do {
                let n = try await queue.handBack(unfinished)
                logger.info("handed back \(n) unfinished jobs")
            } catch {
                logger.warning("could not hand back \(unfinished.count) jobs; they will be reclaimed when their lease runs out: \(error)")
            }
        }
        await flushNow()
        // Entries delivered to us that never reached `inFlight` (a read cut short by the shutdown):
        // hand them back too rather than leave them for a lease to expire.
        do {
            let known = state.withLock { Set($0.inFlight.keys) }
            let orphans = try await queue.pendingEntries(consumer: configuration.id).filter { !known.contains($0.entryID) }
            if !orphans.isEmpty {
                let n = try await queue.handBack(orphans)
                logger.info("handed back \(n) jobs delivered during shutdown")
            }
        } catch {
            logger.debug("could not check for undelivered entries: \(error)")
        }
    }

    // MARK: - Background loops

    private func heartbeatLoop() async {
        while !Task.isCancelled {
            // Read outside the lock: /proc and the host name can block.
            let rss = residentMemoryBytes()
            var models: [String]?
            if let source = warmSource { models = await warmModels(source).warm }
            let info = state.withLock { s in
                WorkerInfo(
                    id: configuration.id,
                    host: hostName,
                    pid: ProcessInfo.processInfo.processIdentifier,
                    profile: configuration.profile,
                    concurrency: configuration.concurrency,
                    inFlight: s.inFlight.count,
                    startedAt: startedAt,
                    heartbeatAt: Date().timeIntervalSince1970,
                    version: Switchyard.version,
                    rssBytes: rss,
                    processed: s.processed,
                    executor: configuration.executorName,
                    models: models
                )
            }
            try? await queue.heartbeat(info, ttl: configuration.heartbeatTTL)
            // A worker busy with long jobs takes nothing for a while: keep its warm claims alive.
            if let models, let routing = configuration.warmRouting {
                // Recorded as published, so stopping withdraws them too.
                state.withLock { $0.publishedWarm.formUnion(models) }
                try? await queue.renewWarm(workerID: configuration.id, models: models, ttl: effective(routing).claimTTL)
            }
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    /// Promotes due retries often; reclaims expired leases every half lease.
    private func maintenanceLoop() async {
        var lastReclaim = ContinuousClock.now - queue.configuration.lease
        var failures = 0
        while !Task.isCancelled {
            do {
                try await queue.promoteDue()
                if ContinuousClock.now - lastReclaim >= queue.configuration.lease / 2 {
                    lastReclaim = .now
                    let (requeued, dead) = try await queue.reclaimExpired(consumer: configuration.id)
                    if requeued + dead > 0 { logger.info("reclaimed \(requeued + dead) jobs with expired leases (\(dead) dead-lettered)") }
                }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                await handleLoopError(error, in: "promote and reclaim", failures: failures)
                continue
            }
            let jitter = Double.random(in: 0.8...1.2)
            try? await Task.sleep(for: configuration.promoteInterval * jitter)
        }
    }

    /// Stops jobs that ran out of time or were cancelled, and keeps leases fresh.
    private func watchLoop() async {
        var lastRefresh = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.watchInterval)
            let now = ContinuousClock.now
            let running = state.withLock { s -> [Delivery] in
                var out: [Delivery] = []
                for (entry, job) in s.inFlight where job.running {
                    if job.deadline < now, job.stopReason == nil {
                        s.inFlight[entry]?.stopReason = .timeout
                        job.task?.cancel()
                    } else {
                        out.append(job.delivery)
                    }
                }
                return out
            }
            do {
                if !running.isEmpty {
                    // Cancellation is a final result written by someone else: look for one.
                    let results = try await queue.redis.pipeline(running.map { RedisCommand("EXISTS", queue.keys.result($0.jobID)) })
                    for (delivery, exists) in zip(running, results) where exists.int == 1 {
                        stop(delivery, reason: .cancelledByRequest)
                    }
                }
                if now - lastRefresh >= queue.configuration.lease / 3 {
                    let held = state.withLock { s in
                        Dictionary(grouping: s.inFlight.values.map(\.delivery), by: \.lane).mapValues { $0.map(\.entryID) }
                    }
                    let stillHeld = try await queue.refreshLeases(consumer: configuration.id, entries: held)
                    // Only a refresh that worked counts: after a failure the next tick tries again.
                    lastRefresh = now
                    for lane in held.values {
                        for entry in lane where !stillHeld.contains(entry) { leaseLost(entry) }
                    }
                }
            } catch {
                logger.debug("watch: \(error)")
            }
        }
    }

    private func stop(_ delivery: Delivery, reason: StopReason) {
        let task = state.withLock { s -> Task<Void, Never>? in
            guard s.inFlight[delivery.entryID]?.running == true, s.inFlight[delivery.entryID]?.stopReason == nil else { return nil }
            s.inFlight[delivery.entryID]?.stopReason = reason
            return s.inFlight[delivery.entryID]?.task
        }
        task?.cancel()
    }

    /// Another worker reclaimed this entry after our lease ran out: stop and forget it.
    private func leaseLost(_ entry: String) {
        let task = state.withLock { s -> Task<Void, Never>? in
            guard let inFlight = s.inFlight[entry] else { return nil }
            if inFlight.running {
                s.inFlight[entry]?.stopReason = .leaseLost
                return inFlight.task
            }
            return nil
        }
        if let task {
            logger.warning("lost the lease of entry \(entry); another worker runs it now")
            task.cancel()
        }
    }

    // MARK: - Errors

    private func handleLoopError(_ error: any Error, in activity: String, failures: Int) async {
        if let redisError = error as? RedisError, redisError.serverErrorPrefix == "NOGROUP" {
            // Redis came back without our group (restarted without persistence): make it again.
            logger.warning("consumer group missing; creating it again")
            try? await queue.ensureGroups()
            return
        }
        if failures == 1 {
            logger.warning("cannot \(activity): \(error); retrying with backoff")
        } else if failures % 20 == 0 {
            logger.warning("still cannot \(activity) after \(failures) attempts: \(error)")
        }
        let delay = Backoff(base: .milliseconds(50), cap: .seconds(2)).delay(attempt: failures)
        try? await Task.sleep(for: delay)
    }

    private func retrying(_ activity: String, _ body: () async throws -> Void, until stop: () -> Bool) async {
        var failures = 0
        while !stop() {
            do {
                try await body()
                return
            } catch {
                failures += 1
                await handleLoopError(error, in: activity, failures: failures)
            }
        }
    }
}
