import Foundation
import SwitchyardCore
import Testing

@Suite("Hardware profiles")
struct HardwareProfileTests {
    @Test func detectionFollowsTheHost() {
        let linux = HardwareProfile.Host(operatingSystem: "Linux", architecture: "x86_64", hasNvidiaGPU: false, isWSL: false)
        #expect(HardwareProfile.detect(linux).profile == .cpu)
        let wsl = HardwareProfile.Host(operatingSystem: "Linux", architecture: "x86_64", hasNvidiaGPU: true, isWSL: true)
        #expect(HardwareProfile.detect(wsl).profile == .rtx3090WSL)
        #expect(HardwareProfile.detect(wsl).reason.contains("WSL"))
        let mac = HardwareProfile.Host(operatingSystem: "Darwin", architecture: "arm64", hasNvidiaGPU: false, isWSL: false)
        #expect(HardwareProfile.detect(mac).profile == .appleM)
    }

    @Test func aWorkingNvidiaSMIOnThePathMeansAGPU() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fake-bin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let tool = dir.appendingPathComponent("nvidia-smi")
        try "#!/bin/sh\necho 'GPU 0: NVIDIA GeForce RTX 3090 (UUID: GPU-x)'\n".write(to: tool, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: tool.path)
        let withGPU = HardwareProfile.Host.current(environment: ["PATH": dir.path])
        #expect(withGPU.hasNvidiaGPU)
        #expect(HardwareProfile.detect(withGPU).profile.name == "rtx3090-wsl")
        // A driver that is installed but broken (exit 9) is no GPU.
        try "#!/bin/sh\nexit 9\n".write(to: tool, atomically: true, encoding: .utf8)
        #expect(!HardwareProfile.Host.current(environment: ["PATH": dir.path]).hasNvidiaGPU)
        #expect(!HardwareProfile.Host.current(environment: ["PATH": "/nonexistent"]).hasNvidiaGPU)
    }

    @Test func commandTemplateIsFilledWithoutAShell() {
        let argv = HardwareProfile.rtx3090WSL.command(model: "/models/with space.gguf", port: 8081, contextSize: 8192)
        #expect(argv.first == "llama-server")
        #expect(argv.contains("/models/with space.gguf"))  // one argument, spaces and all
        #expect(argv.contains("8081") && argv.contains("-1"))
        // Four slots, each with the catalog's context: llama-server splits --ctx-size among them.
        #expect(argv.split(separator: "--parallel").last?.first == "4")
        #expect(argv.split(separator: "--ctx-size").last?.first == "32768")
        #expect(!argv.joined().contains("{"))
    }

    @Test func parallelIsASettingAndProfilesWithoutItTakeOneRequestAtATime() throws {
        var profile = HardwareProfile.cpu
        #expect(profile.parallel == 1 && HardwareProfile.appleM.parallel == 1 && HardwareProfile.rtx3090WSL.parallel == 4)
        try profile.apply(overrides: ["parallel": "3"])
        #expect(profile.parallel == 3)
        #expect {
            try profile.apply(overrides: ["parallel": "0"])
        } throws: { "\($0)".contains("profile.parallel") }
        // A profile written before slots existed decodes with one.
        var object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(HardwareProfile.cpu)) as! [String: Any]
        object["parallel"] = nil
        let decoded = try JSONDecoder().decode(HardwareProfile.self, from: JSONSerialization.data(withJSONObject: object))
        #expect(decoded.parallel == 1 && decoded.serverCommand == HardwareProfile.cpu.serverCommand)
    }

    @Test func overridesAreCheckedByName() throws {
        var profile = HardwareProfile.cpu
        try profile.apply(overrides: ["concurrency": "6", "gpu_layers": "20"])
        #expect(profile.concurrency == 6 && profile.gpuLayers == 20)
        #expect {
            try profile.apply(overrides: ["concurrency": "0"])
        } throws: { error in
            (error as? ConfigurationError)?.field == "profile.concurrency"
        }
        #expect {
            try profile.apply(overrides: ["server_command": "llama-server --port {port}"])
        } throws: { error in
            (error as? ConfigurationError)?.problem.contains("{model}") == true
        }
        #expect {
            try profile.apply(overrides: ["turbo": "yes"])
        } throws: { error in
            (error as? ConfigurationError)?.field == "profile.turbo"
        }
    }
}
