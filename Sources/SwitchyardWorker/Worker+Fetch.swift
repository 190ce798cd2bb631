import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// Taking jobs: in queue order, or with warm-model routing; and picking up entries that were
/// delivered to this worker while their reply was lost.
extension Worker {
    /// Takes jobs while there are free slots, waiting for one when all are busy, and hands each
    /// delivery to `start`. Survives Redis going away. After any failed read, and once at start
    /// (entries an earlier run under this id left), looks for entries Redis delivered to this
    /// worker that it never saw, and runs them.
    func fetchLoop(start: (Delivery) -> Void) async {
        var failures = 0
        var reconcile = true
        while !isDraining && !Task.isCancelled {
            do {
                if reconcile {
                    try await adoptOrphans(start: start)
                    reconcile = false
                }
                let free = freeSlots
                if free <= 0 {
                    _ = await slotFreed.wait()
                    continue
                }
                if let source = warmSource, let routing = configuration.warmRouting {
                    try await takeWarm(free: free, source: source, routing: effective(routing), start: start)
                } else {
                    try await takeInOrder(free: free, start: start)
                }
                if failures > 0 { logger.info("reading jobs again") }
                failures = 0
            } catch is CancellationError {
                return
            } catch {
                if isDraining { return }
                // The take may have run on the server with its reply lost: its entries are ours now.
                reconcile = true
                failures += 1
                await handleLoopError(error, in: "read jobs", failures: failures)
            }
        }
    }

    /// Runs (up to the free slots) or hands back, with no attempt counted, the entries pending for
    /// this worker that it does not know: left by a take, a blocking read or a hand-back whose
    /// reply was lost. Without this they would wait out a lease and come back as a new attempt,
    /// and a job with one attempt would be dead-lettered without ever having run.
    func adoptOrphans(start: (Delivery) -> Void) async throws {
        // After an outage another process may hold this id, and what is pending under it is its.
        if try await !queue.heartbeat(workerInfo(), ttl: configuration.heartbeatTTL) {
            displaced()
            return
        }
        let known = state.withLock { Set($0.inFlight.keys) }
        let orphans = try await queue.orphans(consumer: configuration.id, known: known)
        if orphans.isEmpty { return }
        let free = max(0, freeSlots)
        logger.info("found \(orphans.count) entries delivered to this worker that it never saw (a lost reply); running them")
        for delivery in orphans.prefix(free) { start(delivery) }
        if orphans.count > free { try await queue.handBack(Array(orphans.dropFirst(free))) }
    }

    /// Jobs in queue order: the take script, then a blocking read when it finds nothing.
    private func takeInOrder(free: Int, start: (Delivery) -> Void) async throws {
        let take = try await queue.takeNotingPauses(consumer: configuration.id, count: free)
        var deliveries = take.deliveries
        notePaused(take.paused)
        if deliveries.isEmpty {
            // The blocking read leaves paused lanes alone; a resume is seen by the next take.
            let open = JobPriority.inOrder.filter { !take.paused.contains("*") && !take.paused.contains($0.rawValue) }
            if open.isEmpty {
                _ = try await cancellableRead { () -> [Delivery] in
                    try await Task.sleep(for: min(self.configuration.blockTimeout, .seconds(1)))
                    return []
                }
            } else {
                let read = try await cancellableRead {
                    try await self.queue.waitForWorkNotingPauses(
                        on: self.blocking,
                        consumer: self.configuration.id,
                        count: free,
                        block: self.configuration.blockTimeout,
                        lanes: open
                    )
                }
                deliveries = read.deliveries
                // A pause that came while the read was blocked (its state rides back with the
                // read): what it brought from a lane paused since goes back, no attempt counted
                // (at the lane's end).
                if !deliveries.isEmpty {
                    let paused = read.paused
                    if !paused.isEmpty {
                        let held = deliveries.filter { paused.contains("*") || paused.contains($0.lane.rawValue) }
                        if !held.isEmpty {
                            try await queue.handBack(held)
                            deliveries.removeAll { d in held.contains { $0.key == d.key } }
                        }
                        notePaused(paused)
                    }
                }
            }
        }
        // COUNT applies per stream, so a read over three lanes can bring up to three times
        // the free slots: keep what fits, hand the rest straight back.
        for delivery in deliveries.prefix(free) { start(delivery) }
        if deliveries.count > free { try await queue.handBack(Array(deliveries[free...])) }
    }

