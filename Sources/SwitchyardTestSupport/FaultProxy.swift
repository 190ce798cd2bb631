import Foundation
import SwitchyardCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `tools/faultproxy/faultproxy.py` as a child process: a TCP proxy in front of a loopback
/// server that loses a reply, cuts a connection or delays traffic, for tests of what happens
/// between the worker and Redis.
public final class FaultProxy: @unchecked Sendable {
    public let port: Int
    public let logPath: String
    private let process: ChildProcess

    /// Proxies 127.0.0.1:`port` (free) to `target` with the given faults, for example
    /// `["--drop-reply-containing", jobID]`.
    public init(target: Int, faults: [String]) throws {
        port = try LoopbackPort.free()
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("faultproxy-\(UUID().uuidString).log").path
        process = try ChildProcess(
            executable: "python3",
            arguments: [Self.scriptPath, "--listen", String(port), "--target", "127.0.0.1:\(target)"] + faults,
            outputPath: logPath
        )
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, !RedisServer.isListening(port: port), process.isRunning { usleep(20_000) }
        guard RedisServer.isListening(port: port), LoopbackPort.isListening(on: port, byProcessTreeOf: process.pid) != false else {
            process.terminate(grace: .seconds(1))
            throw RedisServer.StartError(description: "the fault proxy did not start: \(log.suffix(500))")
        }
    }

    deinit { process.terminate(grace: .seconds(1)) }

    /// The proxy's output: one line per fault it fired.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// How many faults fired so far.
    public var faultsFired: Int { log.components(separatedBy: "fault: ").count - 1 }

    /// tools/faultproxy/faultproxy.py in this checkout.
    public static var scriptPath: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("tools/faultproxy/faultproxy.py").path
    }
}
