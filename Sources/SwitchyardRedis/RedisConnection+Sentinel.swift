import CHiredis

/// Sentinel: commands go to the master that the sentinels name.
///
/// The master is asked for with `SENTINEL get-master-addr-by-name` and checked with `ROLE` when a
/// socket opens (a sentinel's answer lags a failover for a moment). It is asked for again when the
/// master cannot be reached, when it answers `READONLY` (it was demoted: nothing was written, so
/// the commands are sent again to the new master), and when the sentinels announce
/// `+switch-master` (`RedisSentinelWatch`), which also closes sockets to the old master.
extension RedisConnection {
    func sentinelExchange(
        _ commands: [RedisCommand],
        timeoutMs: Int32,
        scripts: [RedisScript],
        sentinel: RedisConfiguration.Sentinel
    ) throws -> [RESPValue] {
        let topology = topology!
        let deadline = ContinuousClock.now + max(configuration.reconnectWait, .milliseconds(500))
        var waits = 0
        // Replies kept from a node that turned out to be demoted part way through the batch.
        var done: [RESPValue] = []
        while true {
            var master: RedisConfiguration.Endpoint?
            do {
                let (endpoint, generation) = try sentinelMaster(sentinel)
                master = endpoint
                // Sockets to a former master are closed: nothing more goes there.
                for other in sockets.keys where other != endpoint { disconnect(other) }
                let context = try connectedContext(to: endpoint, wait: .zero, generation: generation)
                let replies = try exchange(Array(commands[done.count...]), on: context, timeoutMs: timeoutMs, scripts: scripts)
                if let first = replies.firstIndex(where: { $0.errorMessage?.hasPrefix("READONLY") == true }) {
                    // Demoted while the batch ran: what came before was done; from the first
                    // refused write on, send again to the new master.
                    done += replies[..<first]
                    disconnect(endpoint)
                    throw RedisError(.connectionFailed, "\(endpoint) was demoted to a replica (READONLY); asking the sentinels again")
                }
                return done + replies
            } catch let error as RedisError where error.code == .connectionFailed {
                if let master { topology.forgetMaster(master) }
                waits += 1
                let delay = Backoff.cluster.delay(attempt: waits)
                // Part of the batch already ran on the demoted master: not "nothing was sent".
                guard ContinuousClock.now + delay < deadline else {
                    throw done.isEmpty ? error : RedisError(.connectionLost, "\(error.message) (\(done.count) commands had run)")
                }
                if waits == 1 { logger.warning("Redis master not reachable: \(error.message); asking the sentinels") }
                try pause(delay)
            }
        }
    }

    /// The master as last named, or asked of each sentinel in turn.
    private func sentinelMaster(_ sentinel: RedisConfiguration.Sentinel) throws -> (RedisConfiguration.Endpoint, UInt64) {
        let topology = topology!
        if let known = topology.sentinelMaster { return known }
        let endpoint = try Self.askSentinels(sentinel, using: self)
        return (endpoint, topology.setMaster(endpoint))
    }

    /// Asks each sentinel in turn for the master's address.
    static func askSentinels(_ sentinel: RedisConfiguration.Sentinel, using connection: RedisConnection) throws -> RedisConfiguration.Endpoint {
        var reasons: [String] = []
        var refusedPasswords = 0
        let handshake = Handshake(username: sentinel.username, password: sentinel.password, clientName: connection.configuration.clientName)
        for address in sentinel.sentinels {
            let context: UnsafeMutablePointer<redisContext>
            do {
                context = try connection.openContext(to: address, handshake: handshake)
            } catch let error as RedisError where error.code == .connectionFailed || error.code == .authenticationFailed {
                if error.code == .authenticationFailed { refusedPasswords += 1 }
                reasons.append(error.message)
                continue
            }
            defer { redisFree(context) }
            let reply: RESPValue
            do {
                reply = try connection.exchange(
                    [RedisCommand("SENTINEL", "get-master-addr-by-name", sentinel.masterName)],
                    on: context,
                    timeoutMs: Int32(clamping: connection.configuration.connectTimeout.roundedUpMilliseconds)
                )[0]
            } catch let error as RedisError {
                reasons.append("sentinel \(address): \(error.message)")
                continue
            }
            if let message = reply.errorMessage {
                reasons.append("sentinel \(address): \(message)")
                continue
            }
            guard let fields = reply.array, fields.count == 2, let host = fields[0].string, let port = fields[1].int else {
                reasons.append("sentinel \(address) knows no master named '\(sentinel.masterName)'")
                continue
            }
            return .tcp(host: host, port: port)
        }
        // Every sentinel refused the password: a configuration error, not an outage to wait out.
        throw RedisError(
            refusedPasswords == sentinel.sentinels.count ? .authenticationFailed : .connectionFailed,
            "no sentinel named the master '\(sentinel.masterName)': " + reasons.joined(separator: "; ")
        )
    }
}
