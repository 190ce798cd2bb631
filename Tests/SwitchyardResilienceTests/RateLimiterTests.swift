import Foundation
import SwitchyardCore
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization
import Testing

@testable import SwitchyardResilience

@Suite("Rate limits against a real redis-server", .serialized)
struct RateLimiterTests {
    static func target(_ id: String, _ limit: RateLimitSettings) -> ResilienceTarget {
        ResilienceTarget(id: id, breaker: BreakerSettings(enabled: false), rateLimit: limit)
    }

    static func isAdmitted(_ admission: RateLimiter.Admission) -> Bool {
        if case .admitted = admission { return true }
        return false
    }

    static func isLimited(_ admission: RateLimiter.Admission) -> Bool {
        if case .limited = admission { return true }
        return false
    }

    /// Four limiters (workers) asking for 200 calls together as fast as they can get: the
    /// burst plus the rate over the time they took, never more; the rest refused.
    @Test func requestLimitHoldsAcrossLimiters() async throws {
        let server = try RedisServer()
        let target = Self.target("l1/requests", RateLimitSettings(requests: 20, periodSeconds: 1, requestBurst: 5, maxWaitMs: 0))
        let pools = (0..<4).map { _ in RedisConnectionPool(configuration: server.configuration) }
        defer { for pool in pools { pool.shutDown() } }
        let limiters = pools.map { RateLimiter(redis: $0) }
        let start = ContinuousClock.now
        let admitted = try await withThrowingTaskGroup(of: Int.self) { group in
            for limiter in limiters {
                group.addTask {
                    var admitted = 0
                    for _ in 0..<50 {
                        let admission = try await limiter.acquire(target, tokens: 0)
                        if Self.isAdmitted(admission) {
                            admitted += 1
                        } else if !Self.isLimited(admission) {
                            Issue.record("unexpected \(admission)")
                        }
                    }
                    return admitted
                }
            }
            return try await group.reduce(0, +)
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        #expect(admitted >= 5, "the burst")
        #expect(Double(admitted) <= 5 + 20 * seconds + 1, "admitted \(admitted) in \(seconds) s")
        #expect(limiters.map(\.statistics.admitted).reduce(0, +) == admitted)
        #expect(limiters.map(\.statistics.refused).reduce(0, +) == 200 - admitted)
        withExtendedLifetime(server) {}
    }

    /// Token limits: a call larger than the bucket never fits; a reservation settled down gives
    /// the room back.
    @Test func tokenLimitTooLargeAndSettle() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let limiter = RateLimiter(redis: pool)
        // An hour's period: nothing refills during the test.
        let target = Self.target("l2/tokens", RateLimitSettings(tokens: 1_000, periodSeconds: 3_600, tokenBurst: 1_000, maxWaitMs: 0))

        #expect(try await limiter.acquire(target, tokens: 1_500) == .tooLarge(tokens: 1_500, capacity: 1_000))
        #expect(try await limiter.acquire(target, tokens: 800) == .admitted(tokens: 800))
        #expect(Self.isLimited(try await limiter.acquire(target, tokens: 800)), "1,600 tokens at once from a 1,000 bucket")
        let room = try await limiter.headroom(target)
        #expect(room.requests == nil)
        #expect(abs((room.tokens ?? -1) - 200) < 1, "\(String(describing: room.tokens))")
        // The call used 100 of its 800: 700 back.
        await limiter.settle(target, tokens: -700)
        #expect(try await limiter.acquire(target, tokens: 800) == .admitted(tokens: 800))
        // Refused: the call too large, and the one over the limit.
        #expect(limiter.statistics.admitted == 2 && limiter.statistics.refused == 2)
        withExtendedLifetime(server) {}
    }

