import Foundation
import SwitchyardCore

/// How a target's circuit breaker decides, with Resilience4j's semantics: a sliding window of
/// recent calls (the last `windowSize` calls, or the last `windowSize` seconds) shared by every
/// worker; once it holds `minimumCalls`, a failure rate or slow-call rate at or above its
/// threshold opens the breaker. Open, calls are refused for `waitMs` (growing by
/// `waitMultiplier` with each opening in a row, capped at `maxWaitMs`, ± `jitter`); then it is
/// half-open and the cluster may make `halfOpenCalls` probe calls, whose outcomes close it or
/// open it again.
///
/// In the providers file as `breaker` (top level, per provider, or per target, the most specific
/// one winning as a whole): `{"window": "count", "window_size": 50, "minimum_calls": 10, ...}`.
public struct BreakerSettings: Sendable, Codable, Hashable {
    public enum Window: String, Sendable, Codable, Hashable {
        /// The last `windowSize` calls.
        case count
        /// The calls of the last `windowSize` seconds.
        case time
    }

    /// What counts as a failure of the target (`failures`).
    public enum FailureKind: String, Sendable, Codable, Hashable, CaseIterable {
        /// Any 5xx answer.
        case serverError = "5xx"
        /// 429 Too Many Requests.
        case rateLimited = "429"
        /// No answer in time (the provider's `timeout_ms`, or 408).
        case timeout
        /// The connection failed or broke.
        case connection
        /// An answer that is not the provider's documented shape, or a stream cut short.
        case invalidResponse = "invalid_response"
        /// 401 or 403: the key is refused (off by default: one bad key is not the target's fault).
        case authentication
    }

    /// Whether the target has a breaker at all. Default true.
    public var enabled: Bool
    /// Count-based or time-based window. Default `count`.
    public var window: Window
    /// Calls (count) or seconds (time) in the window. Default 50.
    public var windowSize: Int
    /// Calls the window must hold before a rate can open the breaker. Default 10.
    public var minimumCalls: Int
    /// Failure rate, in percent, at or above which the breaker opens. Default 50.
    public var failureRateThreshold: Double
    /// A call taking at least this long is slow, in ms. Default 60,000.
    public var slowCallMs: Int
    /// Slow-call rate, in percent, at or above which the breaker opens. Default 100.
    public var slowCallRateThreshold: Double
    /// How long the first opening lasts, in ms. Default 10,000.
    public var waitMs: Int
    /// Each opening in a row lasts this many times the one before. Default 2.
    public var waitMultiplier: Double
    /// The longest opening, in ms, jitter and `Retry-After` included. Default 300,000.
    public var maxWaitMs: Int
    /// Spread of each open period, as a fraction (0.2: ±20 %). Default 0.2.
    public var jitter: Double
    /// Probe calls the whole cluster may make while half-open. Default 3.
    public var halfOpenCalls: Int
    /// How long a granted probe may go without an outcome before another worker may probe in its
    /// place, in ms; nil: the provider's `timeout_ms` plus 5 s. Default nil.
    public var probeLeaseMs: Int?
    /// What counts as a failure. Default 5xx, 429, timeout, connection, invalid_response.
    /// A request the target refused as wrong (other 4xx) is never a failure of the target.
    public var failures: Set<FailureKind>

    /// The settings' field names, for checking a configuration file.
    public static let schema = FieldSchema.fields(CodingKeys.self)

    public static let defaultFailures: Set<FailureKind> = [.serverError, .rateLimited, .timeout, .connection, .invalidResponse]

    enum CodingKeys: String, CodingKey, CaseIterable {
        case enabled, window
        case windowSize = "window_size"
        case minimumCalls = "minimum_calls"
        case failureRateThreshold = "failure_rate_threshold"
        case slowCallMs = "slow_call_ms"
        case slowCallRateThreshold = "slow_call_rate_threshold"
        case waitMs = "wait_ms"
        case waitMultiplier = "wait_multiplier"
        case maxWaitMs = "max_wait_ms"
        case jitter
        case halfOpenCalls = "half_open_calls"
        case probeLeaseMs = "probe_lease_ms"
        case failures
    }

