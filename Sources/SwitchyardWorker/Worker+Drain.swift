import Foundation
import SwitchyardCore
import SwitchyardQueue

/// Draining on graceful shutdown: stop taking, let running jobs finish within the grace period,
/// hand the rest back for another worker to run at once.
extension Worker {
    func beginDrain() {
        let cancelRead = state.withLock { s -> (@Sendable () -> Void)? in
            s.draining = true
            return s.cancelBlockingRead
        }
        // Cuts a blocking read short; wakes the fetch loop if it waits for a free slot.
        cancelRead?()
        slotFreed.notify()
    }

    /// Runs in the job group's body once the fetch loop has stopped; the group then waits for its
    /// job tasks, which this has either seen end or told to stop (and the watch loop abandons
    /// those that do not, after `abandonAfter`).
    func drain() async {
        let deadline = ContinuousClock.now + configuration.shutdownGrace
        logger.info("draining: \(inFlightCount) jobs in flight, grace \(configuration.shutdownGrace)")
        // A cancelled worker (its group failed) does not wait: every wait would return at once.
        while !Task.isCancelled, ContinuousClock.now < deadline, state.withLock({ $0.inFlight.values.contains { $0.running } }) {
            _ = await jobEnded.wait(timeout: deadline - ContinuousClock.now)
        }
        state.withLock { $0.shutdownDeadline = ContinuousClock.now + configuration.shutdownWriteTime }
        await flushNow(until: shutdownDeadline)
        // Whatever still runs is handed back for another worker to run at once.
        let unfinished = state.withLock { s -> [Delivery] in
            var out: [Delivery] = []
            for (entry, inFlight) in s.inFlight where inFlight.running {
                s.inFlight[entry]?.stopReason = .shutdown
                s.inFlight[entry]?.stoppedAt = .now
                inFlight.task?.cancel()
                out.append(inFlight.delivery)
            }
            return out
        }
        if !unfinished.isEmpty && !redisUnreachableAtShutdown && !state.withLock({ $0.displaced }) {
            do {
                let n = try await queue.handBack(unfinished)
                logger.info("handed back \(n) unfinished jobs")
            } catch {
                if Self.isUnreachable(error) { markUnreachableAtShutdown(error) }
                logger.warning("could not hand back \(unfinished.count) jobs; they will be reclaimed when their lease runs out: \(error)")
            }
        }
        if Task.isCancelled { await abandonWhatDoesNotStop() }
    }

    /// In a cancelled worker the watch loop has stopped too: give jobs told to stop until
    /// `abandonAfter` to end, then abandon the rest, so the job group can end.
    private func abandonWhatDoesNotStop() async {
        let deadline = ContinuousClock.now + configuration.abandonAfter
        while ContinuousClock.now < deadline, state.withLock({ $0.inFlight.values.contains { $0.running } }) {
            // A sleep of its own: this task is cancelled, and its own sleeps would return at once.
            await Task.detached { try? await Task.sleep(for: .milliseconds(50)) }.value
        }
        let stuck = state.withLock { $0.inFlight.values.filter(\.running).compactMap(\.attempt) }
        if !stuck.isEmpty { logger.warning("abandoning \(stuck.count) jobs whose executor did not stop") }
        for attempt in stuck { attempt.abandon() }
    }

    /// Entries delivered to this worker that it never ran (a read cut short by the shutdown, a
    /// lost reply): handed back rather than left for a lease to expire.
    func handBackOrphans() async {
        do {
            let known = state.withLock { Set($0.inFlight.keys) }
            let orphans = try await queue.orphans(consumer: configuration.id, known: known)
            if !orphans.isEmpty {
                let n = try await queue.handBack(orphans)
                logger.info("handed back \(n) jobs delivered during shutdown")
            }
        } catch {
            logger.debug("could not check for undelivered entries: \(error)")
        }
    }
}
