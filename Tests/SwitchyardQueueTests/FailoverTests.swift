import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// A Redis master dies (kill -9) while three worker processes run 2,000 jobs and more are being
/// pushed: on a Redis Cluster (its replica takes over) and behind Sentinel (the sentinels promote
/// the replica). Counted: jobs lost (no final result), jobs that did not succeed, and which
/// workers consumed after the failover.
@Suite("Failover with workers running: Redis Cluster and Sentinel", .serialized)
struct FailoverTests {
    struct Counts: CustomStringConvertible {
        var lost = 0
        var notSucceeded = 0
        var workersAfterFailover: Set<String> = []
        var description: String { "lost \(lost), not succeeded \(notSucceeded), workers after the failover \(workersAfterFailover.sorted())" }
    }

    /// Runs the scenario: 1,000 jobs, then (once 300 are done) the failover while 1,000 more are
    /// pushed, then the old master back (as a replica), then 300 more jobs that must reach every
    /// worker. `durability` is the workers' and the pusher's `--durability`.
    static func run(
        url: String,
        durability: Durability,
        failover: @escaping @Sendable () async throws -> Void,
        recover: @escaping @Sendable () async throws -> Void
    ) async throws -> Counts {
        var redis = try RedisConfiguration(url: url)
        redis.reconnectWait = .seconds(20)
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        var configuration = QueueConfiguration(name: "failover")
        configuration.lease = .seconds(2)
        configuration.durability = durability
        let queue = JobQueue(configuration: configuration, redis: pool)
        try await queue.ensureGroups()
        let mode = durability == .acknowledged ? "acknowledged" : "replicated"
        let args = [
            "--queue", "failover", "--executor", "echo", "--lease", "2s", "--concurrency", "8", "--log-level", "warning",
            "--durability", mode,
        ]
        let workers = try (0..<3).map {
            try WorkerProcess(redisURL: url, id: "fo\($0)", arguments: args, environment: ["SWITCHYARD_REDIS_RECONNECT_WAIT_MS": "20000"])
        }
        defer { for w in workers { _ = w.terminate(timeout: .seconds(20)) } }

        // A push cut short by the failover is pushed again whole: ids already queued are not queued twice.
        @Sendable func pushAll(_ jobs: [Job]) async throws {
            let deadline = ContinuousClock.now + .seconds(90)
            while true {
                do {
                    _ = try await queue.push(jobs, chunkSize: 100)
                    return
                } catch {
                    if ContinuousClock.now > deadline { throw error }
                    try await Task.sleep(for: .milliseconds(300))
                }
            }
        }
        let job = { (i: Int) in chatJob("job \(i)", maxAttempts: 20, metadata: ["echo.sleep_ms": "10"]) }
        let first = (0..<1000).map(job)
        let second = (1000..<2000).map(job)
        let third = (2000..<2300).map(job)
        try await pushAll(first)
        #expect(try await eventually(timeout: .seconds(60)) { (try await queue.status().counters["succeeded"] ?? 0) >= 300 })
        let pushing = Task { try await pushAll(second) }
        try await failover()
        // The old master back, as a replica: until then a replicated push has no replica to confirm it.
        try await recover()
        try await pushing.value
        try await pushAll(third)
        let all = first + second + third
        var results: [JobResult?] = []
        _ = try await eventually(timeout: .seconds(150)) {
            results = try await queue.results(of: all.map(\.id))
            return results.allSatisfy { $0 != nil }
        }
        var counts = Counts()
        counts.lost = results.filter { $0 == nil }.count
        counts.notSucceeded = results.compactMap { $0 }.filter { $0.status != .succeeded }.count
        counts.workersAfterFailover = Set(results.suffix(third.count).compactMap { $0?.worker })
        return counts
    }

    @Test(arguments: [Durability.replicated(replicas: 1, timeout: .seconds(1)), .acknowledged])
    func aClusterMasterKilledMidRun(durability: Durability) async throws {
        let cluster = try await offThePool { try RedisCluster() }
        let slot = RedisClusterSlot.of("failover")
        let victim = try await cluster.master(ofSlot: slot)
        let counts = try await Self.run(
            url: cluster.url,
            durability: durability,
            failover: {
                try await offThePool {
                    cluster.kill(port: victim)
                    try cluster.waitUntilHealthy(timeout: .seconds(30))
                }
            },
            recover: { try await offThePool { try cluster.restart(port: victim) } }
        )
        #expect(try await cluster.master(ofSlot: slot) != victim)
        print("cluster failover, durability \(durability): \(counts)")
        if durability != .acknowledged {
            #expect(counts.lost == 0)
        }
        #expect(counts.notSucceeded == 0)
        #expect(counts.workersAfterFailover.count == 3, "workers consuming after the failover: \(counts.workersAfterFailover)")
    }

    @Test(arguments: [Durability.replicated(replicas: 1, timeout: .seconds(1)), .acknowledged])
    func aSentinelMasterKilledMidRun(durability: Durability) async throws {
        let sentinels = try await offThePool { try RedisSentinels() }
        let victim = try #require(sentinels.masterPort())
        let counts = try await Self.run(
            url: sentinels.url(),
            durability: durability,
            failover: {
                _ = try await offThePool {
                    sentinels.kill(port: victim)
                    return try sentinels.waitForFailover(awayFrom: victim)
                }
            },
            recover: { try await offThePool { try sentinels.restart(port: victim) } }
        )
        print("sentinel failover, durability \(durability): \(counts)")
        if durability != .acknowledged {
            #expect(counts.lost == 0)
        }
        #expect(counts.notSucceeded == 0)
        #expect(counts.workersAfterFailover.count == 3, "workers consuming after the failover: \(counts.workersAfterFailover)")
    }
}
