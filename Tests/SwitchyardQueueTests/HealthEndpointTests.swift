import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The worker's health endpoint and `switchyard health`, as probes and health checks use them.
@Suite("Worker health endpoint", .serialized)
struct HealthEndpointTests {
    /// Runs `switchyard health <url>`; its exit code and what it printed.
    static func health(_ url: String) throws -> (code: Int32, output: String) {
        let (code, output) = try runSwitchyard(["health", url, "--timeout", "2s"])
        return (code ?? -1, output)
    }

    @Test func readinessFollowsRegistrationRedisAndTheDrain() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let port = try LoopbackPort.free()
        let ready = "http://127.0.0.1:\(port)/readyz"
        let live = "http://127.0.0.1:\(port)/livez"
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "healthy",
            arguments: ["--queue", "test", "--executor", "echo", "--health-port", "\(port)", "--shutdown-grace", "20s"]
        )
        defer { worker.kill() }

        // Registered and heartbeating: ready, and `switchyard health` says so with exit 0.
        #expect(try await eventually(timeout: .seconds(20)) { try Self.health(ready).code == 0 }, "\(worker.log)")
        let good = try Self.health(ready)
        #expect(good.output.contains("200") && good.output.contains("\"ready\":true") && good.output.contains("\"worker\":\"healthy\""))

        // Redis gone for longer than the heartbeat TTL (10 s): not ready, still live (a restart would not help).
        f.server.stop()
        #expect(
            try await eventually(timeout: .seconds(25)) { try Self.health(ready).code == 1 },
            "readiness should fail without Redis"
        )
        let down = try Self.health(ready)
        #expect(down.output.contains("503") && down.output.contains("Redis not reached"), "\(down.output)")
        #expect(try Self.health(live).code == 0)

        // Redis back: ready again without a restart.
        try f.server.restart()
        #expect(try await eventually(timeout: .seconds(30)) { try Self.health(ready).code == 0 }, "\(worker.log)")

        // Draining with a job in flight: not ready (503 naming the drain) but live, until it exits.
        let job = chatJob("slow", metadata: ["echo.sleep_ms": "3000"])
        _ = try await f.queue.push(job)
        #expect(try await eventually { try await f.queue.status().lanes.map(\.pending).reduce(0, +) == 1 })
        worker.process.send(SIGTERM)
        #expect(try await eventually(timeout: .seconds(5)) { try Self.health(ready).output.contains("draining") })
        #expect(try Self.health(live).code == 0)
        #expect(worker.process.waitForExit(timeout: .seconds(30)))
        #expect(try await f.queue.result(of: job.id)?.status == .succeeded)
        // Gone: no answer is a failure too.
        let gone = try Self.health(ready)
        #expect(gone.code == 1 && gone.output.contains("no answer"), "\(gone.output)")
    }

    /// With `--executor local`, a worker is not ready until its pinned models are loaded, so a
    /// rolling update waits for warm servers; it is live meanwhile.
    @Test func aWorkerIsNotReadyWhileItsPinnedModelsLoad() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("pinned-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        // A model server that never answers: its load lasts until the worker stops.
        let catalog = folder.appendingPathComponent("models.json")
        try #"""
        {"models": {"slow": {"file": "/nowhere/slow.gguf", "framework": "openai-compatible", "memory_mb": 100,
          "command": ["python3", "-c", "import time; time.sleep(120)", "{model}", "{port}"]}},
         "pinned": ["slow"]}
        """#.write(to: catalog, atomically: true, encoding: .utf8)
        let port = try LoopbackPort.free()
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "warming",
            arguments: ["--queue", "test", "--executor", "local", "--models", catalog.path, "--profile", "cpu", "--health-port", "\(port)"]
        )
        defer { worker.kill() }
        var last = (code: Int32(-1), output: "")
        let warming = try await eventually(timeout: .seconds(20)) {
            last = try Self.health("http://127.0.0.1:\(port)/readyz")
            return last.output.contains("warming: loading pinned models (slow)")
        }
        #expect(warming && last.code == 1 && last.output.contains("503"), "\(last.output)\n\(worker.log)")
        #expect(try Self.health("http://127.0.0.1:\(port)/livez").code == 0)
        #expect(worker.terminate(timeout: .seconds(60)) == 0, "\(worker.log)")
    }

    @Test func badHealthOptionsAreRefusedWithTheirName() throws {
        let port = try Self.runCLI(["worker", "--executor", "echo", "--health-port", "70000"])
        #expect(port.code == 64 && port.output.contains("--health-port: must be 0 to 65535, got 70000"), "\(port.output)")
        // A port another process holds (a Redis server's): refused before the worker starts, naming the option.
        let other = try RedisServer()
        let holder = other.port
        let taken = try Self.runCLI(["worker", "--executor", "echo", "--health-port", "\(holder)", "--redis-url", "redis://127.0.0.1:1"])
        #expect(taken.code == 64 && taken.output.contains("--health-port \(holder): cannot listen on 127.0.0.1:\(holder)"), "\(taken.output)")
        let url = try Self.runCLI(["health", "ftp://example.com/"])
        #expect(url.code == 64 && url.output.contains("is not an http:// or https:// URL"), "\(url.output)")
    }

    static func runCLI(_ arguments: [String]) throws -> (code: Int32, output: String) {
        let (code, output) = try runSwitchyard(arguments)
        return (code ?? -1, output)
    }
}
