/// Exponential backoff with jitter: the delay doubles each attempt up to `cap`, and the wait is
/// drawn from the upper half of it so that many clients do not retry in step.
public struct Backoff: Sendable, Hashable {
    public var base: Duration
    public var cap: Duration

    public init(base: Duration, cap: Duration) {
        self.base = base
        self.cap = cap
    }

    /// Between reconnect attempts to Redis: 20 ms, 40 ms, ... up to 1 s.
    public static let reconnect = Backoff(base: .milliseconds(20), cap: .seconds(1))

    /// The wait before attempt `attempt` (1-based) of a retry.
    public func delay(attempt: Int, random: Double = Double.random(in: 0..<1)) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let raw = base * (1 << exponent)
        let ceiling = raw > cap ? cap : raw
        return ceiling / 2 + ceiling / 2 * random
    }
}