    /// Warm-model routing: the take script picks jobs by model; when it finds none, wait for a new
    /// entry on any lane, or until a job parked for another worker reaches the longest wait.
    private func takeWarm(free: Int, source: any WarmModelReporting, routing: WarmRouting, start: (Delivery) -> Void) async throws {
        let (warm, busy, runningPerModel) = await warmModels(source)
        let released = state.withLock { Array($0.publishedWarm.subtracting(warm)) }
        let perServer = max(1, source.slotsPerServer)
        let slots = WarmSlots(perServer: perServer, free: runningPerModel.mapValues { max(0, perServer - $0) })
        let take = try await queue.takeWarm(
            consumer: configuration.id,
            count: free,
            warm: warm,
            released: released,
            cacheSize: source.modelCacheSize,
            // The models of running jobs come first in `warm`. While they fill the cache, a job for
            // another model would only wait for one of them to end.
            busyModels: busy,
            slots: slots,
            routing: routing
        )
        state.withLock { s in
            // Merged, not assigned: the heartbeat may have published more meanwhile.
            s.publishedWarm.subtract(released)
            s.publishedWarm.formUnion(warm)
            if let claimed = take.claimedModel { s.publishedWarm.insert(claimed) }
        }
        notePaused(take.paused)
        for delivery in take.deliveries { start(delivery) }
        if take.deliveries.isEmpty {
            var block = min(configuration.blockTimeout, take.wakeAfter ?? configuration.blockTimeout)
            // Jobs this worker could not load for now become takeable when a running job ends,
            // which no new entry announces: look again soon.
            if busy >= max(1, source.modelCacheSize) { block = min(block, .milliseconds(100)) }
            if slots.free.values.contains(0) {
                // A warm model's slots are all busy, and its jobs wait for one: what frees one is a
                // job ending here, which no new entry announces. Look again when one ends (or
                // after 100 ms, for new entries of other models).
                _ = await jobEnded.wait(timeout: min(block, .milliseconds(100)))
                return
            }
            let (after, wait) = (take.lastEntryIDs, block)
            _ = try await cancellableRead { try await self.queue.waitForNewEntries(on: self.blocking, after: after, block: wait) }
        }
    }

    /// Logs when lanes are paused or resumed (`switchyard queue pause`), once per change.
    func notePaused(_ paused: Set<String>) {
        let before = state.withLock { s -> Set<String> in
            defer { s.pausedLanes = paused }
            return s.pausedLanes
        }
        guard before != paused else { return }
        if paused.contains("*") {
            logger.info("the queue is paused: taking no new jobs until `switchyard queue resume`")
        } else if !paused.isEmpty {
            logger.info("lanes paused: \(paused.sorted().joined(separator: ", ")); taking jobs from the others")
        } else {
            logger.info("the queue is resumed: taking jobs again")
        }
    }

    /// Runs a blocking read in a task of its own that a drain can cancel (`beginDrain`), so a
    /// stopping worker does not wait out the read's block time.
    private func cancellableRead<T: Sendable>(_ read: @escaping @Sendable () async throws -> T) async throws -> T {
        let task = Task { try await read() }
        let draining = state.withLock { s -> Bool in
            s.cancelBlockingRead = { task.cancel() }
            return s.draining
        }
        if draining { task.cancel() }
        defer { state.withLock { $0.cancelBlockingRead = nil } }
        return try await withTaskCancellationHandler {
            try await task.value
        } onCancel: {
            task.cancel()
        }
    }

    /// Models of running jobs first (a job just taken may not have reached the manager yet), then
    /// the executor's warm models, most recently used first; how many distinct models run now; and
    /// how many jobs run per model.
    func warmModels(_ source: any WarmModelReporting) async -> (warm: [String], busy: Int, running: [String: Int]) {
        let running = state.withLock { s in s.inFlight.values.filter { $0.running && !$0.model.isEmpty }.map(\.model) }
        var warm: [String] = []
        for model in running + (await source.warmModels()) where !warm.contains(model) { warm.append(model) }
        let perModel = running.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        return (warm, perModel.count, perModel)
    }

    /// Entries set aside must be taken (or given back by the reclaim at half a lease) well before
    /// a lease runs out, so the longest wait is at most a quarter of the lease.
    func effective(_ routing: WarmRouting) -> WarmRouting {
        var routing = routing
        routing.longestWait = min(routing.longestWait, queue.configuration.lease / 4)
        // The reclaim looks at up to 100 parked entries per lane; more could age into "lost".
        routing.lookahead = min(max(routing.lookahead, 1), 100)
        routing.claimTTL = max(routing.claimTTL, configuration.heartbeatTTL)
        return routing
    }
}
