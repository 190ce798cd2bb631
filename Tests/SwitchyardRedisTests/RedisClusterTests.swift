import Foundation
import SwitchyardTestSupport
import Testing

@testable import SwitchyardRedis

@Suite("Redis Cluster and Sentinel URLs and slots")
struct RedisClusterUnitTests {
    @Test func slotsFollowRedisClusterRules() {
        // Vectors from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        #expect(RedisClusterSlot.of("123456789") == 0x31C3 & 16383)
        #expect(RedisClusterSlot.of("foo") == 12182)
        #expect(RedisClusterSlot.of("{user1000}.following") == RedisClusterSlot.of("{user1000}.followers"))
        #expect(RedisClusterSlot.of("foo{}{bar}") == RedisClusterSlot.of("foo{}{bar}"))
        #expect(RedisClusterSlot.of("foo{}{bar}") != RedisClusterSlot.of("bar"))  // an empty tag hashes the whole key
        #expect(RedisClusterSlot.of("sy:{q}:lane:high") == RedisClusterSlot.of("sy:{q}:stats"))
    }

    @Test func commandsNameTheirKeys() throws {
        func keys(_ c: RedisCommand) -> [String] { c.keys.map { String(decoding: $0, as: UTF8.self) } }
        #expect(keys(RedisCommand("GET", "a")) == ["a"])
        #expect(keys(RedisCommand("MGET", "a", "b")) == ["a", "b"])
        #expect(keys(RedisCommand("EVALSHA", "sha", 2, "k1", "k2", "arg")) == ["k1", "k2"])
        #expect(keys(RedisCommand("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "s1", "s2", ">", ">")) == ["s1", "s2"])
        #expect(keys(RedisCommand("XINFO", "GROUPS", "s")) == ["s"])
        #expect(keys(RedisCommand("PING")).isEmpty && keys(RedisCommand("SCRIPT", "LOAD", "x")).isEmpty)
        #expect(try RedisCommand("MGET", "sy:{a}:x", "sy:{a}:y").slot() == RedisClusterSlot.of("a"))
        // Keys in different slots are refused before anything is sent, naming them.
        let error = #expect(throws: RedisError.self) { try RedisCommand("MGET", "sy:{a}:x", "sy:{b}:y").slot() }
        #expect(error?.code == .crossSlot && error?.message.contains("sy:{b}:y") == true)
    }

    @Test func clusterAndSentinelURLs() throws {
        let cluster = try RedisConfiguration(url: "redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002")
        #expect(
            cluster.deployment
                == .cluster(seeds: [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 6379), .tcp(host: "::1", port: 7002)])
        )
        #expect(cluster.username == "u" && cluster.password == "p@ss")
        #expect(cluster.redactedURL == "redis+cluster://u:***@10.0.0.1:7000,10.0.0.2:6379,[::1]:7002")
        let sentinel = try RedisConfiguration(url: "redis+sentinel://:data@s1,s2:26380/mymaster/2?sentinel_password=sp")
        guard case .sentinel(let s) = sentinel.deployment else {
            Issue.record("not a sentinel deployment")
            return
        }
        #expect(s.sentinels == [.tcp(host: "s1", port: 26379), .tcp(host: "s2", port: 26380)])
        #expect(s.masterName == "mymaster" && s.password == "sp" && sentinel.password == "data" && sentinel.database == 2)
        #expect(!sentinel.redactedURL.contains("sp") && !sentinel.redactedURL.contains("data") && !sentinel.description.contains("sp"))
        let env = try RedisConfiguration.fromEnvironment([
            "SWITCHYARD_REDIS_URL": "redis+sentinel://s1/m", "SWITCHYARD_REDIS_SENTINEL_PASSWORD": "from-env",
        ])
        #expect(env.deployment == .sentinel(.init(sentinels: [.tcp(host: "s1", port: 26379)], masterName: "m", password: "from-env")))
        // Bad input names the problem.
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://a:1/3") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+sentinel://a:1") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://a:x") }
    }
}

@Suite("Redis Cluster URL pointing at a server that is not one")
struct RedisClusterMisconfigurationTests {
    @Test func aServerWithoutClusterSupportIsReportedAtOnce() async throws {
        let server = try RedisServer()
        var configuration = try RedisConfiguration(url: "redis+cluster://127.0.0.1:\(server.port)")
        configuration.reconnectWait = .seconds(30)
        let connection = RedisConnection(configuration: configuration)
        defer { connection.close() }
        let error = await #expect(throws: RedisError.self) { try await connection.send("GET", "k") }
        // A configuration error, named as such, not an outage waited out (`connectionFailed`
        // after 30 s).
        #expect(error?.code == .invalidConfiguration && error?.message.contains("cluster support disabled") == true)
    }
}

@Suite("Redis layer against a real Redis Cluster (3 masters, 3 replicas)")
struct RedisClusterTests {
    static func configuration(_ cluster: RedisCluster) -> RedisConfiguration {
        var c = cluster.configuration
        c.reconnectWait = .seconds(15)
        return c
    }