    /// A charge settled after the call must last as long as it takes to pay off: the limit's key
    /// may not expire (and the bucket refill at once) while its token arrival time is ahead.
    @Test func aSettledChargeOutlivesTheKeysExpiry() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let limiter = RateLimiter(redis: pool)
        // 1,000 tokens an hour: one token is 3.6 s.
        let target = Self.target("l6/hourly", RateLimitSettings(tokens: 1_000, periodSeconds: 3_600, maxWaitMs: 0))
        #expect(try await limiter.acquire(target, tokens: 10) == .admitted(tokens: 10))
        // The call used 500 tokens, not the 10 reserved.
        await limiter.settle(target, tokens: 490)
        let room = try await limiter.headroom(target)
        #expect(abs((room.tokens ?? 0) - 500) < 1, "\(String(describing: room.tokens))")
        // 500 tokens take 1,800 s to come back; the key must live at least that long.
        let ttlMs = try await pool.send("PTTL", ResilienceKeys.limit(target.id)).int ?? -2
        #expect(ttlMs == -1 || ttlMs >= 1_790_000, "the key expires in \(ttlMs) ms, and the 500 tokens charged with it")
        withExtendedLifetime(server) {}
    }

    /// Headroom reports what the target can still take.
    @Test func headroomShrinksWithTakes() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let limiter = RateLimiter(redis: pool)
        let target = Self.target("l3/headroom", RateLimitSettings(requests: 10, tokens: 10_000, periodSeconds: 3_600, maxWaitMs: 0))
        let before = try await limiter.headroom(target)
        #expect(before.requests == 10 && before.tokens == 10_000)
        for _ in 0..<3 { #expect(try await limiter.acquire(target, tokens: 1_000) == .admitted(tokens: 1_000)) }
        let after = try await limiter.headroom(target)
        #expect(abs((after.requests ?? 0) - 7) < 0.1, "\(String(describing: after.requests))")
        #expect(abs((after.tokens ?? 0) - 7_000) < 10, "\(String(describing: after.tokens))")
        // Requests and tokens are charged together or not at all: too many tokens, no request taken.
        #expect(Self.isLimited(try await limiter.acquire(target, tokens: 8_000)))
        let unchanged = try await limiter.headroom(target)
        #expect(abs((unchanged.requests ?? 0) - 7) < 0.1 && abs((unchanged.tokens ?? 0) - 7_000) < 10)
        withExtendedLifetime(server) {}
    }

    /// A call waits for room within max_wait_ms (and its deadline), else it is refused at once.
    @Test func aCallWaitsWithinMaxWait() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let limiter = RateLimiter(redis: pool)
        // One request per 400 ms, no burst beyond one.
        let target = Self.target("l5/wait", RateLimitSettings(requests: 5, periodSeconds: 2, requestBurst: 1, maxWaitMs: 2_000))
        #expect(try await limiter.acquire(target, tokens: 0) == .admitted(tokens: 0))
        let start = ContinuousClock.now
        #expect(try await limiter.acquire(target, tokens: 0) == .admitted(tokens: 0))
        #expect(ContinuousClock.now - start >= .milliseconds(300), "it waited for the next slot")
        #expect(limiter.statistics.waits == 1)
        // A deadline shorter than the wait: refused without waiting it out.
        let refused = try await limiter.acquire(target, tokens: 0, deadline: .now + .milliseconds(100))
        #expect(Self.isLimited(refused) && limiter.statistics.refused == 1)
        withExtendedLifetime(server) {}
    }

    /// With Redis unreachable, `closed` refuses and `local` holds the limits in this process.
    @Test func onRedisErrorClosedAndLocal() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(try RedisServer.freePort())")
        configuration.connectTimeout = .milliseconds(200)
        configuration.reconnectWait = .zero

        let closedPool = RedisConnectionPool(configuration: configuration)
        defer { closedPool.shutDown() }
        let closedLimiter = RateLimiter(redis: closedPool)
        let closedTarget = Self.target("l4/closed", RateLimitSettings(requests: 100, maxWaitMs: 0, onRedisError: .closed))
        #expect(try await closedLimiter.acquire(closedTarget, tokens: 0) == .unavailable)
        #expect(try await closedLimiter.acquire(closedTarget, tokens: 0) == .unavailable)
        #expect(closedLimiter.statistics.refusedClosed == 2 && closedLimiter.statistics.redisErrors >= 1)
        #expect(closedLimiter.statistics.admitted == 0)

        let localPool = RedisConnectionPool(configuration: configuration)
        defer { localPool.shutDown() }
        let localLimiter = RateLimiter(redis: localPool)
        let localTarget = Self.target("l4/local", RateLimitSettings(requests: 3, periodSeconds: 60, maxWaitMs: 0, onRedisError: .local))
        for _ in 0..<3 { #expect(try await localLimiter.acquire(localTarget, tokens: 0) == .admitted(tokens: 0)) }
        #expect(Self.isLimited(try await localLimiter.acquire(localTarget, tokens: 0)), "the local limit still limits")
        #expect(localLimiter.statistics.admittedLocally == 3 && localLimiter.statistics.redisErrors >= 1)
    }
}

