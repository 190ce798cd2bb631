import Foundation
import Logging
import SwitchyardCore
import SwitchyardHTTP
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
        pinned: [String] = []
    ) throws
        -> ModelServerManager
    {
        var profile = HardwareProfile.cpu
        profile.modelCacheSize = cache
        profile.memoryBudgetMB = budgetMB
        return ModelServerManager(
            catalog: try catalog(memoryMB: memoryMB, pinned: pinned),
            profile: profile,
            configuration: .init(readinessTimeout: .seconds(60), idleTTL: idleTTL, stopGrace: .seconds(3)),
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
        let manager = try Self.manager(cache: 2)
        for model in ["a", "b", "a", "c"] { _ = try await manager.withServer(model) { $0.pid } }
        let stats = await manager.statistics
        #expect(stats.warm == ["a", "c"])
        #expect(stats.evictions == 1 && stats.loads == 3)
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