    public init(
        enabled: Bool = true,
        window: Window = .count,
        windowSize: Int = 50,
        minimumCalls: Int = 10,
        failureRateThreshold: Double = 50,
        slowCallMs: Int = 60_000,
        slowCallRateThreshold: Double = 100,
        waitMs: Int = 10_000,
        waitMultiplier: Double = 2,
        maxWaitMs: Int = 300_000,
        jitter: Double = 0.2,
        halfOpenCalls: Int = 3,
        probeLeaseMs: Int? = nil,
        failures: Set<FailureKind> = BreakerSettings.defaultFailures
    ) {
        self.enabled = enabled
        self.window = window
        self.windowSize = windowSize
        self.minimumCalls = minimumCalls
        self.failureRateThreshold = failureRateThreshold
        self.slowCallMs = slowCallMs
        self.slowCallRateThreshold = slowCallRateThreshold
        self.waitMs = waitMs
        self.waitMultiplier = waitMultiplier
        self.maxWaitMs = maxWaitMs
        self.jitter = jitter
        self.halfOpenCalls = halfOpenCalls
        self.probeLeaseMs = probeLeaseMs
        self.failures = failures
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = BreakerSettings()
        self.init(
            enabled: try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? d.enabled,
            window: try c.decodeIfPresent(Window.self, forKey: .window) ?? d.window,
            windowSize: try c.decodeIfPresent(Int.self, forKey: .windowSize) ?? d.windowSize,
            minimumCalls: try c.decodeIfPresent(Int.self, forKey: .minimumCalls) ?? d.minimumCalls,
            failureRateThreshold: try c.decodeIfPresent(Double.self, forKey: .failureRateThreshold) ?? d.failureRateThreshold,
            slowCallMs: try c.decodeIfPresent(Int.self, forKey: .slowCallMs) ?? d.slowCallMs,
            slowCallRateThreshold: try c.decodeIfPresent(Double.self, forKey: .slowCallRateThreshold) ?? d.slowCallRateThreshold,
            waitMs: try c.decodeIfPresent(Int.self, forKey: .waitMs) ?? d.waitMs,
            waitMultiplier: try c.decodeIfPresent(Double.self, forKey: .waitMultiplier) ?? d.waitMultiplier,
            maxWaitMs: try c.decodeIfPresent(Int.self, forKey: .maxWaitMs) ?? d.maxWaitMs,
            jitter: try c.decodeIfPresent(Double.self, forKey: .jitter) ?? d.jitter,
            halfOpenCalls: try c.decodeIfPresent(Int.self, forKey: .halfOpenCalls) ?? d.halfOpenCalls,
            probeLeaseMs: try c.decodeIfPresent(Int.self, forKey: .probeLeaseMs),
            failures: try c.decodeIfPresent(Set<FailureKind>.self, forKey: .failures) ?? d.failures
        )
    }

    /// Checks every value's range; the error names the field under `path` (`providers[0].breaker`).
    public func validate(path: String) throws {
        func bad(_ field: String, _ problem: String) -> ConfigurationError {
            ConfigurationError(field: "\(path).\(field)", problem: problem)
        }
        let largest = window == .count ? 10_000 : 3_600
        guard (1...largest).contains(windowSize) else {
            throw bad("window_size", "must be 1 to \(largest) (\(window == .count ? "calls" : "seconds")), got \(windowSize)")
        }
        guard minimumCalls >= 1 else { throw bad("minimum_calls", "must be at least 1, got \(minimumCalls)") }
        if window == .count, minimumCalls > windowSize {
            throw bad("minimum_calls", "is \(minimumCalls), more than window_size (\(windowSize)): the breaker could never open")
        }
        for (field, value) in [("failure_rate_threshold", failureRateThreshold), ("slow_call_rate_threshold", slowCallRateThreshold)] {
            guard value > 0, value <= 100 else { throw bad(field, "must be a percentage above 0 and at most 100, got \(value)") }
        }
        guard slowCallMs >= 1 else { throw bad("slow_call_ms", "must be at least 1 ms, got \(slowCallMs)") }
        guard waitMs >= 1 else { throw bad("wait_ms", "must be at least 1 ms, got \(waitMs)") }
        guard waitMultiplier >= 1, waitMultiplier <= 100 else { throw bad("wait_multiplier", "must be 1 to 100, got \(waitMultiplier)") }
        guard maxWaitMs >= waitMs else { throw bad("max_wait_ms", "must be at least wait_ms (\(waitMs)), got \(maxWaitMs)") }
        guard jitter >= 0, jitter < 1 else { throw bad("jitter", "must be at least 0 and below 1, got \(jitter)") }
        guard (1...1_000).contains(halfOpenCalls) else { throw bad("half_open_calls", "must be 1 to 1000, got \(halfOpenCalls)") }
        if let probeLeaseMs, probeLeaseMs < 1 { throw bad("probe_lease_ms", "must be at least 1 ms, got \(probeLeaseMs)") }
    }

    /// ARGV 1–15 of every breaker script.
    func scriptArguments(target: String, probeLeaseMs: Int, random: Double) -> [String] {
        // Keys outlive the longest opening and a whole time window, so no state is lost to expiry
        // while it matters; an idle target's keys go away by themselves.
        let ttl = max(maxWaitMs, windowSize * 1000, 3_600_000) * 2
        return [
            window.rawValue, String(windowSize), String(minimumCalls), String(failureRateThreshold), String(slowCallRateThreshold),
            String(waitMs), String(waitMultiplier), String(maxWaitMs), String(jitter), String(halfOpenCalls), String(probeLeaseMs),
            String(random), String(ttl), ResilienceKeys.changesChannel, target,
        ]
    }
}

