import Foundation

/// How a worker uses its host: how many jobs at once, how many local model servers to keep warm
/// and within what memory, how many layers to put on the GPU, and which model-server command.
///
/// Three are built in and one is picked by looking at the host; any field can be overridden.
public struct HardwareProfile: Sendable, Hashable, Codable {
    public var name: String
    /// Jobs a worker runs at once.
    public var concurrency: Int
    /// Local model servers kept warm at once (the LRU's size).
    public var modelCacheSize: Int
    /// Memory the warm models may use together, in MiB.
    public var memoryBudgetMB: Int
    /// Layers offloaded to the GPU (-1: all, 0: none).
    public var gpuLayers: Int
    /// Batch size passed to the model server.
    public var batchSize: Int
    /// Requests one model server runs at once (its slots: llama-server's `--parallel`, batched
    /// together on the GPU). The worker keeps up to this many jobs in flight per warm model and
    /// warm-model routing counts free slots. Default: 4 on `rtx3090-wsl`, 1 elsewhere
    /// (llama-cpp-python's server and mlx_lm.server take one request at a time).
    public var parallel: Int
    /// The model-server command as an argv template (no shell). Placeholders: {model}, {port},
    /// {host}, {ctx} (the catalog's context size, per request), {ctx_total} ({ctx} times
    /// {parallel}: llama-server splits its context among its slots), {parallel}, {gpu_layers},
    /// {batch}.
    public var serverCommand: [String]

    enum CodingKeys: String, CodingKey {
        case name, concurrency
        case modelCacheSize = "model_cache_size"
        case memoryBudgetMB = "memory_budget_mb"
        case gpuLayers = "gpu_layers"
        case batchSize = "batch_size"
        case parallel
        case serverCommand = "server_command"
    }

