import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardModels
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardWorker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: take jobs from the queue, run them, write results. SIGTERM drains it."
    )

    @OptionGroup var redis: RedisOptions

    @Option(help: "Jobs run at once. Default: the hardware profile's.")
    var concurrency: Int?

    @Option(
        help:
            "What runs the jobs: local (model servers from --models), provider (the providers file), echo (test executor: answers with the input, calls no model) or noop (benchmarks)."
    )
    var executor = "echo"

    @Option(help: "The providers file (JSON) for --executor provider. Default: SWITCHYARD_PROVIDERS_FILE.")
    var providers: String?

    @Option(help: "The model catalog (JSON) for --executor local. Default: SWITCHYARD_MODELS_FILE.")
    var models: String?

    @Option(help: "Worker id (consumer name). Default: host-pid-random.")
    var workerID: String?

    @Option(help: "Lease: how long a job may go without a refresh before another worker reclaims it.")
    var lease = "30s"

    @Option(help: "Grace period for in-flight jobs on SIGTERM before the rest are handed back.")
    var shutdownGrace = "30s"

    @Option(help: "First retry delay of a failed job; it doubles each attempt (with jitter).")
    var retryBase = "1s"

    @Option(help: "Longest retry delay.")
    var retryCap = "5m"

    @Option(help: "How long finished results are kept.")
    var resultTTL = "24h"

    @Option(help: "Hardware profile: rtx3090-wsl, apple-m or cpu. Default: SWITCHYARD_PROFILE, else detected (see `switchyard profile`).")
    var profile: String?

    @Option(
        name: .customLong("set"),
        help:
            "Override a profile setting, key=value (repeatable): concurrency, model_cache_size, memory_budget_mb, gpu_layers, batch_size, server_command."
    )
    var overrides: [String] = []

    @Flag(
        inversion: .prefixedNo,
        help:
            "Warm-model routing (--executor local): prefer jobs for models this worker has loaded; leave jobs for models another worker has warm to it for up to --warm-wait."
    )
    var warmRouting = true

    @Option(
        help:
            "Warm-model routing: how long a job waits for a worker that has its model warm before any worker may load it (at most a quarter of --lease)."
    )
    var warmWait = "2s"

    @Option(
        help:
            "Warm-model routing: an idle worker loads a model warm on another worker too when more than this many of its jobs per warm worker wait (0: never)."
    )
    var warmShareAfter = 4

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel = "info"

    func run() async throws {
        let configuration = try redis.configuration()
        let (hardware, _) = try resolveProfile(name: profile, overrides: overrides)
        let concurrency = self.concurrency ?? hardware.concurrency
        guard concurrency >= 1 else { throw ValidationError("--concurrency: must be at least 1") }
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level: '\(logLevel)' is not a log level") }
        var logger = Logger(label: "switchyard.worker")
        logger.logLevel = level
        let jobExecutor: any JobExecutor
        var httpClient: HTTPClient?
        var modelServers: ModelServerManager?
        switch executor {
        case "echo": jobExecutor = EchoExecutor()
        case "noop": jobExecutor = NoopExecutor()
        case "provider":
            guard let path = providers ?? ProcessInfo.processInfo.environment["SWITCHYARD_PROVIDERS_FILE"] else {
                throw ValidationError("--executor provider needs --providers FILE (or SWITCHYARD_PROVIDERS_FILE)")
            }
            do {
                let file = try ProvidersFile.load(path: path)
                let client = HTTPClient(configuration: try file.http?.clientConfiguration() ?? HTTPClientConfiguration())
                httpClient = client
                jobExecutor = try ProviderExecutor(file: file, client: client)
            } catch let error as ProviderError {
                throw ValidationError("--providers: \(error.message)")
            }
        case "local":
            guard let path = models ?? ProcessInfo.processInfo.environment["SWITCHYARD_MODELS_FILE"] else {
                throw ValidationError("--executor local needs --models FILE (or SWITCHYARD_MODELS_FILE)")
            }
            let catalog: ModelCatalog
            do {
                catalog = try ModelCatalog.load(path: path)
            } catch let error as ConfigurationError {
                throw ValidationError("--models: \(error)")
            }
            let client = HTTPClient()
            httpClient = client
            modelServers = ModelServerManager(catalog: catalog, profile: hardware, logger: logger)
            jobExecutor = LocalModelExecutor(manager: modelServers!, client: client)
        default: throw ValidationError("--executor: '\(executor)' is not one of local, provider, echo, noop")
        }
        defer { httpClient?.shutdown() }
        var queueConfiguration = QueueConfiguration(name: configuration.queue)
        queueConfiguration.lease = try parseDuration(lease, field: "--lease")
        // A lease shorter than the watch loop's refresh cadence would be reclaimed while alive.
        guard queueConfiguration.lease >= .milliseconds(500) else { throw ValidationError("--lease: must be at least 500ms") }
        queueConfiguration.retryBackoff = Backoff(
            base: try parseDuration(retryBase, field: "--retry-base"),
            cap: try parseDuration(retryCap, field: "--retry-cap")
        )
        queueConfiguration.resultTTL = try parseDuration(resultTTL, field: "--result-ttl")
        var workerConfiguration = WorkerConfiguration(concurrency: concurrency, profile: hardware.name, executorName: executor)
        if let workerID {
            guard workerID != QueueKeys.parkedConsumer else { throw ValidationError("--worker-id: '\(workerID)' is reserved by the queue") }
            workerConfiguration.id = workerID
        }
        let wait = try parseDuration(warmWait, field: "--warm-wait")
        guard warmShareAfter >= 0 else { throw ValidationError("--warm-share-after: must be 0 or more, got \(warmShareAfter)") }
        workerConfiguration.warmRouting = warmRouting ? WarmRouting(longestWait: wait, shareAfter: warmShareAfter) : nil
        workerConfiguration.shutdownGrace = try parseDuration(shutdownGrace, field: "--shutdown-grace")

        var redisConfiguration = configuration.redis
        redisConfiguration.poolSize = max(redisConfiguration.poolSize, 4)
        let pool = RedisConnectionPool(configuration: redisConfiguration, logger: logger)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: queueConfiguration, redis: pool, logger: logger)
        let worker = Worker(queue: queue, executor: jobExecutor, configuration: workerConfiguration, logger: logger)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: worker)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger
            )
        )
        // Idle model servers are stopped after their TTL.
        let servers = modelServers
        let idleSweep = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                await servers?.evictIdle()
            }
        }
        defer { idleSweep.cancel() }
        do {
            try await group.run()
        } catch {
            await servers?.shutdown()
            throw error
        }
        // Drained: stop every model server before exiting.
        await servers?.shutdown()
    }
}
