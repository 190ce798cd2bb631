import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Runs the processes deploy files describe, on this machine: a private Redis with a password
/// stands in for the `redis` service, the stand-in server for the providers' APIs, and the
/// paths, ports and secrets of the containers or hosts are replaced by the test's own. What is
/// not replaced (every flag, every variable, every value) runs as written.
final class DeployRun: @unchecked Sendable {
    let redis: RedisServer
    let standin: StandinServer
    let scratch: URL
    let redisPassword: String
    let coordinatorToken = "deploy-token-\(UUID().uuidString)"
    let coordinatorPort: Int
    let healthPort: Int
    let client = HTTPClient()
    private var children: [ChildProcess] = []

    init() throws {
        let password = "deploy-test-\(UUID().uuidString.prefix(8))"
        redisPassword = password
        redis = try RedisServer(arguments: ["--requirepass", password])
        standin = try StandinServer()
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        coordinatorPort = try LoopbackPort.free()
        var port = try LoopbackPort.free()
        while port == coordinatorPort { port = try LoopbackPort.free() }
        healthPort = port
    }

    deinit {
        for child in children where child.isRunning {
            child.send(SIGKILL)
            child.waitForExit()
        }
        client.shutdown()
        try? FileManager.default.removeItem(at: scratch)
    }

    var redisURL: String { "redis://127.0.0.1:\(redis.port)" }

    // MARK: - Rewriting

    /// The value a secret file holds, by the secret's name.
    func secretValue(_ name: String) -> String {
        let lower = name.lowercased()
        if lower.contains("redis") { return redisPassword }
        if lower.contains("token") { return coordinatorToken }
        return "test-key-\(lower)"
    }

