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

    public init(redis: RedisConfiguration = RedisConfiguration(), queue: String = "default") {
        self.redis = redis
        self.queue = queue
    }

    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> SwitchyardConfiguration {
        let redis = try RedisConfiguration.fromEnvironment(environment)
        let queue = environment["SWITCHYARD_QUEUE"] ?? "default"
        try validateQueueName(queue, field: "SWITCHYARD_QUEUE")
        return SwitchyardConfiguration(redis: redis, queue: queue)
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
