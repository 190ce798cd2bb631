import SwitchyardRedis
import Synchronization

/// After a call to Redis failed, breakers and limits leave Redis alone for `length` (a second),
/// so a Redis that is down costs each call nothing rather than a timeout.
struct RedisPause: Sendable {
    var until: ContinuousClock.Instant?
    let length: Duration = .seconds(1)

    /// Whether a call should skip Redis now; a pause that has ended is cleared.
    mutating func isOn(at now: ContinuousClock.Instant = .now) -> Bool {
        guard let until else { return false }
        if now < until { return true }
        self.until = nil
        return false
    }

    mutating func start(at now: ContinuousClock.Instant = .now) { until = now + length }
}