/// A target's shared rate limits: requests and tokens per `periodSeconds` (a minute by default),
/// enforced by a GCRA in Redis, so the whole cluster together stays within them. A bucket holds
/// at most `requestBurst` requests and `tokenBurst` tokens (a period's worth by default) and
/// refills continuously.
///
/// In the providers file as `rate_limit` (per provider, or per target):
/// `{"requests": 500, "tokens": 200000}`.
public struct RateLimitSettings: Sendable, Codable, Hashable {
    /// What a worker does while the limiter's Redis cannot be reached.
    public enum OnRedisError: String, Sendable, Codable, Hashable {
        /// Keep calling, each worker holding the limits on its own (the cluster may then make up
        /// to workers × the limit).
        case local
        /// Refuse calls to the target (the chain moves to its next target).
        case closed
    }

    /// The settings' field names, for checking a configuration file.
    public static let schema = FieldSchema.fields(CodingKeys.self)

    /// Requests per period; nil: no request limit. Default nil.
    public var requests: Int?
    /// Tokens (prompt plus completion) per period; nil: no token limit. Default nil.
    public var tokens: Int?
    /// The period the limits count over, in seconds. Default 60 (requests and tokens per minute).
    public var periodSeconds: Double
    /// The most requests let through at once; nil: `requests`. Default nil.
    public var requestBurst: Int?
    /// The most tokens let through at once; nil: `tokens`. A call larger than this can never run
    /// on the target. Default nil.
    public var tokenBurst: Int?
    /// How long a call may wait for the limit before moving on to the next target, in ms. Default 1,000.
    public var maxWaitMs: Int
    /// Completion tokens reserved for a job that sets no `max_tokens`. Default 512.
    public var assumedOutputTokens: Int
    /// Default `local`.
    public var onRedisError: OnRedisError

    enum CodingKeys: String, CodingKey, CaseIterable {
        case requests, tokens
        case periodSeconds = "period_seconds"
        case requestBurst = "request_burst"
        case tokenBurst = "token_burst"
        case maxWaitMs = "max_wait_ms"
        case assumedOutputTokens = "assumed_output_tokens"
        case onRedisError = "on_redis_error"
    }

    public init(
        requests: Int? = nil,
        tokens: Int? = nil,
        periodSeconds: Double = 60,
        requestBurst: Int? = nil,
        tokenBurst: Int? = nil,
        maxWaitMs: Int = 1_000,
        assumedOutputTokens: Int = 512,
        onRedisError: OnRedisError = .local
    ) {
        self.requests = requests
        self.tokens = tokens
        self.periodSeconds = periodSeconds
        self.requestBurst = requestBurst
        self.tokenBurst = tokenBurst
        self.maxWaitMs = maxWaitMs
        self.assumedOutputTokens = assumedOutputTokens
        self.onRedisError = onRedisError
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            requests: try c.decodeIfPresent(Int.self, forKey: .requests),
            tokens: try c.decodeIfPresent(Int.self, forKey: .tokens),
            periodSeconds: try c.decodeIfPresent(Double.self, forKey: .periodSeconds) ?? 60,
            requestBurst: try c.decodeIfPresent(Int.self, forKey: .requestBurst),
            tokenBurst: try c.decodeIfPresent(Int.self, forKey: .tokenBurst),
            maxWaitMs: try c.decodeIfPresent(Int.self, forKey: .maxWaitMs) ?? 1_000,
            assumedOutputTokens: try c.decodeIfPresent(Int.self, forKey: .assumedOutputTokens) ?? 512,
            onRedisError: try c.decodeIfPresent(OnRedisError.self, forKey: .onRedisError) ?? .local
        )
    }

    public func validate(path: String) throws {
        func bad(_ field: String, _ problem: String) -> ConfigurationError {
            ConfigurationError(field: "\(path).\(field)", problem: problem)
        }
        for (field, value) in [("requests", requests), ("tokens", tokens), ("request_burst", requestBurst), ("token_burst", tokenBurst)] {
            if let value, value < 1 { throw bad(field, "must be at least 1, got \(value)") }
        }
        guard requests != nil || tokens != nil else { throw bad("requests", "is missing: a rate limit needs requests, tokens or both") }
        guard periodSeconds >= 0.001, periodSeconds <= 86_400 else {
            throw bad("period_seconds", "must be 0.001 to 86400 seconds, got \(periodSeconds)")
        }
        guard maxWaitMs >= 0 else { throw bad("max_wait_ms", "must be 0 or more, got \(maxWaitMs)") }
        guard assumedOutputTokens >= 0 else { throw bad("assumed_output_tokens", "must be 0 or more, got \(assumedOutputTokens)") }
    }

    /// Microseconds between two requests (0: no request limit), and the bucket's size.
    var requestCell: (interval: Double, capacity: Double) {
        guard let requests else { return (0, 0) }
        return (periodSeconds * 1e6 / Double(requests), Double(requestBurst ?? requests))
    }

    var tokenCell: (interval: Double, capacity: Double) {
        guard let tokens else { return (0, 0) }
        return (periodSeconds * 1e6 / Double(tokens), Double(tokenBurst ?? tokens))
    }
}