    /// A providers file like `source` with every provider's `base_url` sent to the stand-in.
    func rewrittenProviders(_ source: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: source))
        guard var top = try JSONSerialization.jsonObject(with: data) as? [String: Any], var providers = top["providers"] as? [[String: Any]] else {
            throw DeployFileError("\(source): not a providers file")
        }
        for i in providers.indices {
            switch providers[i]["kind"] as? String {
            case "leonardo": providers[i]["base_url"] = standin.baseURL + "/api/rest/v1"
            default: providers[i]["base_url"] = standin.baseURL + "/v1"
            }
            // Keys come from the deploy file's own variables or files, rewritten like any secret.
            if let file = providers[i]["api_key_file"] as? String {
                let copy = scratch.appendingPathComponent("key-\(i)")
                try secretValue(URL(fileURLWithPath: file).lastPathComponent).write(to: copy, atomically: true, encoding: .utf8)
                providers[i]["api_key_file"] = copy.path
            }
        }
        top["providers"] = providers
        let out = scratch.appendingPathComponent("providers-\(UUID().uuidString.prefix(6)).json")
        try JSONSerialization.data(withJSONObject: top, options: [.prettyPrinted]).write(to: out)
        return out.path
    }

    /// A chat model of `providersFile` served by an OpenAI-compatible provider, for a real job.
    static func chatModel(in providersFile: String) throws -> String {
        let data = try Data(contentsOf: URL(fileURLWithPath: providersFile))
        let top = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        let kinds = Dictionary(
            (top["providers"] as? [[String: Any]] ?? []).compactMap { p in (p["name"] as? String).map { ($0, p["kind"] as? String ?? "") } },
            uniquingKeysWith: { $1 }
        )
        for (name, entry) in (top["models"] as? [String: Any] ?? [:]).sorted(by: { $0.key < $1.key }) {
            guard let entry = entry as? [String: Any] else { continue }
            let provider = entry["provider"] as? String ?? (entry["targets"] as? [[String: Any]])?.first?["provider"] as? String
            if let provider, kinds[provider] == "openai" { return name }
        }
        if let fallback = top["default_provider"] as? String, kinds[fallback] == "openai" { return "any-chat-model" }
        throw DeployFileError("\(providersFile): no model served by an OpenAI-compatible provider")
    }

    /// The process with the test's paths, ports, Redis and secrets. `files` adds container paths
    /// the deploy file does not mount (a host's own configuration files).
    func rewrite(_ process: DeployedProcess, files extra: [String: String] = [:]) throws -> (arguments: [String], environment: [String: String]) {
        var paths: [String: String] = [:]
        for (target, source) in process.files.merging(extra, uniquingKeysWith: { $1 }) {
            paths[target] = URL(fileURLWithPath: source).lastPathComponent == "providers.json" ? try rewrittenProviders(source) : source
        }
        let secretsFolder = scratch.appendingPathComponent("secrets-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: secretsFolder, withIntermediateDirectories: true)
        for (target, name) in process.secrets {
            if target.hasSuffix("/*") {
                // A whole Secret mounted as a folder: each file named like the key it holds.
                let folder = secretsFolder.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                for key in ["redis_password", "coordinator_tokens", "redis-password", "coordinator-tokens"] {
                    try secretValue(key).write(to: folder.appendingPathComponent(key), atomically: true, encoding: .utf8)
                }
                paths[String(target.dropLast(2))] = folder.path
            } else {
                let file = secretsFolder.appendingPathComponent(UUID().uuidString.prefix(6) + "-" + name)
                try (secretValue(name) + "\n").write(to: file, atomically: true, encoding: .utf8)
                chmod(file.path, 0o600)
                paths[target] = file.path
            }
        }
        // Longest first, so /run/secrets/x wins over /run/secrets.
        let ordered = paths.sorted { $0.key.count > $1.key.count }
        func replacePaths(_ value: String) -> String {
            var out = value
            for (from, to) in ordered where out.contains(from) {
                out = out.replacingOccurrences(of: from, with: to)
                break
            }
            return out
        }
        func replacePorts(_ value: String) -> String {
            value.replacingOccurrences(of: ":8377", with: ":\(coordinatorPort)").replacingOccurrences(of: ":8378", with: ":\(healthPort)")
        }
        var arguments: [String] = []
        var previous = ""
        for argument in process.arguments {
            var value = argument
            switch previous {
            case "--redis-url": value = redisURL
            case "--port" where value == "8377": value = "\(coordinatorPort)"
            case "--health-port" where value == "8378": value = "\(healthPort)"
            default: value = replacePorts(replacePaths(value))
            }
            arguments.append(value)
            previous = argument
        }
        var environment: [String: String] = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "HOME": scratch.path]
        for (key, value) in process.environment {
            switch key {
            case "SWITCHYARD_REDIS_URL": environment[key] = redisURL
            case "SWITCHYARD_REDIS_PASSWORD", "SWITCHYARD_COORDINATOR_TOKENS":
                environment[key] = value.hasPrefix("<secret ") ? secretValue(value) : value
            default:
                environment[key] = value.hasPrefix("<secret ") ? secretValue(value) : replacePorts(replacePaths(value))
            }
        }
        return (arguments, environment)
    }

    // MARK: - Running

    /// Starts the process as the deploy file says, with the test's replacements.
    func start(_ process: DeployedProcess, files: [String: String] = [:]) throws -> (child: ChildProcess, log: String) {
        let (arguments, environment) = try rewrite(process, files: files)
        let log = scratch.appendingPathComponent("\(process.subcommand)-\(UUID().uuidString.prefix(6)).log").path
        let child = try ChildProcess(
            executable: try WorkerProcess.switchyardExecutable(),
            arguments: arguments,
            environment: environment,
            outputPath: log
        )
        children.append(child)
        return (child, log)
    }

    /// The rewritten port of a probe's port.
    func port(_ declared: Int) -> Int {
        switch declared {
        case 8377: return coordinatorPort
        case 8378: return healthPort
        default: return declared
        }
    }

    /// GET `url`; the status (0 when nothing answered) and body.
    func get(_ url: String, token: String? = nil) async -> (status: Int, body: String) {
        let headers: [(name: String, value: String)] = token.map { [("Authorization", "Bearer \($0)")] } ?? []
        guard let response = try? await client.execute(HTTPRequest(url: url, headers: headers, connectTimeout: .seconds(2), timeout: .seconds(5)))
        else { return (0, "") }
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }

    /// Runs a health-check command (exec form) the deploy file gives, rewritten; its exit status.
    func runProbeCommand(_ command: [String]) throws -> Int32 {
        guard let program = command.first, program.hasSuffix("switchyard") else {
            throw DeployFileError("health check \(command) does not run switchyard")
        }
        let probe = DeployedProcess(origin: "probe", arguments: Array(command.dropFirst()))
        let (arguments, _) = try rewrite(probe)
        let child = try ChildProcess(executable: try WorkerProcess.switchyardExecutable(), arguments: arguments)
        let status = child.waitForExit()
        return status & 0x7f == 0 ? (status >> 8) & 0xff : -1
    }

    /// SIGTERM, then how long the process took to exit (nil when it did not within `limit`), and its exit code.
    func stop(_ child: ChildProcess, within limit: Duration) -> (took: Duration?, code: Int32?) {
        let start = ContinuousClock.now
        child.send(SIGTERM)
        guard child.waitForExit(timeout: limit) else {
            child.send(SIGKILL)
            child.waitForExit()
            return (nil, nil)
        }
        let status = child.waitForExit()
        return (ContinuousClock.now - start, status & 0x7f == 0 ? (status >> 8) & 0xff : nil)
    }
}
