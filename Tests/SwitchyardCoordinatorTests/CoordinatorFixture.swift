import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCoordinator
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization

/// A real redis-server, a coordinator running in process on a free port (in a `ServiceGroup`,
/// stopped gracefully), and an HTTP client to talk to it. Everything the coordinator logs is kept
/// (`logs`), to check what never appears.
final class CoordinatorFixture: Sendable {
    let server: RedisServer
    let pool: RedisConnectionPool
    let queue: JobQueue
    let coordinator: Coordinator
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    let client = HTTPClient()
    let logs: LogCapture

    /// The queue tests use unless they name another: `test`.
    static let queueName = "test"

    init(
        server existing: RedisServer? = nil,
        queue queueName: String = CoordinatorFixture.queueName,
        configure: (inout CoordinatorConfiguration) -> Void = { _ in }
    ) async throws {
        let server: RedisServer
        if let existing { server = existing } else { server = try await offThePool { try RedisServer() } }
        self.server = server
        var redis = server.configuration
        redis.poolSize = 4
        pool = RedisConnectionPool(configuration: redis)
        queue = JobQueue(configuration: QueueConfiguration(name: queueName), redis: pool)
        var configuration = CoordinatorConfiguration(port: 0, queues: [queueName])
        configure(&configuration)
        let logs = LogCapture()
        self.logs = logs
        var logger = Logger(label: "test.coordinator") { _ in logs }
        logger.logLevel = .debug
        let coordinator = Coordinator(configuration: configuration, redis: pool, logger: logger)
        self.coordinator = coordinator
        let group = ServiceGroup(services: [coordinator], logger: logger)
        self.group = group
        task = Task { try await group.run() }
        port = await coordinator.port()
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Stops the coordinator gracefully and closes the pool; the redis-server stops with its
    /// last reference.
    func close() async {
        await group.triggerGracefulShutdown()
        _ = await task.result
        client.shutdown()
        pool.shutDown()
    }

    func request(
        _ method: String,
        _ path: String,
        json: JSONValue? = nil,
        token: String? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> (status: Int, body: [UInt8], headers: [(name: String, value: String)]) {
        var headers: [(name: String, value: String)] = []
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        if json != nil { headers.append(("Content-Type", "application/json")) }
        let response = try await client.execute(
            HTTPRequest(method: method, url: baseURL + path, headers: headers, body: json?.jsonBytes, timeout: timeout, idempotent: false)
        )
        return (response.status, response.body, response.head.headers)
    }

    /// GET `path` and parse its JSON body.
    func json(_ path: String, token: String? = nil) async throws -> JSONValue {
        let (status, body, _) = try await request("GET", path, token: token)
        guard status == 200 else { throw FixtureError("GET \(path): \(status) \(String(decoding: body, as: UTF8.self))") }
        return try JSONValue.parse(body)
    }

    /// Waits (up to a minute) until every job has a final result.
    func waitForResults(_ jobs: [Job]) async throws {
        let done = try await eventually(timeout: .seconds(60)) { try await self.queue.results(of: jobs.map(\.id)).allSatisfy { $0 != nil } }
        guard done else { throw FixtureError("the worker did not finish the jobs") }
    }

    func text(_ path: String, token: String? = nil) async throws -> String {
        let (status, body, _) = try await request("GET", path, token: token)
        guard status == 200 else { throw FixtureError("GET \(path): \(status)") }
        return String(decoding: body, as: UTF8.self)
    }
}

struct FixtureError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A log handler that keeps every line, for checking what a component logged (and what it
/// never did: secrets).
final class LogCapture: LogHandler, Sendable {
    private let lines = Mutex<[String]>([])

    var text: String { lines.withLock { $0.joined(separator: "\n") } }

    func log(event: LogEvent) {
        let line = "\(event.level) \(event.message) \(event.metadata ?? [:]) \(event.source)"
        lines.withLock { $0.append(line) }
    }

    subscript(metadataKey _: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }

    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }
}
