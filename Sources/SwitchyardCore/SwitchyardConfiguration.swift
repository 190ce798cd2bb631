import Foundation
import SwitchyardRedis

/// The configuration every Switchyard process shares: where Redis is, and the queue namespace.
///
/// Read from the environment (`SWITCHYARD_*`) with command-line flags taking precedence; see
/// docs/CONFIGURATION.md for every option.
public struct SwitchyardConfiguration: Sendable, CustomStringConvertible {
    public var redis: RedisConfiguration
    /// The queue name that every Redis key carries as a hash tag: `sy:{<queue>}:...`.
    public var queue: String
    /// Whether a push or a finish waits for a replica (`SWITCHYARD_DURABILITY`). Default
    /// `.acknowledged`.
    public var durability: Durability

    public init(redis: RedisConfiguration = RedisConfiguration(), queue: String = "default", durability: Durability = .acknowledged) {
        self.redis = redis
        self.queue = queue
        self.durability = durability
    }

    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> SwitchyardConfiguration {
        let redis = try RedisConfiguration.fromEnvironment(environment)
        let queue = environment["SWITCHYARD_QUEUE"] ?? "default"
        try validateQueueName(queue, field: "SWITCHYARD_QUEUE")
        let durability = try Durability(
            parsing: environment["SWITCHYARD_DURABILITY"] ?? "acknowledged",
            timeoutMs: environment["SWITCHYARD_DURABILITY_TIMEOUT_MS"],
            field: "SWITCHYARD_DURABILITY"
        )
        return SwitchyardConfiguration(redis: redis, queue: queue, durability: durability)
    }

    /// Queue names become part of Redis keys inside a `{...}` hash tag, so braces and spaces are out.
    public static func validateQueueName(_ name: String, field: String) throws {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-_."))
        guard !name.isEmpty, name.count <= 64, name.unicodeScalars.allSatisfy({ allowed.contains($0) }) else {
            throw ConfigurationError(field: field, problem: "'\(name)' must be 1-64 letters, digits, '-', '_' or '.'")
        }
    }

    public var description: String { "redis: \(redis.redactedURL), queue: \(queue)" }
}

/// What a push or a finish waits for before it counts as done.
///
/// Redis replicates asynchronously: a write the master acknowledged but had not yet sent to a
/// replica is lost when that master dies and the replica takes over. `.replicated` closes that
/// window for the writes that matter (a pushed job, a written result) by sending `WAIT` after
/// them, at the cost of a replica round trip per push chunk and per finish.
public enum Durability: Sendable, Hashable, CustomStringConvertible {
    /// Done when the master has it: Redis's default. A failover can lose the last writes.
    case acknowledged
    /// Done when `replicas` replicas have it too (`WAIT replicas timeout`). When they do not
    /// confirm within `timeout`, a push fails with `ReplicationTimeout` (the jobs are on the master
    /// and pushing them again is safe: ids are recognised) and a finish is logged and counted as
    /// unconfirmed (a result lost in a failover makes the job run again, never vanish).
    case replicated(replicas: Int, timeout: Duration)

    /// `acknowledged`, or `replicated` (one replica) with the timeout in milliseconds (default 1000).
    public init(parsing text: String, timeoutMs: String?, field: String) throws {
        switch text.lowercased() {
        case "acknowledged", "master":
            self = .acknowledged
        case "replicated", "replica":
            var ms = 1000
            if let timeoutMs {
                guard let value = Int(timeoutMs), value >= 1 else {
                    throw ConfigurationError(
                        field: field + "_TIMEOUT_MS",
                        problem: "'\(timeoutMs)' is not a whole number of milliseconds of at least 1"
                    )
                }
                ms = value
            }
            self = .replicated(replicas: 1, timeout: .milliseconds(ms))
        default:
            throw ConfigurationError(field: field, problem: "'\(text)' is not one of acknowledged, replicated")
        }
    }

    public var description: String {
        switch self {
        case .acknowledged: return "acknowledged"
        case .replicated(let n, let timeout): return "replicated (\(n) replica\(n == 1 ? "" : "s"), \(timeout))"
        }
    }
}

/// A configuration value that cannot be used; names the field and the problem.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public let field: String
    public let problem: String

    public init(field: String, problem: String) {
        self.field = field
        self.problem = problem
    }

    public var description: String { "\(field): \(problem)" }
}
