import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardRedis

@main
struct SwitchyardCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchyard",
        abstract: "A distributed worker cluster for AI inference jobs, coordinated through Redis.",
        discussion: """
            Redis is found through --redis-url or SWITCHYARD_REDIS_URL (default redis://127.0.0.1:6379); \
            a password can come from SWITCHYARD_REDIS_PASSWORD or SWITCHYARD_REDIS_PASSWORD_FILE.
            """,
        version: Switchyard.version,
        subcommands: [
            UpCommand.self, DemoCommand.self, WorkerCommand.self, PushCommand.self, ResultsCommand.self, StatusCommand.self, CancelCommand.self,
            DLQCommand.self, BreakersCommand.self, CoordinatorCommand.self,
            WorkersCommand.self, JobCommand.self, RetryCommand.self, QueueCommand.self, QueuesCommand.self, BatchesCommand.self,
            DelayedCommand.self, ProfileCommand.self, PingCommand.self, ConfigCommand.self, HealthCommand.self,
        ]
    )
}

/// Options every subcommand that talks to Redis shares.
struct RedisOptions: ParsableArguments {
    @Option(
        name: .customLong("redis-url"),
        help:
            "Redis URL: redis://[user:password@]host:port[/db], unix:///path.sock, redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/master."
    )
    var url: String?

    @Option(help: "acknowledged (the master has it) or replicated (a replica has it too: WAIT 1). Default: SWITCHYARD_DURABILITY or acknowledged.")
    var durability: String?

    @Option(help: "Queue name (the hash tag of every key). Default: SWITCHYARD_QUEUE or 'default'.")
    var queue: String?

    func configuration() throws -> SwitchyardConfiguration {
        var environment = ProcessInfo.processInfo.environment
        if let url { environment[RedisConfiguration.EnvironmentKey.url] = url }
        if let queue { environment["SWITCHYARD_QUEUE"] = queue }
        if let durability { environment["SWITCHYARD_DURABILITY"] = durability }
        do {
            return try SwitchyardConfiguration.fromEnvironment(environment)
        } catch let error as RedisError {
            throw ValidationError(error.message)
        } catch let error as ConfigurationError where error.field == "SWITCHYARD_DURABILITY" && durability != nil {
            throw ValidationError("--durability: \(error.problem)")
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

struct PingCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ping",
        abstract: "Check that Redis is reachable: prints its version and the round-trip time."
    )

    @OptionGroup var redis: RedisOptions

    @Option(parsing: .unconditional, help: "How many PINGs to time.")
    var count = 10

    @Flag(help: "Print one JSON object ({\"redis_version\", \"url\", \"median_ms\", \"pings\"}) instead of text.")
    var json = false

    func run() async throws {
        let configuration = try redis.configuration()
        let connection = RedisConnection(configuration: configuration.redis)
        defer { connection.close() }
        do {
            let info = try await connection.send("INFO", "server").string ?? ""
            let version = info.split(whereSeparator: \.isNewline).first { $0.hasPrefix("redis_version:") }?.dropFirst(14) ?? "?"
            let clock = ContinuousClock()
            var samples: [Duration] = []
            for _ in 0..<max(1, count) {
                let start = clock.now
                try await connection.send("PING")
                samples.append(clock.now - start)
            }
            samples.sort()
            let median = samples[samples.count / 2]
            if json {
                let object: [String: JSONValue] = [
                    "redis_version": .string(String(version)), "url": .string(configuration.redis.redactedURL),
                    "median_ms": .number(ConfigCommand.seconds(median) * 1000), "pings": .number(Double(samples.count)),
                ]
                printJSON(object)
                return
            }
            print("Redis \(version) at \(configuration.redis.redactedURL): PING median \(format(median)) over \(samples.count)")
        } catch let error as RedisError {
            if json {
                printJSON(["error": .string(error.message)])
            } else {
                print("error: \(error.message)")
            }
            throw ExitCode(2)
        }
    }

    private func format(_ d: Duration) -> String {
        let (s, atto) = d.components
        return String(format: "%.3f ms", Double(s) * 1000 + Double(atto) / 1e15)
    }
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the effective configuration (secrets are never shown)."
    )

    @OptionGroup var redis: RedisOptions

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() async throws {
        let configuration = try redis.configuration()
        if json {
            let r = configuration.redis
            let object: [String: JSONValue] = [
                "version": .string(Switchyard.version), "queue": .string(configuration.queue),
                "redis": .object([
                    "url": .string(r.redactedURL), "password_set": .bool(r.password != nil), "pool_size": .number(Double(r.poolSize)),
                    "connect_timeout_s": .number(Self.seconds(r.connectTimeout)), "command_timeout_s": .number(Self.seconds(r.commandTimeout)),
                ]),
                "libcurl": .object([
                    "version": .string(Curl.version), "http2": .bool(Curl.supportsHTTP2), "gzip": .bool(Curl.supportsGzip),
                ]),
            ]
            printJSON(object)
            return
        }
        print("switchyard \(Switchyard.version)")
        print("redis:    \(configuration.redis.description)")
        print("queue:    \(configuration.queue)")
        print("libcurl:  \(Curl.version)  (http2: \(Curl.supportsHTTP2), gzip: \(Curl.supportsGzip))")
    }

    static func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18 }
}
