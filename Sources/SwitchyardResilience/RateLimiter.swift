import Foundation
import Logging
import SwitchyardRedis
import Synchronization

/// Every target's rate limits, shared by the cluster: one GCRA per target in Redis
/// (`RateLimitScripts`), on the server's clock, charging requests and tokens together or not at
/// all. Tokens are reserved before a call (an estimate) and settled against the real usage after it.
///
/// When Redis cannot be reached, the target's `on_redis_error` decides: `local` holds the same
/// limits in this process alone, `closed` refuses the call. Both are counted.
public final class RateLimiter: Sendable {
    public struct Statistics: Sendable, Hashable {
        /// Calls admitted by the shared limits.
        public var admitted = 0
        /// Times a call waited for the limit.
        public var waits = 0
        /// Calls refused: the wait would have been longer than `max_wait_ms`, or the call's tokens
        /// are more than the token bucket holds.
        public var refused = 0
        /// Limiter calls that could not reach Redis.
        public var redisErrors = 0
        /// Calls admitted by this process's own limits while Redis was unreachable (`local`).
        public var admittedLocally = 0
        /// Calls refused because Redis was unreachable (`closed`).
        public var refusedClosed = 0
    }

    /// A decision on one call.
    public enum Admission: Sendable, Hashable {
        /// Go ahead; settle `tokens` afterwards.
        case admitted(tokens: Int)
        /// Not within the wait allowed; `retryIn` is how long the limit needs.
        case limited(retryIn: Duration)
        /// The call's tokens are more than the target's token bucket holds.
        case tooLarge(tokens: Int, capacity: Int)
        /// Redis is unreachable and the target fails closed.
        case unavailable
    }

    let redis: RedisConnectionPool
    let logger: Logger
    let callTimeout: Duration
    private let shared = Mutex(Shared())

    private struct Shared {
        var statistics = Statistics()
        /// The local GCRA's arrival times (µs on the process's clock) while Redis is unreachable.
        var local: [String: (requests: Double, tokens: Double)] = [:]
        var redisPause = RedisPause()
    }

    public init(redis: RedisConnectionPool, logger: Logger = Logger(label: "switchyard.limits")) {
        self.redis = redis
        self.logger = logger
        self.callTimeout = min(redis.configuration.commandTimeout, .seconds(1))
    }

    public var statistics: Statistics { shared.withLock { $0.statistics } }

    /// Admits one request with `tokens` tokens, waiting up to the target's `max_wait_ms` (and
    /// never past `deadline`) for room.
    public func acquire(_ target: ResilienceTarget, tokens: Int, deadline: ContinuousClock.Instant? = nil) async throws -> Admission {
        guard let limit = target.rateLimit else { return .admitted(tokens: 0) }
        let tokens = limit.tokens == nil ? 0 : max(tokens, 1)
        let give = ContinuousClock.now + .milliseconds(limit.maxWaitMs)
        let until = deadline.map { min($0, give) } ?? give
        var waited = false
        while true {
            let admission = await take(target, limit: limit, tokens: tokens)
            guard case .limited(let retryIn) = admission else {
                switch admission {
                case .admitted: shared.withLock { $0.statistics.admitted += 1 }
                case .tooLarge: shared.withLock { $0.statistics.refused += 1 }
                default: break
                }
                return admission
            }
            let now = ContinuousClock.now
            if now + retryIn > until {
                shared.withLock { $0.statistics.refused += 1 }
                return admission
            }
            if !waited {
                waited = true
                shared.withLock { $0.statistics.waits += 1 }
            }
            try await Task.sleep(for: retryIn)
        }
    }

    /// Gives back (negative) or charges (positive) tokens once a call's real usage is known.
    public func settle(_ target: ResilienceTarget, tokens delta: Int) async {
        guard let limit = target.rateLimit, limit.tokens != nil, delta != 0 else { return }
        let cell = limit.tokenCell
        if redisIsDown() {
            shared.withLock { s in s.local[target.id]?.tokens += Double(delta) * cell.interval }
            return
        }
        let key = ResilienceKeys.limit(target.id)
        do {
            _ = try await withDeadline(callTimeout) { [redis] in
                try await redis.evaluate(
                    RateLimitScripts.limit,
                    keys: [key],
                    arguments: ["settle", "0", "0", String(cell.interval), String(cell.capacity), "0", String(delta)]
                )
            }
        } catch {
            markDown(error, target: target.id)
        }
    }

