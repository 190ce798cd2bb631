import Foundation
import SwitchyardCore
import SwitchyardRedis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A private Redis Cluster for a test or a benchmark: `masters` masters with `replicasPerMaster`
/// replicas each (3 + 3 by default), on free loopback ports below 55536 whose cluster-bus port
/// (+10000) is free too, each node in a scratch directory of its own, stopped by PID when done.
///
/// Nodes are started in parallel and joined with `redis-cli --cluster create`; the cluster is
/// ready when every node reports `cluster_state:ok` and every slot is covered.
public final class RedisCluster: @unchecked Sendable {
    public struct Node: Sendable {
        public let port: Int
        public let directory: URL
    }

    public let nodes: [Node]
    public let nodeTimeoutMs: Int
    private let processes = RedisProcesses()

    /// Starts and joins the cluster. `nodeTimeout` is `cluster-node-timeout`: how long a master
    /// must be silent before its replica takes over.
    public init(masters: Int = 3, replicasPerMaster: Int = 1, nodeTimeout: Duration = .milliseconds(1500)) throws {
        nodeTimeoutMs = Int(nodeTimeout.components.seconds * 1000) + Int(nodeTimeout.components.attoseconds / 1_000_000_000_000_000)
        let count = masters * (1 + replicasPerMaster)
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-cluster-\(UUID().uuidString)")
        var nodes: [Node] = []
        for port in try Self.freePorts(count) {
            let directory = base.appendingPathComponent(String(port))
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            nodes.append(Node(port: port, directory: directory))
        }
        self.nodes = nodes
        for node in nodes { try start(node) }
        for node in nodes { try RedisServer.waitForPing(port: node.port) }
        let create = try ChildProcess(
            executable: "redis-cli",
            arguments: ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
                + ["--cluster-replicas", String(replicasPerMaster), "--cluster-yes"],
            outputPath: base.appendingPathComponent("create.log").path
        )
        guard create.waitForExit(timeout: .seconds(60)), create.status == 0 else {
            let log = (try? String(contentsOf: base.appendingPathComponent("create.log"), encoding: .utf8)) ?? ""
            stopAll()
            throw RedisServer.StartError(description: "redis-cli --cluster create failed: \(log.suffix(800))")
        }
        try waitUntilHealthy(timeout: .seconds(30))
    }

    deinit {
        stopAll()
        if let base = nodes.first?.directory.deletingLastPathComponent() { try? FileManager.default.removeItem(at: base) }
    }

