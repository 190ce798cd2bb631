import CHiredis

/// Redis Cluster: each command goes to the master that serves its keys' slot.
///
/// The slot map comes from `CLUSTER SLOTS` and is shared by the process's connections
/// (`RedisTopology`). `MOVED` updates it and sends the command again; `ASK` sends `ASKING` and the
/// command once to the node named; `TRYAGAIN` (a slot half-migrated) and `CLUSTERDOWN` (a failover
/// under way) wait with backoff and try again; a node that cannot be reached makes the connection
/// read the map again from any node that answers. All of it within `reconnectWait`.
extension RedisConnection {
    /// A redirect or a wait that an error reply asks for.
    enum ClusterRedirect {
        case moved(slot: Int, to: RedisConfiguration.Endpoint)
        case ask(to: RedisConfiguration.Endpoint)
        case tryAgain
        case clusterDown

        /// Parses `MOVED 3999 127.0.0.1:6381`, `ASK 3999 127.0.0.1:6381`, `TRYAGAIN ...`,
        /// `CLUSTERDOWN ...`; nil for every other reply. An empty host means the node that answered.
        init?(_ reply: RESPValue, from node: RedisConfiguration.Endpoint) {
            guard let message = reply.errorMessage else { return nil }
            if message.hasPrefix("TRYAGAIN") {
                self = .tryAgain
                return
            }
            if message.hasPrefix("CLUSTERDOWN") {
                self = .clusterDown
                return
            }
            let parts = message.split(separator: " ")
            guard parts.count >= 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
                let colon = parts[2].lastIndex(of: ":"), let port = Int(parts[2][parts[2].index(after: colon)...])
            else { return nil }
            var host = String(parts[2][..<colon])
            if host.isEmpty, case .tcp(let nodeHost, _) = node { host = nodeHost }
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let endpoint = RedisConfiguration.Endpoint.tcp(host: host, port: port)
            self = parts[0] == "MOVED" ? .moved(slot: slot, to: endpoint) : .ask(to: endpoint)
        }
    }

    func clusterExchange(
        _ commands: [RedisCommand],
        timeoutMs: Int32,
        scripts: [RedisScript],
        seeds: [RedisConfiguration.Endpoint]
    ) throws -> [RESPValue] {
        let topology = topology!
        let deadline = ContinuousClock.now + max(configuration.reconnectWait, .milliseconds(500))
        var attempts = 0
        while !topology.hasMap {
            // No map yet: wait for a seed to answer, as a single server's first command waits.
            do {
                try refreshSlotMap(seeds: seeds, deadline: deadline)
            } catch let error as RedisError where error.code == .connectionFailed {
                attempts += 1
                let delay = Backoff.reconnect.delay(attempt: attempts)
                guard ContinuousClock.now + delay < deadline else { throw error }
                try pause(delay)
            }
        }
        let slots = try commands.map { try $0.slot() }
        // A command without keys goes along with the keyed command before it (or the first one).
        var effective: [Int?] = []
        var previous = slots.lazy.compactMap { $0 }.first
        for slot in slots {
            if let slot { previous = slot }
            effective.append(slot ?? previous)
        }
        var groups: [(node: RedisConfiguration.Endpoint, indices: [Int])] = []
        for (index, slot) in effective.enumerated() {
            let node = slot.flatMap(topology.master(forSlot:)) ?? topology.anyMaster() ?? seeds[0]
            if let g = groups.firstIndex(where: { $0.node == node }) {
                groups[g].indices.append(index)
            } else {
                groups.append((node, [index]))
            }
        }
        var replies = [RESPValue?](repeating: nil, count: commands.count)
        var answeredBy = [RedisConfiguration.Endpoint?](repeating: nil, count: commands.count)
        for group in groups {
            let context: UnsafeMutablePointer<redisContext>
            do {
                context = try connectedContext(to: group.node, wait: .zero)
            } catch let error as RedisError where error.code == .connectionFailed {
                continue  // nothing sent: each of these finds its node on its own below
            }
            let got = try exchange(group.indices.map { commands[$0] }, on: context, timeoutMs: timeoutMs, scripts: scripts)
            for (index, reply) in zip(group.indices, got) {
                replies[index] = reply
                answeredBy[index] = group.node
            }
        }
        var result: [RESPValue] = []
        result.reserveCapacity(commands.count)
        // Where the last write before each command finally landed, when it was sent again: a
        // `WAIT` after it must ask that node, after that write.
        var resentTo: RedisConfiguration.Endpoint?
        for index in commands.indices {
            if let reply = replies[index], let node = answeredBy[index], ClusterRedirect(reply, from: node) == nil {
                if commands[index].name == "WAIT", let node = resentTo {
                    // Both nodes must confirm: the one that ran the writes that stayed, and the
                    // one a write was sent again to. Unreachable counts as not confirmed.
                    let again: RESPValue
                    do {
                        let context = try connectedContext(to: node, wait: .zero)
                        again = try exchange([commands[index]], on: context, timeoutMs: timeoutMs)[0]
                    } catch let error as RedisError where error.code != .closed {
                        again = .integer(0)
                    }
                    result.append(.integer(Int64(min(reply.int ?? 0, again.int ?? 0))))
                } else {
                    result.append(reply)
                }
                continue
            }
            let (reply, node) = try routed(
                commands[index],
                slot: effective[index],
                first: replies[index].map { ($0, answeredBy[index]!) },
                timeoutMs: timeoutMs,
                scripts: scripts,
                seeds: seeds,
                deadline: deadline
            )
            result.append(reply)
            if !Self.readOnly.contains(commands[index].name) { resentTo = node }
        }
        return result
    }

