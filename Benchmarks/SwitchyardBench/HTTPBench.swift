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

        var rows: [(String, Measurement)] = []
        var ratios: [String: Double] = [:]
        for inFlight in [1, concurrency] {
            var round: [(String, Measurement)] = []
            let variants = [
                ("pooled, HTTP/1.1 keep-alive", false, false), ("pooled, HTTP/2", true, false), ("new connection per request", false, true),
            ]
            for (name, http2, fresh) in variants {
                let client = HTTPClient(
                    configuration: HTTPClientConfiguration(
                        maxConnectionsPerHost: inFlight,
                        http2: http2,
                        caFile: directory.appendingPathComponent("cert.pem").path
                    )
                )
                var request = HTTPRequest(url: url)
                request.freshConnection = fresh
                for _ in 0..<50 { _ = try await client.execute(request) }  // warm up
                round.append(("c=\(inFlight) \(name)", try await measure(client: client, request: request, inFlight: inFlight)))
                client.shutdown()
            }
            round.append(("c=\(inFlight) wrk -t1 (ceiling, HTTP/1.1)", try wrk(url: url, connections: inFlight)))
            ratios["c\(inFlight)_pooled_vs_new_connection"] = round[0].1.opsPerSecond / round[2].1.opsPerSecond
            ratios["c\(inFlight)_ceiling_vs_pooled"] = round[3].1.opsPerSecond / round[0].1.opsPerSecond
            rows += round
        }

        print("HTTP client over TLS to a local nginx, \(seconds) s each; c = requests in flight")
        print(pad("measurement", 44) + pad("req/s", 10) + pad("p50 ms", 10) + "p99 ms")
        for (name, m) in rows {
            print(
                pad(name, 44) + pad(String(format: "%.0f", m.opsPerSecond), 10) + pad(String(format: "%.3f", m.p50 ?? 0), 10)
                    + String(format: "%.3f", m.p99 ?? 0)
            )
        }
        for inFlight in [1, concurrency] {
            print(
                String(
                    format: "c=%d: pooled is %.2fx a new connection per request (target >= 3x); wrk is %.2fx pooled (target <= 1.5x)",
                    inFlight,
                    ratios["c\(inFlight)_pooled_vs_new_connection"]!,
                    ratios["c\(inFlight)_ceiling_vs_pooled"]!
                )
            )
        }
        let report: [String: Any] = [
            "benchmark": "http",
            "seconds": seconds,
            "concurrency": concurrency,
            "results": Dictionary(uniqueKeysWithValues: rows.map { ($0.0, $0.1.json) }),
            "ratios": ratios,
        ]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(decoding: data, as: UTF8.self))
        if let json { try data.write(to: URL(fileURLWithPath: json)) }
    }

    private func measure(client: HTTPClient, request: HTTPRequest, inFlight: Int) async throws -> Measurement {
        let clock = ContinuousClock()
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
            return try await group.reduce(into: [Double]()) { $0 += $1 }.sorted()
        }
        let total = milliseconds(clock.now - start)
        return Measurement(
            opsPerSecond: Double(samples.count) / (total / 1000),
            p50: percentile(samples, 50),
            p99: percentile(samples, 99)
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

    private func wrk(url: String, connections: Int) throws -> Measurement {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("wrk-\(UUID().uuidString).txt").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let process = try ChildProcess(
            executable: "wrk",
            arguments: ["-t1", "-c\(connections)", "-d\(Int(seconds.rounded(.up)))s", "--latency", url],
            outputPath: out
        )
        guard process.waitForExit() == 0, let text = try? String(contentsOfFile: out, encoding: .utf8) else {
            throw ValidationError("wrk failed (apt-get install wrk)")
        }
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
        return Measurement(opsPerSecond: value(after: "Requests/sec:") ?? 0, p50: value(after: "50%"), p99: value(after: "99%"))
    }
}
