import Foundation
import SwitchyardCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Test hosts on this machine: a network namespace for Redis and one per worker, each worker
/// joined to the Redis host by a veth pair of its own (a point-to-point link on a private /24),
/// and the test process joined to the Redis host by one more, so it can push jobs and read
/// results. A host is cut off by taking its link down: its processes keep running, their packets
/// go nowhere, and their connections stall until the link comes back. Nothing leaves the
/// machine; no other namespace or interface is touched.
///
/// Needs root and `ip` (iproute2); `TestNetwork.unavailableReason` says why not, for the test to
/// report as it skips. Everything is removed by name and PID in `close()` (also from `deinit`),
/// and namespaces a killed test run left behind are removed by the next one.
///
/// Addresses come from 198.18.0.0/15, the range set aside for network tests (RFC 2544): the test
/// process's link is `198.18.R.0/24` for an R no route on this machine uses; worker host `i`'s
/// link, inside the namespaces only, is `198.19.i.0/24`. The Redis side is `.1`, the other side
/// `.2`; Redis listens on 6379 on all of them.
public final class TestNetwork: @unchecked Sendable {
    public struct SetupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// A worker host: its namespace, and the Redis URL as seen from it.
    public struct Host: Sendable {
        public let namespace: String
        public let redisURL: String
        /// The Redis host's end of this host's link (taken down to cut the host off).
        let redisSideLink: String
    }

    /// The namespace and link prefix: `syt<pid, base 36>N<n, base 36>` (short: a link name has
    /// at most 15 characters), so leftovers of a dead test run are recognised.
    public let tag: String
    public let redisNamespace: String
    public let hosts: [Host]
    /// Redis as the test process sees it.
    public let redisURL: String
    private let rootLink: String
    private let lock = NSLock()
    private var processes: [ChildProcess] = []
    private var closed = false

    private nonisolated(unsafe) static var counter = 0
    private static let counterLock = NSLock()

    /// Why test hosts cannot be made here (not root, no `ip`, namespaces refused), or nil.
    public static var unavailableReason: String? {
        if geteuid() != 0 { return "network namespaces need root (running as uid \(geteuid()))" }
        let probe = "sytprobe\(getpid())"
        guard (try? run(["ip", "netns", "add", probe])) != nil else {
            return "`ip netns add` failed here (no iproute2, or namespaces are not allowed in this container)"
        }
        try? run(["ip", "netns", "del", probe])
        return nil
    }

