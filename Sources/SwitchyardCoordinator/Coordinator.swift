import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardResilience
import Synchronization

/// The coordinator: a stateless HTTP service over the cluster's Redis. It serves Prometheus
/// `/metrics`, the JSON API (`/api/v1/…`), the dashboard (`/`) and an OpenAI-compatible front
/// (`/v1/…`), and it reclaims lost jobs and keeps the minute history that windows and charts
/// read. Everything it shows is read from Redis on each request, so any number of coordinators
/// can run and all answer the same.
///
/// A `Service`: run it in a `ServiceGroup`; on graceful shutdown it stops accepting connections,
/// lets requests in flight finish, and returns.
///
/// Not the place for per-job work: it never runs jobs, and pushing through it costs one HTTP hop
/// over pushing to Redis directly (`switchyard push`).
public final class Coordinator: Service, Sendable {
    public let configuration: CoordinatorConfiguration
    let redis: RedisConnectionPool
    let logger: Logger
    /// One queue handle per served queue, by name.
    let queues: [String: JobQueue]
    let resilience: Resilience
    let tokens: TokenSet
    /// Requests waiting for job results, and the subscriptions that wake them.
    let resultWaiters: ResultWaiters
    private let boundPort = Mutex<(port: Int?, waiters: [CheckedContinuation<Int, Never>])>((nil, []))

    public init(configuration: CoordinatorConfiguration, redis: RedisConnectionPool, logger: Logger = Logger(label: "switchyard.coordinator")) {
        self.configuration = configuration
        self.redis = redis
        self.logger = logger
        var queues: [String: JobQueue] = [:]
        for name in configuration.queues {
            var queueConfiguration = QueueConfiguration(name: name)
            queueConfiguration.lease = configuration.lease
            queueConfiguration.durability = configuration.durability
            queues[name] = JobQueue(configuration: queueConfiguration, redis: redis, logger: logger)
        }
        self.queues = queues
        self.resilience = Resilience(redis: redis, logger: logger)
        self.tokens = TokenSet(configuration.tokens)
        self.resultWaiters = ResultWaiters(configuration: redis.configuration, queues: configuration.queues, logger: logger)
    }

    /// The port the coordinator listens on, once it does (useful with port 0).
    public func port() async -> Int {
        await withCheckedContinuation { continuation in
            let known = boundPort.withLock { state -> Int? in
                if let port = state.port { return port }
                state.waiters.append(continuation)
                return nil
            }
            if let known { continuation.resume(returning: known) }
        }
    }

    public func run() async throws {
        let host = configuration.boundHost
        if configuration.listensOnLoopbackOnly {
            logger.notice(
                "no token configured: listening on \(host) only, and every request is allowed from this machine; give tokens (SWITCHYARD_COORDINATOR_TOKENS or --token-file) to listen on \(configuration.host) and require them for writes"
            )
        }
        for queue in queues.values { try? await queue.ensureGroups() }
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(host, port: configuration.port), serverName: "switchyard"),
            onServerRunning: { [self] channel in
                let port = channel.localAddress?.port ?? 0
                self.logger.notice("coordinator listening on http://\(host.contains(":") ? "[\(host)]" : host):\(port)/")
                let waiters = self.boundPort.withLock { state in
                    state.port = port
                    defer { state.waiters = [] }
                    return state.waiters
                }
                for waiter in waiters { waiter.resume(returning: port) }
            },
            logger: logger
        )
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.upkeep() }
            // Result announcements, for requests waiting on jobs: until the server has stopped.
            group.addTask { await self.resultWaiters.run() }
            try await app.run()
            group.cancelAll()
        }
    }

    /// Until graceful shutdown: the lease reclaim and due promotion of every served queue, and
    /// this minute's history record. Failures are logged and tried again next round.
    func upkeep() async {
        let interval = configuration.reclaimInterval ?? .seconds(5)
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            for (name, queue) in queues.sorted(by: { $0.key < $1.key }) {
                // The lanes and their group exist even while no worker runs (a queue scaled to
                // zero, a Redis restarted empty): an autoscaler reading the group's lag must find
                // them. Apart from the rest: a Redis at maxmemory refuses XGROUP CREATE (OOM) even
                // for a group that exists, and that must not stop the reclaim.
                do {
                    try await queue.ensureGroups()
                } catch {
                    logger.debug("could not make the lanes and their group", metadata: ["queue": "\(name)", "error": "\(error)"])
                }
                do {
                    if configuration.reclaimInterval != nil {
                        try await queue.promoteDue()
                        let (requeued, dead) = try await queue.reclaimExpired(consumer: Self.reclaimConsumer)
                        if requeued + dead > 0 {
                            logger.notice(
                                "reclaimed entries whose lease ran out",
                                metadata: ["queue": "\(name)", "requeued": "\(requeued)", "dead": "\(dead)"]
                            )
                        }
                    }
                    try await ClusterReader(queue: queue, logger: logger).recordMinute()
                } catch {
                    logger.warning("upkeep failed; trying again", metadata: ["queue": "\(name)", "error": "\(error)"])
                }
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
        }
    }

    /// `/readyz`: 200 when every served queue's Redis answers a PING within 2 s, else 503 naming
    /// the problem. `/healthz` answers while the process serves, whatever Redis does.
    func readiness() async -> Response {
        for name in configuration.queues {
            let redis = queues[name]!.redis
            do {
                _ = try await withDeadline(.seconds(2)) { try await redis.send(RedisCommand("PING")) }
            } catch {
                return Response.json(
                    .object(["ready": .bool(false), "reason": .string("queue '\(name)': Redis does not answer: \(error)")]),
                    status: .serviceUnavailable
                )
            }
        }
        return Response.json(.object(["ready": .bool(true)]))
    }

    /// The consumer name the coordinator's reclaim uses in each lane's group (not a worker id:
    /// worker ids cannot start with '~').
    static let reclaimConsumer = "~coordinator"

    /// The queue a request names (`?queue=`), else the first served.
    func queue(for request: Request) throws -> JobQueue {
        let name = request.uri.queryParameters.get("queue") ?? configuration.queues[0]
        guard let queue = queues[name] else {
            throw APIError(
                .notFound,
                "queue '\(name)' is not served here; served: \(configuration.queues.joined(separator: ", "))",
                param: "queue",
                code: "unknown_queue"
            )
        }
        return queue
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: ErrorMiddleware())
        router.add(middleware: AuthenticationMiddleware(tokens: tokens, reads: configuration.reads))
        router.get("/healthz") { _, _ in Response.json(.object(["ok": .bool(true)])) }
        router.get("/readyz") { _, _ in await self.readiness() }
        addMetricsRoute(to: router)
        addAPIRoutes(to: router)
        addDashboardRoutes(to: router)
        addOpenAIRoutes(to: router)
        return router
    }
}
