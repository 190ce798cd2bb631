import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardProviders
import SwitchyardRedis
import SwitchyardResilience

/// `switchyard breakers`: every target's breaker and rate-limit headroom; `open`, `close`,
/// `reset` force a state.
struct BreakersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "breakers",
        abstract: "List every target's circuit breaker and rate-limit headroom, or force a breaker's state.",
        discussion: """
            Targets come from the providers file (--providers or SWITCHYARD_PROVIDERS_FILE) and from the breakers \
            in Redis. 'open' holds a breaker open (no calls) and 'close' holds it closed (calls always go) until \
            'reset' makes it automatic again; each is recorded as forced, with --note.
            """,
        subcommands: [ListBreakers.self, ForceBreaker.Open.self, ForceBreaker.Close.self, ForceBreaker.Reset.self],
        defaultSubcommand: ListBreakers.self
    )
}

struct BreakerOptions: ParsableArguments {
    @OptionGroup var redis: RedisOptions

    @Option(help: "The providers file the targets and their settings come from. Default: SWITCHYARD_PROVIDERS_FILE.")
    var providers: String?

    func file() throws -> ProvidersFile? {
        guard let path = providers ?? ProcessInfo.processInfo.environment["SWITCHYARD_PROVIDERS_FILE"] else { return nil }
        do {
            return try ProvidersFile.load(path: path)
        } catch let error as ProviderError {
            throw ValidationError("--providers: \(error.message)")
        }
    }

    /// Runs `body` with the breakers and limits on the configured Redis; an unreachable Redis
    /// exits 2, as for every command.
    func withResilience<T>(_ body: (Resilience, RedisConnectionPool) async throws -> T) async throws -> T {
        let configuration = try redis.configuration()
        let pool = RedisConnectionPool(configuration: configuration.redis, logger: cliLogger)
        defer { pool.shutDown() }
        do {
            return try await body(Resilience(redis: pool, logger: cliLogger), pool)
        } catch let error as RedisError {
            printError(error.message)
            throw ExitCode(2)
        }
    }

    /// Every target the file names, then every breaker Redis holds that the file does not.
    func targets(file: ProvidersFile?, pool: RedisConnectionPool) async throws -> [ResilienceTarget] {
        try await ProvidersFile.knownTargets(file: file, redis: pool)
    }
}

struct ListBreakers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List every target's breaker and rate-limit headroom.")

    @OptionGroup var options: BreakerOptions

    @Flag(help: "Print one JSON object per target instead of a table.")
    var json = false

    func run() async throws {
        let file = try options.file()
        try await options.withResilience { resilience, pool in
            let targets = try await options.targets(file: file, pool: pool)
            if targets.isEmpty {
                print("no targets: give --providers FILE (or SWITCHYARD_PROVIDERS_FILE); no breaker is stored in Redis yet")
                return
            }
            if !json {
                print("TARGET                                    STATE          FAIL%  SLOW%  CALLS  OPEN FOR  PROBES  REQ ROOM  TOK ROOM  WHY")
            }
            let now = Date().timeIntervalSince1970
            for target in targets {
                if json {
                    print(String(decoding: try await resilience.report(target).jsonBytes, as: UTF8.self))
                    continue
                }
                let status = try await resilience.breakers.status(target)
                let room = try await resilience.limits.headroom(target)
                let openFor = status.openUntil.map { String(format: "%.1fs", max(0, $0 - now)) } ?? (status.state == .forcedOpen ? "forced" : "-")
                let why = status.forcedBy.map { "\(status.reason): \($0)" } ?? status.reason
                let columns = [
                    (target.id, 41), (target.breaker.enabled ? status.state.rawValue : "disabled", 13),
                    (String(format: "%6.1f", status.failureRate), 6), (String(format: "%6.1f", status.slowCallRate), 6),
                    (String(format: "%6d", status.calls), 6), (openFor, 9), (String(status.probesInFlight), 7),
                    (room.requests.map { String(Int($0)) } ?? "-", 9), (room.tokens.map { String(Int($0)) } ?? "-", 9),
                ]
                print(columns.map { $0.0.padding(toLength: max($0.1, $0.0.count), withPad: " ", startingAt: 0) }.joined(separator: " ") + " " + why)
            }
        }
    }
}

enum ForceBreaker {
    struct Target: ParsableArguments {
        @OptionGroup var options: BreakerOptions

        @Argument(help: "The target: <provider>/<upstream model> (see 'switchyard breakers').")
        var target: String

        @Option(help: "Why, recorded with the forced state (who is added).")
        var note: String = ""

        func run(_ order: BreakerBoard.Order) async throws {
            let file = try options.file()
            try await options.withResilience { resilience, pool in
                let known = try await options.targets(file: file, pool: pool)
                guard let target = known.first(where: { $0.id == target }) else {
                    let names = known.map(\.id).joined(separator: ", ")
                    printError("unknown target '\(target)'; known: \(names.isEmpty ? "none (give --providers FILE)" : names)")
                    throw ExitCode(64)
                }
                let who = operatorName()
                let stamp = ISO8601DateFormatter().string(from: Date())
                let status = try await resilience.breakers.force(target, order, note: "\(who) at \(stamp)\(note.isEmpty ? "" : ": \(note)")")
                print("\(target.id): \(status.state.rawValue)")
            }
        }
    }

    struct Open: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "open", abstract: "Hold a breaker open (no calls) until close or reset.")
        @OptionGroup var target: Target
        func run() async throws { try await target.run(.open) }
    }

    struct Close: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "close",
            abstract: "Hold a breaker closed (calls always go; failures never open it) until reset."
        )
        @OptionGroup var target: Target
        func run() async throws { try await target.run(.close) }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset",
            abstract: "Make a breaker closed and automatic again, its window and openings cleared."
        )
        @OptionGroup var target: Target
        func run() async throws { try await target.run(.reset) }
    }
}
