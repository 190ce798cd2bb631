import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport

extension QueueBench {
    /// The same runs on a private Redis Cluster beside the single server: one queue (throughput,
    /// dispatch latency), three queues with a worker each (on one server; on three shards), and the
    /// cluster with `--durability replicated` beside acknowledged. Prints a table; returns the JSON.
    func compareWithCluster(singlePool: RedisConnectionPool, singleURL: String) async throws -> [String: Any] {
        let cluster = try RedisCluster()
        defer { cluster.stopAll() }
        var configuration = cluster.configuration
        configuration.poolSize = 4
        configuration.reconnectWait = .seconds(10)
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        let n = clusterJobs
        let latencySamples = max(200, samples / 2)

        let single = try await measure(pool: singlePool, workerRedisURL: singleURL, jobs: n, samples: latencySamples)
        let onCluster = try await measure(pool: pool, workerRedisURL: cluster.url, jobs: n, samples: latencySamples)
        let durable = try await measure(
            pool: pool,
            workerRedisURL: cluster.url,
            jobs: n,
            samples: latencySamples,
            durability: .replicated(replicas: 1, timeout: .seconds(1))
        )
        let singleShards = try await shards(
            pool: singlePool,
            url: singleURL,
            names: ["s0", "s1", "s2"].map { "bench-\($0)-\(UUID().uuidString.prefix(4))" }
        )
        let clusterShards = try await shards(pool: pool, url: cluster.url, names: try await oneQueuePerMaster(cluster))

        print("")
        print("Redis Cluster (3 masters + 3 replicas) beside one server, \(n) no-op jobs a run, one after another in one run")
        print(pad("measurement", 44) + pad("one server", 16) + pad("cluster", 16) + "ratio")
        printSideBySide("push rate (pipelined)", single.pushPerSecond, onCluster.pushPerSecond, "jobs/s")
        printSideBySide("processing rate, 1 queue", single.processingPerSecond, onCluster.processingPerSecond, "jobs/s")
        printSideBySide("dispatch latency p50", single.p50 * 1000, onCluster.p50 * 1000, "µs", note: "   (target <= 1.3x)")
        printSideBySide("dispatch latency p99", single.p99 * 1000, onCluster.p99 * 1000, "µs")
        printSideBySide("Redis CPU per job (all masters)", single.redisCPUPerJob, onCluster.redisCPUPerJob, "µs")
        printSideBySide("processing rate, 3 queues x 1 worker", singleShards.rate, clusterShards.rate, "jobs/s")
        print("")
        print("--durability replicated (WAIT 1 after each push chunk and finish) on the cluster, beside acknowledged")
        print(pad("measurement", 44) + pad("acknowledged", 16) + pad("replicated", 16) + "ratio")
        printSideBySide("push rate (pipelined)", onCluster.pushPerSecond, durable.pushPerSecond, "jobs/s")
        printSideBySide("processing rate, 1 queue", onCluster.processingPerSecond, durable.processingPerSecond, "jobs/s")
        printSideBySide("dispatch latency p50", onCluster.p50 * 1000, durable.p50 * 1000, "µs")
        printSideBySide("dispatch latency p99", onCluster.p99 * 1000, durable.p99 * 1000, "µs")
        func figures(_ f: Figures) -> [String: Any] {
            [
                "push_jobs_per_second": f.pushPerSecond, "processing_jobs_per_second": f.processingPerSecond,
                "dispatch_p50_ms": f.p50, "dispatch_p99_ms": f.p99, "redis_cpu_us_per_job": f.redisCPUPerJob, "samples": f.samples,
            ]
        }
        return [
            "jobs": n,
            "single": figures(single),
            "cluster": figures(onCluster),
            "cluster_replicated": figures(durable),
            "dispatch_p50_ratio": onCluster.p50 / max(single.p50, 1e-9),
            "three_queues_single_jobs_per_second": singleShards.rate,
            "three_queues_cluster_jobs_per_second": clusterShards.rate,
        ]
    }

    /// Three queue names whose slots fall on three different masters.
    func oneQueuePerMaster(_ cluster: RedisCluster) async throws -> [String] {
        var names: [Int: String] = [:]
        var i = 0
        let tag = UUID().uuidString.prefix(4)
        while names.count < 3 {
            let name = "bench-shard-\(tag)-\(i)"
            i += 1
            let owner = try await cluster.master(ofSlot: RedisClusterSlot.of(name))
            if names[owner] == nil { names[owner] = name }
        }
        return names.values.sorted()
    }

    /// `clusterJobs / 3` jobs on each queue, one worker process each, all at once: total jobs per
    /// second from the first start to the last finish.
    func shards(pool: RedisConnectionPool, url: String, names: [String]) async throws -> (rate: Double, jobs: Int) {
        let perQueue = max(1000, clusterJobs / names.count)
        var queues: [JobQueue] = []
        var batches: [[Job]] = []
        for name in names {
            let queue = JobQueue(configuration: QueueConfiguration(name: name), redis: pool)
            try await queue.ensureGroups()
            let jobs = (0..<perQueue).map { i in
                Job(kind: .chat, model: "noop", input: JobInput(messages: [ChatMessage(role: "user", content: "job \(i)")]), maxAttempts: 3)
            }
            _ = try await queue.push(jobs)
            queues.append(queue)
            batches.append(jobs)
        }
        let workers = try names.map { name in
            try WorkerProcess(
                redisURL: url,
                id: "bench-\(name)",
                arguments: ["--queue", name, "--executor", "noop", "--concurrency", String(concurrency), "--log-level", "warning"]
            )
        }
        defer { for w in workers { _ = w.terminate() } }
        for queue in queues {
            while (try await queue.status().counters["succeeded"] ?? 0) < perQueue { try await Task.sleep(for: .milliseconds(100)) }
        }
        var starts: [Double] = []
        var finishes: [Double] = []
        for (queue, jobs) in zip(queues, batches) {
            let results = try await queue.results(of: jobs.map(\.id)).compactMap { $0 }
            starts += results.compactMap(\.timings.started)
            finishes += results.compactMap(\.timings.finished)
        }
        let total = perQueue * names.count
        return (Double(total) / max((finishes.max() ?? 0) - (starts.min() ?? 0), 1e-6), total)
    }
}
