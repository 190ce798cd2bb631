import ArgumentParser
import Foundation
import Hummingbird
import Logging
import NIOCore
import SwitchyardCore
import SwitchyardWorker

/// The worker's health endpoint (`switchyard worker --health-port`), for Kubernetes probes,
/// compose health checks and `switchyard health`:
///
/// - `GET /livez` (also `/healthz`): 200 while the worker's loops run, 503 when it is stalled.
/// - `GET /readyz`: 200 when the worker is registered, reached Redis within its heartbeat TTL, is
///   not draining and has its pinned models loaded (`--executor local`); 503 otherwise. Both
///   answer JSON with the reason (`WorkerHealth`).
///
/// It serves nothing else and reads no Redis: a probe costs a lock (and with model servers a
/// question to their manager), never a round trip. It runs
/// as the first service of the worker's group, so it answers (503 on `/readyz`) through the drain.
enum HealthEndpoint {
    static func application(worker: Worker, host: String, port: Int, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        let live: @Sendable (Request, BasicRequestContext) async -> Response = { _, _ in
            let health = await worker.currentHealth()
            return answer(health, ok: health.live)
        }
        router.get("/livez", use: live)
        router.get("/healthz", use: live)
        router.get("/readyz") { _, _ in
            let health = await worker.currentHealth()
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

    /// Refuses, before the worker starts, an address the endpoint could not listen on (the port
    /// taken, an address not of this host): a worker must not run half configured, and a bind
    /// error after the start would stop it without naming the option. SO_REUSEADDR as the server
    /// sets it, so a port in TIME_WAIT passes.
    static func checkAvailable(host: String, port: Int) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw ValidationError("--health-host: '\(host)': \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { throw ValidationError("--health-port \(port): socket(): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) != 0 {
            let reason = String(cString: strerror(errno))
            throw ValidationError("--health-port \(port): cannot listen on \(host):\(port): \(reason)")
        }
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