    /// Requests and tokens the target could take right now (nil for a limit it does not have).
    public func headroom(_ target: ResilienceTarget) async throws -> (requests: Double?, tokens: Double?) {
        guard let limit = target.rateLimit else { return (nil, nil) }
        let reply = try await redis.evaluate(
            RateLimitScripts.limit,
            keys: [ResilienceKeys.limit(target.id)],
            arguments: ["read", "0", "0", "0", "0", "0", "0"]
        )
        guard let v = reply.array, v.count == 3, let rt = v[0].double, let tt = v[1].double, let now = v[2].double else {
            throw RedisError(.protocolError, "unexpected reply from the rate limit script for \(target.id)")
        }
        func room(_ tat: Double, _ cell: (interval: Double, capacity: Double)) -> Double? {
            guard cell.interval > 0 else { return nil }
            return min(cell.capacity, max(0, cell.capacity - max(0, tat - now) / cell.interval))
        }
        return (room(rt, limit.requestCell), room(tt, limit.tokenCell))
    }

    // MARK: - One decision

    func take(_ target: ResilienceTarget, limit: RateLimitSettings, tokens: Int) async -> Admission {
        let requestCell = limit.requestCell
        let tokenCell = limit.tokenCell
        if tokenCell.interval > 0, Double(tokens) > tokenCell.capacity {
            return .tooLarge(tokens: tokens, capacity: Int(tokenCell.capacity))
        }
        if !redisIsDown() {
            let key = ResilienceKeys.limit(target.id)
            let arguments: [any RedisArgument] = [
                "take", String(requestCell.interval), String(requestCell.capacity), String(tokenCell.interval), String(tokenCell.capacity), "1",
                String(tokens),
            ]
            do {
                let reply = try await withDeadline(callTimeout) { [redis] in
                    try await redis.evaluate(RateLimitScripts.limit, keys: [key], arguments: arguments)
                }
                if let v = reply.array, v.count == 2, let verdict = v[0].int {
                    switch verdict {
                    case 1: return .admitted(tokens: tokens)
                    case -1: return .tooLarge(tokens: tokens, capacity: Int(tokenCell.capacity))
                    default: return .limited(retryIn: .microseconds(max(1, v[1].int ?? 1)))
                    }
                }
                logger.warning("unexpected reply from the rate limit script for \(target.id)")
            } catch {
                markDown(error, target: target.id)
            }
        }
        switch limit.onRedisError {
        case .closed:
            shared.withLock { $0.statistics.refusedClosed += 1 }
            return .unavailable
        case .local:
            let admission = takeLocally(target.id, requestCell: requestCell, tokenCell: tokenCell, tokens: tokens)
            if case .admitted = admission { shared.withLock { $0.statistics.admittedLocally += 1 } }
            return admission
        }
    }

    /// The same GCRA as the script, on this process's clock.
    func takeLocally(
        _ id: String,
        requestCell: (interval: Double, capacity: Double),
        tokenCell: (interval: Double, capacity: Double),
        tokens: Int
    ) -> Admission {
        let now = Double(DispatchTime.now().uptimeNanoseconds) / 1000
        return shared.withLock { s in
            let current = s.local[id] ?? (0, 0)
            var wait = 0.0
            var next = current
            if requestCell.interval > 0 {
                next.requests = max(current.requests, now) + requestCell.interval
                wait = max(wait, next.requests - requestCell.capacity * requestCell.interval - now)
            }
            if tokenCell.interval > 0, tokens > 0 {
                next.tokens = max(current.tokens, now) + Double(tokens) * tokenCell.interval
                wait = max(wait, next.tokens - tokenCell.capacity * tokenCell.interval - now)
            }
            if wait > 0 { return .limited(retryIn: .microseconds(Int64(wait.rounded(.up)))) }
            s.local[id] = next
            return .admitted(tokens: tokens)
        }
    }

    private func redisIsDown() -> Bool {
        shared.withLock { s in
            guard s.redisPause.isOn() else { return false }
            s.statistics.redisErrors += 1
            return true
        }
    }

    private func markDown(_ error: any Error, target: String) {
        shared.withLock { s in
            s.statistics.redisErrors += 1
            s.redisPause.start()
        }
        logger.warning("rate limit for \(target) could not reach Redis: \(error)")
    }
}
