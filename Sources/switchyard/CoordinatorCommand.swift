import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCoordinator
import SwitchyardCore
import SwitchyardRedis

struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Serve the cluster over HTTP: dashboard, JSON API, Prometheus /metrics and an OpenAI-compatible front; reclaim lost jobs.",
        discussion: """
            Stateless: everything is read from Redis, so any number of coordinators can run and all answer the same. \
            Tokens come from SWITCHYARD_COORDINATOR_TOKENS (comma-separated) and --token-file (one per line); with \
            none, the coordinator listens on loopback only and lets every local request through. With tokens, writes \
            need 'Authorization: Bearer <token>', and reads too with --reads token.
            """
    )

    @OptionGroup var redis: RedisOptions

    @Option(help: "Address to listen on (loopback only without tokens).")
    var host = "127.0.0.1"

    @Option(parsing: .unconditional, help: "Port to listen on; 0 picks a free one (the log says which).")
    var port = 8377

    @Option(name: .customLong("serve-queue"), help: "Another queue to serve besides --queue (repeatable).")
    var serveQueues: [String] = []

    @Option(help: "A file of bearer tokens, one per line ('#' starts a comment).")
    var tokenFile: String?

    @Option(help: "Who may read without a token: open or token.")
    var reads = "open"

    @Option(parsing: .unconditional, help: "How often to reclaim entries whose lease ran out and promote due jobs ('off': never).")
    var reclaimInterval = "5s"

    @Option(parsing: .unconditional, help: "The workers' lease (entries idle this long are reclaimed); give the workers' --lease.")
    var lease = "30s"

    @Option(
        help: "How long the OpenAI-compatible front waits for a result before answering 504 (the job keeps running); the longest ?wait= of a push."
    )
    var resultTimeout = "300s"

    @Option(help: "The providers file, for /v1/models and the breakers. Default: SWITCHYARD_PROVIDERS_FILE.")
    var providers: String?

    @Option(help: "The model catalog, for /v1/models. Default: SWITCHYARD_MODELS_FILE.")
    var models: String?

    @Option(help: "Log format on standard error: text (one line per event) or json (one JSON object per line, for log collectors).")
    var logFormat: LogFormat = .text

    func run() async throws {
        logFormat.bootstrap()
        let environment = ProcessInfo.processInfo.environment
        let base = try redis.configuration()
        var configuration = CoordinatorConfiguration(host: host, port: port)
        guard (0...65535).contains(port) else { throw ValidationError("--port: must be from 0 to 65535, got \(port)") }
        configuration.queues = [base.queue] + serveQueues.filter { $0 != base.queue }
        configuration.durability = base.durability
        for queue in serveQueues {
            do {
                try SwitchyardConfiguration.validateQueueName(queue, field: "--serve-queue")
            } catch {
                throw ValidationError("\(error)")
            }
        }
        var tokens = (environment["SWITCHYARD_COORDINATOR_TOKENS"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        if let tokenFile {
            do {
                tokens += try CoordinatorConfiguration.tokens(fromFile: tokenFile)
            } catch let error as CoordinatorConfigurationError {
                throw ValidationError("--token-file: \(error.problem)")
            }
        }
        if let short = tokens.first(where: { $0.count < 16 }) {
            _ = short
            throw ValidationError("a coordinator token must be at least 16 characters (one given is shorter)")
        }
        configuration.tokens = tokens
        guard let reads = CoordinatorConfiguration.ReadAccess(rawValue: reads) else {
            throw ValidationError("--reads: '\(reads)' is not one of open, token")
        }
        configuration.reads = reads
        configuration.reclaimInterval = reclaimInterval == "off" ? nil : try parseDuration(reclaimInterval, field: "--reclaim-interval")
        if let interval = configuration.reclaimInterval, interval < .milliseconds(100) {
            throw ValidationError("--reclaim-interval: must be at least 100ms (or 'off')")
        }
        configuration.lease = try parseDuration(lease, field: "--lease")
        configuration.resultTimeout = try parseDuration(resultTimeout, field: "--result-timeout")
        configuration.providersFile = providers ?? environment["SWITCHYARD_PROVIDERS_FILE"]
        configuration.catalogFile = models ?? environment["SWITCHYARD_MODELS_FILE"]

        var logger = Logger(label: "switchyard.coordinator")
        logger.logLevel = .info
        let pool = RedisConnectionPool(configuration: base.redis, logger: logger)
        defer { pool.shutDown() }
        let coordinator = Coordinator(configuration: configuration, redis: pool, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [coordinator], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}
