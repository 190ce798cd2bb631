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

/// The manager running llama.cpp's own llama-server (built by scripts/setup.sh) with the
/// `rtx3090-wsl` profile's argv, `gpu_layers=0`: what a GPU host runs, on this CPU.
@Suite("Model-server manager with llama-server", .serialized)
struct LlamaServerManagerTests {
    /// The GPU profile on the CPU; only argv[0] becomes the built binary's path (the worker-level
    /// test finds `llama-server` in PATH instead).
    static func profile(cache: Int = 2) throws -> HardwareProfile {
        var profile = try LlamaServer.gpuProfileOnCPU()
        profile.modelCacheSize = cache
        profile.serverCommand[0] = try LlamaServer.llamaServerBinary()
        return profile
    }

    static func manager(cache: Int = 2) throws -> ModelServerManager {
        let file = try LlamaServer.tinyModel()
        var models: [String: ModelCatalog.Entry] = [:]
        for name in ["a", "b", "c"] { models[name] = ModelCatalog.Entry(file: file, framework: .llamaCpp, memoryMB: 64, contextSize: 256) }
        return ModelServerManager(
            catalog: ModelCatalog(models: models),
            profile: try profile(cache: cache),
            configuration: ModelServerManager.Configuration(readinessTimeout: .seconds(60), idleTTL: nil, stopGrace: .seconds(3)),
            logger: Logger(label: "test")
        )
    }

    static func chat(_ client: HTTPClient, _ lease: ModelServerLease, tokens: Int = 8) async throws -> HTTPResponse {
        let body = #"{"model":"x","messages":[{"role":"user","content":"hello"}],"max_tokens":\#(tokens),"temperature":0}"#
        return try await client.execute(
            HTTPRequest(
                method: "POST",
                url: lease.baseURL + "/chat/completions",
                headers: [("Content-Type", "application/json")],
                body: Array(body.utf8),
                timeout: .seconds(60)
            )
        )
    }

    @Test func theGPUProfilesArgvStartsLlamaServerWithTheProfilesSlots() async throws {
        let profile = try Self.profile()
        let argv = profile.command(model: "m.gguf", port: 9, contextSize: 256)
        #expect(argv.contains("--parallel") && argv[argv.firstIndex(of: "--parallel")! + 1] == "4")
        // Each of the 4 slots gets the catalog's context: llama-server splits --ctx-size among them.
        #expect(argv[argv.firstIndex(of: "--ctx-size")! + 1] == "1024")
        #expect(argv[argv.firstIndex(of: "--n-gpu-layers")! + 1] == "0")

        let manager = try Self.manager()
        let client = HTTPClient()
        defer { client.shutdown() }
        let gauge = Gauge()
        // Eight callers at once for one model: one server, four at a time inside it.
        let pids = try await withThrowingTaskGroup(of: Int32.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try await manager.withServer("a") { lease in
                        gauge.enter()
                        defer { gauge.leave() }
                        // Lent out only once /health is 200 (not 503 while loading): it answers at once.
                        let response = try await Self.chat(client, lease)
                        #expect(response.status == 200, "\(String(decoding: response.body, as: UTF8.self))")
                        try await Task.sleep(for: .milliseconds(200))
                        return lease.pid
                    }
                }
            }
            return try await group.reduce(into: Set<Int32>()) { $0.insert($1) }
        }
        #expect(pids.count == 1)
        #expect(gauge.highest == 4, "requests in flight at once: \(gauge.highest)")
        #expect(await manager.statistics.loads == 1)
        // The server itself says it has the profile's four slots.
        let lease = try await manager.acquire("a")
        let props = try await client.execute(HTTPRequest(url: lease.baseURL.replacingOccurrences(of: "/v1", with: "") + "/props"))
        await manager.release(lease)
        let object = try JSONSerialization.jsonObject(with: Data(props.body)) as? [String: Any]
        #expect(object?["total_slots"] as? Int == 4)
        await manager.shutdown()
    }

    /// llama-server listens before its model is loaded and answers /health with 503 until then.
    /// The tiny model loads in tens of milliseconds, so a busy machine can miss the window: a large
    /// context (a KV cache of about 130 MB to allocate) widens it, and up to five starts are tried.
    @Test func llamaServerAnswers503WhileLoadingThen200() async throws {
        let profile = try Self.profile()
        let client = HTTPClient()
        defer { client.shutdown() }
        var runs: [[Int]] = []
        for _ in 0..<5 {
            let port = try LoopbackPort.free()
            let argv = profile.command(model: try LlamaServer.tinyModel(), port: port, contextSize: 65_536)
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("llama-server-\(port).log").path
            let process = try ChildProcess(executable: argv[0], arguments: Array(argv.dropFirst()), outputPath: log)
            defer { process.terminate(grace: .seconds(3)) }
            var seen: [Int] = []
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline, process.isRunning, seen.last != 200 {
                if let response = try? await client.execute(
                    HTTPRequest(url: "http://127.0.0.1:\(port)/health", connectTimeout: .seconds(1), timeout: .seconds(2))
                ) {
                    if seen.last != response.status { seen.append(response.status) }
                }
                try await Task.sleep(for: .milliseconds(1))
            }
            runs.append(seen)
            // Never anything but 503 then 200; once 503 was seen, that is the behaviour shown.
            #expect(
                seen == [503, 200] || seen == [200],
                "statuses seen: \(seen); \(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(600))"
            )
            if seen == [503, 200] { break }
        }
        #expect(runs.contains([503, 200]), "no start was seen loading: \(runs)")
    }

    @Test func leastRecentlyUsedIsEvictedAndItsProcessStops() async throws {
        let manager = try Self.manager(cache: 2)
        var pids: [String: Int32] = [:]
        for model in ["a", "b", "a", "c"] { pids[model] = try await manager.withServer(model) { $0.pid } }
        let stats = await manager.statistics
        #expect(stats.warm == ["a", "c"])
        #expect(stats.evictions == 1 && stats.loads == 3)
        let bGone = try await eventually(timeout: .seconds(10)) { kill(pids["b"]!, 0) != 0 }
        #expect(bGone, "the evicted server still runs")
        await manager.shutdown()
    }

    @Test func aCrashedLlamaServerIsStartedAgainAndServes() async throws {
        let manager = try Self.manager(cache: 2)
        let client = HTTPClient()
        defer { client.shutdown() }
        let first = try await manager.withServer("a") { $0.pid }
        kill(first, SIGKILL)
        try await Task.sleep(for: .milliseconds(200))
        let (second, status) = try await manager.withServer("a") { lease in (lease.pid, try await Self.chat(client, lease).status) }
        #expect(second != first && status == 200)
        #expect(await manager.statistics.restarts == 1)
        await manager.shutdown()
    }
}

/// How many callers are inside at once, and the most there ever were.
final class Gauge: @unchecked Sendable {
    private let lock = NSLock()
    private var now = 0
    private var most = 0
    func enter() {
        lock.withLock {
            now += 1
            most = max(most, now)
        }
    }
    func leave() { lock.withLock { now -= 1 } }
    var highest: Int { lock.withLock { most } }
}
