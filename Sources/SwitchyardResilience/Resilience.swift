import Logging
import SwitchyardRedis

/// A worker's shared resilience: the breakers (a `Service` to run beside the worker, for its
/// subscription) and the rate limits, on the queue's Redis.
public struct Resilience: Sendable {
    public let breakers: BreakerBoard
    public let limits: RateLimiter

    public init(breakers: BreakerBoard, limits: RateLimiter) {
        self.breakers = breakers
        self.limits = limits
    }

    public init(redis: RedisConnectionPool, logger: Logger = Logger(label: "switchyard.resilience")) {
        self.init(breakers: BreakerBoard(redis: redis, logger: logger), limits: RateLimiter(redis: redis, logger: logger))
    }

    /// Counters for the worker's heartbeat (`switchyard status`).
    public var counters: [String: Int] {
        let b = breakers.statistics
        let l = limits.statistics
        return [
            "breaker_refused": b.refused, "breaker_probes": b.probes, "breaker_redis_errors": b.redisErrors,
            "breaker_resubscribes": b.resubscribes, "limit_admitted": l.admitted, "limit_waits": l.waits, "limit_refused": l.refused,
            "limit_redis_errors": l.redisErrors, "limit_admitted_locally": l.admittedLocally, "limit_refused_closed": l.refusedClosed,
        ]
    }
}
