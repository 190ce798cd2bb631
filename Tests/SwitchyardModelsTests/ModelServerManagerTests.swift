import CProcessShim
import Foundation
import Logging
import ServiceLifecycle
import ServiceLifecycleTestKit
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardMetrics
import SwitchyardModels
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The manager with real llama.cpp servers (llama-cpp-python's, the project's tiny model).
@Suite("Model-server manager with real processes", .serialized)
struct ModelServerManagerTests {
    static func catalog(memoryMB: Int = 100, names: [String] = ["a", "b", "c"], pinned: [String] = []) throws -> ModelCatalog {
        let file = try LlamaServer.tinyModel()
        let command = HardwareProfile.llamaCppPythonServer(python: LlamaServer.python)
        var models: [String: ModelCatalog.Entry] = [:]
        for name in names {
            models[name] = ModelCatalog.Entry(file: file, framework: .llamaCppPython, memoryMB: memoryMB, contextSize: 256, command: command)
        }
        return ModelCatalog(models: models, pinned: pinned)
    }

    static func manager(
        cache: Int,
        budgetMB: Int = 10_000,
        memoryMB: Int = 100,
        idleTTL: Duration? = nil,
        pinned: [String] = [],
        metrics: MetricsRegistry? = nil
    ) throws
        -> ModelServerManager
    {
        var profile = HardwareProfile.cpu
        profile.modelCacheSize = cache
        profile.memoryBudgetMB = budgetMB
        var configuration = ModelServerManager.Configuration(readinessTimeout: .seconds(60), idleTTL: idleTTL, stopGrace: .seconds(3))
        configuration.metrics = metrics
        return ModelServerManager(
            catalog: try catalog(memoryMB: memoryMB, pinned: pinned),
            profile: profile,
            configuration: configuration,
            logger: Logger(label: "test")
        )
    }