    /// Creates the Redis host, `workers` worker hosts and the links, and starts `redis-server` on
    /// the Redis host with `redisArguments`.
    public init(workers: Int, redisArguments: [String] = []) throws {
        Self.removeLeftovers()
        let n = Self.counterLock.withLock {
            Self.counter += 1
            return Self.counter
        }
        tag = "syt\(String(getpid(), radix: 36))N\(String(n, radix: 36))"
        // The test process's link: a /24 of 198.18.0.0/16 that no route here uses yet.
        var subnet: Int?
        for _ in 0..<50 {
            let candidate = Int.random(in: 0...255)
            if let routes = try? Self.run(["ip", "-4", "route", "show", "198.18.\(candidate).0/24"]),
                routes.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            {
                subnet = candidate
                break
            }
        }
        guard let subnet else { throw SetupError(description: "no free /24 in 198.18.0.0/16 for the test link") }
        redisNamespace = tag + "R"
        rootLink = "\(tag)L0"
        var hosts: [Host] = []
        do {
            try Self.run(["ip", "netns", "add", redisNamespace])
            try Self.run(["ip", "-n", redisNamespace, "link", "set", "lo", "up"])
            // The test process's link: root end 198.18.R.1, Redis end 198.18.R.2.
            try Self.run(["ip", "link", "add", rootLink, "type", "veth", "peer", "name", "\(tag)L0P", "netns", redisNamespace])
            try Self.run(["ip", "addr", "add", "198.18.\(subnet).1/24", "dev", rootLink])
            try Self.run(["ip", "link", "set", rootLink, "up"])
            try Self.run(["ip", "-n", redisNamespace, "addr", "add", "198.18.\(subnet).2/24", "dev", "\(tag)L0P"])
            try Self.run(["ip", "-n", redisNamespace, "link", "set", "\(tag)L0P", "up"])
            for i in 1...max(1, workers) {
                let namespace = "\(tag)W\(i)"
                let redisSide = "\(tag)L\(i)"
                let hostSide = "\(tag)L\(i)P"
                try Self.run(["ip", "netns", "add", namespace])
                try Self.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
                try Self.run(["ip", "-n", redisNamespace, "link", "add", redisSide, "type", "veth", "peer", "name", hostSide, "netns", namespace])
                try Self.run(["ip", "-n", redisNamespace, "addr", "add", "198.19.\(i).1/24", "dev", redisSide])
                try Self.run(["ip", "-n", redisNamespace, "link", "set", redisSide, "up"])
                try Self.run(["ip", "-n", namespace, "addr", "add", "198.19.\(i).2/24", "dev", hostSide])
                try Self.run(["ip", "-n", namespace, "link", "set", hostSide, "up"])
                hosts.append(Host(namespace: namespace, redisURL: "redis://198.19.\(i).1:6379", redisSideLink: redisSide))
            }
        } catch {
            Self.remove(prefix: tag)
            throw error
        }
        self.hosts = hosts
        self.redisURL = "redis://198.18.\(subnet).2:6379"
        do {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-netredis-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let redis = try ChildProcess(
                executable: "ip",
                arguments: [
                    "netns", "exec", redisNamespace, try RedisServer.redisServerExecutable().path, "--port", "6379", "--bind", "0.0.0.0",
                    "--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", directory.path, "--daemonize", "no",
                ] + redisArguments,
                outputPath: directory.appendingPathComponent("redis.log").path
            )
            processes.append(redis)
            let deadline = Date().addingTimeInterval(10)
            var answered = false
            while Date() < deadline && !answered {
                answered = (try? Self.run(["ip", "netns", "exec", redisNamespace, "redis-cli", "-p", "6379", "ping"])) != nil
                if !answered { usleep(50_000) }
            }
            guard answered else { throw SetupError(description: "redis-server on the Redis host did not answer within 10 s") }
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// Runs `arguments` on a host (`ip netns exec`) as a child process stopped by `close()`.
    public func start(_ arguments: [String], in namespace: String, outputPath: String? = nil) throws -> ChildProcess {
        let process = try ChildProcess(executable: "ip", arguments: ["netns", "exec", namespace] + arguments, outputPath: outputPath)
        lock.withLock { processes.append(process) }
        return process
    }

    /// Cuts a worker host off from Redis: its link goes down; its processes keep running.
    public func partition(_ host: Host) throws {
        try Self.run(["ip", "-n", redisNamespace, "link", "set", host.redisSideLink, "down"])
    }

    /// Brings a cut-off host back.
    public func heal(_ host: Host) throws {
        try Self.run(["ip", "-n", redisNamespace, "link", "set", host.redisSideLink, "up"])
    }

    /// Stops every process started here (SIGKILL, by PID) and removes the namespaces and links.
    public func close() {
        let toStop = lock.withLock { () -> [ChildProcess] in
            defer {
                processes = []
                closed = true
            }
            return closed ? [] : processes
        }
        for process in toStop {
            process.send(SIGKILL)
            process.waitForExit()
        }
        Self.remove(prefix: tag)
    }

    /// Removes namespaces (and with them their links) whose names start with `prefix`, and the
    /// test process's link of that network.
    static func remove(prefix: String) {
        for namespace in namespaces() where namespace == prefix + "R" || namespace.hasPrefix(prefix + "W") {
            try? run(["ip", "netns", "del", namespace])
        }
        try? run(["ip", "link", "del", "\(prefix)L0"])
    }

    /// Networks of test processes that are gone (killed mid-test): their namespaces are removed.
    static func removeLeftovers() {
        var dead: Set<String> = []
        for namespace in namespaces() where namespace.hasPrefix("syt") {
            // syt<pid36>N<n36><R or W…>
            let body = namespace.dropFirst(3)
            guard let n = body.firstIndex(of: "N"), let pid = Int32(body[..<n], radix: 36), kill(pid, 0) != 0 else { continue }
            let count = body[body.index(after: n)...].prefix { $0.isLowercase || $0.isNumber }
            dead.insert("syt\(body[..<n])N\(count)")
        }
        for prefix in dead { remove(prefix: prefix) }
    }

    static func namespaces() -> [String] {
        guard let output = try? run(["ip", "netns", "list"]) else { return [] }
        return output.split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// Runs a command to its end; its output, or an error with it when it fails.
    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("testnet-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let process = try ChildProcess(executable: arguments[0], arguments: Array(arguments.dropFirst()), outputPath: log)
        let status = process.waitForExit()
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw SetupError(description: "`\(arguments.joined(separator: " "))` failed (status \(status)): \(output.prefix(300))")
        }
        return output
    }
}
