import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// Writing outcomes: results, retries and dead letters, in batches, so that one outcome Redis
/// refuses never holds back the others.
extension Worker {
    /// Writes outcomes in batches: while one write is in flight, the next batch gathers.
    func flushLoop() async {
        var failures = 0
        while !Task.isCancelled {
            let pending = takeOutcomes()
            if pending.isEmpty {
                if !(await outcomeReady.wait()) { return }
                continue
            }
            if let error = await writeIsolating(pending) {
                if Task.isCancelled { return }
                failures += 1
                await handleLoopError(error, in: "write results", failures: failures)
            } else {
                failures = 0
            }
        }
    }

    /// Writes whatever is pending now (used while draining), trying again until `deadline`, and
    /// not at all once shutdown found Redis unreachable: what is left is reclaimed after its lease.
    /// Returns whether everything was written.
    @discardableResult
    func flushNow(until deadline: ContinuousClock.Instant) async -> Bool {
        while !redisUnreachableAtShutdown {
            let pending = takeOutcomes()
            if pending.isEmpty { return true }
            guard let error = await writeIsolating(pending) else { continue }
            if Self.isUnreachable(error) {
                markUnreachableAtShutdown(error)
                return false
            }
            if ContinuousClock.now >= deadline {
                logger.warning("gave up writing results at shutdown (they are reclaimed after their lease): \(error)")
                return false
            }
            logger.warning("could not write results while draining: \(error)")
            try? await Task.sleep(for: .milliseconds(250))
        }
        return state.withLock { $0.outcomes.isEmpty }
    }

    /// Redis cannot be reached at all (as opposed to refusing one command).
    static func isUnreachable(_ error: any Error) -> Bool {
        guard let error = error as? RedisError else { return error is CancellationError }
        return error.code == .connectionFailed || error.code == .timeout || error.code == .closed
    }

    private func takeOutcomes() -> [Outcome] {
        state.withLock { s -> [Outcome] in
            defer { s.outcomes.removeAll(keepingCapacity: true) }
            return s.outcomes
        }
    }

    /// Writes `outcomes`; when the batch fails, writes each on its own, so the good ones go
    /// through. Outcomes that could not be written are put back (nothing is lost); a result that
    /// Redis refuses on its own three times while Redis answers is replaced by a small `failed`
    /// result that says why. Returns the last error, nil when everything was written.
    func writeIsolating(_ outcomes: [Outcome]) async -> (any Error)? {
        do {
            try await write(outcomes)
            written(outcomes)
            return nil
        } catch {
            var lastError: any Error = error
            var failed: [Outcome] = []
            if Self.isUnreachable(error) {
                failed = outcomes
            } else if outcomes.count > 1 {
                for (index, outcome) in outcomes.enumerated() {
                    do {
                        try await write([outcome])
                        written([outcome])
                    } catch {
                        lastError = error
                        failed.append(outcome)
                        // Redis is away, not refusing one outcome: keep the rest for the next try.
                        if !(await redisAnswers()) {
                            failed.append(contentsOf: outcomes[(index + 1)...])
                            break
                        }
                    }
                }
            } else {
                failed = outcomes
            }
            var retry: [Outcome] = []
            var replaced: [Outcome] = []
            // Only a refusal of this one write counts: Redis answers, the outcome was written
            // alone, and the error is the kind a too-large command gets (Redis closes the
            // connection on a protocol error). OOM, READONLY, MISCONF and the like refuse every
            // write for a while and never cost a result.
            var counts = failed.count == 1 && Self.mayBeRefusal(lastError)
            if counts { counts = await redisAnswers() }
            for outcome in failed {
                let count = state.withLock { s -> Int in
                    if counts { s.writeFailures[outcome.delivery.key, default: 0] += 1 }
                    return s.writeFailures[outcome.delivery.key] ?? 0
                }
                if count >= 3, case .finished(let completion) = outcome, completion.result.status != .cancelled,
                    completion.result.encodedJSON().count >= Self.smallestRefusableBytes
                {
                    let message = "Redis refused to store the result (\(completion.result.encodedJSON().count) bytes): \(lastError)"
                    logger.warning("job \(completion.result.id): \(message)")
                    var rejected = completion.result
                    rejected.status = .failed
                    rejected.output = nil
                    rejected.usage = nil
                    rejected.error = .init(code: "result_rejected", message: message)
                    replaced.append(.finished(Completion(delivery: completion.delivery, result: rejected, notify: completion.notify)))
                } else {
                    retry.append(outcome)
                }
            }
            state.withLock { s in
                for outcome in replaced { s.writeFailures[outcome.delivery.key] = nil }
                s.outcomes.insert(contentsOf: replaced + retry, at: 0)
            }
            if !replaced.isEmpty { outcomeReady.notify() }
            return retry.isEmpty ? nil : lastError
        }
    }

    /// Forgets written outcomes' jobs and frees their slots.
    private func written(_ outcomes: [Outcome]) {
        state.withLock { s in
            for outcome in outcomes {
                s.inFlight[outcome.delivery.key] = nil
                s.writeFailures[outcome.delivery.key] = nil
                // Jobs that ended here, not attempts: a retry or a hand-back is not one.
                switch outcome {
                case .finished, .dead: s.processed += 1
                case .retry, .forget: break
                }
            }
        }
        slotFreed.notify()
    }

    /// Redis's smallest settings of `proto-max-bulk-len` and `client-query-buffer-limit` are 1 MB:
    /// a smaller result is never refused for its size.
    static let smallestRefusableBytes = 1 << 20

    /// An error a command too large for Redis gets: the server closes the connection (or says
    /// "Protocol error").
    static func mayBeRefusal(_ error: any Error) -> Bool {
        guard let error = error as? RedisError else { return false }
        if error.code == .connectionLost || error.code == .protocolError { return true }
        return error.code == .serverError && (error.message.contains("Protocol error") || error.message.contains("query buffer"))
    }

    private func redisAnswers() async -> Bool {
        (try? await queue.redis.send("PING")) != nil
    }

    private func write(_ outcomes: [Outcome]) async throws {
        var completions: [Completion] = []
        for outcome in outcomes {
            switch outcome {
            case .finished(let completion): completions.append(completion)
            case .retry(let delivery, let delay, let record): try await queue.retry(delivery, after: delay, record: record)
            case .dead(let delivery, let reason, let result): try await queue.deadLetter(delivery, reason: reason, result: result)
            case .forget: break
            }
        }
        if !completions.isEmpty {
            let (_, fenced) = try await queue.finishReportingFenced(completions)
            for id in fenced {
                logger.warning(
                    "job \(id): result not written: this worker's lease ran out (cut off from Redis) and another attempt owns the job; its result stands"
                )
            }
        }
    }
}