    @Test func readyMeansAnsweringAndConcurrentRequestsStartItOnce() async throws {
        let manager = try Self.manager(cache: 2)
        let client = HTTPClient()
        defer { client.shutdown() }
        let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    try await manager.withServer("a") { lease in
                        // Lent out only once healthy: it answers at once.
                        let response = try await client.execute(HTTPRequest(url: lease.baseURL + "/models"))
                        #expect(response.status == 200)
                        return lease.pid
                    }
                }
            }
            return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
        }
        #expect(pids.count == 1)
        let stats = await manager.statistics
        #expect(stats.loads == 1 && stats.coldStarts.count == 1)
        await manager.shutdown()
    }

    @Test func leastRecentlyUsedIsEvictedFirst() async throws {
        let registry = MetricsRegistry()
        let manager = try Self.manager(cache: 2, metrics: registry)
        for model in ["a", "b", "a", "c"] { _ = try await manager.withServer(model) { $0.pid } }
        let stats = await manager.statistics
        #expect(stats.warm == ["a", "c"])
        #expect(stats.evictions == 1 && stats.loads == 3)
        // The same, as the worker publishes it.
        let snapshot = registry.snapshot(worker: "w")
        let loads = snapshot.counters.filter { $0.key.label == "switchyard_model_loads_total" && $0.key.dimensions["outcome"] == "ready" }
        #expect(loads.values.reduce(0, +) == 3)
        #expect(snapshot.counters[MetricsRegistry.Key("switchyard_model_evictions_total", [("model", "b")])] == 1)
        #expect(snapshot.histograms.filter { $0.key.label == "switchyard_model_load_seconds" }.values.map(\.count).reduce(0, +) == 3)
        await manager.shutdown()
    }

    @Test func memoryBudgetEvicts() async throws {
        let manager = try Self.manager(cache: 3, budgetMB: 300, memoryMB: 200)
        _ = try await manager.withServer("a") { $0.pid }
        _ = try await manager.withServer("b") { $0.pid }
        #expect(await manager.statistics.warm == ["b"])
        await manager.shutdown()
    }

    @Test func aBusyServerIsNotEvictedTheNewRequestWaits() async throws {
        let manager = try Self.manager(cache: 1)
        let leaseA = try await manager.acquire("a")
        let events = EventLog()
        let b = Task {
            let lease = try await manager.acquire("b")
            events.add("b ready")
            await manager.release("b")
            return lease.pid
        }
        try await Task.sleep(for: .milliseconds(800))
        #expect(await manager.statistics.warm == ["a"])  // a is serving: not evicted
        events.add("a released")
        await manager.release(leaseA.model)
        _ = try await b.value
        #expect(events.all == ["a released", "b ready"])
        let warm = await manager.statistics.warm
        #expect(warm == ["b"])
        await manager.shutdown()
    }

    @Test func aCrashedServerIsStartedAgain() async throws {
        let manager = try Self.manager(cache: 2)
        let first = try await manager.withServer("a") { $0.pid }
        kill(first, SIGKILL)
        try await Task.sleep(for: .milliseconds(200))
        let second = try await manager.withServer("a") { $0.pid }
        #expect(second != first)
        #expect(await manager.statistics.restarts == 1)
        await manager.shutdown()
    }

    @Test func idleServersStopButPinnedOnesStay() async throws {
        let manager = try Self.manager(cache: 3, idleTTL: .milliseconds(300), pinned: ["b"])
        _ = try await manager.withServer("a") { $0.pid }
        _ = try await manager.withServer("b") { $0.pid }
        try await Task.sleep(for: .milliseconds(400))
        await manager.evictIdle()
        #expect(await manager.statistics.warm == ["b"])
        await manager.shutdown()
    }

    @Test func shutdownLeavesNoChildBehind() async throws {
        let manager = try Self.manager(cache: 2)
        _ = try await manager.withServer("a") { $0.pid }
        _ = try await manager.withServer("b") { $0.pid }
        let pids = Array(await manager.pids.values)
        #expect(pids.count == 2)
        await manager.shutdown()
        for pid in pids { #expect(kill(pid, 0) != 0, "pid \(pid) still exists") }
    }

    @Test func aModelThatCanNeverFitBesidePinnedOnesFailsAtOnce() async throws {
        let manager = try Self.manager(cache: 1, pinned: ["a"])
        _ = try await manager.withServer("a") { $0.pid }
        await #expect {
            try await manager.acquire("b")
        } throws: { error in
            (error as? ModelServerError)?.cannotFit == true && "\(error)".contains("pinned models (a) fill the model cache")
        }
        #expect(await manager.statistics.warm == ["a"])
        await manager.shutdown()
        // The memory budget: 100 MB pinned of 150, and the other model needs 100.
        let tight = try Self.manager(cache: 3, budgetMB: 150, memoryMB: 100, pinned: ["a"])
        _ = try await tight.withServer("a") { $0.pid }
        await #expect {
            try await tight.acquire("b")
        } throws: { error in
            (error as? ModelServerError)?.cannotFit == true && "\(error)".contains("MB budget")
        }
        await tight.shutdown()
    }

    @Test func aWaitForRoomEndsWhenTheCallerIsCancelledAndLoadsNothing() async throws {
        let manager = try Self.manager(cache: 1)
        let busy = try await manager.acquire("a")
        let waiting = Task { try await manager.acquire("b") }
        try await Task.sleep(for: .milliseconds(300))
        waiting.cancel()
        await #expect(throws: CancellationError.self) { try await waiting.value }
        // Released after the cancelled caller left: nothing evicts a or loads b for it.
        await manager.release(busy.model)
        try await Task.sleep(for: .milliseconds(300))
        let stats = await manager.statistics
        #expect(stats.loads == 1 && stats.evictions == 0 && stats.warm == ["a"])
        await manager.shutdown()
    }

    @Test func asAServiceItLoadsPinnedModelsAndStopsEverythingOnShutdown() async throws {
        let manager = try Self.manager(cache: 2, pinned: ["b"])
        let pids = try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                try await Task.sleep(for: .milliseconds(300))
                #expect(await manager.statistics.warm.isEmpty, "nothing starts before begin()")
                await manager.begin()
                let loaded = try await eventually(timeout: .seconds(60)) { await manager.statistics.warm == ["b"] }
                #expect(loaded)
                let pids = Array(await manager.pids.values)
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
                return pids
            }
        }
        #expect(pids.count == 1)
        for pid in pids { #expect(kill(pid, 0) != 0, "pid \(pid) still exists") }
    }

    @Test func thePIDFileLetsTheNextManagerStopWhatAnEarlierOneLeft() async throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("pids-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        // Two processes outliving a "crashed" worker; the second's recorded start time is wrong,
        // as for a pid the system has since given to another program: it must be left alone.
        let leftover = try ChildProcess(executable: "sleep", arguments: ["300"], parentDeathSignal: nil)
        let stranger = try ChildProcess(executable: "sleep", arguments: ["300"], parentDeathSignal: nil)
        defer { stranger.terminate(grace: .milliseconds(100)) }
        let lines = "\(leftover.pid) \(syp_process_start_time(leftover.pid))\n\(stranger.pid) \(syp_process_start_time(stranger.pid) + 1)\n"
        try lines.write(toFile: pidFile, atomically: true, encoding: .utf8)
        var profile = HardwareProfile.cpu
        profile.modelCacheSize = 1
        let manager = ModelServerManager(
            catalog: try Self.catalog(),
            profile: profile,
            configuration: .init(pidFile: pidFile),
            logger: Logger(label: "test")
        )
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                try await Task.sleep(for: .milliseconds(300))
                #expect(leftover.isRunning, "nothing is stopped before begin()")
                await manager.begin()
                // begin() returns once the leftovers are stopped: a server started next is safe.
                #expect(leftover.waitForExit(timeout: .seconds(5)))
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(stranger.isRunning)
    }

    @Test func aManagerStoppedBeforeBeginStopsNothingItDidNotStart() async throws {
        let pidFile = FileManager.default.temporaryDirectory.appendingPathComponent("pids-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: pidFile) }
        // A live worker's server, in the PID file a refused worker with the same id would share.
        let live = try ChildProcess(executable: "sleep", arguments: ["300"], parentDeathSignal: nil)
        defer { live.terminate(grace: .milliseconds(100)) }
        try "\(live.pid) \(syp_process_start_time(live.pid))\n".write(toFile: pidFile, atomically: true, encoding: .utf8)
        let manager = ModelServerManager(
            catalog: try Self.catalog(pinned: ["a"]),
            profile: .cpu,
            configuration: .init(pidFile: pidFile),
            logger: Logger(label: "test")
        )
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await manager.run() }
                try await Task.sleep(for: .milliseconds(200))
                trigger.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
        #expect(live.isRunning)
        #expect(await manager.statistics.loads == 0)
    }

    @Test func onlyTheServerItStartedCountsAsReady() async throws {
        // Another process already answers on the port, exactly like a ready llama.cpp server
        // serving our model file would; the server we start (here one that never listens) is not ready.
        let file = try LlamaServer.tinyModel()
        let port = try LoopbackPort.free()
        let script = """
            import http.server, sys
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = b'{"data": [{"id": "%s"}]}' % sys.argv[2].encode()
                    self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
                def log_message(self, *a): pass
            http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
            """
        let impostor = try ChildProcess(executable: "python3", arguments: ["-c", script, String(port), file])
        defer { impostor.terminate(grace: .milliseconds(200)) }
        #expect(try await eventually(timeout: .seconds(60)) { RedisServer.isListening(port: port) })
        let entry = ModelCatalog.Entry(file: file, framework: .llamaCppPython, memoryMB: 10, command: ["sh", "-c", "sleep 30", "{model}", "{port}"])
        var configuration = ModelServerManager.Configuration(readinessTimeout: .seconds(2), stopGrace: .milliseconds(200))
        configuration.portPicker = { port }
        let manager = ModelServerManager(
            catalog: ModelCatalog(models: ["m": entry]),
            profile: .cpu,
            configuration: configuration,
            logger: Logger(label: "test")
        )
        await #expect {
            try await manager.acquire("m")
        } throws: { error in
            "\(error)".contains("not ready within")
        }
        await manager.shutdown()
    }

    @Test func aServerThatExitsWhileLoadingGivesTheJobAShortReasonNotItsLog() async throws {
        let entry = ModelCatalog.Entry(
            file: "/nonexistent.gguf",
            framework: .llamaCppPython,
            memoryMB: 10,
            command: ["sh", "-c", "echo 'token=do-not-leak-this {model}'; exit 3", "{port}"]
        )
        let manager = ModelServerManager(
            catalog: ModelCatalog(models: ["m": entry]),
            profile: .cpu,
            configuration: .init(readinessTimeout: .seconds(10)),
            logger: Logger(label: "test")
        )
        await #expect {
            try await manager.acquire("m")
        } throws: { error in
            let text = "\(error)"
            return text.contains("exited while loading (exit code 3)") && !text.contains("do-not-leak-this")
        }
        await manager.shutdown()
    }

    @Test func unknownModelsAreRefused() async throws {
        let manager = try Self.manager(cache: 1)
        await #expect {
            try await manager.acquire("../../etc/passwd")
        } throws: { error in
            (error as? ModelServerError)?.retryable == false && "\(error)".contains("not in the model catalog")
        }
        await manager.shutdown()
    }
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var events: [String] = []
    func add(_ event: String) { lock.withLock { events.append(event) } }
    var all: [String] { lock.withLock { events } }
}
