import Logging
import Synchronization

/// Listens to the sentinels' `+switch-master` announcements and tells the topology, so every
/// connection moves to the new master on its next command instead of waiting for the old one to
/// fail. One per deployment, started by the first connection that uses it; it runs for the life
/// of the process, moving to the next sentinel when one goes away.
enum RedisSentinelWatch {
    private static let started = Mutex<Set<RedisConfiguration.Deployment>>([])

    static func start(
        for topology: RedisTopology,
        sentinel: RedisConfiguration.Sentinel,
        configuration: RedisConfiguration,
        logger: Logger
    ) {
        let first = started.withLock { $0.insert(topology.deployment).inserted }
        guard first else { return }
        Task.detached {
            var failures = 0
            var index = 0
            while true {
                let address = sentinel.sentinels[index % sentinel.sentinels.count]
                index += 1
                var sentinelConfiguration = configuration
                sentinelConfiguration.deployment = .standalone
                sentinelConfiguration.endpoint = address
                sentinelConfiguration.username = sentinel.username
                sentinelConfiguration.password = sentinel.password
                sentinelConfiguration.database = 0
                sentinelConfiguration.reconnectWait = .zero
                let connection = RedisConnection(configuration: sentinelConfiguration, logger: logger)
                do {
                    _ = try await connection.send(RedisCommand("SUBSCRIBE", "+switch-master"))
                    failures = 0
                    while true {
                        let message: RESPValue
                        do {
                            message = try await connection.receive(timeout: .after(.seconds(60)))
                        } catch let error as RedisError where error.code == .timeout {
                            break  // a quiet minute: subscribe again, in case the socket died silently
                        }
                        // ["message", "+switch-master", "<name> <old ip> <old port> <new ip> <new port>"]
                        guard let items = message.array, items.count == 3, let text = items[2].string else { continue }
                        let fields = text.split(separator: " ")
                        guard fields.count == 5, fields[0] == sentinel.masterName, let port = Int(fields[4]) else { continue }
                        let master = RedisConfiguration.Endpoint.tcp(host: String(fields[3]), port: port)
                        logger.notice("Sentinel switched the master", metadata: ["master": "\(master)", "name": "\(fields[0])"])
                        topology.setMaster(master)
                    }
                } catch {
                    failures += 1
                    if failures == sentinel.sentinels.count {
                        logger.warning("cannot subscribe to any sentinel's +switch-master: \(error)")
                    }
                }
                connection.close()
                try? await Task.sleep(for: Backoff(base: .milliseconds(100), cap: .seconds(5)).delay(attempt: max(1, failures)))
            }
        }
    }
}
