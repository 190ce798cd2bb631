import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// Where a fixture's queue lives: a private redis-server, or a queue of its own on the test
/// process's shared 3 + 3 Redis Cluster (`SharedCluster`).
enum Backend: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case single
    case cluster

    var testDescription: String { rawValue }
}

/// One Redis Cluster for the whole test process, started on first use: each test on it uses a
/// queue of its own, so tests share it without meeting.
enum SharedCluster {
    static let instance: Result<RedisCluster, any Error> = Result { try RedisCluster() }

    static func get() throws -> RedisCluster { try instance.get() }
}

/// A private Redis (or a private queue on the shared cluster) and a queue on it.
struct QueueFixture {
    /// The private server; nil on the cluster.
    let server: RedisServer!
    let pool: RedisConnectionPool
    let queue: JobQueue

    init(
        backend: Backend = .single,
        serverArguments: [String] = [],
        configure: (inout QueueConfiguration) -> Void = { _ in }
    ) throws {
        var redis: RedisConfiguration
        var configuration: QueueConfiguration
        switch backend {
        case .single:
            server = try RedisServer(arguments: serverArguments)
            redis = server.configuration
            configuration = QueueConfiguration(name: "test")
        case .cluster:
            server = nil
            redis = try SharedCluster.get().configuration
            redis.reconnectWait = .seconds(10)
            configuration = QueueConfiguration(name: "test-" + UUID().uuidString.prefix(8).lowercased())
        }
        redis.poolSize = 4
        pool = RedisConnectionPool(configuration: redis)
        configure(&configuration)
        queue = JobQueue(configuration: configuration, redis: pool)
    }

    func close() { pool.shutDown() }
}

func chatJob(_ prompt: String, priority: JobPriority = .default, maxAttempts: Int = 3, metadata: [String: String] = [:]) -> Job {
    Job(
        kind: .chat,
        model: "tiny",
        input: JobInput(messages: [ChatMessage(role: "user", content: prompt)]),
        priority: priority,
        maxAttempts: maxAttempts,
        metadata: metadata
    )
}

func succeeded(_ delivery: Delivery, output: String = "ok", worker: String = "test") -> Completion {
    Completion(
        delivery: delivery,
        result: JobResult(id: delivery.jobID, status: .succeeded, output: .string(output), attempts: delivery.attempt, worker: worker)
    )
}

/// A registry entry of another worker process, as a test plants it.
func workerInfo(id: String, host: String, pid: Int32, heartbeatAt: Double = Date().timeIntervalSince1970) -> WorkerInfo {
    WorkerInfo(
        id: id,
        host: host,
        pid: pid,
        profile: "cpu",
        concurrency: 1,
        inFlight: 1,
        startedAt: 0,
        heartbeatAt: heartbeatAt,
        version: "x",
        rssBytes: 0,
        processed: 0,
        executor: "local"
    )
}
