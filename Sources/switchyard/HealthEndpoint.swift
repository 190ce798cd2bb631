import Hummingbird
import Logging
import NIOCore
import SwitchyardCore
import SwitchyardWorker

/// The worker's health endpoint (`switchyard worker --health-port`), for Kubernetes probes,
/// compose health checks and `switchyard health`:
///
/// - `GET /livez` (also `/healthz`): 200 while the worker's loops run, 503 when it is stalled.
/// - `GET /readyz`: 200 when the worker is registered, reached Redis within its heartbeat TTL and
///   is not draining; 503 otherwise. Both answer JSON with the reason (`WorkerHealth`).
///
/// It serves nothing else and reads no Redis: a probe costs a lock, never a round trip. It runs
/// as the first service of the worker's group, so it answers (503 on `/readyz`) through the drain.
enum HealthEndpoint {
    static func application(worker: Worker, host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        let live: @Sendable (Request, BasicRequestContext) async -> Response = { _, _ in
            let health = worker.health
            return answer(health, ok: health.live)
        }
        router.get("/livez", use: live)
        router.get("/healthz", use: live)
        router.get("/readyz") { _, _ in
            let health = worker.health
            return answer(health, ok: health.ready)
        }
        return Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "switchyard-worker"),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? port
                logger.notice("health endpoint on http://\(host.contains(":") ? "[\(host)]" : host):\(bound)/ (/livez, /readyz)")
            },
            logger: logger
        )
    }

    static func answer(_ health: WorkerHealth, ok: Bool) -> Response {
        var body: [String: JSONValue] = [
            "live": .bool(health.live), "ready": .bool(health.ready), "worker": .string(health.worker),
            "in_flight": .number(Double(health.inFlight)),
        ]
        if let reason = health.reason { body["reason"] = .string(reason) }
        if let since = health.sinceLastHeartbeat { body["since_last_heartbeat_s"] = .number((since * 10).rounded() / 10) }
        return Response(
            status: ok ? .ok : .serviceUnavailable,
            headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: JSONValue.object(body).jsonBytes))
        )
    }
}
