import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardModels
import SwitchyardProviders
import SwitchyardTestSupport

/// Cold start against warm requests on a real llama.cpp server, and what going through the
/// model-server manager costs over calling the server directly.
struct ModelsBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "models",
        abstract:
            "Cold start vs warm request latency on a real llama.cpp server, the manager's overhead over a direct call, warm-model routing, and tokens/s with llama-server's slots."
    )

    @Option(help: "Warm requests per side.")
    var requests = 200

    @Option(help: "Cold starts to time.")
    var loads = 3

    @Option(help: "Jobs in the mixed workload (three models, interleaved, on two one-model workers).")
    var mixedJobs = 60

    @Option(help: "The workers' --warm-wait in the mixed workload.")
    var warmWait = "2s"

    @Option(help: "Which parts to run: all, single (cold start, warm, overhead), mixed or slots (llama-server's parallel slots).")
    var part = "all"

    @Option(help: "Slots per llama-server in the slots part (default: the rtx3090-wsl profile's parallel).")
    var slots: Int?

    @Option(help: "Chat requests per measurement in the slots part.")
    var slotRequests = 32

    @Option(help: "max_tokens of each request in the slots part.")
    var slotTokens = 64

    @Option(
        help:
            "llama-server's --threads in the slots part (0: its default, every core). One leaves a core to the worker, Redis and the bench, as a GPU host's idle CPU does."
    )
    var slotThreads = 1

    @Option(
        help:
            "How the slots part learns that the worker's jobs are done: notify (the jobs ask to be announced and the bench waits on the queue's done channel, as the coordinator does) or poll (the finished counter, read every 5 ms)."
    )
    var slotWait = "notify"

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        guard ["all", "single", "mixed", "slots"].contains(part) else {
            throw ValidationError("--part: '\(part)' is not all, single, mixed or slots")
        }
        guard requests >= 1, loads >= 1, mixedJobs >= 3, slotRequests >= 1, slotTokens >= 1, (slots ?? 1) >= 1 else {
            throw ValidationError("--requests, --loads, --slots, --slot-requests and --slot-tokens must be at least 1, --mixed-jobs at least 3")
        }
        var report: [String: Any] = ["benchmark": "models"]
        if part == "all" || part == "single" { report.merge(try await single(), uniquingKeysWith: { $1 }) }
        if part == "all" || part == "mixed" { report.merge(try await mixed(), uniquingKeysWith: { $1 }) }
        if part == "all" || part == "slots" { report.merge(try await slots(), uniquingKeysWith: { $1 }) }
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// Three models, interleaved, on two workers that fit one model each: without warm-model
    /// routing, then with it, in the same run.
    func mixed() async throws -> [String: Any] {
        let server = try RedisServer()
        defer { server.stop() }
        let catalog = try LlamaServer.catalogFile(models: ["m1", "m2", "m3"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        var runs: [MixedRun] = []
        for routing in [false, true] { runs.append(try await mixedWorkload(redisURL: server.url, catalog: catalog, warmRouting: routing)) }
        print("")
        print("Mixed workload: \(mixedJobs) chat jobs for m1 m2 m3 interleaved, 2 workers, 1 model each, concurrency 1")
        print(pad("warm-model routing", 22) + pad("loads", 14) + pad("seconds", 10) + pad("jobs/s", 9) + pad("p50 ms", 10) + "p99 ms")
        for run in runs {
            print(
                pad(run.warmRouting ? "on (wait \(warmWait))" : "off", 22)
                    + pad("\(run.totalLoads) (\(run.loads.map(String.init).joined(separator: "+")))", 14)
                    + pad(String(format: "%.2f", run.seconds), 10) + pad(String(format: "%.1f", Double(run.succeeded) / run.seconds), 9)
                    + pad(String(format: "%.0f", percentile(run.latencies, 50)), 10) + String(format: "%.0f", percentile(run.latencies, 99))
            )
        }
        let off = runs[0]
        let on = runs[1]
        print(
            String(
                format: "routing cuts model loads %.1fx (%d -> %d) and wall time %.2fx; %d and %d of %d jobs succeeded",
                Double(off.totalLoads) / Double(max(on.totalLoads, 1)),
                off.totalLoads,
                on.totalLoads,
                off.seconds / on.seconds,
                off.succeeded,
                on.succeeded,
                mixedJobs
            )
        )
        var out: [String: Any] = [:]
        for run in runs {
            let key = run.warmRouting ? "mixed_routing_on" : "mixed_routing_off"
            out[key] = [
                "loads": run.totalLoads, "loads_per_worker": run.loads, "seconds": run.seconds, "succeeded": run.succeeded,
                "latency_p50_ms": percentile(run.latencies, 50), "latency_p99_ms": percentile(run.latencies, 99),
            ]
        }
        out["mixed_jobs"] = mixedJobs
        out["mixed_warm_wait"] = warmWait
        out["mixed_loads_ratio_off_vs_on"] = Double(off.totalLoads) / Double(max(on.totalLoads, 1))
        out["mixed_seconds_ratio_off_vs_on"] = off.seconds / on.seconds
        return out
    }

    /// Cold start against warm requests, and the manager's overhead.
    func single() async throws -> [String: Any] {
        let model = try LlamaServer.tinyModel()
        let command = HardwareProfile.llamaCppPythonServer(python: LlamaServer.python)
        var models: [String: ModelCatalog.Entry] = [:]
        for name in ["tiny", "other"] {
            models[name] = ModelCatalog.Entry(file: model, framework: .llamaCppPython, memoryMB: 64, contextSize: 256, command: command)
        }
        var profile = HardwareProfile.cpu
        profile.modelCacheSize = 1
        var logger = Logger(label: "bench")
        logger.logLevel = .warning
        let manager = ModelServerManager(catalog: ModelCatalog(models: models), profile: profile, logger: logger)
        let client = HTTPClient()
        defer { client.shutdown() }
        let job = Job(
            kind: .chat,
            model: "tiny",
            input: JobInput(
                messages: [ChatMessage(role: "user", content: "Hello")],
                parameters: ["max_tokens": .number(4), "temperature": .number(0)]
            )
        )

        // Cold starts: alternate two catalog names over one cache slot, so each use loads.
        for i in 0..<loads { _ = try await manager.withServer(i % 2 == 0 ? "tiny" : "other") { $0.pid } }
        let coldStarts = (await manager.statistics.coldStarts).map(milliseconds).sorted()
        _ = try await manager.withServer("tiny") { $0.pid }  // warm "tiny" again for the next part (not counted)

        // Warm: the same request through the manager and straight to the server, interleaved.
        let direct = try await manager.withServer("tiny") { $0.baseURL }
        let provider = OpenAICompatibleProvider(
            configuration: ProviderConfiguration(name: "direct", kind: .openai, baseURL: direct),
            client: client,
            apiKey: nil
        )
        let executor = LocalModelExecutor(manager: manager, client: client)
        let context = JobContext(attempt: 1, workerID: "bench")
        var viaManager: [Double] = []
        var straight: [Double] = []
        let clock = ContinuousClock()
        for _ in 0..<10 { _ = try await provider.run(job, model: "tiny") }
        for _ in 0..<requests {
            var t0 = clock.now
            _ = try await executor.execute(job, context: context)
            viaManager.append(milliseconds(clock.now - t0))
            t0 = clock.now
            _ = try await provider.run(job, model: "tiny")
            straight.append(milliseconds(clock.now - t0))
        }
        await manager.shutdown()
        viaManager.sort()
        straight.sort()
        let overhead = percentile(viaManager, 50) - percentile(straight, 50)
        print("Local model servers: the tiny llama.cpp model on llama-cpp-python's server")
        print(pad("measurement", 44) + pad("p50 ms", 10) + "p99 ms")
        print(
            pad("cold start (\(coldStarts.count) loads)", 44) + pad(String(format: "%.1f", percentile(coldStarts, 50)), 10)
                + String(format: "%.1f", coldStarts.last ?? 0)
        )
        print(
            pad("warm chat request, direct", 44) + pad(String(format: "%.3f", percentile(straight, 50)), 10)
                + String(format: "%.3f", percentile(straight, 99))
        )
        print(
            pad("warm chat request, through the manager", 44) + pad(String(format: "%.3f", percentile(viaManager, 50)), 10)
                + String(format: "%.3f", percentile(viaManager, 99))
        )
        print(
            String(
                format: "manager overhead at p50: %.3f ms (target <= 1 ms); cold start is %.0fx a warm request",
                overhead,
                percentile(coldStarts, 50) / percentile(straight, 50)
            )
        )
        return [
            "cold_start_ms": coldStarts,
            "direct_p50_ms": percentile(straight, 50), "direct_p99_ms": percentile(straight, 99),
            "manager_p50_ms": percentile(viaManager, 50), "manager_p99_ms": percentile(viaManager, 99),
            "manager_overhead_p50_ms": overhead,
        ]
    }
}
