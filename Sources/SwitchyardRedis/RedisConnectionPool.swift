import Logging
import Synchronization

/// A bounded pool of `RedisConnection`s, safe to share between any number of tasks.
///
/// A task leases a connection for the length of a closure; at most `configuration.poolSize` are
/// open, and further callers wait in line. Blocking commands (XREADGROUP ... BLOCK, BLMOVE) belong
/// on a dedicated `RedisConnection`, not here, so they do not hold a pooled connection for seconds.
public final class RedisConnectionPool: Sendable {
    public struct Statistics: Sendable, Hashable {
        public var open: Int
        public var idle: Int
        public var leased: Int
        public var waiting: Int
    }

    public let configuration: RedisConfiguration
    private let logger: Logger
    private typealias Waiter = CheckedContinuation<RedisConnection, any Error>
    private let state: Mutex<ConnectionPoolStateMachine<RedisConnection, Waiter>>
    private let ids = Atomic<UInt64>(0)

    public init(configuration: RedisConfiguration, logger: Logger = Logger(label: "switchyard.redis")) {
        self.configuration = configuration
        self.logger = logger
        self.state = Mutex(ConnectionPoolStateMachine(maximum: max(1, configuration.poolSize)))
    }

    deinit { shutDown() }

    public var statistics: Statistics {
        state.withLock { Statistics(open: $0.open, idle: $0.idle.count, leased: $0.leased, waiting: $0.waiting) }
    }

    /// Runs `body` with a connection of its own, waiting for one if all are in use.
    public func withConnection<T: Sendable>(_ body: (RedisConnection) async throws -> T) async throws -> T {
        let connection = try await lease()
        defer { release(connection) }
        return try await body(connection)
    }

    @discardableResult
    public func send(_ command: RedisCommand, timeout: RedisTimeout = .default) async throws -> RESPValue {
        try await withConnection { try await $0.send(command, timeout: timeout) }
    }

    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RESPValue {
        let command = RedisCommand(name, arguments: arguments)
        return try await withConnection { try await $0.send(command) }
    }

    /// See `RedisConnection.pipeline`: one round trip (per node), error replies in place, scripts
    /// loaded where a server lacks them.
    public func pipeline(
        _ commands: [RedisCommand],
        scripts: [RedisScript] = [],
        timeout: RedisTimeout = .default
    ) async throws -> [RESPValue] {
        try await withConnection { try await $0.pipeline(commands, scripts: scripts, timeout: timeout) }
    }

    /// Runs `body` once for each server that holds data, with a connection to it alone: the one
    /// server, the master behind Sentinel, or every master of a cluster. For what acts on a whole
    /// server's keyspace (`SCAN`, `INFO`, `DBSIZE`).
    public func forEachPrimary<T: Sendable>(_ body: (RedisConnection) async throws -> T) async throws -> [T] {
        switch configuration.deployment {
        case .standalone, .sentinel:
            return [try await withConnection(body)]
        case .cluster:
            // The map as it is now: a master that lost its slots or died must not be asked.
            let topology = RedisTopology.shared(for: configuration.deployment)
            let reply = try await send("CLUSTER", "SLOTS")
            topology.install(try RedisTopology.SlotMap(clusterSlots: reply, asked: configuration.endpoint))
            var results: [T] = []
            for master in topology.masters {
                var node = configuration
                node.deployment = .standalone
                node.endpoint = master
                let connection = RedisConnection(configuration: node, logger: logger)
                defer { connection.close() }
                results.append(try await body(connection))
            }
            return results
        }
    }

    @discardableResult
    public func evaluate(
        _ script: RedisScript,
        keys: [any RedisArgument] = [],
        arguments: [any RedisArgument] = [],
        timeout: RedisTimeout = .default
    ) async throws -> RESPValue {
        try await withConnection { try await $0.evaluate(script, keys: keys, arguments: arguments, timeout: timeout) }
    }

    /// Closes idle connections, fails waiting callers, and closes leased ones as they come back.
    public func shutDown() {
        let (idle, waiters) = state.withLock { $0.shutDown() }
        for connection in idle { connection.close() }
        for waiter in waiters { waiter.resume(throwing: RedisError(.closed, "the Redis pool is shut down")) }
    }

    private func lease() async throws -> RedisConnection {
        // Fast path: no continuation when a connection is free.
        if let action = state.withLock({ $0.leaseNow() }) { return try resolve(action) }
        let id = ids.wrappingAdd(1, ordering: .relaxed).newValue
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: Waiter) in
                let action = state.withLock { $0.lease(id: id, waiter: continuation) }
                switch action {
                case .wait: break
                case .cancelled: continuation.resume(throwing: CancellationError())
                default: continuation.resume(with: Result { try resolve(action) })
                }
            }
        } onCancel: {
            if let waiter = state.withLock({ $0.cancel(id: id) }) { waiter.resume(throwing: CancellationError()) }
        }
    }

    private func resolve(_ action: ConnectionPoolStateMachine<RedisConnection, Waiter>.LeaseAction) throws -> RedisConnection {
        switch action {
        case .use(let connection): return connection
        case .create: return RedisConnection(configuration: configuration, logger: logger)
        case .fail(let error): throw error
        case .cancelled: throw CancellationError()
        case .wait: preconditionFailure("resolve is never asked to wait")
        }
    }

    private func release(_ connection: RedisConnection) {
        switch state.withLock({ $0.release(connection) }) {
        case .keep: break
        case .handOver(let connection, let waiter): waiter.resume(returning: connection)
        case .close(let connection): connection.close()
        }
    }
}
