/// Every Redis key and channel the breakers and rate limits use, derived in one place.
///
/// Each target's keys carry the target as their hash tag, so a script's keys share a slot on
/// Redis Cluster while different targets spread over slots. Braces in a target's name (which
/// would end the tag early) become parentheses.
public enum ResilienceKeys {
    /// Where every breaker change is published.
    public static let changesChannel = "syb:changes"

    static func tag(_ target: String) -> String {
        "{" + String(target.map { $0 == "{" ? "(" : $0 == "}" ? ")" : $0 }) + "}"
    }

    /// The breaker's state hash: `syb:{<target>}`.
    public static func breaker(_ target: String) -> String { "syb:" + tag(target) }

    /// The breaker's sliding window: `syb:{<target>}:window`. It records its shape (`ks`:
    /// `count:50`, say); a worker with other window settings (a rolling deploy) starts it
    /// afresh rather than mixing its counts into another ring.
    /// Fields of the breaker's hash that count its transitions into each state (`n_open`,
    /// `n_half_open`, ...), incremented by the scripts; they go when the hash expires.
    public static func transitionField(_ state: BreakerState) -> String { "n_" + state.rawValue }
    public static func window(_ target: String) -> String { breaker(target) + ":window" }

    /// The rate limiter's hash: `syl:{<target>}`.
    public static func limit(_ target: String) -> String { "syl:" + tag(target) }

    /// The pattern that finds every breaker's state hash (for `switchyard breakers`).
    public static let breakerPattern = "syb:{*}"

    /// The target whose state hash is `key`, or nil for another key.
    public static func target(ofBreakerKey key: String) -> String? {
        guard key.hasPrefix("syb:{"), key.hasSuffix("}") else { return nil }
        return String(key.dropFirst(5).dropLast())
    }
}

/// Something calls go to, whose health and limits are tracked: a provider and its upstream model
/// (`openrouter/qwen/qwen3-30b-a3b`), shared by the cluster, or a server only one worker uses
/// (`local/tiny@worker-1`), whose id carries the worker's.
public struct ResilienceTarget: Sendable, Hashable {
    public var id: String
    public var breaker: BreakerSettings
    public var rateLimit: RateLimitSettings?
    /// How long a granted half-open probe may go without an outcome, in ms.
    public var probeLeaseMs: Int

    public init(id: String, breaker: BreakerSettings = BreakerSettings(), rateLimit: RateLimitSettings? = nil, probeLeaseMs: Int = 65_000) {
        self.id = id
        self.breaker = breaker
        self.rateLimit = rateLimit
        self.probeLeaseMs = breaker.probeLeaseMs ?? probeLeaseMs
    }
}
