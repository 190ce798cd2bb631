import Foundation
import SwitchyardCore
import SwitchyardRedis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A private master, its replica and three sentinels watching them (quorum 2), for a test or a
/// benchmark, stopped by PID when done. The sentinels call the master down after
/// `downAfter` of silence and promote the replica.
public final class RedisSentinels: @unchecked Sendable {
    public static let masterName = "switchyard"

    public let directory: URL
    public let dataPorts: [Int]
    public let sentinelPorts: [Int]
    private let processes = RedisProcesses()
    private let downAfterMs: Int
    private let sentinelPassword: String?

    public init(downAfter: Duration = .milliseconds(1000), sentinelPassword: String? = nil) throws {
        self.sentinelPassword = sentinelPassword
        downAfterMs = Int(downAfter.components.seconds * 1000) + Int(downAfter.components.attoseconds / 1_000_000_000_000_000)
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-sentinel-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ports = try RedisCluster.freePorts(5)
        dataPorts = Array(ports[0..<2])
        sentinelPorts = Array(ports[2..<5])
        try startData(port: dataPorts[0], replicaOf: nil)
        try startData(port: dataPorts[1], replicaOf: dataPorts[0])
        for port in sentinelPorts {
            var lines = [
                "port \(port)", "bind 127.0.0.1", "daemonize no", "protected-mode no",
                "dir \(directory.path)", "logfile \(directory.appendingPathComponent("sentinel-\(port).log").path)",
                "sentinel monitor \(Self.masterName) 127.0.0.1 \(dataPorts[0]) 2",
                "sentinel down-after-milliseconds \(Self.masterName) \(downAfterMs)",
                "sentinel failover-timeout \(Self.masterName) 5000",
                "sentinel parallel-syncs \(Self.masterName) 1",
            ]
            if let sentinelPassword { lines.append("requirepass \(sentinelPassword)") }
            let file = directory.appendingPathComponent("sentinel-\(port).conf")
            try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
            let process = try ChildProcess(executable: try RedisServer.redisServerExecutable().path, arguments: [file.path, "--sentinel"])
            processes.add(process, port: port)
        }
        for port in dataPorts + sentinelPorts { try RedisServer.waitForPing(port: port) }
        try waitForSentinelsToKnowTheReplica(timeout: .seconds(30))
    }

    deinit {
        stopAll()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `redis+sentinel://` with the three sentinels.
    public func url(password: String? = nil) -> String {
        "redis+sentinel://" + sentinelPorts.map { "127.0.0.1:\($0)" }.joined(separator: ",") + "/\(Self.masterName)"
            + (password.map { "?sentinel_password=\($0)" } ?? "")
    }

    /// The port of the current master, as the sentinels name it.
    public func masterPort() -> Int? {
        for port in sentinelPorts {
            guard
                let reply = RedisServer.rawCommand(
                    port: port,
                    "SENTINEL get-master-addr-by-name \(Self.masterName)",
                    password: sentinelPassword
                )
            else { continue }
            // *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
            let lines = reply.split(separator: "\r\n")
            if lines.count >= 5, let p = Int(lines[4]) { return p }
        }
        return nil
    }

    /// SIGKILL a data node (the master, to force a failover).
    public func kill(port: Int) { processes.kill(port: port) }

    /// Starts a killed data node again, as a replica of the current master (what the sentinels
    /// would make of it anyway).
    public func restart(port: Int) throws {
        guard let master = masterPort(), master != port else { throw RedisServer.StartError(description: "no other master to follow") }
        try startData(port: port, replicaOf: master)
        try RedisServer.waitForPing(port: port)
    }

    /// Waits until the sentinels name a master other than `port` and it answers as a master.
    public func waitForFailover(awayFrom port: Int, timeout: Duration = .seconds(30)) throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let now = masterPort(), now != port,
                RedisServer.rawCommand(port: now, "ROLE")?.contains("master") == true
            {
                return now
            }
            usleep(50_000)
        }
        throw RedisServer.StartError(description: "the sentinels did not fail over away from \(port) within \(timeout)")
    }

    public func stopAll() { processes.killAll() }

    private func startData(port: Int, replicaOf master: Int?) throws {
        let node = directory.appendingPathComponent("data-\(port)")
        try FileManager.default.createDirectory(at: node, withIntermediateDirectories: true)
        var arguments = [
            "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", node.path, "--daemonize", "no", "--protected-mode", "no",
            "--logfile", node.appendingPathComponent("redis.log").path,
        ]
        if let master { arguments += ["--replicaof", "127.0.0.1", String(master)] }
        let process = try ChildProcess(executable: try RedisServer.redisServerExecutable().path, arguments: arguments)
        processes.add(process, port: port)
    }

    /// The sentinels learn of the replica from the master's INFO within about ten seconds; a
    /// failover before that has nobody to promote.
    private func waitForSentinelsToKnowTheReplica(timeout: Duration) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let known = sentinelPorts.allSatisfy { port in
                (RedisServer.rawCommand(port: port, "SENTINEL replicas \(Self.masterName)", password: sentinelPassword) ?? "").contains(
                    String(dataPorts[1])
                )
            }
            let synced = (RedisServer.rawCommand(port: dataPorts[1], "INFO replication") ?? "").contains("master_link_status:up")
            if known && synced { return }
            usleep(100_000)
        }
        throw RedisServer.StartError(description: "the sentinels did not learn of the replica within \(timeout)")
    }
}
