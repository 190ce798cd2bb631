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
    private let arguments: [String]

    /// Proxies 127.0.0.1:`port` (free) to `target` with the given faults, for example
    /// `["--drop-reply-containing", jobID]`.
    public init(target: Int, faults: [String]) throws {
        arguments = faults
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

    /// Sends a control command (`stall on`, `delay 50`, `reset-next-reply`, …; the proxy needs
    /// `--control PORT` among its faults) and returns its answer.
    @discardableResult
    public func command(_ line: String) throws -> String {
        guard let index = arguments.firstIndex(of: "--control"), index + 1 < arguments.count, let port = UInt16(arguments[index + 1]) else {
            throw RedisServer.StartError(description: "the fault proxy was started without --control")
        }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RedisServer.StartError(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw RedisServer.StartError(description: "cannot reach the fault proxy's control port \(port)") }
        // An answer comes at once; a proxy that does not answer in 5 s is broken.
        var wait = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, socklen_t(MemoryLayout<timeval>.size))
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while !reply.contains(10) {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            reply += buffer[0..<n]
        }
        let answer = String(decoding: reply, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !answer.isEmpty, !answer.hasPrefix("error") else {
            throw RedisServer.StartError(description: "fault proxy: \(answer.isEmpty ? "no answer to '\(line)'" : answer)")
        }
        return answer
    }

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