    public init(
        name: String,
        concurrency: Int,
        modelCacheSize: Int,
        memoryBudgetMB: Int,
        gpuLayers: Int,
        batchSize: Int,
        parallel: Int = 1,
        serverCommand: [String]
    ) {
        self.name = name
        self.concurrency = concurrency
        self.modelCacheSize = modelCacheSize
        self.memoryBudgetMB = memoryBudgetMB
        self.gpuLayers = gpuLayers
        self.batchSize = batchSize
        self.parallel = parallel
        self.serverCommand = serverCommand
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name),
            concurrency: try c.decode(Int.self, forKey: .concurrency),
            modelCacheSize: try c.decode(Int.self, forKey: .modelCacheSize),
            memoryBudgetMB: try c.decode(Int.self, forKey: .memoryBudgetMB),
            gpuLayers: try c.decode(Int.self, forKey: .gpuLayers),
            batchSize: try c.decode(Int.self, forKey: .batchSize),
            parallel: try c.decodeIfPresent(Int.self, forKey: .parallel) ?? 1,
            serverCommand: try c.decode([String].self, forKey: .serverCommand)
        )
    }

    /// An RTX 3090 (24 GiB) under WSL: llama.cpp's llama-server with every layer on the GPU and
    /// four slots per model, batched together (continuous batching): two warm models with four
    /// requests each fill the eight jobs the worker runs at once.
    public static let rtx3090WSL = HardwareProfile(
        name: "rtx3090-wsl",
        concurrency: 8,
        modelCacheSize: 2,
        memoryBudgetMB: 22_000,
        gpuLayers: -1,
        batchSize: 512,
        parallel: 4,
        serverCommand: [
            "llama-server", "--model", "{model}", "--host", "{host}", "--port", "{port}", "--ctx-size", "{ctx_total}", "--parallel",
            "{parallel}", "--n-gpu-layers", "{gpu_layers}", "--batch-size", "{batch}",
        ]
    )

    /// Apple M-series: mlx_lm.server on unified memory.
    public static let appleM = HardwareProfile(
        name: "apple-m",
        concurrency: 4,
        modelCacheSize: 2,
        memoryBudgetMB: 16_000,
        gpuLayers: -1,
        batchSize: 256,
        serverCommand: ["mlx_lm.server", "--model", "{model}", "--host", "{host}", "--port", "{port}"]
    )

    /// A plain CPU box: llama-cpp-python's OpenAI-compatible server.
    public static let cpu = HardwareProfile(
        name: "cpu",
        concurrency: 2,
        modelCacheSize: 1,
        memoryBudgetMB: 4_000,
        gpuLayers: 0,
        batchSize: 128,
        serverCommand: llamaCppPythonServer(python: "python3") + ["--n_batch", "{batch}"]
    )

    /// llama-cpp-python's OpenAI-compatible server as an argv template, run by `python`.
    /// `--interrupt_requests false`: by default a new request cuts off the one being streamed.
    public static func llamaCppPythonServer(python: String) -> [String] {
        [
            python, "-m", "llama_cpp.server", "--model", "{model}", "--host", "{host}", "--port", "{port}", "--n_ctx", "{ctx}",
            "--interrupt_requests", "false",
        ]
    }

    public static let builtIn: [HardwareProfile] = [.rtx3090WSL, .appleM, .cpu]

    public static func named(_ name: String) -> HardwareProfile? { builtIn.first { $0.name == name } }

    /// What the host looks like, as `detect` sees it.
    public struct Host: Sendable {
        public var operatingSystem: String
        public var architecture: String
        /// `nvidia-smi` answered.
        public var hasNvidiaGPU: Bool
        /// /proc/version mentions Microsoft (WSL).
        public var isWSL: Bool

        public init(operatingSystem: String, architecture: String, hasNvidiaGPU: Bool, isWSL: Bool) {
            self.operatingSystem = operatingSystem
            self.architecture = architecture
            self.hasNvidiaGPU = hasNvidiaGPU
            self.isWSL = isWSL
        }

        /// The host this process runs on.
        public static func current(environment: [String: String] = ProcessInfo.processInfo.environment) -> Host {
            #if os(macOS)
            let os = "Darwin"
            #else
            let os = "Linux"
            #endif
            #if arch(arm64)
            let arch = "arm64"
            #else
            let arch = "x86_64"
            #endif
            let version = (try? String(contentsOfFile: "/proc/version", encoding: .utf8)) ?? ""
            return Host(
                operatingSystem: os,
                architecture: arch,
                hasNvidiaGPU: nvidiaSMIAnswers(environment: environment),
                isWSL: version.lowercased().contains("microsoft")
            )
        }

        static func nvidiaSMIAnswers(environment: [String: String]) -> Bool {
            let path = environment["PATH"] ?? "/usr/bin:/bin"
            for dir in path.split(separator: ":") {
                let candidate = "\(dir)/nvidia-smi"
                guard FileManager.default.isExecutableFile(atPath: candidate) else { continue }
                guard let probe = try? ChildProcess(executable: candidate, arguments: ["-L"]) else { return false }
                if !probe.waitForExit(timeout: .seconds(5)) {
                    probe.terminate(grace: .seconds(1))
                    return false
                }
                return probe.waitForExit() == 0
            }
            return false
        }
    }

    /// nvidia-smi answers: rtx3090-wsl; Darwin on arm64: apple-m; otherwise cpu.
    public static func detect(_ host: Host) -> (profile: HardwareProfile, reason: String) {
        if host.hasNvidiaGPU {
            return (.rtx3090WSL, "nvidia-smi found a GPU\(host.isWSL ? " (under WSL)" : "")")
        }
        if host.operatingSystem == "Darwin" && host.architecture == "arm64" {
            return (.appleM, "Darwin on arm64")
        }
        return (.cpu, "no NVIDIA GPU and not Apple silicon")
    }

    /// The argv to start a model server, placeholders filled in. Values come from the model
    /// catalog and the manager, never from a job.
    public func command(model: String, host: String = "127.0.0.1", port: Int, contextSize: Int) -> [String] {
        serverCommand.map { part in
            part.replacingOccurrences(of: "{model}", with: model)
                .replacingOccurrences(of: "{host}", with: host)
                .replacingOccurrences(of: "{port}", with: String(port))
                .replacingOccurrences(of: "{ctx_total}", with: String(contextSize * parallel))
                .replacingOccurrences(of: "{ctx}", with: String(contextSize))
                .replacingOccurrences(of: "{parallel}", with: String(parallel))
                .replacingOccurrences(of: "{gpu_layers}", with: String(gpuLayers))
                .replacingOccurrences(of: "{batch}", with: String(batchSize))
        }
    }

    /// Applies `key=value` overrides (from flags or configuration), naming the key on error.
    public mutating func apply(overrides: [String: String]) throws {
        for (key, value) in overrides.sorted(by: { $0.key < $1.key }) {
            func int(min: Int) throws -> Int {
                guard let n = Int(value), n >= min else {
                    throw ConfigurationError(field: "profile.\(key)", problem: "'\(value)' is not a whole number of at least \(min)")
                }
                return n
            }
            switch key {
            case "concurrency": concurrency = try int(min: 1)
            case "model_cache_size": modelCacheSize = try int(min: 1)
            case "memory_budget_mb": memoryBudgetMB = try int(min: 1)
            case "gpu_layers": gpuLayers = try int(min: -1)
            case "batch_size": batchSize = try int(min: 1)
            case "parallel": parallel = try int(min: 1)
            case "server_command":
                let parts = value.split(separator: " ").map(String.init)
                guard !parts.isEmpty, parts.contains(where: { $0.contains("{model}") }) else {
                    throw ConfigurationError(field: "profile.server_command", problem: "must name the model with {model}")
                }
                serverCommand = parts
            default:
                throw ConfigurationError(
                    field: "profile.\(key)",
                    problem:
                        "unknown setting; use concurrency, model_cache_size, memory_budget_mb, gpu_layers, batch_size, parallel or server_command"
                )
            }
        }
    }
}
