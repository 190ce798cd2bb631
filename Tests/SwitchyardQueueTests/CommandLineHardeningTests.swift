import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs `switchyard <arguments>` to the end (or `timeout`); returns its exit code (nil when killed
/// by a signal) and everything it printed.
func runSwitchyard(
    _ arguments: [String],
    environment extra: [String: String] = [:],
    timeout: Duration = .seconds(60)
) throws -> (code: Int32?, output: String) {
    let log = FileManager.default.temporaryDirectory.appendingPathComponent("cli-\(UUID().uuidString).log").path
    defer { try? FileManager.default.removeItem(atPath: log) }
    var environment = ProcessInfo.processInfo.environment
    for (key, value) in extra { environment[key] = value }
    let process = try ChildProcess(
        executable: try WorkerProcess.switchyardExecutable(),
        arguments: arguments,
        environment: environment,
        outputPath: log
    )
    if !process.waitForExit(timeout: timeout) { process.send(SIGKILL) }
    let status = process.waitForExit()
    let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
    return (status & 0x7f == 0 ? (status >> 8) & 0xff : nil, output)
}

/// Starts a long-running `switchyard` command (up, worker) with its output in a file.
final class RunningCommand: @unchecked Sendable {
    let process: ChildProcess
    let logPath = FileManager.default.temporaryDirectory.appendingPathComponent("cmd-\(UUID().uuidString).log").path

    init(_ arguments: [String], environment extra: [String: String] = [:]) throws {
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in extra { environment[key] = value }
        process = try ChildProcess(
            executable: try WorkerProcess.switchyardExecutable(),
            arguments: arguments,
            environment: environment,
            outputPath: logPath,
            parentDeathSignal: SIGKILL
        )
    }

    var output: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// SIGTERM (or `signal`) and wait; the exit code, nil when killed by a signal.
    @discardableResult
    func stop(_ signal: Int32 = SIGTERM, timeout: Duration = .seconds(60)) -> Int32? {
        process.send(signal)
        if !process.waitForExit(timeout: timeout) { process.send(SIGKILL) }
        let status = process.waitForExit()
        return status & 0x7f == 0 ? (status >> 8) & 0xff : nil
    }

    /// The numbers after "(pid " in the output.
    var pids: [Int32] {
        output.components(separatedBy: "(pid ").dropFirst().compactMap { Int32($0.prefix { $0.isNumber }) }
    }
}

func processExists(_ pid: Int32) -> Bool {
    // A zombie (exited, not yet reaped by its parent) no longer runs.
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return true }
    return !stat[stat.index(after: close)...].hasPrefix(" Z")
}

