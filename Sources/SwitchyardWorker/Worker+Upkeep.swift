import Foundation
import SwitchyardCache
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// The heartbeat, the queue's upkeep (promoting due jobs, reclaiming lost leases), and how every
/// loop rides out Redis errors.
extension Worker {
    func heartbeatLoop() async {
        while !Task.isCancelled {
            // Read outside the lock: /proc and the host name can block.
            let rss = residentMemoryBytes()
            var models: [String]?
            if let source = warmSource { models = await warmModels(source).warm }
            let info = workerInfo(rss: rss, models: models)
            switch try? await queue.beat(info, ttl: configuration.heartbeatTTL) {
            case .displaced?:
                displaced()
                return
            case .recorded?: noteHeartbeat()
            case .drainRequested?:
                noteHeartbeat()
                if !isDraining {
                    logger.notice("asked to drain through Redis (switchyard workers drain): stopping after the running jobs")
                    beginDrain()
                }
            case nil: break
            }
            await publishMetricsIfChanged()
            // A worker busy with long jobs takes nothing for a while: keep its warm claims alive.
            if let models, let routing = configuration.warmRouting {
                // Recorded as published, so stopping withdraws them too.
                state.withLock { $0.publishedWarm.formUnion(models) }
                try? await queue.renewWarm(workerID: configuration.id, models: models, ttl: effective(routing).claimTTL)
            }
            try? await Task.sleep(for: configuration.heartbeatInterval)
        }
    }

    /// Publishes the cumulative metrics snapshot when it changed since the last one (or ten
    /// minutes have passed, to keep it in the index); one at a time, from the heartbeat, so a
    /// slower, older write never lands after a newer one. A failed write waits for the next heartbeat.
    func publishMetricsIfChanged() async {
        let version = metrics.registry.version
        let due = state.withLock { s -> Bool in
            guard version > 0 else { return false }  // nothing recorded: nothing to publish
            return version != s.publishedMetricsVersion || ContinuousClock.now - s.publishedMetricsAt >= .seconds(600)
        }
        if due { await publishMetricsNow() }
    }

    func publishMetricsNow() async {
        let version = metrics.registry.version
        guard version > 0 else { return }
        let snapshot = metrics.registry.snapshot(worker: configuration.id)
        guard let json = try? JSONEncoder().encode(snapshot) else {
            logger.warning("the metrics snapshot cannot be encoded; not published")
            return
        }
        do {
            try await queue.publishMetrics(worker: configuration.id, series: snapshot.series, json: Array(json))
            state.withLock { s in
                s.publishedMetricsVersion = version
                s.publishedMetricsAt = .now
            }
        } catch {
            logger.debug("metrics not published: \(error)")
        }
    }

    /// Promotes due retries often; reclaims expired leases every half lease; with `burst`, every
    /// half second looks whether anything is left to do.
    func maintenanceLoop() async {
        var lastReclaim = ContinuousClock.now - queue.configuration.lease
        var lastBurstCheck = ContinuousClock.now
        var idleBefore = false
        var failures = 0
        while !Task.isCancelled {
            do {
                try await queue.promoteDue()
                if configuration.burst, ContinuousClock.now - lastBurstCheck >= .milliseconds(500) {
                    lastBurstCheck = .now
                    try await stopIfNothingLeft(idleBefore: &idleBefore)
                }
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

    /// Burst mode: drains the worker (it then exits 0) once nothing runs here, nothing waits or
    /// runs on any lane, and no delayed job is due within the retry cap (at least 30 s: a retry
    /// counts, a job scheduled for later is left to other workers), seen twice in a row, half a
    /// second apart (a job moving between the lanes and the delayed set is seen in one or the other).
    func stopIfNothingLeft(idleBefore: inout Bool) async throws {
        let busy = state.withLock { !$0.inFlight.isEmpty || !$0.outcomes.isEmpty || $0.draining }
        if busy {
            idleBefore = false
            return
        }
        let horizon = max(.seconds(30), queue.configuration.retryBackoff.cap)
        // Jobs on paused lanes are not this run's to wait for: a burst worker must not hang on them.
        let paused = state.withLock { $0.pausedLanes }
        let skipping = paused.contains("*") ? Set(JobPriority.inOrder) : Set(paused.compactMap(JobPriority.init(rawValue:)))
        var left = try await queue.remainingWork(dueWithin: horizon, skipping: skipping)
        if paused.contains("*") { left.delayedSoon = 0 }
        let idle = left.waiting == 0 && left.running == 0 && left.delayedSoon == 0 && inFlightCount == 0
        defer { idleBefore = idle }
        guard idle, idleBefore else { return }
        let note = paused.isEmpty ? "" : " (paused: \(paused.sorted().joined(separator: ", ")); jobs there are left)"
        logger.notice("burst: nothing left on the queue\(note); stopping", metadata: ["processed": "\(processed)"])
        beginDrain()
    }

    /// This worker's registry entry as of now.
    func workerInfo(rss: Int = 0, models: [String]? = nil) -> WorkerInfo {
        state.withLock { s in
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
                models: models,
                testExecutor: executor.testExecutorName != nil ? true : nil,
                token: token,
                cache: cache.map { Self.counters($0.statistics) },
                resilience: configuration.resilienceCounters?(),
                jobs: Array(s.inFlight.values.map(\.delivery.jobID).sorted().prefix(WorkerInfo.jobsListed))
            )
        }
    }

    static func counters(_ s: ResponseCacheStatistics) -> [String: Int] {
        [
            "hits": s.hits, "misses": s.misses, "coalesced": s.coalesced, "takeovers": s.takeovers, "stores": s.stores,
            "too_large": s.tooLarge, "bypassed": s.bypassed, "errors": s.errors, "bytes_stored": s.bytesStored,
        ]
    }

    // MARK: - Errors

    func handleLoopError(_ error: any Error, in activity: String, failures: Int) async {
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

    func retrying(_ activity: String, _ body: () async throws -> Void, until stop: () -> Bool) async {
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

extension Worker {
    /// Another process registered this worker's id while this one could not reach Redis (its
    /// entry expired): both would take entries as the same consumer. This one stops at once and
    /// forgets its running jobs, which are pending under the shared id, for the other to run.
    func displaced() {
        logger.error("another process registered this worker's id '\(configuration.id)' while it was away from Redis; stopping")
        let tasks = state.withLock { s -> [Task<Void, Never>] in
            s.displaced = true
            var tasks: [Task<Void, Never>] = []
            for (entry, job) in s.inFlight where job.running {
                s.inFlight[entry]?.stopReason = .leaseLost
                s.inFlight[entry]?.stoppedAt = .now
                if let task = job.task { tasks.append(task) }
            }
            return tasks
        }
        for task in tasks { task.cancel() }
        beginDrain()
    }
}
