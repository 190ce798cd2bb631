import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

/// A private Redis and a queue on it.
struct QueueFixture {
    let server: RedisServer
    let pool: RedisConnectionPool
    let queue: JobQueue

    init(serverArguments: [String] = [], configure: (inout QueueConfiguration) -> Void = { _ in }) throws {
        server = try RedisServer(arguments: serverArguments)
        var redis = server.configuration
        redis.poolSize = 4
        pool = RedisConnectionPool(configuration: redis)
        var configuration = QueueConfiguration(name: "test")
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