@Suite("Command line: defaults, secrets, up, bad input", .serialized)
struct CommandLineHardeningTests {
    @Test func aWorkerWithoutAnExecutorRefusesToStartAndSaysHow() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let (code, output) = try runSwitchyard(["worker", "--redis-url", f.server.url, "--queue", "test"])
        #expect(code == 64, "\(output)")
        #expect(output.contains("no executor configured") && output.contains("--models") && output.contains("--providers"))
        // It did not register or touch the queue.
        #expect(try await f.pool.send("KEYS", "*").array?.isEmpty == true)
    }

    @Test func aModelCatalogInTheEnvironmentMeansTheLocalExecutor() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let catalog = try LlamaServer.catalogFile(models: ["tiny"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        let worker = try RunningCommand(["worker", "--redis-url", f.server.url, "--queue", "test"], environment: ["SWITCHYARD_MODELS_FILE": catalog])
        let registered = try await eventually(timeout: .seconds(20)) { try await f.queue.workers().first?.executor == "local" }
        #expect(registered, "\(worker.output)")
        #expect(worker.stop() == 0)
    }

    @Test func testExecutorsSaySoInEveryResultAndInStatus() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let w = try WorkerProcess(redisURL: f.server.url, id: "echoer", arguments: ["--queue", "test", "--executor", "echo"])
        let job = chatJob("echo me")
        _ = try await f.queue.push(job)
        let done = try await eventually { try await f.queue.result(of: job.id) != nil }
        #expect(done)
        #expect(try await f.queue.result(of: job.id)?.testExecutor == "echo")
        let (_, status) = try runSwitchyard(["status", "--redis-url", f.server.url, "--queue", "test"])
        #expect(status.contains("echo (TEST EXECUTOR: calls no model)"), "\(status)")
        let (_, json) = try runSwitchyard(["results", job.id, "--redis-url", f.server.url, "--queue", "test"])
        #expect(json.contains(#""test_executor":"echo""#))
        #expect(w.log.contains("is a test executor"))
        #expect(w.terminate() == 0)
    }

    @Test func passwordsAndAPIKeysAppearInNoOutputOrLog() async throws {
        let password = "planted-pw-\(UUID().uuidString.prefix(8))"
        let apiKey = "sk-planted-\(UUID().uuidString.prefix(8))"
        let server = try RedisServer(arguments: ["--requirepass", password])
        let url = "redis://:\(password)@127.0.0.1:\(server.port)"
        let standin = try StandinServer(apiKey: "the-right-key")
        let providers = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json")
        try """
        {"providers": [{"name": "remote", "kind": "openai", "base_url": "\(standin.baseURL)/v1", "api_key_env": "PLANTED_KEY"}],
         "models": {"m": {"provider": "remote"}}}
        """.write(to: providers, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: providers) }
        let environment = ["PLANTED_KEY": apiKey]
        var outputs: [String] = []
        // An up on the given Redis, with provider workers whose key the stand-in refuses (401).
        let up = try RunningCommand(
            ["up", "--redis-url", url, "--workers", "1", "--worker-args", "--executor", "provider", "--providers", providers.path],
            environment: environment
        )
        let started = try await eventually(timeout: .seconds(20)) { up.output.contains("cluster running") }
        #expect(started, "\(up.output)")
        for arguments in [
            ["ping"], ["config"], ["status"], ["push", "--model", "m", "--prompt", "hi", "--wait", "--wait-timeout", "20"],
            ["dlq", "list"], ["cancel", "nope"], ["results", "nope"],
        ] {
            outputs.append(try runSwitchyard(arguments + ["--redis-url", url], environment: environment).output)
        }
        // Wrong password, and a URL that cannot be parsed.
        outputs.append(try runSwitchyard(["ping", "--redis-url", "redis://:\(password)x@127.0.0.1:\(server.port)"]).output)
        outputs.append(try runSwitchyard(["ping", "--redis-url", "redis://:\(password)@127.0.0.1:notaport"]).output)
        #expect(up.stop() == 0)
        outputs.append(up.output)
        // Every log in up's private directory: the workers' and Redis's.
        let directory = try #require(
            up.output.components(separatedBy: "log ").dropFirst().first?.components(separatedBy: "/").dropLast().joined(separator: "/")
        )
        for file in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
            outputs.append((try? String(contentsOfFile: directory + "/" + file, encoding: .utf8)) ?? "")
        }
        let everything = outputs.joined(separator: "\n")
        #expect(everything.contains("authentication"), "the job should have failed at the provider: \(everything.suffix(2000))")
        #expect(everything.contains("redis://:***@127.0.0.1"))
        #expect(!everything.contains(password), "the Redis password was printed")
        #expect(!everything.contains(apiKey), "the API key was printed")
    }

    @Test func upKeepsItsFilesInAPrivateDirectoryAndRefusesUnsafeOnes() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("state-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: base) }
        let redis = ["--redis-url", "redis://127.0.0.1:\(try LoopbackPort.free())"]
        let workerArguments = ["--worker-args", "--executor", "echo"]
        // Writable by others, a symbolic link, another user's.
        let open = base + "/open"
        mkdir(open, 0o777)
        chmod(open, 0o777)
        let (openCode, openOutput) = try runSwitchyard(["up"] + redis + ["--state-dir", open] + workerArguments)
        #expect(openCode == 64 && openOutput.contains("others may use"), "\(openOutput)")
        // Readable by others is not private either: Redis writes every job's payload there.
        let readable = base + "/readable"
        mkdir(readable, 0o755)
        chmod(readable, 0o755)
        let (readableCode, readableOutput) = try runSwitchyard(["up"] + redis + ["--state-dir", readable] + workerArguments)
        #expect(readableCode == 64 && readableOutput.contains("chmod 700"), "\(readableOutput)")
        let link = base + "/link"
        symlink(base, link)
        let (linkCode, linkOutput) = try runSwitchyard(["up"] + redis + ["--state-dir", link] + workerArguments)
        #expect(linkCode == 64 && linkOutput.contains("symbolic link"), "\(linkOutput)")
        if getuid() == 0 {
            let theirs = base + "/theirs"
            mkdir(theirs, 0o700)
            chown(theirs, 65534, 65534)
            let (code, output) = try runSwitchyard(["up"] + redis + ["--state-dir", theirs] + workerArguments)
            #expect(code == 64 && output.contains("belongs to another user"), "\(output)")
        }
        // The default: a fresh directory only this user can enter.
        let up = try RunningCommand(["up"] + redis + workerArguments)
        defer { up.stop() }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline, !up.output.contains("cluster running") { usleep(50_000) }
        let directory = try #require(up.output.components(separatedBy: "data in ").dropFirst().first?.components(separatedBy: ")").first)
        var info = stat()
        #expect(lstat(directory, &info) == 0 && info.st_mode & 0o777 == 0o700 && info.st_uid == getuid(), "\(directory)")
        #expect(!directory.hasSuffix("switchyard-up-\(up.process.pid)"))
    }

    @Test func childrenDieWithAnUpKilledWithSIGKILL() async throws {
        let port = try LoopbackPort.free()
        let up = try RunningCommand(["up", "--redis-url", "redis://127.0.0.1:\(port)", "--workers", "2", "--worker-args", "--executor", "echo"])
        let started = try await eventually(timeout: .seconds(20)) { up.output.contains("cluster running") }
        #expect(started, "\(up.output)")
        // Two workers and the coordinator.
        let children = up.pids
        #expect(children.count == 3, "\(up.output)")
        #expect(up.output.contains("started coordinator"))
        #expect(RedisServer.isListening(port: port))
        up.stop(SIGKILL)
        let gone = try await eventually(timeout: .seconds(20)) { !children.contains(where: processExists) && !RedisServer.isListening(port: port) }
        #expect(gone, "still running: \(children.filter(processExists)), redis listening: \(RedisServer.isListening(port: port))")
    }

    @Test func twoUpsOnOneRedisNeverShareAWorkerId() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let ups = try (0..<2).map { _ in
            try RunningCommand(["up", "--redis-url", f.server.url, "--queue", "test", "--workers", "2", "--worker-args", "--executor", "echo"])
        }
        let four = try await eventually(timeout: .seconds(30)) { try await f.queue.workers().count == 4 }
        #expect(four)
        #expect(Set(try await f.queue.workers().map(\.id)).count == 4)
        for up in ups { #expect(up.stop() == 0) }
    }

    @Test func aWorkerStartedWithTheIdOfALiveOneRefusesToStart() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let first = try WorkerProcess(redisURL: f.server.url, id: "same", arguments: ["--queue", "test", "--executor", "echo"])
        let registered = try await eventually(timeout: .seconds(20)) { try await f.queue.workers().count == 1 }
        #expect(registered)
        let (code, output) = try runSwitchyard([
            "worker", "--redis-url", f.server.url, "--queue", "test", "--worker-id", "same", "--executor", "echo",
        ])
        #expect(code != 0 && output.contains("a live worker already uses the id 'same'"), "\(output)")
        #expect(first.process.isRunning)
        #expect(try await f.queue.workers().map(\.pid) == [first.process.pid])
        #expect(first.terminate() == 0)
    }

    @Test(arguments: [
        (["worker", "--executor", "echo", "--lease", "infs"], "--lease"),
        (["worker", "--executor", "echo", "--lease", "1e300s"], "--lease"),
        (["worker", "--executor", "echo", "--shutdown-grace", "nan"], "--shutdown-grace"),
        (["worker", "--executor", "echo", "--max-result-bytes", "-5"], "--max-result-bytes"),
        (["push", "--model", "m", "--prompt", "x", "--wait", "--wait-timeout", "nan"], "--wait-timeout"),
        (["push", "--model", "m", "--prompt", "x", "--delay", "inf"], "--delay"),
    ])
    func absurdNumbersAreClearErrorsNotCrashes(arguments: [String], field: String) throws {
        let (code, output) = try runSwitchyard(arguments + ["--redis-url", "redis://127.0.0.1:1"])
        #expect(code == 64, "\(output)")
        #expect(output.contains(field), "\(output)")
    }

    @Test func aFileIsCheckedWholeBeforeAnythingIsPushed() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        var lines = (1...1200).map { #"{"prompt": "job \#($0)"}"# }
        lines[500] = #"{"prompt": "bad key", "idempotency_key": "\#(String(repeating: "k", count: 300))"}"#
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jobs-\(UUID().uuidString).jsonl")
        try lines.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let (code, output) = try runSwitchyard(["push", "--redis-url", f.server.url, "--queue", "test", "--model", "m", "--file", file.path])
        #expect(code == 65, "\(output)")
        #expect(output.contains("line 501: field 'idempotency_key'"), "\(output)")
        #expect(try await f.queue.status().counters["pushed"] == nil)
    }

    @Test func aPushCutShortSaysHowToResumeAndTheResumeAddsOnlyWhatIsMissing() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jobs-\(UUID().uuidString).jsonl")
        try (1...2000).map { #"{"prompt": "job \#($0)"}"# }.joined(separator: "\n").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        // The connection drops after some chunks of 500 jobs have gone out (the first is sent
        // twice: once before Redis has the push script, once after loading it).
        let proxy = try FaultProxy(target: f.server.port, faults: ["--drop-request-after", "500000"])
        let arguments = ["--queue", "test", "--model", "m", "--file", file.path]
        let (code, output) = try runSwitchyard(["push", "--redis-url", "redis://127.0.0.1:\(proxy.port)"] + arguments)
        #expect(code == 2, "\(output)")
        let batch = try #require(output.components(separatedBy: "--batch ").dropFirst().first?.split(separator: ":").first.map(String.init))
        #expect(output.contains("batch \(batch): pushing 2000 jobs"))
        let partial = try await f.queue.batchProgress(batch).total
        #expect(partial >= 500 && partial < 2000, "pushed \(partial) before the cut")
        // It says how many were pushed for certain: whole chunks, never more than Redis has.
        let said = output.components(separatedBy: "after at least ").dropFirst().first.flatMap { Int($0.prefix { $0.isNumber }) }
        #expect(said.map { $0 >= 500 && $0 <= partial && $0 % 500 == 0 } == true, "\(output)")
        // Resumed, with a worker running, waiting for every result.
        let worker = try WorkerProcess(
            redisURL: f.server.url,
            id: "resume",
            arguments: ["--queue", "test", "--executor", "echo", "--concurrency", "16"]
        )
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("results-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: out) }
        let (again, resumed) = try runSwitchyard(
            ["push", "--redis-url", f.server.url, "--batch", batch, "--wait", "--out", out.path] + arguments,
            timeout: .seconds(120)
        )
        #expect(again == 0, "\(resumed)")
        #expect(resumed.contains("pushed \(2000 - partial) jobs as batch \(batch)"), "\(resumed)")
        #expect(try await f.queue.batchProgress(batch).total == 2000)
        #expect(try await f.queue.status().counters["pushed"] == 2000)
        let results = try String(contentsOf: out, encoding: .utf8).split(separator: "\n")
        #expect(results.count == 2000 && results.allSatisfy { $0.contains(#""status":"succeeded""#) })
        #expect(worker.terminate() == 0)
    }

    @Test func cancelOfAnUnknownIdSaysSoAndResultsQuoteOddIds() async throws {
        let f = try QueueFixture()
        defer { f.close() }
        try await f.queue.ensureGroups()
        let (code, output) = try runSwitchyard(["cancel", "typo-id", "--redis-url", f.server.url, "--queue", "test"])
        #expect(code == 4 && output.contains("typo-id: unknown job"), "\(output)")
        #expect(try await f.queue.status().counters["cancelled"] == nil)
        let odd = #"a"b\c"#
        let (_, line) = try runSwitchyard(["results", odd, "--redis-url", f.server.url, "--queue", "test"])
        let first = try #require(line.split(separator: "\n").first { $0.hasPrefix("{") })
        let parsed = try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: String]
        #expect(parsed == ["id": odd, "status": "unknown"])
    }
}