@Suite("Resilience settings")
struct ResilienceSettingsTests {
    /// The field a validation error names, nil when valid.
    static func field(_ validate: () throws -> Void) -> String? {
        do {
            try validate()
            return nil
        } catch let error as ConfigurationError {
            return error.field
        } catch {
            return "not a ConfigurationError: \(error)"
        }
    }

    @Test func breakerSettingsNameTheField() throws {
        #expect(Self.field { try BreakerSettings().validate(path: "x") } == nil)
        #expect(Self.field { try BreakerSettings(windowSize: 10, minimumCalls: 20).validate(path: "x") } == "x.minimum_calls")
        #expect(Self.field { try BreakerSettings(window: .time, windowSize: 10, minimumCalls: 20).validate(path: "x") } == nil)
        #expect(Self.field { try BreakerSettings(windowSize: 0).validate(path: "p[0].breaker") } == "p[0].breaker.window_size")
        #expect(Self.field { try BreakerSettings(window: .time, windowSize: 3_601, minimumCalls: 1).validate(path: "x") } == "x.window_size")
        #expect(Self.field { try BreakerSettings(failureRateThreshold: 0).validate(path: "x") } == "x.failure_rate_threshold")
        #expect(Self.field { try BreakerSettings(slowCallRateThreshold: 101).validate(path: "x") } == "x.slow_call_rate_threshold")
        #expect(Self.field { try BreakerSettings(waitMs: 1_000, maxWaitMs: 999).validate(path: "x") } == "x.max_wait_ms")
        #expect(Self.field { try BreakerSettings(jitter: 1).validate(path: "x") } == "x.jitter")
        #expect(Self.field { try BreakerSettings(halfOpenCalls: 0).validate(path: "x") } == "x.half_open_calls")
        #expect(Self.field { try BreakerSettings(probeLeaseMs: 0).validate(path: "x") } == "x.probe_lease_ms")
    }

    @Test func rateLimitSettingsNeedRequestsOrTokens() throws {
        #expect(Self.field { try RateLimitSettings().validate(path: "y") } == "y.requests")
        #expect(Self.field { try RateLimitSettings(requests: 10).validate(path: "y") } == nil)
        #expect(Self.field { try RateLimitSettings(tokens: 10).validate(path: "y") } == nil)
        #expect(Self.field { try RateLimitSettings(requests: 0).validate(path: "y") } == "y.requests")
        #expect(Self.field { try RateLimitSettings(tokens: 10, tokenBurst: 0).validate(path: "y") } == "y.token_burst")
        #expect(Self.field { try RateLimitSettings(requests: 10, periodSeconds: 0).validate(path: "y") } == "y.period_seconds")
        #expect(Self.field { try RateLimitSettings(requests: 10, maxWaitMs: -1).validate(path: "y") } == "y.max_wait_ms")
    }

    @Test func settingsDecodeWithDefaults() throws {
        let breaker = try JSONDecoder().decode(
            BreakerSettings.self,
            from: Data(#"{"window": "time", "window_size": 30, "failures": ["5xx", "authentication"]}"#.utf8)
        )
        #expect(breaker.window == .time && breaker.windowSize == 30 && breaker.minimumCalls == 10)
        #expect(breaker.failures == [.serverError, .authentication])
        let limit = try JSONDecoder().decode(RateLimitSettings.self, from: Data(#"{"tokens": 2000, "on_redis_error": "closed"}"#.utf8))
        #expect(limit.tokens == 2_000 && limit.requests == nil && limit.periodSeconds == 60 && limit.onRedisError == .closed)
        let target = ResilienceTarget(id: "a{b}c", breaker: BreakerSettings(probeLeaseMs: 1_234), probeLeaseMs: 9_999)
        #expect(target.probeLeaseMs == 1_234, "the breaker's own probe lease wins")
        #expect(ResilienceKeys.breaker("a{b}c") == "syb:{a(b)c}")
        #expect(ResilienceKeys.target(ofBreakerKey: ResilienceKeys.breaker("p/m")) == "p/m")
    }
}
