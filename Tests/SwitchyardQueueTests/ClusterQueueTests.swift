import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

/// Worker processes on the shared Redis Cluster: queues on different shards at once, and a
/// queue whose slot moves to another master while its workers run.
@Suite("Worker processes on a Redis Cluster")
struct ClusterQueueTests {
    static func queue(_ name: String, on cluster: RedisCluster) -> (RedisConnectionPool, JobQueue) {
        var redis = cluster.configuration
        redis.reconnectWait = .seconds(10)
        let pool = RedisConnectionPool(configuration: redis)
        return (pool, JobQueue(configuration: QueueConfiguration(name: name), redis: pool))
    }

    static let workerArguments = ["--executor", "echo", "--concurrency", "8", "--log-level", "warning"]

    @Test func queuesOnDifferentShardsRunAtOnce() async throws {
        let cluster = try await offThePool { try SharedCluster.get() }
        let masters = try await cluster.masters()
        // One queue per master: names whose slots fall on each of them.
        var names: [Int: String] = [:]
        var n = 0
        let tag = UUID().uuidString.prefix(6).lowercased()
        while names.count < masters.count {
            let name = "shard-\(tag)-\(n)"
            n += 1
            let owner = try await cluster.master(ofSlot: RedisClusterSlot.of(name))
            if names[owner] == nil { names[owner] = name }
        }
        var pools: [RedisConnectionPool] = []
        defer { for p in pools { p.shutDown() } }
        var queues: [JobQueue] = []
        var workers: [WorkerProcess] = []
        defer { for w in workers { _ = w.terminate() } }
        for name in names.values.sorted() {
            let (pool, queue) = Self.queue(name, on: cluster)
            pools.append(pool)
            queues.append(queue)
            try await queue.ensureGroups()
            workers.append(try WorkerProcess(redisURL: cluster.url, id: "\(name)-w", arguments: ["--queue", name] + Self.workerArguments))
        }
        var pushed: [[Job]] = []
        for queue in queues {
            let jobs = (0..<300).map { chatJob("job \($0)", metadata: ["echo.sleep_ms": "2"]) }
            _ = try await queue.push(jobs)
            pushed.append(jobs)
        }
        for (queue, jobs) in zip(queues, pushed) {
            #expect(try await eventually(timeout: .seconds(90)) { (try await queue.status().counters["succeeded"] ?? 0) >= jobs.count })
            let results = try await queue.results(of: jobs.map(\.id))
            #expect(results.allSatisfy { $0?.status == .succeeded && $0?.worker == "\(queue.configuration.name)-w" })
            #expect(try await queue.status().counters["succeeded"] == jobs.count)
        }
        // Each queue's keys live on its own master.
        for (owner, name) in names {
            let node = cluster.nodeConnection(owner)
            defer { node.close() }
            #expect(try await node.send("EXISTS", QueueKeys(queue: name).stats).int == 1)
        }
    }

    @Test func aQueueWhoseSlotMovesMidRunLosesNothing() async throws {
        let cluster = try await offThePool { try SharedCluster.get() }
        let name = "moving-" + UUID().uuidString.prefix(6).lowercased()
        let (pool, queue) = Self.queue(name, on: cluster)
        defer { pool.shutDown() }
        try await queue.ensureGroups()
        let workers = try (0..<2).map {
            try WorkerProcess(redisURL: cluster.url, id: "\(name)-\($0)", arguments: ["--queue", name] + Self.workerArguments)
        }
        defer { for w in workers { _ = w.terminate() } }
        var jobs = (0..<1500).map { chatJob("job \($0)", metadata: ["echo.sleep_ms": "5"]) }
        // And jobs that come due while the slot moves: the promote script runs through it.
        let now = Date().timeIntervalSince1970
        for i in 0..<300 { jobs[i * 5].notBefore = now + 1 + Double(i) / 50 }
        _ = try await queue.push(jobs)
        #expect(try await eventually(timeout: .seconds(60)) { (try await queue.status().counters["succeeded"] ?? 0) >= 200 })
        let slot = RedisClusterSlot.of(name)
        let from = try await cluster.master(ofSlot: slot)
        let to = try #require(try await cluster.masters().first { $0 != from })
        // Key by key, with pauses: workers meet ASK and TRYAGAIN while the slot is half moved.
        try await cluster.migrate(slot: slot, to: to, batch: 5, pause: .milliseconds(10))
        #expect(try await cluster.master(ofSlot: slot) == to)
        let later = (0..<200).map { chatJob("later \($0)", metadata: ["echo.sleep_ms": "20"]) }
        _ = try await queue.push(later)
        let all = jobs + later
        #expect(try await eventually(timeout: .seconds(90)) { (try await queue.status().counters["succeeded"] ?? 0) >= all.count })
        let results = try await queue.results(of: all.map(\.id))
        #expect(results.allSatisfy { $0?.status == .succeeded })
        // Exactly one final result each: nothing lost, nothing counted twice.
        let status = try await queue.status()
        #expect(status.counters["succeeded"] == all.count && status.counters["pushed"] == all.count)
        #expect(status.lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 })
        // Both workers consume from the slot's new master.
        #expect(Set(results.suffix(later.count).compactMap { $0?.worker }).count == 2)
        let node = cluster.nodeConnection(to)
        defer { node.close() }
        #expect(try await node.send("EXISTS", queue.keys.stats).int == 1)
    }

    @Test func scriptsWaitWhileTheQueueSlotIsHalfMovedAndLoseNothing() async throws {
        let cluster = try await offThePool { try SharedCluster.get() }
        let name = "half-" + UUID().uuidString.prefix(6).lowercased()
        var redis = cluster.configuration
        redis.reconnectWait = .milliseconds(600)
        let pool = RedisConnectionPool(configuration: redis)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: pool)
        try await queue.ensureGroups()
        var jobs = (0..<3).map { chatJob("due \($0)") }
        for i in jobs.indices { jobs[i].notBefore = Date().timeIntervalSince1970 + 0.3 }
        _ = try await queue.push(jobs)
        try await Task.sleep(for: .milliseconds(400))
        let slot = RedisClusterSlot.of(name)
        let source = try await cluster.master(ofSlot: slot)
        let target = try #require(try await cluster.masters().first { $0 != source })
        let migration = try #require(try await cluster.beginMigration(slot: slot, to: target))
        // Half moved: the promote script would touch keys that may already be on the other node,
        // so it answers TRYAGAIN before writing anything; the client waits, then gives up.
        let refused = await #expect(throws: RedisError.self) { _ = try await queue.promoteDue() }
        #expect(refused?.message.hasPrefix("TRYAGAIN") == true)
        #expect(try await queue.status().delayed == 3)
        try await cluster.completeMigration(migration)
        #expect(try await queue.promoteDue().moved == 3)
        #expect(Set(try await queue.take(consumer: "a", count: 10).map(\.jobID)) == Set(jobs.map(\.id)))
    }
}
