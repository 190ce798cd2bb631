import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A local cluster on one machine: Redis (started when none answers) and N worker processes.
///
/// Its children die with it (a parent-death signal: SIGTERM, so workers drain and Redis writes its
/// AOF), even when `up` is killed with SIGKILL. Redis's data and every log live in a private
/// directory (mode 0700, made with mkdtemp, or one given that this user owns and nobody else may write).
struct LocalCluster {
    /// The URL the workers connect to. It may hold a password: never printed (`displayURL` is).
    let redisURL: String
    /// The URL with any password hidden.
    let displayURL: String
    let workerIDs: [String]
    let workers: [ChildProcess]
    let redis: ChildProcess?
    /// The coordinator beside the workers (nil with `coordinatorPort` nil).
    let coordinator: ChildProcess?
    /// Its dashboard, e.g. `http://127.0.0.1:8377/`.
    let dashboardURL: String?
    let directory: URL
    /// What runs the jobs on every worker (local, provider, or a test executor when named).
    let executor: String

    /// Starts the cluster. `workerArguments` go to every `switchyard worker`; they are checked
    /// first, so a cluster whose workers could not start (no executor configured) never starts.
    static func start(
        options: RedisOptions,
        workers count: Int,
        workerArguments: [String],
        stateDirectory: String? = nil,
        coordinatorPort: Int? = 8377,
        say: (String) -> Void
    ) async throws -> LocalCluster {
        let configuration = try options.configuration()
        let executor: String
        do {
            executor = try WorkerCommand.parse(workerArguments).chooseExecutor()
        } catch let error as ValidationError {
            throw ValidationError("--worker-args: \(error.message)")
        } catch {
            throw ValidationError("--worker-args: \(WorkerCommand.message(for: error))")
        }
        let directory = try privateDirectory(stateDirectory)
        var redisURL = options.url ?? ProcessInfo.processInfo.environment[RedisConfiguration.EnvironmentKey.url] ?? RedisConfiguration.defaultURL
        let displayURL = configuration.redis.redactedURL
        var redis: ChildProcess?
        var probeConfiguration = configuration.redis
        probeConfiguration.reconnectWait = .zero
        var quiet = Logger(label: "switchyard.up")
        quiet.logLevel = .critical  // "not reachable" is an expected answer here, not a warning
        let probe = RedisConnection(configuration: probeConfiguration, logger: quiet)
        let reachable = (try? await probe.send("PING")) != nil
        probe.close()
        if reachable {
            say("using the Redis at \(displayURL)")
        } else {
            guard case .tcp(let host, let port) = configuration.redis.endpoint, host == "127.0.0.1" || host == "localhost" else {
                throw ValidationError("no Redis answers at \(displayURL), and it is not a local TCP address to start one on")
            }
            say("no Redis at \(host):\(port); starting redis-server there (AOF on, data in \(directory.path))")
            redis = try ChildProcess(
                executable: "redis-server",
                arguments: [
                    "--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path, "--appendonly", "yes", "--save", "",
                    "--logfile", directory.appendingPathComponent("redis.log").path,
                ],
                parentDeathSignal: SIGTERM
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
        // A suffix per run: two `up`s on one Redis must not share worker ids (a draining worker
        // hands back the jobs its id holds, which would include its twin's).
        let run = String(UInt32.random(in: 0...UInt32.max), radix: 36)
        var processes: [ChildProcess] = []
        var ids: [String] = []
        for i in 1...max(1, count) {
            let id = "\(shortHostName())-up-\(run)-\(i)"
            var environment = ProcessInfo.processInfo.environment
            environment[RedisConfiguration.EnvironmentKey.url] = redisURL
            let worker = try ChildProcess(
                executable: executable,
                arguments: ["worker", "--worker-id", id] + (options.queue.map { ["--queue", $0] } ?? []) + workerArguments,
                environment: environment,
                outputPath: directory.appendingPathComponent("\(id).log").path,
                parentDeathSignal: SIGTERM
            )
            processes.append(worker)
            ids.append(id)
            say("started worker \(id) (pid \(worker.pid), executor \(executor), log \(directory.path)/\(id).log)")
        }
        var coordinator: ChildProcess?
        var dashboardURL: String?
        if let wanted = coordinatorPort {
            // The usual port when it is free; another `up` may hold it.
            let port = wanted == 0 || !LoopbackPort.isFree(wanted) ? try LoopbackPort.free() : wanted
            var environment = ProcessInfo.processInfo.environment
            environment[RedisConfiguration.EnvironmentKey.url] = redisURL
            // What the workers serve, so the front's GET /v1/models lists it.
            // And the workers' lease, so the coordinator's reclaim waits as long as theirs.
            var extra: [String] = []
            for flag in ["--models", "--providers", "--lease"] {
                if let i = workerArguments.lastIndex(of: flag), i + 1 < workerArguments.count {
                    extra += [flag, workerArguments[i + 1]]
                } else if let given = workerArguments.last(where: { $0.hasPrefix(flag + "=") }) {
                    extra.append(given)
                }
            }
            let child = try ChildProcess(
                executable: executable,
                arguments: ["coordinator", "--host", "127.0.0.1", "--port", String(port)] + (options.queue.map { ["--queue", $0] } ?? []) + extra,
                environment: environment,
                outputPath: directory.appendingPathComponent("coordinator.log").path,
                parentDeathSignal: SIGTERM
            )
            coordinator = child
            let url = "http://127.0.0.1:\(port)/"
            if try await Self.waitForHealth(url: url + "healthz") {
                dashboardURL = url
                say(
                    "started coordinator (pid \(child.pid), log \(directory.path)/coordinator.log): dashboard \(url), metrics \(url)metrics, OpenAI-compatible API \(url)v1"
                )
            } else {
                say("the coordinator did not answer at \(url); see \(directory.path)/coordinator.log")
            }
        }
        return LocalCluster(
            redisURL: redisURL,
            displayURL: redis == nil ? displayURL : redisURL,
            workerIDs: ids,
            workers: processes,
            redis: redis,
            coordinator: coordinator,
            dashboardURL: dashboardURL,
            directory: directory,
            executor: executor
        )
    }

    /// Polls a health URL for up to 20 s.
    static func waitForHealth(url: String) async throws -> Bool {
        let client = HTTPClient()
        defer { client.shutdown() }
        for _ in 0..<200 {
            if let response = try? await client.execute(HTTPRequest(url: url, connectTimeout: .milliseconds(200), timeout: .seconds(1))),
                response.status == 200
            {
                return true
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// A directory only this user can use: `given` (created 0700 when missing; refused when it is
    /// a symbolic link, belongs to another user, or others may read, write or enter it), or a new
    /// one from mkdtemp.
    static func privateDirectory(_ given: String?, label: String = "--state-dir") throws -> URL {
        guard let given else {
            var template = Array((FileManager.default.temporaryDirectory.path + "/switchyard-up-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else {
                throw ValidationError(
                    "cannot make a private directory in \(FileManager.default.temporaryDirectory.path): \(String(cString: strerror(errno)))"
                )
            }
            return URL(fileURLWithPath: String(cString: made))
        }
        if mkdir(given, 0o700) != 0 && errno != EEXIST {
            throw ValidationError("\(label): cannot create \(given): \(String(cString: strerror(errno)))")
        }
        var info = stat()
        guard lstat(given, &info) == 0 else { throw ValidationError("\(label): cannot read \(given): \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT == S_IFDIR else { throw ValidationError("\(label): \(given) is not a directory (or is a symbolic link)") }
        guard info.st_uid == getuid() else { throw ValidationError("\(label): \(given) belongs to another user (uid \(info.st_uid))") }
        guard info.st_mode & 0o077 == 0 else {
            throw ValidationError(
                "\(label): others may use \(given) (mode \(String(info.st_mode & 0o777, radix: 8))); make it private: chmod 700 \(given)"
            )
        }
        return URL(fileURLWithPath: given)
    }

    /// SIGTERM to every worker (they drain), then Redis if we started it.
    func stop(say: (String) -> Void) {
        if let coordinator {
            coordinator.terminate(grace: .seconds(10))
            say("coordinator stopped")
        }
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

    @Option(parsing: .unconditional, help: "Worker processes to start.")
    var workers = 2

    @Option(parsing: .remaining, help: "Arguments for every worker after --worker-args, e.g. --worker-args --executor local --models models.json")
    var workerArgs: [String] = []

    @Option(
        help:
            "A directory for Redis's data and the logs: created 0700 if missing; must belong to you and be writable only by you. Default: a new private directory under TMPDIR."
    )
    var stateDir: String?

    @Option(help: "The coordinator's port (another free one when taken); 'off' starts none.")
    var coordinatorPort = "8377"

    func validate() throws {
        guard (1...64).contains(workers) else { throw ValidationError("--workers: must be from 1 to 64, got \(workers)") }
    }

    func run() async throws {
        let say = sayer("up")
        let port: Int?
        if coordinatorPort == "off" {
            port = nil
        } else {
            guard let p = Int(coordinatorPort), (0...65535).contains(p) else {
                throw ValidationError("--coordinator-port: a port from 0 to 65535, or 'off'; got '\(coordinatorPort)'")
            }
            port = p
        }
        // Trapped before anything starts, so a Ctrl-C during start-up also stops what did start.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let cluster = try await LocalCluster.start(
            options: redis,
            workers: workers,
            workerArguments: workerArgs,
            stateDirectory: stateDir,
            coordinatorPort: port,
            say: say
        )
        let push =
            cluster.displayURL == cluster.redisURL
            ? "push with: SWITCHYARD_REDIS_URL=\(cluster.displayURL) switchyard push\(queueOption(redis)) ..."
            : "push with the --redis-url or SWITCHYARD_REDIS_URL you gave (its password is not shown)"
        say("cluster running at \(cluster.displayURL), executor \(cluster.executor); \(push); Ctrl-C stops it")
        if let dashboard = cluster.dashboardURL { say("dashboard: \(dashboard)") }
        for await _ in signals { break }
        say("stopping")
        cluster.stop(say: say)
    }
}

/// Writes a line to standard output at once (unbuffered), so it stays in order with the
/// progress bar on standard error.
func sayer(_ prefix: String) -> (String) -> Void {
    { FileHandle.standardOutput.write(Data("\(prefix): \($0)\n".utf8)) }
}
