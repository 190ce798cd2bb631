import ArgumentParser
import Foundation
import SwitchyardRedis
import SwitchyardTestSupport

@main
struct SwitchyardBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard-bench",
        abstract: "Benchmarks that print figures side by side with a reference tool, as ratios.",
        discussion: "Build with -c release: swift run -c release switchyard-bench redis",
        subcommands: [
            RedisBench.self, QueueBench.self, HTTPBench.self, ModelsBench.self, CacheBench.self, ResilienceBench.self, CoordinatorBench.self,
            SoakBench.self,
        ]
    )
}

/// Latency and throughput of the Redis layer against redis-benchmark on the same server, in one run.
struct RedisBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "redis",
        abstract: "Round-trip latency and pipelined throughput of the Redis layer against redis-benchmark."
    )

    @Option(help: "Requests per measurement.")
    var requests = 20000

    @Option(help: "Pipeline depth for the pipelined measurements.")
    var depth = 16

    @Option(help: "Alternating rounds of each measurement; the median round is reported.")
    var rounds = 3

    @Option(help: "Use this Redis instead of starting a private one (it must be a TCP URL).")
    var url: String?

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        var server: RedisServer?
        let configuration: RedisConfiguration
        if let url {
            configuration = try RedisConfiguration(url: url)
        } else {
            server = try RedisServer()
            configuration = server!.configuration
        }
        defer { server?.stop() }
        guard case .tcp(let host, let port) = configuration.endpoint else {
            throw ValidationError("redis-benchmark needs a TCP URL")
        }
        let key = "key:__rand_int__"  // the key redis-benchmark's GET test reads without -r
        let connection = RedisConnection(configuration: configuration)
        var poolConfiguration = configuration
        poolConfiguration.poolSize = 1
        let pool = RedisConnectionPool(configuration: poolConfiguration)
        try await connection.send("SET", key, "xxx")
        try await warmUp(connection: connection, pool: pool, key: key)

        var ours: [String: [Measurement]] = [:]
        var theirs: [String: [Measurement]] = [:]
        for _ in 0..<rounds {
            ours["connection", default: []].append(try await sequential(requests) { try await connection.send("GET", key) })
            ours["pool", default: []].append(try await sequential(requests) { try await pool.send("GET", key) })
            theirs["c1", default: []].append(try redisBenchmark(host: host, port: port, pipeline: 1, requests: requests))
            ours["pipelined", default: []].append(try await pipelined(connection: connection, key: key))
            theirs["pipelined", default: []].append(try redisBenchmark(host: host, port: port, pipeline: depth, requests: requests * 4))
        }
        connection.close()
        pool.shutDown()

        let conn = median(ours["connection"]!)
        let pooled = median(ours["pool"]!)
        let rb1 = median(theirs["c1"]!)
        let piped = median(ours["pipelined"]!)
        let rbP = median(theirs["pipelined"]!)
        let rows: [(String, Measurement)] = [
            ("switchyard connection, unpipelined", conn),
            ("switchyard pool, unpipelined", pooled),
            ("redis-benchmark -c 1", rb1),
            ("switchyard pipelined (depth \(depth))", piped),
            ("redis-benchmark -c 1 -P \(depth)", rbP),
        ]
        print("Redis layer against redis-benchmark, GET of a 3-byte value, \(requests) requests, median of \(rounds) rounds")
        print(pad("measurement", 40) + pad("ops/s", 12) + pad("p50 ms", 10) + pad("p99 ms", 10))
        for (name, m) in rows {
            print(
                pad(name, 40) + pad(String(format: "%.0f", m.opsPerSecond), 12) + pad(m.p50.map { String(format: "%.4f", $0) } ?? "-", 10)
                    + pad(m.p99.map { String(format: "%.4f", $0) } ?? "-", 10)
            )
        }
        let ratios: [String: Double] = [
            "connection_p50_vs_redis_benchmark": conn.p50! / rb1.p50!,
            "pool_p50_vs_redis_benchmark": pooled.p50! / rb1.p50!,
            "redis_benchmark_ops_vs_connection": rb1.opsPerSecond / conn.opsPerSecond,
            "redis_benchmark_pipelined_ops_vs_pipelined": rbP.opsPerSecond / piped.opsPerSecond,
        ]
        print("")
        print(
            String(
                format: "unpipelined p50: connection %.2fx, pool %.2fx redis-benchmark -c 1 (target <= 1.5x)",
                ratios["connection_p50_vs_redis_benchmark"]!,
                ratios["pool_p50_vs_redis_benchmark"]!
            )
        )
        print(
            String(
                format: "pipelined throughput: redis-benchmark -P %d is %.2fx switchyard (target <= 2x)",
                depth,
                ratios["redis_benchmark_pipelined_ops_vs_pipelined"]!
            )
        )
        let report: [String: Any] = [
            "benchmark": "redis",
            "requests": requests,
            "depth": depth,
            "rounds": rounds,
            "results": Dictionary(uniqueKeysWithValues: rows.map { ($0.0, $0.1.json) }),
            "ratios": ratios,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    private func warmUp(connection: RedisConnection, pool: RedisConnectionPool, key: String) async throws {
        for _ in 0..<2000 {
            try await connection.send("GET", key)
            try await pool.send("GET", key)
        }
    }

    private func sequential(_ count: Int, _ call: () async throws -> Void) async throws -> Measurement {
        let clock = ContinuousClock()
        var samples = [Double]()
        samples.reserveCapacity(count)
        let start = clock.now
        for _ in 0..<count {
            let t0 = clock.now
            try await call()
            samples.append(milliseconds(clock.now - t0))
        }
        let total = milliseconds(clock.now - start)
        samples.sort()
        return Measurement(
            opsPerSecond: Double(count) / (total / 1000),
            p50: percentile(samples, 50),
            p99: percentile(samples, 99)
        )
    }

    private func pipelined(connection: RedisConnection, key: String) async throws -> Measurement {
        let batch = Array(repeating: RedisCommand("GET", key), count: depth)
        let batches = requests * 4 / depth
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<batches { _ = try await connection.pipeline(batch) }
        let total = milliseconds(clock.now - start)
        return Measurement(opsPerSecond: Double(batches * depth) / (total / 1000), p50: nil, p99: nil)
    }

    private func redisBenchmark(host: String, port: Int, pipeline: Int, requests: Int) throws -> Measurement {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "redis-benchmark", "-h", host, "-p", String(port), "-c", "1", "-n", String(requests), "-P", String(pipeline),
            "-t", "get", "--csv",
        ]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        let lines = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline)
        guard let row = lines.first(where: { $0.hasPrefix("\"GET\"") }) else {
            throw ValidationError("redis-benchmark printed no GET row; is it installed (apt-get install redis-tools)?")
        }
        let fields = row.split(separator: ",").map { Double($0.trimmingCharacters(in: CharacterSet(charactersIn: "\""))) }
        return Measurement(opsPerSecond: fields[1] ?? 0, p50: fields[4] ?? 0, p99: fields[6] ?? 0)
    }
}

struct Measurement {
    var opsPerSecond: Double
    var p50: Double?
    var p99: Double?

    var json: [String: Double] {
        var out = ["ops_per_second": opsPerSecond]
        if let p50 { out["p50_ms"] = p50 }
        if let p99 { out["p99_ms"] = p99 }
        return out
    }
}

func median(_ ms: [Measurement]) -> Measurement {
    ms.sorted { $0.opsPerSecond < $1.opsPerSecond }[ms.count / 2]
}

/// The q-th percentile of sorted samples (0 when there are none).
func percentile(_ sorted: [Double], _ q: Int) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, sorted.count * q / 100)]
}

func seconds(_ d: Duration) -> Double { milliseconds(d) / 1000 }

func milliseconds(_ d: Duration) -> Double {
    let (s, atto) = d.components
    return Double(s) * 1000 + Double(atto) / 1e15
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
