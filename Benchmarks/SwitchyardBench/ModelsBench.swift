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
        abstract: "Cold start vs warm request latency on a real llama.cpp server, and the manager's overhead over a direct call."
    )

    @Option(help: "Warm requests per side.")
    var requests = 200

    @Option(help: "Cold starts to time.")
    var loads = 3

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
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
        _ = try await manager.withServer("tiny") { $0.pid }  // warm "tiny" again for the next part
        let coldStarts = (await manager.statistics.coldStarts).map(milliseconds).sorted()

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
        func p(_ xs: [Double], _ q: Int) -> Double { xs[min(xs.count - 1, xs.count * q / 100)] }
        let overhead = p(viaManager, 50) - p(straight, 50)
        print("Local model servers: the tiny llama.cpp model on llama-cpp-python's server")
        print(pad("measurement", 44) + pad("p50 ms", 10) + "p99 ms")
        print(
            pad("cold start (\(coldStarts.count) loads)", 44) + pad(String(format: "%.1f", p(coldStarts, 50)), 10)
                + String(format: "%.1f", coldStarts.last ?? 0)
        )
        print(pad("warm chat request, direct", 44) + pad(String(format: "%.3f", p(straight, 50)), 10) + String(format: "%.3f", p(straight, 99)))
        print(
            pad("warm chat request, through the manager", 44) + pad(String(format: "%.3f", p(viaManager, 50)), 10)
                + String(format: "%.3f", p(viaManager, 99))
        )
        print(
            String(
                format: "manager overhead at p50: %.3f ms (target <= 1 ms); cold start is %.0fx a warm request",
                overhead,
                p(coldStarts, 50) / p(straight, 50)
            )
        )
        let report: [String: Any] = [
            "benchmark": "models",
            "cold_start_ms": coldStarts,
            "direct_p50_ms": p(straight, 50), "direct_p99_ms": p(straight, 99),
            "manager_p50_ms": p(viaManager, 50), "manager_p99_ms": p(viaManager, 99),
            "manager_overhead_p50_ms": overhead,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }
}
