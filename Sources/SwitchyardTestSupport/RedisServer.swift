import Foundation
import SwitchyardCore
import SwitchyardRedis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A private `redis-server` for a test or a benchmark: a free loopback port, no persistence unless
/// asked, a scratch directory of its own, stopped by PID when done.
///
/// No test relies on a Redis that the machine happens to run.
public final class RedisServer: @unchecked Sendable {
    public struct StartError: Error, CustomStringConvertible {
        public let description: String
    }

    public let port: Int
    public let directory: URL
    public let extraArguments: [String]
    private let lock = NSLock()
    private var process: ChildProcess?

    /// Starts a server. `arguments` are extra `redis-server` options, for example
    /// `["--requirepass", "secret"]` or `["--appendonly", "yes"]`.
    public init(arguments: [String] = []) throws {
        self.extraArguments = arguments
        self.directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var lastError: (any Error)?
        for _ in 0..<5 {
            let candidate = try Self.freePort()
            do {
                self.process = try Self.launch(port: candidate, directory: directory, extra: arguments)
                self.port = candidate
                return
            } catch {
                lastError = error
            }
        }
        throw lastError ?? StartError(description: "could not start redis-server")
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    public var url: String { "redis://127.0.0.1:\(port)" }
    public var configuration: RedisConfiguration { (try? RedisConfiguration(url: url)) ?? RedisConfiguration() }
    public var pid: Int32? { lock.withLock { process?.pid } }

    /// SIGTERM, then wait for the process to exit.
    public func stop() { signalAndWait(SIGTERM) }

    /// SIGKILL: the server dies at once, as in a crash.
    public func kill() { signalAndWait(SIGKILL) }

    /// Starts the server again on the same port and directory (an AOF there is loaded).
    public func restart() throws {
        stop()
        var lastError: (any Error)?
        for _ in 0..<50 {  // the port can take a moment to be free again
            do {
                let p = try Self.launch(port: port, directory: directory, extra: extraArguments)
                lock.withLock { process = p }
                return
            } catch {
                lastError = error
                usleep(100_000)
            }
        }
        throw lastError!
    }

    private func signalAndWait(_ signal: Int32) {
        guard
            let p = lock.withLock({ () -> ChildProcess? in
                defer { process = nil }
                return process
            })
        else { return }
        p.send(signal)
        p.waitForExit()
    }

    private static func launch(port: Int, directory: URL, extra: [String]) throws -> ChildProcess {
        let arguments =
            [
                "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory.path, "--daemonize", "no", "--protected-mode", "no",
                "--logfile", directory.appendingPathComponent("redis.log").path,
            ] + extra
        let p = try ChildProcess(executable: try redisServerExecutable().path, arguments: arguments)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if !p.isRunning {
                throw StartError(description: "redis-server exited at start on port \(port)")
            }
            if ping(port: port) {
                // Another test's server may have taken the port first and answered for ours,
                // which then fails to bind: only our own process's answer counts.
                if LoopbackPort.isListening(on: port, byProcessTreeOf: p.pid) != false { return p }
                p.send(SIGKILL)
                p.waitForExit()
                throw StartError(description: "port \(port) was taken by another process")
            }
            usleep(5_000)
        }
        p.send(SIGKILL)
        p.waitForExit()
        throw StartError(description: "redis-server on port \(port) did not answer PING within 10 s")
    }

    static func redisServerExecutable() throws -> URL {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"] {
            let candidate = URL(fileURLWithPath: dir).appendingPathComponent("redis-server")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        throw StartError(description: "redis-server is not installed (Debian: apt-get install redis-server)")
    }

    /// A port the kernel reports free on 127.0.0.1 right now.
    public static func freePort() throws -> Int { try LoopbackPort.free() }

    /// Whether anything accepts connections on 127.0.0.1:`port`.
    public static func isListening(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    /// Waits up to 10 s for a process started on `port` to answer PING (`ping`).
    static func waitForPing(port: Int) throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if ping(port: port) { return }
            usleep(5_000)
        }
        throw StartError(description: "port \(port) did not answer PING within 10 s")
    }

    /// A raw PING over a fresh socket, independent of the Redis layer under test.
    static func ping(port: Int) -> Bool {
        // "-NOAUTH" or "-LOADING" means the process answers but is not ready for commands; a
        // password-protected server is still up, so accept NOAUTH.
        guard let text = rawCommand(port: port, "PING") else { return false }
        return text.hasPrefix("+PONG") || text.hasPrefix("-NOAUTH")
    }

    /// One inline command over a fresh socket to 127.0.0.1:`port` (after `AUTH password` when
    /// given), independent of the Redis layer under test; the raw reply, or nil.
    static func rawCommand(port: Int, _ command: String, password: String? = nil) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        let bytes = Array(((password.map { "AUTH \($0)\r\n" } ?? "") + command + "\r\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { return nil }
        var text = ""
        // With AUTH first, its "+OK" comes before the answer; read until both are in.
        for _ in 0..<4 {
            var buffer = [UInt8](repeating: 0, count: 8192)
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { break }
            text += String(decoding: buffer[0..<n], as: UTF8.self)
            if password == nil || text.split(separator: "\r\n").count > 1 { break }
        }
        if password != nil, text.hasPrefix("+OK\r\n") { text.removeFirst(5) }
        return text.isEmpty ? nil : text
    }
}

/// The redis-server processes of a test deployment (a cluster, a sentinel set), by port: killed
/// one by one like a crash, or all at the end.
final class RedisProcesses: @unchecked Sendable {
    private let lock = NSLock()
    private var processes: [Int: ChildProcess] = [:]

    func add(_ process: ChildProcess, port: Int) { lock.withLock { processes[port] = process } }

    var ports: [Int] { lock.withLock { Array(processes.keys).sorted() } }

    /// SIGKILL: the server dies at once, as in a crash.
    func kill(port: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: port) }) else { return }
        process.send(SIGKILL)
        _ = process.waitForExit()
    }

    func killAll() {
        let all = lock.withLock { () -> [ChildProcess] in
            defer { processes = [:] }
            return Array(processes.values)
        }
        for process in all { process.send(SIGKILL) }
        for process in all { _ = process.waitForExit() }
    }
}
