import Foundation
import SwitchyardCache
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// Running jobs: admitting a delivery, running it on the executor, turning what happened into an
/// outcome, and watching running jobs for timeouts, cancellation and lost leases.
extension Worker {
    /// Decodes a delivery and records it as in flight; returns the job to run, or nil when the
    /// payload is bad (it is dead-lettered with the reason: never a crash or a stall).
    func admitJob(_ delivery: Delivery) -> Job? {
        let job: Job
        do {
            job = try delivery.decodeJob()
            guard !delivery.jobID.isEmpty, delivery.jobID == job.id else {
                // The entry's id names the result key; a missing or different one would mix jobs up.
                throw JobValidationError(field: "id", problem: "the stream entry's id '\(delivery.jobID)' does not match the job's '\(job.id)'")
            }
        } catch {
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
                $0.inFlight[delivery.key] = InFlight(delivery: delivery, deadline: .now, running: false)
                $0.outcomes.append(.dead(delivery, reason: reason, result: result))
            }
            outcomeReady.notify()
            return nil
        }
        let deadline = ContinuousClock.now + .milliseconds(Int64(job.timeout * 1000))
        state.withLock { $0.inFlight[delivery.key] = InFlight(delivery: delivery, model: job.model, deadline: deadline) }
        return job
    }

    /// Runs one attempt (a child task of the job group). The executor runs in a task of its own,
    /// so that the watch loop can stop this one job, and abandon it if it ignores being stopped.
    func runJob(_ job: Job, delivery: Delivery) async {
        let started = Date().timeIntervalSince1970
        let context = JobContext(attempt: delivery.attempt, workerID: configuration.id)
        let attempt = Attempt()
        let task = Task {
            do {
                attempt.finish(.success(try await self.execute(job, context: context)))
            } catch {
                attempt.finish(.failure(error))
            }
        }
        let stoppedAlready = state.withLock { s -> Bool in
            guard s.inFlight[delivery.key] != nil else { return true }
            s.inFlight[delivery.key]?.task = task
            s.inFlight[delivery.key]?.attempt = attempt
            // Stopped (timeout, cancel, drain) before the task was stored: nobody cancelled it yet.
            return s.inFlight[delivery.key]?.stopReason != nil
        }
        if stoppedAlready { task.cancel() }
        let result = await withTaskCancellationHandler {
            await attempt.value
        } onCancel: {
            task.cancel()
        }
        var outcome: Outcome
        switch result {
        case .success(let output)?:
            if let reason = stopReason(delivery), reason == .leaseLost || reason == .shutdown {
                outcome = .forget(delivery)
            } else {
                outcome = succeeded(job, delivery, started: started, output: output)
            }
        case .failure(let error)?:
            outcome = failureOutcome(error, job: job, delivery: delivery, started: started)
        case nil:
            // Abandoned: the executor did not stop when told; its stop reason decides.
            outcome = failureOutcome(CancellationError(), job: job, delivery: delivery, started: started)
        }
        // Someone waits for this job: finishing it publishes its id (see `QueueKeys.done`).
        if job.notify == true, case .finished(var completion) = outcome {
            completion.notify = true
            outcome = .finished(completion)
        }
        let recorded = state.withLock { s -> Bool in
            guard s.inFlight[delivery.key]?.running == true else { return false }
            s.inFlight[delivery.key]?.running = false
            s.inFlight[delivery.key]?.task = nil
            s.inFlight[delivery.key]?.attempt = nil
            s.outcomes.append(outcome)
            return true
        }
        if recorded {
            recordMetrics(outcome, delivery: delivery, dueAt: max(job.queuedAt, job.notBefore ?? 0), started: started)
            outcomeReady.notify()
        }
        jobEnded.notify()
        // The slot is free now: the fetch loop takes the next job while the flush loop writes
        // this one's outcome (see `freeSlots`).
        slotFreed.notify()
    }

    /// The attempt's numbers in the worker's metrics (`WorkerMetrics`): labels are the queue,
    /// the lane and the outcome, never the job or its model (a job names its model freely).
    private func recordMetrics(_ outcome: Outcome, delivery: Delivery, dueAt: Double, started: Double) {
        let status: String
        switch outcome {
        case .finished(let completion): status = completion.result.status.rawValue
        case .retry: status = "retried"
        case .dead: status = "dead"
        case .forget: status = "handed_back"
        }
        let dimensions = [("queue", queue.configuration.name), ("lane", delivery.lane.rawValue)]
        let finished = Date().timeIntervalSince1970
        metrics.attempts(dimensions + [("status", status)]).increment()
        // Queue wait of a first attempt only: a retry's wait includes its backoff.
        if delivery.attempt == 1 { metrics.queueWait(dimensions).recordNanoseconds(Self.nanoseconds(started - dueAt)) }
        metrics.runTime(dimensions).recordNanoseconds(Self.nanoseconds(finished - started))
        guard case .finished(let completion) = outcome, completion.result.status == .succeeded else { return }
        let queueOnly = [("queue", queue.configuration.name)]
        if let cache = completion.result.cache { metrics.cacheAnswers(queueOnly + [("status", cache.status.rawValue)]).increment() }
        if let usage = completion.result.usage, completion.result.cache?.status != .hit {
            // Tokens a model spent: an answer from the cache spent none.
            if let n = usage.promptTokens, n > 0 { metrics.tokens(queueOnly + [("direction", "in")]).increment(by: n) }
            if let n = usage.completionTokens, n > 0 { metrics.tokens(queueOnly + [("direction", "out")]).increment(by: n) }
        }
    }

    /// Seconds as nanoseconds, clamped to 0 ... 100 years: a job's times come from its payload
    /// (`queued_at`), and no value in it may trap the conversion.
    static func nanoseconds(_ seconds: Double) -> Int64 {
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return Int64(min(seconds, 100 * 365 * 86_400) * 1e9)
    }

    /// Runs a job on the executor, through the response cache when there is one and the
    /// executor says what the job is sent to. Waiting for another worker's answer counts against
    /// the job's timeout like the call itself.
    private func execute(_ job: Job, context: JobContext) async throws -> JobOutput {
        let executor = self.executor
        guard let cache, let reporting = executor as? any CacheTargetReporting, let target = reporting.cacheTarget(for: job) else {
            return try await executor.execute(job, context: context)
        }
        // The job's own TTL, else its model's, else the worker's (the cache caps it). A namespace
        // that is not one (a job written by hand) keeps the job out of the cache.
        let ttl = (job.cacheTTL ?? reporting.cacheTTL(for: job)).map { Duration.milliseconds(Int64(min(max($0, 0), 1e9) * 1000)) }
        if let namespace = job.cacheNamespace, !CacheKey.isValidNamespace(namespace) {
            return try await executor.execute(job, context: context)
        }
        return try await cache.answer(
            key: CacheKey(job: job, target: CacheTarget(target)),
            namespace: job.cacheNamespace,
            use: CacheUse(job: job),
            bound: .milliseconds(Int64(job.timeout * 1000)),
            ttl: ttl
        ) {
            try await executor.execute(job, context: context)
        }
    }

    /// A success, unless the result is larger than `maxResultBytes`: then a failure that says so
    /// (not retried: the same job would give as large a result again).
    private func succeeded(_ job: Job, _ delivery: Delivery, started: Double, output: JobOutput) -> Outcome {
        var success = result(job, delivery, .succeeded, started: started, output: output.output, usage: output.usage)
        success.cache = output.cache
        success.route = output.route
        let encoded = success.encodedJSON()
        let size = encoded.count
        guard size > configuration.maxResultBytes else {
            return .finished(Completion(delivery: delivery, result: success, encodedResult: encoded))
        }
        let info = JobResult.ErrorInfo(
            code: "result_too_large",
            message: "the result is \(size) bytes, over the worker's limit of \(configuration.maxResultBytes) (--max-result-bytes)"
        )
        logger.warning("job \(job.id): \(info.message)")
        return .finished(Completion(delivery: delivery, result: result(job, delivery, .failed, started: started, error: info)))
    }

    func stopReason(_ delivery: Delivery) -> StopReason? {
        state.withLock { $0.inFlight[delivery.key]?.stopReason }
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
        // What the provider asked for (`Retry-After`), bounded: a broken header must not park a
        // job for a year.
        let asked = failure.retryable ? failure.retryAfter.map { min($0, Self.longestRetryAfter) } : nil
        let info = JobResult.ErrorInfo(code: failure.code, message: failure.message, retryAfter: asked.map(Self.secondsOf))
        // A provider target names where the call went (`provider:remote/m1`); a local model's
        // cache target is a long key (file, size, command line): its name says enough.
        let reported = (executor as? any CacheTargetReporting)?.cacheTarget(for: job)
        let target = reported.flatMap { $0.hasPrefix("provider:") && $0.count <= 200 ? $0 : nil } ?? job.model
        if !failure.retryable {
            failureLog.record(
                .failed,
                code: failure.code,
                "job \(job.id) failed on attempt \(delivery.attempt) of \(delivery.maxAttempts) at \(target): \(failure.code): \(failure.message)"
            )
            return .finished(Completion(delivery: delivery, result: result(job, delivery, .failed, started: started, error: info)))
        }
        if delivery.attempt >= delivery.maxAttempts {
            var reason = "failed on attempt \(delivery.attempt) of \(delivery.maxAttempts): \(failure)"
            if let asked { reason += " (the provider asked to retry after \(Self.describe(asked)))" }
            failureLog.record(.dead, code: failure.code, "job \(job.id) dead-lettered at \(target): \(reason)")
            return .dead(delivery, reason: reason, result: result(job, delivery, .dead, started: started, error: info))
        }
        var delay = queue.configuration.retryBackoff.delay(attempt: delivery.attempt)
        // The next attempt comes no earlier than the provider asked, even past the backoff's cap.
        if let asked, asked > delay { delay = asked }
        failureLog.record(
            .retried,
            code: failure.code,
            "job \(job.id) attempt \(delivery.attempt) of \(delivery.maxAttempts) failed at \(target): \(failure.code): \(failure.message); "
                + "retrying in \(Self.describe(delay))\(asked != nil && delay == asked ? " (as the provider asked)" : "")"
        )
        let record = AttemptRecord(
            attempt: delivery.attempt,
            outcome: "retried",
            worker: configuration.id,
            started: started,
            finished: Date().timeIntervalSince1970,
            error: info
        )
        return .retry(delivery, after: delay, record: record)
    }

    /// The longest `Retry-After` a retry waits for: a day.
    static let longestRetryAfter = Duration.seconds(86_400)

    static func secondsOf(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }

    /// "1.5 s", "120 s".
    static func describe(_ d: Duration) -> String {
        let s = secondsOf(d)
        return s == s.rounded() ? "\(Int(s)) s" : String(format: "%.1f s", s)
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
            metadata: job.metadata.isEmpty ? nil : job.metadata,
            testExecutor: executor.testExecutorName
        )
    }

    // MARK: - Watching running jobs

    /// Stops jobs that ran out of time or were cancelled, abandons those whose executor ignores
    /// being stopped, and keeps leases fresh.
    func watchLoop() async {
        var lastRefresh = ContinuousClock.now
        var redisFailing = false
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.watchInterval)
            noteWatchTick()
            failureLog.flushIfDue()
            let now = ContinuousClock.now
            let running = state.withLock { s -> [Delivery] in
                var out: [Delivery] = []
                for (entry, job) in s.inFlight where job.running {
                    if job.deadline < now, job.stopReason == nil {
                        s.inFlight[entry]?.stopReason = .timeout
                        s.inFlight[entry]?.stoppedAt = now
                        job.task?.cancel()
                    } else if job.stopReason == nil {
                        out.append(job.delivery)
                    }
                }
                return out
            }
            abandonStuckJobs(now: now)
            // Redis failing, and no refresh for a whole lease: any worker's reclaim may have given
            // these jobs to another attempt. Stop them; their results would be fenced off anyway.
            // (After a pause with Redis fine, the refresh below says which are still held.)
            if redisFailing && now - lastRefresh >= queue.configuration.lease { stopAllForLostLease(since: now - lastRefresh) }
            do {
                if !running.isEmpty {
                    // Cancellation is a final result written by someone else: look for one.
                    let results = try await queue.redis.pipeline(running.map { RedisCommand("EXISTS", queue.keys.result($0.jobID)) })
                    for (delivery, exists) in zip(running, results) where exists.int == 1 {
                        stop(delivery, reason: .cancelledByRequest)
                    }
                }
                if now - lastRefresh >= queue.configuration.lease / 3 {
                    // Jobs told to stop keep their lease until they end: another worker must not
                    // run them while this one may still be running them.
                    let held = state.withLock { s in
                        Dictionary(grouping: s.inFlight.values.map(\.delivery), by: \.lane).mapValues { $0.map(\.entryID) }
                    }
                    let stillHeld = try await queue.refreshLeases(consumer: configuration.id, entries: held)
                    // Only a refresh that worked counts: after a failure the next tick tries again.
                    lastRefresh = now
                    redisFailing = false
                    for (lane, ids) in held {
                        for id in ids where !stillHeld.contains(Delivery.key(lane: lane, entryID: id)) {
                            leaseLost(Delivery.key(lane: lane, entryID: id))
                        }
                    }
                }
            } catch {
                logger.debug("watch: \(error)")
                redisFailing = true
            }
        }
    }

    /// A job told to stop whose executor has not ended within `abandonAfter`: its slot is freed
    /// and its outcome written as if it had stopped; the executor's task is left to itself.
    private func abandonStuckJobs(now: ContinuousClock.Instant) {
        let stuck = state.withLock { s -> [(String, Attempt)] in
            s.inFlight.compactMap { entry, job in
                guard job.running, let stoppedAt = job.stoppedAt, now - stoppedAt >= configuration.abandonAfter, let attempt = job.attempt
                else { return nil }
                return (entry, attempt)
            }
        }
        for (entry, attempt) in stuck {
            logger.warning("the executor did not stop entry \(entry) within \(configuration.abandonAfter) of being told to; abandoning it")
            attempt.abandon()
        }
    }

    func stop(_ delivery: Delivery, reason: StopReason) {
        let task = state.withLock { s -> Task<Void, Never>? in
            guard s.inFlight[delivery.key]?.running == true, s.inFlight[delivery.key]?.stopReason == nil else { return nil }
            s.inFlight[delivery.key]?.stopReason = reason
            s.inFlight[delivery.key]?.stoppedAt = .now
            return s.inFlight[delivery.key]?.task
        }
        task?.cancel()
    }

    /// Every running job, after the leases could not be refreshed for `since` (a lease or more).
    private func stopAllForLostLease(since: Duration) {
        let entries = state.withLock { s in s.inFlight.filter { $0.value.running && $0.value.stopReason == nil }.map(\.key) }
        guard !entries.isEmpty else { return }
        logger.warning(
            "leases not renewed for \(Self.describe(since)), longer than the lease (\(Self.describe(queue.configuration.lease))): stopping \(entries.count) jobs that another worker may run now"
        )
        for entry in entries { leaseLost(entry, quiet: true) }
    }

    /// Another worker reclaimed this entry after our lease ran out: stop and forget it.
    private func leaseLost(_ entry: String, quiet: Bool = false) {
        let task = state.withLock { s -> Task<Void, Never>? in
            guard let inFlight = s.inFlight[entry], inFlight.running else { return nil }
            s.inFlight[entry]?.stopReason = .leaseLost
            s.inFlight[entry]?.stoppedAt = inFlight.stoppedAt ?? .now
            return inFlight.task
        }
        if let task {
            if !quiet { logger.warning("lost the lease of entry \(entry); another worker runs it now") }
            task.cancel()
        }
    }
}