    /// `redis+cluster://` with every node as a seed.
    public var url: String { "redis+cluster://" + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",") }

    public var configuration: RedisConfiguration { (try? RedisConfiguration(url: url)) ?? RedisConfiguration() }

    /// A plain connection to one node, not following redirects: for looking at or acting on the
    /// node itself.
    public func nodeConnection(_ port: Int) -> RedisConnection {
        var configuration = RedisConfiguration(endpoint: .tcp(host: "127.0.0.1", port: port))
        configuration.reconnectWait = .zero
        return RedisConnection(configuration: configuration)
    }

    /// The ports of the masters that serve slots now, and of the master serving `slot`.
    public func masters() async throws -> [Int] {
        try await slotOwners().map(\.port).reduce(into: [Int]()) { if !$0.contains($1) { $0.append($1) } }
    }

    public func master(ofSlot slot: Int) async throws -> Int {
        guard let owner = try await slotOwners().first(where: { $0.range.contains(slot) }) else {
            throw RedisServer.StartError(description: "no node serves slot \(slot)")
        }
        return owner.port
    }

    /// Node ids by port, from `CLUSTER NODES` of a live node.
    public func nodeIDs() async throws -> [Int: String] {
        var ids: [Int: String] = [:]
        for line in try await clusterNodes() {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let port = Self.port(of: fields[1]) else { continue }
            ids[port] = String(fields[0])
        }
        return ids
    }

    /// SIGKILL one node: it dies at once, as in a crash; its replica takes over after the node
    /// timeout.
    public func kill(port: Int) { processes.kill(port: port) }

    /// Starts a killed node again (it rejoins, as a replica of whoever took over).
    public func restart(port: Int) throws {
        guard let node = nodes.first(where: { $0.port == port }) else { return }
        try start(node)
        try RedisServer.waitForPing(port: port)
    }

    /// Waits until every live node reports `cluster_state:ok` and all slots are served by live nodes.
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let live = processes.ports
            let ok = live.allSatisfy { port in
                RedisServer.rawCommand(port: port, "CLUSTER INFO").map { $0.contains("cluster_state:ok") && $0.contains("cluster_slots_ok:16384") }
                    ?? false
            }
            // Replicas in sync with their masters, so a failover has someone ready to promote.
            let synced = live.allSatisfy { port in
                guard let info = RedisServer.rawCommand(port: port, "INFO replication") else { return false }
                return info.contains("role:master") || info.contains("master_link_status:up")
            }
            if ok && synced { return }
            usleep(50_000)
        }
        throw RedisServer.StartError(description: "the cluster did not become healthy within \(timeout)")
    }

    /// Moves `slot` from the master serving it to the master on `targetPort` the way
    /// `redis-cli --cluster reshard` does: IMPORTING and MIGRATING, then MIGRATE of its keys in
    /// steps of `batch` (with `pause` between steps, so clients meet the half-moved slot and its
    /// ASK and TRYAGAIN replies), then SETSLOT NODE on every master.
    public func migrate(slot: Int, to targetPort: Int, batch: Int = 10, pause: Duration = .milliseconds(20)) async throws {
        guard let migration = try await beginMigration(slot: slot, to: targetPort) else { return }
        try await completeMigration(migration, batch: batch, pause: pause)
    }

    /// A slot half moved: IMPORTING on the target, MIGRATING on the source, no key moved yet.
    public struct Migration: Sendable {
        public let slot: Int
        public let sourcePort: Int
        public let targetPort: Int
        let targetID: String
    }

    /// Marks `slot` IMPORTING on `targetPort` and MIGRATING on its master; nil when the target
    /// already serves it. `completeMigration` moves the keys and hands the slot over.
    public func beginMigration(slot: Int, to targetPort: Int) async throws -> Migration? {
        let sourcePort = try await master(ofSlot: slot)
        guard sourcePort != targetPort else { return nil }
        let ids = try await nodeIDs()
        guard let sourceID = ids[sourcePort], let targetID = ids[targetPort] else {
            throw RedisServer.StartError(description: "unknown node ids for \(sourcePort) or \(targetPort)")
        }
        let source = nodeConnection(sourcePort)
        let target = nodeConnection(targetPort)
        defer {
            source.close()
            target.close()
        }
        try await target.send("CLUSTER", "SETSLOT", slot, "IMPORTING", sourceID)
        try await source.send("CLUSTER", "SETSLOT", slot, "MIGRATING", targetID)
        return Migration(slot: slot, sourcePort: sourcePort, targetPort: targetPort, targetID: targetID)
    }

    /// MIGRATE of the slot's keys in steps of `batch` (with `pause` between steps, so clients meet
    /// the half-moved slot and its ASK and TRYAGAIN replies), then SETSLOT NODE on every master.
    public func completeMigration(_ migration: Migration, batch: Int = 10, pause: Duration = .milliseconds(20)) async throws {
        let source = nodeConnection(migration.sourcePort)
        defer { source.close() }
        while true {
            let keys = (try await source.send("CLUSTER", "GETKEYSINSLOT", migration.slot, batch).array ?? []).compactMap(\.string)
            if keys.isEmpty { break }
            try await source.send(
                RedisCommand("MIGRATE", arguments: ["127.0.0.1", migration.targetPort, "", 0, 10_000, "KEYS"] + keys),
                timeout: .after(.seconds(15))
            )
            try await Task.sleep(for: pause)
        }
        for port in try await masters() + [migration.targetPort] {
            let connection = nodeConnection(port)
            defer { connection.close() }
            try await connection.send("CLUSTER", "SETSLOT", migration.slot, "NODE", migration.targetID)
        }
    }

    /// SIGKILL every node.
    public func stopAll() { processes.killAll() }

    // MARK: - Inside

    private func start(_ node: Node) throws {
        let process = try ChildProcess(
            executable: try RedisServer.redisServerExecutable().path,
            arguments: [
                "--port", String(node.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", node.directory.path, "--daemonize", "no", "--protected-mode", "no",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", String(nodeTimeoutMs),
                // A replica may always take over: a test kills masters seconds after the start.
                "--cluster-replica-validity-factor", "0",
                "--logfile", node.directory.appendingPathComponent("redis.log").path,
            ]
        )
        processes.add(process, port: node.port)
    }

    private func slotOwners() async throws -> [(range: ClosedRange<Int>, port: Int)] {
        let live = processes.ports
        for port in live {
            let connection = nodeConnection(port)
            defer { connection.close() }
            guard let reply = try? await connection.send("CLUSTER", "SLOTS"), let ranges = reply.array else { continue }
            return ranges.compactMap { range in
                guard let items = range.array, items.count >= 3, let start = items[0].int, let end = items[1].int,
                    let port = items[2].array?[1].int
                else { return nil }
                return (start...end, port)
            }
        }
        throw RedisServer.StartError(description: "no cluster node answered CLUSTER SLOTS")
    }

    private func clusterNodes() async throws -> [Substring] {
        for port in processes.ports {
            let connection = nodeConnection(port)
            defer { connection.close() }
            if let text = try? await connection.send("CLUSTER", "NODES").string { return text.split(separator: "\n") }
        }
        throw RedisServer.StartError(description: "no cluster node answered CLUSTER NODES")
    }

    /// "127.0.0.1:7000@17000" → 7000.
    private static func port(of address: Substring) -> Int? {
        guard let colon = address.lastIndex(of: ":") else { return nil }
        return Int(address[address.index(after: colon)...].prefix { $0 != "@" })
    }

    /// Ports P < 55536 with P and P + 10000 free.
    static func freePorts(_ count: Int) throws -> [Int] {
        var ports: [Int] = []
        var tries = 0
        while ports.count < count {
            tries += 1
            if tries > 10_000 { throw RedisServer.StartError(description: "no free ports for a cluster") }
            let port = Int.random(in: 20_000..<45_000)
            if ports.contains(port) || ports.contains(port + 10_000) || ports.contains(port - 10_000) { continue }
            if LoopbackPort.isFree(port) && LoopbackPort.isFree(port + 10_000) { ports.append(port) }
        }
        return ports
    }
}
