import Foundation
import SwitchyardCore
import SwitchyardHTTP

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which real llama.cpp server a test runs: llama-cpp-python's, or llama.cpp's own llama-server.
public enum ServerKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case llamaCppPython = "llama-cpp-python"
    case llamaServer = "llama-server"
    public var description: String { rawValue }
}

/// A real llama.cpp server for tests: llama-cpp-python's OpenAI-compatible server, from the
/// virtual environment `scripts/setup.sh` prepares, serving the tiny model that
/// `tools/tinymodel/make_tiny_gguf.py` generates.
public final class LlamaServer: @unchecked Sendable {
    public let port: Int
    public let modelPath: String
    private let process: ChildProcess

    /// Starts a server on a free port (or `port`: to bring a stopped one back where it was) and
    /// waits until it answers /v1/models.
    public init(embedding: Bool = false, port fixedPort: Int? = nil) async throws {
        modelPath = try Self.tinyModel()
        var lastError: (any Error)?
        for _ in 0..<3 {
            let candidate = try fixedPort ?? RedisServer.freePort()
            let log = FileManager.default.temporaryDirectory.appendingPathComponent("llama-\(candidate).log").path
            // --interrupt_requests false: by default a new request cuts off the one being streamed.
            var arguments = [
                "-m", "llama_cpp.server", "--model", modelPath, "--host", "127.0.0.1", "--port", String(candidate),
                "--interrupt_requests", "false",
            ]
            if embedding { arguments += ["--embedding", "true"] }
            let child = try ChildProcess(executable: Self.python, arguments: arguments, outputPath: log)
            if await Self.waitUntilReady(port: candidate, process: child) {
                port = candidate
                process = child
                return
            }
            child.terminate(grace: .seconds(2))
            lastError = RedisServer.StartError(
                description: "llama.cpp server did not become ready: \(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(800))"
            )
        }
        throw lastError!
    }

    deinit { process.terminate(grace: .seconds(5)) }

    /// Stops the server (a dead local model server, for tests of what happens then).
    public func stop() { process.terminate(grace: .seconds(5)) }

    public var baseURL: String { "http://127.0.0.1:\(port)/v1" }
    public var pid: Int32 { process.pid }

    private static func waitUntilReady(port: Int, process: ChildProcess) async -> Bool {
        let client = HTTPClient()
        defer { client.shutdown() }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline, process.isRunning {
            if let response = try? await client.execute(
                HTTPRequest(url: "http://127.0.0.1:\(port)/v1/models", connectTimeout: .seconds(1), timeout: .seconds(2))
            ),
                response.status == 200
            {
                return true
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// The repository checkout this file belongs to.
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// The virtual environment's python (`SWITCHYARD_LLAMA_VENV`, default `.venv-llama` in the checkout).
    public static var python: String {
        let venv = ProcessInfo.processInfo.environment["SWITCHYARD_LLAMA_VENV"] ?? repository.appendingPathComponent(".venv-llama").path
        return venv + "/bin/python"
    }

    /// Generates the tiny model once per checkout (kept in .build) and returns its path.
    public static func tinyModel() throws -> String {
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw RedisServer.StartError(description: "no llama.cpp environment at \(python): run scripts/setup.sh")
        }
        let directory = repository.appendingPathComponent(".build/tiny-models")
        let path = directory.appendingPathComponent("switchyard-tiny-v2.gguf").path
        if FileManager.default.fileExists(atPath: path) { return path }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let temporary = path + ".\(getpid()).tmp"
        let child = try ChildProcess(
            executable: python,
            arguments: [repository.appendingPathComponent("tools/tinymodel/make_tiny_gguf.py").path, temporary]
        )
        let status = child.waitForExit()
        guard status == 0 else { throw RedisServer.StartError(description: "generating the tiny model failed (status \(status))") }
        _ = rename(temporary, path)
        return path
    }

    /// Where `scripts/setup.sh` puts llama.cpp's own server: `SWITCHYARD_LLAMA_SERVER_DIR`, else
    /// `switchyard/llama-server-0.3.36` in the user's cache directory (`XDG_CACHE_HOME`, else
    /// `~/.cache`), with the binary in `bin`.
    public static var llamaServerDirectory: String {
        let environment = ProcessInfo.processInfo.environment
        if let directory = environment["SWITCHYARD_LLAMA_SERVER_DIR"] { return directory + "/bin" }
        let cache = environment["XDG_CACHE_HOME"] ?? ((environment["HOME"] ?? NSHomeDirectory()) + "/.cache")
        return cache + "/switchyard/llama-server-0.3.36/bin"
    }

    /// The path of llama-server, or an error that says to run `scripts/setup.sh`.
    public static func llamaServerBinary() throws -> String {
        let path = llamaServerDirectory + "/llama-server"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw RedisServer.StartError(description: "no llama-server at \(path): run scripts/setup.sh")
        }
        return path
    }

    /// The `rtx3090-wsl` profile as a GPU host runs it, with `gpu_layers=0` (this machine has no
    /// GPU): its own argv, llama-server and `--parallel`.
    public static func gpuProfileOnCPU() throws -> HardwareProfile {
        var profile = HardwareProfile.rtx3090WSL
        try profile.apply(overrides: ["gpu_layers": "0"])
        return profile
    }

    /// An environment in which `llama-server` (the profile's argv[0]) is found in PATH.
    public static func environmentWithLlamaServer() throws -> [String: String] {
        _ = try llamaServerBinary()
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = llamaServerDirectory + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        return environment
    }

    /// Writes a model catalog (JSON) in which every name is the tiny model on llama-cpp-python's
    /// server (or, with `server: .llamaServer`, on the profile's command: llama-server), and
    /// returns its path: several "models" that cost a real load each.
    /// `pinned` names models the catalog pins (loaded at start, never evicted).
    public static func catalogFile(models names: [String], pinned: [String] = [], server: ServerKind = .llamaCppPython) throws -> String {
        var entry: [String: Any] = ["file": try tinyModel(), "memory_mb": 64, "context_size": 256]
        switch server {
        case .llamaCppPython:
            entry["framework"] = "llama-cpp-python"
            entry["command"] = HardwareProfile.llamaCppPythonServer(python: python)
        case .llamaServer:
            entry["framework"] = "llama.cpp"
        }
        var catalog: [String: Any] = ["models": Dictionary(uniqueKeysWithValues: names.map { ($0, entry) })]
        if !pinned.isEmpty { catalog["pinned"] = pinned }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-models-\(UUID().uuidString.prefix(8)).json").path
        try JSONSerialization.data(withJSONObject: catalog, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
        return path
    }
}
