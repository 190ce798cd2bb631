import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A local cluster on one machine: Redis (started when none answers) and N worker processes.
struct LocalCluster {
    let redisURL: String
    let workers: [ChildProcess]
    let redis: ChildProcess?
    let directory: URL

    /// Starts the cluster. `workerArguments` go to every `switchyard worker`.
    static func start(options: RedisOptions, workers count: Int, workerArguments: [String], say: (String) -> Void) async throws -> LocalCluster {
        let configuration = try options.configuration()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-up-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var redisURL = configuration.redis.redactedURL
        var redis: ChildProcess?
        var probeConfiguration = configuration.redis
        probeConfiguration.reconnectWait = .zero
        var quiet = Logger(label: "switchyard.up")
        quiet.logLevel = .critical  // "not reachable" is an expected answer here, not a warning
        let probe = RedisConnection(configuration: probeConfiguration, logger: quiet)
        let reachable = (try? await probe.send("PING")) != nil
        probe.close()
        if reachable {
            say("using the Redis at \(configuration.redis.redactedURL)")
            redisURL = options.url ?? ProcessInfo.processInfo.environment[RedisConfiguration.EnvironmentKey.url] ?? RedisConfiguration.defaultURL
        } else {
            guard case .tcp(let host, let port) = configuration.redis.endpoint, host == "127.0.0.1" || host == "localhost" else {
                throw ValidationError("no Redis answers at \(configuration.redis.redactedURL), and it is not a local TCP address to start one on")
            }
            say("no Redis at \(host):\(port); starting redis-server there (AOF on, data in \(directory.path))")
            redis = try ChildProcess(
                executable: "redis-server",
                arguments: [
                    "--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path, "--appendonly", "yes", "--save", "",
                    "--logfile", directory.appendingPathComponent("redis.log").path,
                ]
            )
            redisURL = "redis://127.0.0.1:\(port)"
            var ready = false
            for _ in 0..<100 {
                let c = RedisConnection(configuration: probeConfiguration, logger: quiet)
                ready = (try? await c.send("PING")) != nil
                c.close()
                if ready { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            guard ready else { throw ValidationError("redis-server did not start; see \(directory.path)/redis.log") }
        }
        let executable = Self.ownExecutable()
        var processes: [ChildProcess] = []
        for i in 1...max(1, count) {
            let id = "\(shortHostName())-up-\(i)"
            var environment = ProcessInfo.processInfo.environment
            environment[RedisConfiguration.EnvironmentKey.url] = redisURL
            let worker = try ChildProcess(
                executable: executable,
                arguments: ["worker", "--worker-id", id] + (options.queue.map { ["--queue", $0] } ?? []) + workerArguments,
                environment: environment,
                outputPath: directory.appendingPathComponent("\(id).log").path
            )
            processes.append(worker)
            say("started worker \(id) (pid \(worker.pid), log \(directory.path)/\(id).log)")
        }
        return LocalCluster(redisURL: redisURL, workers: processes, redis: redis, directory: directory)
    }

    /// SIGTERM to every worker (they drain), then Redis if we started it.
    func stop(say: (String) -> Void) {
        for worker in workers { worker.send(SIGTERM) }
        for worker in workers where !worker.waitForExit(timeout: .seconds(40)) { worker.terminate(grace: .seconds(1)) }
        say("workers stopped")
        if let redis {
            redis.terminate(grace: .seconds(10))
            say("redis-server stopped")
        }
    }

    static func ownExecutable() -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        return CommandLine.arguments[0]
    }
}

func shortHostName() -> String { ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host" }

struct UpCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start a local cluster: Redis (if none answers at the configured URL) and N workers. Ctrl-C stops everything."
    )

    @OptionGroup var redis: RedisOptions

    @Option(help: "Worker processes to start.")
    var workers = 2

    @Option(parsing: .remaining, help: "Arguments for every worker after --worker-args, e.g. --worker-args --executor local --models models.json")
    var workerArgs: [String] = []

    func run() async throws {
        let say = sayer("up")
        let cluster = try await LocalCluster.start(options: redis, workers: workers, workerArguments: workerArgs, say: say)
        say("cluster running at \(cluster.redisURL); push with: SWITCHYARD_REDIS_URL=\(cluster.redisURL) switchyard push ...; Ctrl-C stops it")
        await waitForSignal()
        say("stopping")
        cluster.stop(say: say)
    }
}

/// Waits for SIGINT or SIGTERM.
func waitForSignal() async {
    signal(SIGINT, SIG_IGN)
    signal(SIGTERM, SIG_IGN)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let once = OnceFlag()
        for number in [SIGINT, SIGTERM] {
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler {
                if once.claim() { continuation.resume() }
            }
            source.resume()
            signalSources.append(source)
        }
    }
}

nonisolated(unsafe) private var signalSources: [any DispatchSourceSignal] = []

final class OnceFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    func claim() -> Bool {
        lock.withLock {
            defer { done = true }
            return !done
        }
    }
}

/// Writes a line to standard output at once (unbuffered), so it stays in order with the
/// progress bar on standard error.
func sayer(_ prefix: String) -> (String) -> Void {
    { FileHandle.standardOutput.write(Data("\(prefix): \($0)\n".utf8)) }
}
