import ArgumentParser
import Foundation
import SwitchyardCore

struct ProfileCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "profile",
        abstract: "Show the hardware profile this host gets (detected or chosen) and what a worker would run with it."
    )

    @Option(help: "Use this profile instead of detecting one: rtx3090-wsl, apple-m or cpu.")
    var profile: String?

    @Option(
        name: .customLong("set"),
        help:
            "Override a setting, key=value (concurrency, model_cache_size, memory_budget_mb, gpu_layers, batch_size, parallel, server_command). Repeatable."
    )
    var overrides: [String] = []

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        let (chosen, reason) = try resolveProfile(name: profile, overrides: overrides)
        if json {
            print(jsonLine(chosen))
            return
        }
        print("profile:           \(chosen.name)  (\(reason))")
        print("concurrency:       \(chosen.concurrency) jobs at once")
        print("model cache:       \(chosen.modelCacheSize) warm model servers, within \(chosen.memoryBudgetMB) MiB")
        print("gpu layers:        \(chosen.gpuLayers == -1 ? "all" : String(chosen.gpuLayers))")
        print("batch size:        \(chosen.batchSize)")
        print("slots per server:  \(chosen.parallel) requests at once per model server")
        print(
            "model server:      "
                + chosen.command(model: "<model file>", port: 0, contextSize: 4096).joined(separator: " ").replacingOccurrences(
                    of: "--port 0",
                    with: "--port <free port>"
                )
        )
    }
}

/// The profile a command should use: the named one or the detected one, with overrides.
func resolveProfile(name: String?, overrides: [String]) throws -> (HardwareProfile, String) {
    var chosen: HardwareProfile
    var reason: String
    if let name = name ?? ProcessInfo.processInfo.environment["SWITCHYARD_PROFILE"] {
        guard let named = HardwareProfile.named(name) else {
            throw ValidationError("--profile: '\(name)' is not one of \(HardwareProfile.builtIn.map(\.name).joined(separator: ", "))")
        }
        chosen = named
        reason = "chosen"
    } else {
        (chosen, reason) = HardwareProfile.detect(.current())
        reason = "detected: " + reason
    }
    var pairs: [String: String] = [:]
    for item in overrides {
        guard let eq = item.firstIndex(of: "=") else { throw ValidationError("--set: '\(item)' is not key=value") }
        pairs[String(item[..<eq])] = String(item[item.index(after: eq)...])
    }
    do {
        try chosen.apply(overrides: pairs)
    } catch let error as ConfigurationError {
        throw ValidationError(error.description)
    }
    if !pairs.isEmpty { reason += ", with overrides" }
    return (chosen, reason)
}
