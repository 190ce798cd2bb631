import Foundation
import SwitchyardCore
import SwitchyardHTTP

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The stand-in provider server (`tools/standin/standin.py`) as a child process on a free port.
///
/// It stands in only for remote paid APIs that cannot be reached from here (OpenRouter, Leonardo,
/// Runware); local model servers are tested against the real llama.cpp server.
public final class StandinServer: @unchecked Sendable {
    public let port: Int
    public let scheme: String
    private let process: ChildProcess
    private let control = HTTPClient(configuration: HTTPClientConfiguration(verifyTLS: false))

    /// Starts the server; `apiKey` makes it require that key.
    public init(apiKey: String? = nil, tlsCertificate: String? = nil, tlsKey: String? = nil, leonardoPolls: Int = 2) throws {
        let portFile = FileManager.default.temporaryDirectory.appendingPathComponent("standin-\(UUID().uuidString).port").path
        var arguments = [Self.scriptPath, "--port-file", portFile, "--leonardo-polls", String(leonardoPolls)]
        if let apiKey { arguments += ["--api-key", apiKey] }
        if let tlsCertificate, let tlsKey { arguments += ["--tls-cert", tlsCertificate, "--tls-key", tlsKey] }
        scheme = tlsCertificate == nil ? "http" : "https"
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("standin-\(UUID().uuidString).log").path
        process = try ChildProcess(executable: "python3", arguments: arguments, outputPath: log)
        let deadline = Date().addingTimeInterval(15)
        var found: Int?
        while Date() < deadline {
            if let text = try? String(contentsOfFile: portFile, encoding: .utf8), let p = Int(text) {
                found = p
                break
            }
            if !process.isRunning { break }
            usleep(20_000)
        }
        try? FileManager.default.removeItem(atPath: portFile)
        guard let found else {
            process.terminate(grace: .seconds(1))
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw RedisServer.StartError(description: "the stand-in server did not start: \(output.suffix(500))")
        }
        port = found
    }

    deinit {
        control.shutdown()
        process.terminate(grace: .seconds(2))
    }

    public var baseURL: String { "\(scheme)://127.0.0.1:\(port)" }

    /// Faults for the next matching requests, for example
    /// `[["path": "/v1/chat/completions", "status": 429, "retry_after": 1, "times": 1]]`.
    public func setFaults(_ faults: [[String: Any]]) async throws {
        let body = try JSONSerialization.data(withJSONObject: faults)
        _ = try await control.execute(HTTPRequest(method: "POST", url: baseURL + "/_standin/faults", body: Array(body)))
    }

    /// Connections accepted, requests served, and so on.
    public func stats() async throws -> [String: Any] {
        let response = try await control.execute(HTTPRequest(url: baseURL + "/_standin/stats"))
        return (try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any]) ?? [:]
    }

    public func reset() async throws {
        _ = try await control.execute(HTTPRequest(method: "POST", url: baseURL + "/_standin/reset", body: []))
    }

    /// tools/standin/standin.py in this checkout.
    public static var scriptPath: String {
        if let path = ProcessInfo.processInfo.environment["SWITCHYARD_STANDIN"] { return path }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tools/standin/standin.py").path
    }
}