    @Test func keysSpreadOverTheMastersAndPipelinesKeepTheirOrder() async throws {
        let cluster = try await offThePool { try RedisCluster() }
        let pool = RedisConnectionPool(configuration: Self.configuration(cluster))
        defer { pool.shutDown() }
        // Only a seed that is not the first: the rest is learned from CLUSTER SLOTS.
        let keys = (0..<300).map { "key:\($0)" }
        let replies = try await pool.pipeline(keys.map { RedisCommand("SET", $0, $0 + "!") } + keys.map { RedisCommand("GET", $0) })
        #expect(replies.count == 600)
        #expect(replies[300...].map(\.string) == keys.map { $0 + "!" })
        var perMaster: [Int] = []
        for port in try await cluster.masters() {
            let node = cluster.nodeConnection(port)
            perMaster.append(try await node.send("DBSIZE").int ?? 0)
            node.close()
        }
        #expect(perMaster.count == 3 && perMaster.allSatisfy { $0 > 50 } && perMaster.reduce(0, +) == 300)
        // Scripts load on each node the first time it lacks them.
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        for key in keys.prefix(30) { #expect(try await pool.evaluate(script, keys: [key + ":n"]).int == 1) }
        // A multi-key command across slots never leaves the process.
        await #expect(throws: RedisError.self) { try await pool.send(RedisCommand("MGET", "a", "b")) }
        #expect(try await pool.send(RedisCommand("MGET", "{t}a", "{t}b")).array?.count == 2)
    }

    @Test func aSlotMovedMidRunIsFollowedWithoutLosingWrites() async throws {
        let cluster = try await offThePool { try RedisCluster() }
        let pool = RedisConnectionPool(configuration: Self.configuration(cluster))
        defer { pool.shutDown() }
        let slot = RedisClusterSlot.of("moving")
        // Many keys in the slot, so the migration takes steps and clients meet ASK and TRYAGAIN.
        _ = try await pool.pipeline((0..<400).map { RedisCommand("SET", "{moving}:\($0)", 0) })
        let from = try await cluster.master(ofSlot: slot)
        let to = try #require(try await cluster.masters().first { $0 != from })
        let writer = Task {
            var done = 0
            for round in 0..<60 {
                for i in stride(from: round % 4, to: 400, by: 4) {
                    try await pool.send("INCR", "{moving}:\(i)")
                    done += 1
                }
                _ = try await pool.pipeline([RedisCommand("SET", "{moving}:new\(round)", round), RedisCommand("GET", "{moving}:0")])
            }
            return done
        }
        try await cluster.migrate(slot: slot, to: to, batch: 20, pause: .milliseconds(30))
        let writes = try await writer.value
        #expect(try await cluster.master(ofSlot: slot) == to)
        // Every increment landed exactly once.
        let values = try await pool.pipeline((0..<400).map { RedisCommand("GET", "{moving}:\($0)") }).compactMap(\.int)
        #expect(values.reduce(0, +) == writes)
        #expect(try await pool.send("GET", "{moving}:new59").int == 59)
    }

    @Test func aKilledMasterIsReplacedAndCommandsCarryOn() async throws {
        let cluster = try await offThePool { try RedisCluster() }
        let pool = RedisConnectionPool(configuration: Self.configuration(cluster))
        defer { pool.shutDown() }
        let blocking = RedisConnection(configuration: Self.configuration(cluster))
        defer { blocking.close() }
        try await pool.send("SET", "{victim}:k", "before")
        let victim = try await cluster.master(ofSlot: RedisClusterSlot.of("victim"))
        try await offThePool { cluster.kill(port: victim) }
        // The command waits through the failover (node timeout, election) and lands on the replica.
        try await pool.send("SET", "{victim}:k2", "after")
        #expect(try await pool.send("GET", "{victim}:k2").string == "after")
        #expect(try await cluster.master(ofSlot: RedisClusterSlot.of("victim")) != victim)
        // A dedicated connection's blocking read goes to the new master too.
        try await pool.send("XADD", "{victim}:stream", "*", "f", "v")
        let read = try await blocking.send(RedisCommand("XREAD", "COUNT", 1, "BLOCK", 1000, "STREAMS", "{victim}:stream", "0-0"))
        #expect(read.array?.count == 1)
    }
}

@Suite("Redis layer behind Sentinel (master, replica, 3 sentinels)")
struct RedisSentinelTests {
    @Test func theMasterIsFoundAndFollowedThroughAFailover() async throws {
        let sentinels = try await offThePool { try RedisSentinels(sentinelPassword: "sentinel-secret") }
        var configuration = try RedisConfiguration(url: sentinels.url(password: "sentinel-secret"))
        configuration.reconnectWait = .seconds(20)
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        try await pool.send("SET", "k", "before")
        let first = try #require(sentinels.masterPort())
        try await offThePool { sentinels.kill(port: first) }
        // The write waits for the sentinels to promote the replica, then lands there.
        try await pool.send("SET", "k2", "after")
        #expect(try await pool.send("GET", "k2").string == "after")
        let second = try await offThePool { try sentinels.waitForFailover(awayFrom: first) }
        #expect(second == sentinels.dataPorts.first { $0 != first })
        #expect(try await pool.send("ROLE").array?.first?.string == "master")
        // A wrong sentinel password is refused with a clear error, not a hang.
        var wrong = try RedisConfiguration(url: sentinels.url(password: "nope"))
        wrong.reconnectWait = .milliseconds(300)
        let denied = RedisConnection(configuration: wrong)
        defer { denied.close() }
        let refused = await #expect(throws: RedisError.self) { try await denied.send("PING") }
        #expect(refused?.code == .authenticationFailed && refused?.message.contains("nope") == false)
    }
}
