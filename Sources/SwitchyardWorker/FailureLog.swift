import Logging
import Synchronization

/// Failed attempts, retries and dead letters in the worker's log at warning level (seen at the
/// default level), rate-limited: at most `linesPerInterval` lines per `interval`; past that, one
/// line per interval counts what was left out, by kind and error code, so a dead provider behind
/// thousands of jobs cannot flood the log.
///
/// Defaults: 20 lines per 10 seconds.
final class FailureLog: Sendable {
    enum Kind: String, Sendable {
        case retried, failed, dead
    }

    private struct State {
        var intervalStart = ContinuousClock.now
        var logged = 0
        var suppressed: [Kind: Int] = [:]
        var codes: [String: Int] = [:]
    }

    private let logger: Logger
    private let interval: Duration
    private let linesPerInterval: Int
    private let state = Mutex(State())

    init(logger: Logger, interval: Duration = .seconds(10), linesPerInterval: Int = 20) {
        self.logger = logger
        self.interval = interval
        self.linesPerInterval = linesPerInterval
    }

    /// Logs one failure, or counts it when this interval's lines are spent. `code` is the error
    /// code, for the count.
    func record(_ kind: Kind, code: String, _ message: @autoclosure () -> String) {
        let (summary, log) = state.withLock { s -> (String?, Bool) in
            let summary = rollOver(&s)
            if s.logged < linesPerInterval {
                s.logged += 1
                return (summary, true)
            }
            s.suppressed[kind, default: 0] += 1
            s.codes[code, default: 0] += 1
            return (summary, false)
        }
        if let summary { logger.warning("\(summary)") }
        if log { logger.warning("\(message())") }
    }

    /// Writes the count of what was left out once its interval is over (the watch loop calls
    /// this, so the count comes even when the failures stop).
    func flushIfDue() {
        if let summary = state.withLock({ rollOver(&$0) }) { logger.warning("\(summary)") }
    }

    /// Writes the count of what was left out now, interval over or not (the worker stops).
    func flush() {
        if let summary = state.withLock({ rollOver(&$0, force: true) }) { logger.warning("\(summary)") }
    }

    /// Starts a new interval when the current one is over; returns the line counting what the
    /// ended one left out, if anything.
    private func rollOver(_ s: inout State, force: Bool = false) -> String? {
        let now = ContinuousClock.now
        guard force || now - s.intervalStart >= interval else { return nil }
        defer {
            s = State()
            s.intervalStart = now
        }
        let total = s.suppressed.values.reduce(0, +)
        guard total > 0 else { return nil }
        let kinds = [Kind.retried, .failed, .dead].compactMap { k in s.suppressed[k].map { "\(k.rawValue) \($0)" } }
        let codes = s.codes.sorted { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }.prefix(5).map { "\($0.key) \($0.value)" }
        return "\(total) more failures not logged in the last \(Int(Double((now - s.intervalStart).components.seconds))) s "
            + "(\(kinds.joined(separator: ", ")); codes: \(codes.joined(separator: ", ")))"
    }
}