    /// Commands that write nothing: sending one of them again does not call for a `WAIT` again.
    static let readOnly: Set<String> = [
        "GET", "MGET", "EXISTS", "STRLEN", "TTL", "PTTL", "HGET", "HGETALL", "HMGET", "HKEYS", "HLEN", "HEXISTS",
        "LRANGE", "LLEN", "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZSCORE", "ZCARD", "ZCOUNT", "ZSCAN", "XRANGE",
        "XREVRANGE", "XLEN", "XPENDING", "XINFO", "XREAD", "TIME", "PING", "WAIT",
    ]

    /// One command, following redirects and waiting out failovers until it has a real reply;
    /// returns the reply and the node that gave it.
    private func routed(
        _ command: RedisCommand,
        slot: Int?,
        first: (reply: RESPValue, node: RedisConfiguration.Endpoint)?,
        timeoutMs: Int32,
        scripts: [RedisScript],
        seeds: [RedisConfiguration.Endpoint],
        deadline: ContinuousClock.Instant
    ) throws -> (RESPValue, RedisConfiguration.Endpoint) {
        let topology = topology!
        // A script is never sent with ASKING: on the importing node, keys it reads that have not
        // moved yet would look absent. It waits, as for TRYAGAIN, until the slot has moved.
        let isScript = command.name.hasPrefix("EVAL") || command.name.hasPrefix("FCALL")
        var target: RedisConfiguration.Endpoint?
        var asking = false
        var waits = 0
        var last = first
        var redirects = 0
        while true {
            if let (reply, node) = last {
                guard var redirect = ClusterRedirect(reply, from: node) else { return (reply, node) }
                if case .ask = redirect, isScript { redirect = .tryAgain }
                switch redirect {
                case .moved(let movedSlot, let endpoint):
                    topology.moved(slot: movedSlot, to: endpoint)
                    target = endpoint
                    asking = false
                case .ask(let endpoint):
                    target = endpoint
                    asking = true
                case .tryAgain, .clusterDown:
                    waits += 1
                    let delay = Backoff.cluster.delay(attempt: waits)
                    guard ContinuousClock.now + delay < deadline else { return (reply, node) }
                    try pause(delay)
                    if case .clusterDown = redirect { try? refreshSlotMap(seeds: seeds, deadline: deadline) }
                    target = nil
                }
                redirects += 1
                // A loop of redirects (a map that does not settle) ends as the reply it is.
                if redirects > 64 { return (reply, node) }
            }
            let node = target ?? slot.flatMap(topology.master(forSlot:)) ?? topology.anyMaster() ?? seeds[0]
            do {
                let context = try connectedContext(to: node, wait: .zero)
                if asking {
                    let replies = try exchange([RedisCommand("ASKING"), command], on: context, timeoutMs: timeoutMs, scripts: scripts)
                    last = (replies[1], node)
                    asking = false
                } else {
                    last = (try exchange([command], on: context, timeoutMs: timeoutMs, scripts: scripts)[0], node)
                }
            } catch let error as RedisError where error.code == .connectionFailed {
                // The node is down (a failover under way, or the map is old): read the map again
                // from any node that answers, and try again after a pause.
                waits += 1
                let delay = Backoff.cluster.delay(attempt: waits)
                guard ContinuousClock.now + delay < deadline else { throw error }
                try pause(delay)
                try? refreshSlotMap(seeds: seeds, deadline: deadline)
                target = nil
                asking = false
                last = nil
            }
        }
    }

    /// Reads the slot map from the first node that answers: known nodes first, then the seeds.
    func refreshSlotMap(seeds: [RedisConfiguration.Endpoint], deadline: ContinuousClock.Instant) throws {
        let topology = topology!
        if topology.hasMap && topology.refreshedRecently(within: .milliseconds(100)) { return }
        var lastError: (any Error)?
        var refused = 0
        let sources = topology.mapSources(seeds: seeds)
        for source in sources {
            do {
                let context = try connectedContext(to: source, wait: .zero)
                let reply = try exchange(
                    [RedisCommand("CLUSTER", "SLOTS")],
                    on: context,
                    timeoutMs: Int32(clamping: configuration.connectTimeout.roundedUpMilliseconds)
                )[0]
                let map = try RedisTopology.SlotMap(clusterSlots: try reply.throwingServerError(), asked: source)
                if map.masters.count != sources.count || !topology.hasMap {
                    logger.debug("cluster slot map read", metadata: ["from": "\(source)", "masters": "\(map.masters.count)"])
                }
                topology.install(map)
                // Sockets to nodes that serve no slots now (a demoted master, a replica asked for
                // the map) are closed; they would only hold a connection open.
                for endpoint in sockets.keys where !map.masters.contains(endpoint) { disconnect(endpoint) }
                return
            } catch let error as RedisError where error.code != .closed {
                if error.code == .authenticationFailed || error.message.contains("cluster support disabled") { refused += 1 }
                lastError = error
            }
        }
        // Every node answered and refused (a wrong password, a server that is not a cluster
        // node): a configuration error to report now, not an outage to wait out.
        if refused == sources.count, let error = lastError as? RedisError {
            throw RedisError(
                error.code == .serverError ? .invalidConfiguration : error.code,
                "Redis Cluster at \(sources.map(\.description).joined(separator: ",")): \(error.message)"
            )
        }
        throw RedisError(
            .connectionFailed,
            "no node of the Redis Cluster answered CLUSTER SLOTS (asked \(sources.count)): \((lastError as? RedisError)?.message ?? "no nodes")"
        )
    }
}

extension Backoff {
    /// Between tries while a cluster or Sentinel settles after a failover or a slot migration.
    static let cluster = Backoff(base: .milliseconds(20), cap: .milliseconds(500))
}
