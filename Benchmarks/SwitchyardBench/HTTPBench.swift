import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardTestSupport

/// The pooled client against a local TLS server (nginx), beside a new connection per request and
/// wrk as the ceiling, in one run.
struct HTTPBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http",
        abstract: "Requests/s and latency of the pooled HTTP client over TLS, against a new connection per request and wrk."
    )

    @Option(help: "Seconds per measurement.")
    var seconds: Double = 3

    @Option(help: "Requests in flight at once for the concurrent round.")
    var concurrency = 16

    @Option(help: "Also write the JSON report to this file.")
    var json: String?

    func run() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-http-bench-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = try RedisServer.freePort()
        try makeCertificate(in: directory)
        let nginx = try startNginx(in: directory, port: port)
        defer { nginx.terminate(grace: .seconds(2)) }
        let url = "https://127.0.0.1:\(port)/v1/models"

        let curlLoop = try compileCurlLoop(in: directory)
        let caFile = directory.appendingPathComponent("cert.pem").path

        var rows: [Row] = []
        var ratios: [String: Double] = [:]
        for inFlight in [1, concurrency] {
            var round: [Row] = []
            let variants = [
                ("pooled, HTTP/1.1 keep-alive", false, false), ("pooled, HTTP/2", true, false), ("new connection per request", false, true),
            ]
            for (name, http2, fresh) in variants {
                let client = HTTPClient(configuration: HTTPClientConfiguration(maxConnectionsPerHost: inFlight, http2: http2, caFile: caFile))
                var request = HTTPRequest(url: url)
                request.freshConnection = fresh
                for _ in 0..<50 { _ = try await client.execute(request) }  // warm up
                round.append(Row(name: "c=\(inFlight) \(name)", result: try await measure(client: client, request: request, inFlight: inFlight)))
                client.shutdown()
            }
            round.append(
                Row(name: "c=\(inFlight) libcurl multi loop in C", result: try runCurlLoop(curlLoop, url: url, caFile: caFile, inFlight: inFlight))
            )
            round.append(Row(name: "c=\(inFlight) wrk -t1 (ceiling, HTTP/1.1)", result: try wrk(url: url, connections: inFlight)))
            let pooled = round[0].result.opsPerSecond
            let loop = round[3].result.opsPerSecond
            let ceiling = round[4].result.opsPerSecond
            ratios["c\(inFlight)_pooled_vs_new_connection"] = pooled / round[2].result.opsPerSecond
            ratios["c\(inFlight)_ceiling_vs_pooled"] = ceiling / pooled
            ratios["c\(inFlight)_curl_loop_vs_pooled"] = loop / pooled
            ratios["c\(inFlight)_ceiling_vs_curl_loop"] = ceiling / loop
            rows += round
        }

        print("HTTP client over TLS to a local nginx, \(seconds) s each; c = requests in flight; CPU = the client's own CPU time per request")
        print(pad("measurement", 44) + pad("req/s", 10) + pad("p50 ms", 10) + pad("p99 ms", 10) + "CPU µs/req")
        for row in rows {
            let m = row.result.measurement
            print(
                pad(row.name, 44) + pad(String(format: "%.0f", m.opsPerSecond), 10) + pad(String(format: "%.3f", m.p50 ?? 0), 10)
                    + pad(String(format: "%.3f", m.p99 ?? 0), 10) + String(format: "%.1f", row.result.cpuPerRequest)
            )
        }
        for inFlight in [1, concurrency] {
            print(
                String(
                    format: "c=%d: pooled is %.2fx a new connection per request (target >= 3x); wrk is %.2fx pooled (target <= 1.5x); "
                        + "the C loop is %.2fx pooled (the client's part) and wrk %.2fx the C loop (libcurl's part)",
                    inFlight,
                    ratios["c\(inFlight)_pooled_vs_new_connection"]!,
                    ratios["c\(inFlight)_ceiling_vs_pooled"]!,
                    ratios["c\(inFlight)_curl_loop_vs_pooled"]!,
                    ratios["c\(inFlight)_ceiling_vs_curl_loop"]!
                )
            )
        }
        let report: [String: Any] = [
            "benchmark": "http",
            "seconds": seconds,
            "concurrency": concurrency,
            "results": Dictionary(uniqueKeysWithValues: rows.map { ($0.name, $0.result.json) }),
            "ratios": ratios,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    /// One row: its rate and latencies, and the CPU time its client spent per request.
    struct Row {
        var name: String
        var result: Result
    }

    struct Result {
        var measurement: Measurement
        /// User + system CPU time of the requesting process (this one, the C loop or wrk) per
        /// request, in µs. nginx's share is not in it.
        var cpuPerRequest: Double

        var opsPerSecond: Double { measurement.opsPerSecond }
        var json: [String: Double] { measurement.json.merging(["cpu_us_per_request": cpuPerRequest]) { $1 } }
    }

    private func measure(client: HTTPClient, request: HTTPRequest, inFlight: Int) async throws -> Result {
        let clock = ContinuousClock()
        let cpuBefore = cpuSeconds(.process)
        let start = clock.now
        let end = start + .milliseconds(Int64(seconds * 1000))
        let samples = try await withThrowingTaskGroup(of: [Double].self) { group in
            for _ in 0..<inFlight {
                group.addTask {
                    var mine: [Double] = []
                    while clock.now < end {
                        let t0 = clock.now
                        let response = try await client.execute(request)
                        guard response.status == 200 else { throw ValidationError("nginx answered \(response.status)") }
                        mine.append(milliseconds(clock.now - t0))
                    }
                    return mine
                }
            }
            return try await group.reduce(into: [Double]()) { $0 += $1 }
        }
        let total = milliseconds(clock.now - start)
        let cpu = cpuSeconds(.process) - cpuBefore
        let sorted = samples.sorted()
        return Result(
            measurement: Measurement(
                opsPerSecond: Double(samples.count) / (total / 1000),
                p50: percentile(sorted, 50),
                p99: percentile(sorted, 99)
            ),
            cpuPerRequest: cpu * 1e6 / Double(max(samples.count, 1))
        )
    }

    /// Compiles the C loop (`curlMultiLoopSource`) with the system's C compiler and libcurl.
    private func compileCurlLoop(in directory: URL) throws -> String {
        let source = directory.appendingPathComponent("curl-multi-loop.c")
        let binary = directory.appendingPathComponent("curl-multi-loop").path
        try curlMultiLoopSource.write(to: source, atomically: true, encoding: .utf8)
        let log = directory.appendingPathComponent("cc.log").path
        let cc = try ChildProcess(executable: "cc", arguments: ["-O2", "-o", binary, source.path, "-lcurl"], outputPath: log)
        guard cc.waitForExit() == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw ValidationError("cc could not build the libcurl loop (needs a C compiler and libcurl's headers):\n\(output)")
        }
        return binary
    }

    private func runCurlLoop(_ binary: String, url: String, caFile: String, inFlight: Int) throws -> Result {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("curl-loop-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = try ChildProcess(executable: binary, arguments: [url, caFile, "\(inFlight)", "\(seconds)"], outputPath: out)
        let status = process.waitForExit()
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard status == 0 else { throw ValidationError("the libcurl loop failed: \(text)") }
        // "requests <n> seconds <s> p50_ms <x> p99_ms <y> cpu_us <z>"
        let words = text.split(whereSeparator: \.isWhitespace)
        var fields: [String: Double] = [:]
        for i in stride(from: 0, to: words.count - 1, by: 2) { fields[String(words[i])] = Double(words[i + 1]) }
        guard let requests = fields["requests"], let elapsed = fields["seconds"], requests > 0, elapsed > 0 else {
            throw ValidationError("the libcurl loop printed no figures: \(words.joined(separator: " "))")
        }
        return Result(
            measurement: Measurement(opsPerSecond: requests / elapsed, p50: fields["p50_ms"], p99: fields["p99_ms"]),
            cpuPerRequest: (fields["cpu_us"] ?? 0) / requests
        )
    }

    private func makeCertificate(in directory: URL) throws {
        let openssl = try ChildProcess(
            executable: "openssl",
            arguments: [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", directory.appendingPathComponent("key.pem").path, "-out", directory.appendingPathComponent("cert.pem").path,
            ]
        )
        guard openssl.waitForExit() == 0 else { throw ValidationError("openssl could not make a certificate") }
    }

    private func startNginx(in directory: URL, port: Int) throws -> ChildProcess {
        let d = directory.path
        let conf = """
            worker_processes 1;
            daemon off;
            pid \(d)/nginx.pid;
            error_log \(d)/error.log;
            events { worker_connections 1024; }
            http {
              access_log off;
              keepalive_requests 1000000;
              client_body_temp_path \(d);
              proxy_temp_path \(d);
              fastcgi_temp_path \(d);
              uwsgi_temp_path \(d);
              scgi_temp_path \(d);
              server {
                listen 127.0.0.1:\(port) ssl http2;
                ssl_certificate \(d)/cert.pem;
                ssl_certificate_key \(d)/key.pem;
                location / {
                  default_type application/json;
                  return 200 '{"object":"list","data":[{"id":"standin-chat","object":"model"}]}';
                }
              }
            }
            """
        try conf.write(to: directory.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
        let nginx = try ChildProcess(
            executable: "nginx",
            arguments: ["-c", directory.appendingPathComponent("nginx.conf").path, "-p", d],
            outputPath: directory.appendingPathComponent("nginx.out").path
        )
        for _ in 0..<100 {
            if !nginx.isRunning { throw ValidationError("nginx did not start (apt-get install nginx); see \(d)/error.log") }
            let probe = try ChildProcess(executable: "curl", arguments: ["-sk", "-o", "/dev/null", "https://127.0.0.1:\(port)/"])
            if probe.waitForExit() == 0 { return nginx }
            usleep(50_000)
        }
        throw ValidationError("nginx did not answer on port \(port)")
    }

    private func wrk(url: String, connections: Int) throws -> Result {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("wrk-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        // wrk's CPU: what reaped children used, before and after it is reaped (no other child
        // ends meanwhile; nginx runs on). Its whole run, connection set-up included.
        let childrenBefore = cpuSeconds(.children)
        let process = try ChildProcess(
            executable: "wrk",
            arguments: ["-t1", "-c\(connections)", "-d\(Int(seconds.rounded(.up)))s", "--latency", url],
            outputPath: out
        )
        guard process.waitForExit() == 0, let text = try? String(contentsOfFile: out, encoding: .utf8) else {
            throw ValidationError("wrk failed (apt-get install wrk)")
        }
        let cpu = cpuSeconds(.children) - childrenBefore
        func value(after label: String) -> Double? {
            guard let line = text.split(separator: "\n").first(where: { $0.trimmingCharacters(in: .whitespaces).hasPrefix(label) }) else {
                return nil
            }
            let field =
                line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(label.split(separator: " ").count).first.map(String.init) ?? ""
            if field.hasSuffix("us") { return Double(field.dropLast(2)).map { $0 / 1000 } }
            if field.hasSuffix("ms") { return Double(field.dropLast(2)) }
            if field.hasSuffix("s") { return Double(field.dropLast(1)).map { $0 * 1000 } }
            return Double(field)
        }
        // "123456 requests in 3.00s, ..."
        let requests = text.split(separator: "\n").first { $0.contains(" requests in ") }.flatMap { Double($0.split(separator: " ").first ?? "") }
        return Result(
            measurement: Measurement(opsPerSecond: value(after: "Requests/sec:") ?? 0, p50: value(after: "50%"), p99: value(after: "99%")),
            cpuPerRequest: cpu * 1e6 / max(requests ?? 0, 1)
        )
    }
}

/// Whose CPU time `cpuSeconds` reads.
private enum Usage {
    /// This process, all its threads.
    case process
    /// Its children that have ended and been reaped.
    case children
}

/// User + system CPU time, in seconds, from getrusage.
private func cpuSeconds(_ usage: Usage) -> Double {
    #if canImport(Glibc)
    let who = __rusage_who_t(truncatingIfNeeded: (usage == .process ? RUSAGE_SELF : RUSAGE_CHILDREN).rawValue)
    #else
    let who = usage == .process ? RUSAGE_SELF : RUSAGE_CHILDREN
    #endif
    var r = rusage()
    getrusage(who, &r)
    return Double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + Double(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6
}
