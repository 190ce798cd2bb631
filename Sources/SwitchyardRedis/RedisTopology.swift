import Synchronization

/// Where a connection's commands go when Redis is more than one server: the slot map of a Redis
/// Cluster, or the master that Sentinel names.
///
/// One is shared by every connection of the process made for the same deployment
/// (`RedisTopology.shared(for:)`), so one `MOVED` or one failover teaches all of them.
final class RedisTopology: Sendable {
    /// The nodes of a cluster and which master serves each slot.
    struct SlotMap: Sendable {
        /// For each slot, an index into `masters`; -1 while unknown.
        var owners: [Int16] = Array(repeating: -1, count: RedisClusterSlot.count)
        var masters: [RedisConfiguration.Endpoint] = []
        /// Masters and replicas: where to ask for the map again.
        var nodes: [RedisConfiguration.Endpoint] = []

        mutating func assign(_ range: ClosedRange<Int>, to master: RedisConfiguration.Endpoint) {
            let index: Int
            if let i = masters.firstIndex(of: master) {
                index = i
            } else {
                masters.append(master)
                index = masters.count - 1
            }
            if !nodes.contains(master) { nodes.append(master) }
            for slot in range where (0..<RedisClusterSlot.count).contains(slot) { owners[slot] = Int16(index) }
        }

        /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id], [replica host, port, id]...]...]`.
        /// An empty host means the node that answered (`asked`).
        init(clusterSlots reply: RESPValue, asked: RedisConfiguration.Endpoint) throws(RedisError) {
            guard let ranges = reply.array else { throw RedisError(.unexpectedReply, "CLUSTER SLOTS did not return an array") }
            for range in ranges {
                guard let items = range.array, items.count >= 3, let start = items[0].int, let end = items[1].int, start <= end else {
                    throw RedisError(.unexpectedReply, "CLUSTER SLOTS returned a range of an unexpected shape")
                }
                var endpoints: [RedisConfiguration.Endpoint] = []
                for node in items[2...] {
                    guard let fields = node.array, fields.count >= 2, let host = fields[0].string, let port = fields[1].int else {
                        throw RedisError(.unexpectedReply, "CLUSTER SLOTS returned a node of an unexpected shape")
                    }
                    if host.isEmpty || host == "?" {
                        endpoints.append(asked)
                    } else {
                        endpoints.append(.tcp(host: host, port: port))
                    }
                }
                assign(start...end, to: endpoints[0])
                for replica in endpoints.dropFirst() where !nodes.contains(replica) { nodes.append(replica) }
            }
            if masters.isEmpty { throw RedisError(.unexpectedReply, "CLUSTER SLOTS returned no slots: is the cluster set up?") }
        }

        init() {}
    }

    private struct State {
        var map: SlotMap?
        var refreshedAt: ContinuousClock.Instant?
        /// Behind Sentinel: the master as last named, and a count of masters seen, so a
        /// connection notices that its socket leads to a former master.
        var master: RedisConfiguration.Endpoint?
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())
    let deployment: RedisConfiguration.Deployment

    private init(deployment: RedisConfiguration.Deployment) {
        self.deployment = deployment
    }

    private static let registry = Mutex<[RedisConfiguration.Deployment: RedisTopology]>([:])

    /// The topology for a deployment, made on first use.
    static func shared(for deployment: RedisConfiguration.Deployment) -> RedisTopology {
        registry.withLock { all in
            if let existing = all[deployment] { return existing }
            let made = RedisTopology(deployment: deployment)
            all[deployment] = made
            return made
        }
    }

    // MARK: - Cluster

    /// The master that serves `slot`, if the map knows it.
    func master(forSlot slot: Int) -> RedisConfiguration.Endpoint? {
        state.withLock { s in
            guard let map = s.map else { return nil }
            let index = Int(map.owners[slot])
            return index >= 0 ? map.masters[index] : nil
        }
    }

    /// Any master, for commands without keys.
    func anyMaster() -> RedisConfiguration.Endpoint? {
        state.withLock { $0.map?.masters.first }
    }

    /// The masters that serve at least one slot now.
    var masters: [RedisConfiguration.Endpoint] {
        state.withLock { s in
            guard let map = s.map else { return [] }
            let serving = Set(map.owners.filter { $0 >= 0 })
            return map.masters.indices.filter { serving.contains(Int16($0)) }.map { map.masters[$0] }
        }
    }

    var hasMap: Bool { state.withLock { $0.map != nil } }

    /// A `MOVED` reply: the slot now lives on `endpoint`.
    func moved(slot: Int, to endpoint: RedisConfiguration.Endpoint) {
        state.withLock { s in
            var map = s.map ?? SlotMap()
            map.assign(slot...slot, to: endpoint)
            s.map = map
        }
    }

    func install(_ map: SlotMap) {
        state.withLock { s in
            s.map = map
            s.refreshedAt = .now
        }
    }

    /// Whether the map was read within `interval`: a burst of failures asks once, not once each.
    func refreshedRecently(within interval: Duration) -> Bool {
        state.withLock { s in s.refreshedAt.map { ContinuousClock.now - $0 < interval } ?? false }
    }

    /// Where to ask for the map: the nodes known, then the seeds.
    func mapSources(seeds: [RedisConfiguration.Endpoint]) -> [RedisConfiguration.Endpoint] {
        let known = state.withLock { $0.map?.nodes ?? [] }
        return known + seeds.filter { !known.contains($0) }
    }

    // MARK: - Sentinel

    /// The master as last named by a sentinel, and the generation it belongs to.
    var sentinelMaster: (endpoint: RedisConfiguration.Endpoint, generation: UInt64)? {
        state.withLock { s in s.master.map { ($0, s.generation) } }
    }

    /// A sentinel named `endpoint` as the master; a different one starts a new generation.
    @discardableResult
    func setMaster(_ endpoint: RedisConfiguration.Endpoint) -> UInt64 {
        state.withLock { s in
            if s.master != endpoint {
                s.master = endpoint
                s.generation &+= 1
            }
            return s.generation
        }
    }

    /// Forgets the master (it refused a write or went away), so the next command asks again.
    func forgetMaster(_ endpoint: RedisConfiguration.Endpoint) {
        state.withLock { s in
            if s.master == endpoint {
                s.master = nil
                s.generation &+= 1
            }
        }
    }

    var generation: UInt64 { state.withLock { $0.generation } }
}
