import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCache
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardMetrics
import SwitchyardModels
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardResilience
import SwitchyardWorker

struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker: take jobs from the queue, run them, write results. SIGTERM drains it.",
        discussion: """
            Exit status 0 after a drain (SIGTERM, `workers drain`, or --burst with nothing left), 64 for a bad option, \
            77 when Redis refuses the password (a Redis that is down is waited for).
            """
    )

    @OptionGroup var redis: RedisOptions

    @Option(parsing: .unconditional, help: "Jobs run at once. Default: the hardware profile's.")
    var concurrency: Int?

    @Option(
        help: """
            What runs the jobs: local (model servers from --models), provider (the providers file), or the test executors \
            echo (answers with the input, calls no model) and noop (benchmarks), which run only when named. Default: local \
            when a model catalog is configured, else provider when a providers file is; with neither the worker refuses to start.
            """
    )
    var executor: String?

    @Option(help: "The providers file (JSON) for --executor provider. Default: SWITCHYARD_PROVIDERS_FILE.")
    var providers: String?

    @Option(help: "The model catalog (JSON) for --executor local. Default: SWITCHYARD_MODELS_FILE.")
    var models: String?

    @Option(help: "Worker id (consumer name). Default: host-pid-random.")
    var workerID: String?

    @Option(parsing: .unconditional, help: "Lease: how long a job may go without a refresh before another worker reclaims it.")
    var lease = "30s"

    @Option(parsing: .unconditional, help: "Grace period for in-flight jobs on SIGTERM before the rest are handed back.")
    var shutdownGrace = "30s"

    @Option(parsing: .unconditional, help: "First retry delay of a failed job; it doubles each attempt (with jitter).")
    var retryBase = "1s"

    @Option(parsing: .unconditional, help: "Longest retry delay.")
    var retryCap = "5m"

    @Option(parsing: .unconditional, help: "How long finished results are kept.")
    var resultTTL = "24h"

    @Option(help: "Hardware profile: rtx3090-wsl, apple-m or cpu. Default: SWITCHYARD_PROFILE, else detected (see `switchyard profile`).")
    var profile: String?

    @Option(
        name: .customLong("set"),
        help:
            "Override a profile setting, key=value (repeatable): concurrency, model_cache_size, memory_budget_mb, gpu_layers, batch_size, parallel, server_command."
    )
    var overrides: [String] = []

    @Flag(
        inversion: .prefixedNo,
        help:
            "Warm-model routing (--executor local): prefer jobs for models this worker has loaded; leave jobs for models another worker has warm to it for up to --warm-wait."
    )
    var warmRouting = true

    @Option(
        parsing: .unconditional,
        help:
            "Warm-model routing: how long a job waits for a worker that has its model warm before any worker may load it (at most a quarter of --lease)."
    )
    var warmWait = "2s"

    @Option(
        parsing: .unconditional,
        help:
            "Warm-model routing: an idle worker loads a model warm on another worker too when more than this many of its jobs per warm worker wait (0: never)."
    )
    var warmShareAfter = 4

    @Option(
        parsing: .unconditional,
        help:
            "The largest result a job may write (its stored JSON); a larger one fails the job with result_too_large. Keep it under Redis's proto-max-bulk-len."
    )
    var maxResultBytes = "64mb"

    @Option(
        parsing: .unconditional,
        help: "How long a job told to stop (timeout, cancel, shutdown) may go on before the worker gives up waiting for it and frees its slot."
    )
    var abandonAfter = "10s"

    @Flag(
        inversion: .prefixedNo,
        help: "The cluster-wide response cache: identical deterministic requests are answered once (see docs/CONFIGURATION.md)."
    )
    var cache = true

    @Option(
        help:
            "A Redis for the response cache only (it may run with maxmemory and an eviction policy). Default: SWITCHYARD_CACHE_REDIS_URL, else the queue's Redis."
    )
    var cacheRedisUrl: String?

    @Option(parsing: .unconditional, help: "How long the response cache keeps an answer.")
    var cacheTTL = "5m"

    @Option(parsing: .unconditional, help: "The longest a job's cache_ttl or a model's cache_ttl may keep an answer.")
    var cacheMaxTTL = "24h"

    @Option(help: "Answers larger than this are not kept in the response cache.")
    var cacheMaxEntryBytes = "1mb"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    @Option(help: "Log format on standard error: text (one line per event) or json (one JSON object per line, for log collectors).")
    var logFormat: LogFormat = .text

    @Flag(
        help: """
            Exit 0 once the queue has nothing left: no job waiting or running on any lane, none delayed for the next 30 s, \
            nothing running here. For cron jobs and CI.
            """
    )
    var burst = false

    @Option(
        parsing: .unconditional,
        help: "Serve the health endpoint (GET /livez, /readyz) on this port, for probes and `switchyard health`. Default: no endpoint."
    )
    var healthPort: Int?

    @Option(help: "The address the health endpoint listens on (0.0.0.0 in a container, for the kubelet's probes).")
    var healthHost = "127.0.0.1"

    func validate() throws {
        if let healthPort, !(0...65535).contains(healthPort) {
            throw ValidationError("--health-port: must be 0 to 65535, got \(healthPort)")
        }
    }

    /// The named executor, or the one the configuration implies. Never a test executor unless
    /// named: a forgotten flag must not make a cluster write made-up successes.
    func chooseExecutor(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        if let executor { return executor }
        if (models ?? environment["SWITCHYARD_MODELS_FILE"]) != nil { return "local" }
        if (providers ?? environment["SWITCHYARD_PROVIDERS_FILE"]) != nil { return "provider" }
        throw ValidationError(
            """
            no executor configured: give --models FILE (local model servers; or SWITCHYARD_MODELS_FILE) or \
            --providers FILE (remote or OpenAI-compatible providers; or SWITCHYARD_PROVIDERS_FILE), or name one with \
            --executor local|provider (echo and noop are test executors that call no model, and run only when named)
            """
        )
    }

    /// The response cache's own Redis. A cache that does not answer must not hold jobs up: it
    /// connects with a short timeout and no reconnect wait, and the cache steps aside.
    static func cacheRedisConfiguration(_ url: String) throws -> RedisConfiguration {
        var own: RedisConfiguration
        do {
            own = try RedisConfiguration(url: url)
        } catch {
            throw ValidationError("--cache-redis-url: \(error.message)")
        }
        own.poolSize = max(own.poolSize, 4)
        own.connectTimeout = min(own.connectTimeout, .milliseconds(500))
        own.reconnectWait = .zero
        return own
    }

    func run() async throws {
        logFormat.bootstrap()
        let configuration = try redis.configuration()
        if let healthPort { try HealthEndpoint.checkAvailable(host: healthHost, port: healthPort) }
        let (hardware, _) = try resolveProfile(name: profile, overrides: overrides)
        let concurrency = self.concurrency ?? hardware.concurrency
        guard (1...1024).contains(concurrency) else { throw ValidationError("--concurrency: must be from 1 to 1024, got \(concurrency)") }
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("--log-level: '\(logLevel)' is not a log level") }
        var logger = Logger(label: "switchyard.worker")
        logger.logLevel = level
        var redisConfiguration = configuration.redis
        redisConfiguration.poolSize = max(redisConfiguration.poolSize, 4)
        let pool = RedisConnectionPool(configuration: redisConfiguration, logger: logger)
        defer { pool.shutDown() }
        let jobExecutor: any JobExecutor
        var httpClient: HTTPClient?
        var resilience: Resilience?
        // One registry for the worker's own metrics and its executor's, published together.
        let metricsRegistry = MetricsRegistry()
        var resiliencePoolToClose: RedisConnectionPool?
        defer { resiliencePoolToClose?.shutDown() }
        var modelServers: ModelServerManager?
        let executor = try chooseExecutor()
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
                // Breakers and rate limits live beside the queue, on its Redis, through a pool of
                // their own: a call's outcome never waits behind the queue's commands, nor they behind it.
                var resilienceRedis = configuration.redis
                resilienceRedis.poolSize = 4
                let resiliencePool = RedisConnectionPool(configuration: resilienceRedis, logger: logger)
                resiliencePoolToClose = resiliencePool
                resilience = Resilience(redis: resiliencePool, logger: logger)
                jobExecutor = try ProviderExecutor(file: file, client: client, resilience: resilience, metrics: metricsRegistry)
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
            // Server logs and the PID file live in a directory only this user can use; the PID
            // file is per worker id, so a worker restarted with its id stops what the last one left.
            let directory = try LocalCluster.privateDirectory(runtimeDirectory(), label: "runtime directory")
            let id = (workerID ?? "").isEmpty ? nil : workerID
            var managerConfiguration = ModelServerManager.Configuration(logDirectory: directory.path)
            managerConfiguration.metrics = metricsRegistry
            managerConfiguration.pidFile = id.map { directory.appendingPathComponent("worker-\(fileSafe($0))-\(fnv1a($0)).pids").path }
            modelServers = ModelServerManager(catalog: catalog, profile: hardware, configuration: managerConfiguration, logger: logger)
            jobExecutor = LocalModelExecutor(manager: modelServers!, client: client)
        default: throw ValidationError("--executor: '\(executor)' is not one of local, provider, echo, noop")
        }
        var queueConfiguration = QueueConfiguration(name: configuration.queue)
        queueConfiguration.durability = configuration.durability
        queueConfiguration.lease = try parseDuration(lease, field: "--lease")
        // A lease shorter than the watch loop's refresh cadence would be reclaimed while alive.
        guard queueConfiguration.lease >= .milliseconds(500) else { throw ValidationError("--lease: must be at least 500ms") }
        queueConfiguration.retryBackoff = Backoff(
            base: try parseDuration(retryBase, field: "--retry-base"),
            cap: try parseDuration(retryCap, field: "--retry-cap")
        )
        guard queueConfiguration.retryBackoff.base <= queueConfiguration.retryBackoff.cap else {
            throw ValidationError(
                "--retry-base: \(retryBase) is more than --retry-cap (\(retryCap)); the first retry would already wait past the cap"
            )
        }
        queueConfiguration.resultTTL = try parseDuration(resultTTL, field: "--result-ttl")
        guard queueConfiguration.resultTTL >= .seconds(1) else {
            throw ValidationError("--result-ttl: must be at least 1s (results must outlive the waiters that read them), got \(resultTTL)")
        }
        var workerConfiguration = WorkerConfiguration(concurrency: concurrency, profile: hardware.name, executorName: executor)
        // Model servers start (and an earlier worker's are stopped) only once this worker holds its id.
        if let manager = modelServers {
            workerConfiguration.whenRegistered = { await manager.begin() }
            // Not ready until the pinned models are warm: a rolling update waits for them.
            workerConfiguration.notReadyReason = {
                let loading = await manager.pinnedLoading
                return loading.isEmpty ? nil : "warming: loading pinned models (\(loading.joined(separator: ", ")))"
            }
        }
        if let resilience { workerConfiguration.resilienceCounters = { resilience.counters } }
        workerConfiguration.metrics = metricsRegistry
        if let workerID {
            guard (1...200).contains(workerID.count),
                !workerID.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 32 || $0 == 127 } == true })
            else {
                throw ValidationError("--worker-id: must be 1 to 200 characters without spaces or control characters")
            }
            guard !workerID.hasPrefix("~") else {
                throw ValidationError("--worker-id: '\(workerID)': names starting with '~' are reserved by the queue")
            }
            workerConfiguration.id = workerID
        }
        let wait = try parseDuration(warmWait, field: "--warm-wait")
        guard warmShareAfter >= 0 else { throw ValidationError("--warm-share-after: must be 0 or more, got \(warmShareAfter)") }
        workerConfiguration.warmRouting = warmRouting ? WarmRouting(longestWait: wait, shareAfter: warmShareAfter) : nil
        workerConfiguration.burst = burst
        workerConfiguration.shutdownGrace = try parseDuration(shutdownGrace, field: "--shutdown-grace")
        workerConfiguration.maxResultBytes = try parseSize(maxResultBytes, field: "--max-result-bytes")
        workerConfiguration.abandonAfter = try parseDuration(abandonAfter, field: "--abandon-after")

        // A Redis that is down may come back, and the worker waits for it; a refused password
        // will not fix itself: exit, so a supervisor shows the failure instead of a worker that
        // loops on warnings.
        do {
            _ = try await pool.send("PING")
        } catch let error as RedisError where error.code == .authenticationFailed {
            printError("cannot authenticate to Redis: \(error.message)")
            throw ExitCode(77)
        } catch {
            logger.warning("Redis does not answer yet (\(error)); the worker keeps trying")
        }
        let queue = JobQueue(configuration: queueConfiguration, redis: pool, logger: logger)
        var responseCache: ResponseCache?
        var cachePool: RedisConnectionPool?
        if cache {
            var cacheConfiguration = ResponseCacheConfiguration(queue: configuration.queue)
            cacheConfiguration.ttl = try parseDuration(cacheTTL, field: "--cache-ttl")
            cacheConfiguration.maxTTL = try parseDuration(cacheMaxTTL, field: "--cache-max-ttl")
            cacheConfiguration.maxEntryBytes = try parseSize(cacheMaxEntryBytes, field: "--cache-max-entry-bytes")
            var redisForCache = pool
            if let url = cacheRedisUrl ?? ProcessInfo.processInfo.environment["SWITCHYARD_CACHE_REDIS_URL"] {
                redisForCache = RedisConnectionPool(configuration: try Self.cacheRedisConfiguration(url), logger: logger)
                cachePool = redisForCache
            }
            responseCache = ResponseCache(redis: redisForCache, configuration: cacheConfiguration, logger: logger)
        }
        defer {
            responseCache?.close()
            cachePool?.shutDown()
        }
        let worker = Worker(queue: queue, executor: jobExecutor, configuration: workerConfiguration, cache: responseCache, logger: logger)
        // Shut down in reverse order: the worker drains first, then the model servers stop, then
        // the HTTP client closes.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        // First, so it stops last: it answers (503 on /readyz) through the drain.
        if let healthPort {
            services.append(.init(service: HealthEndpoint.application(worker: worker, host: healthHost, port: healthPort, logger: logger)))
        }
        if let client = httpClient { services.append(.init(service: CloseOnShutdown { client.shutdown() })) }
        if let modelServers { services.append(.init(service: modelServers)) }
        // The breakers' subscription outlives the drain: jobs finishing during it still use it.
        if let resilience { services.append(.init(service: resilience.breakers)) }
        // A worker that has drained shuts the rest down gracefully (a cancelled group would not wait for its servers).
        services.append(.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup))
        let group = ServiceGroup(configuration: .init(services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch let error as WorkerError {
            // The group has stopped every service, model servers included.
            if error.code == .duplicateID { throw ValidationError(error.message) }
            printError(error.message)
            throw ExitCode(75)
        }
    }
}

/// Where a worker keeps its model servers' logs and PID files: `$XDG_RUNTIME_DIR/switchyard`,
/// else `switchyard-<uid>` in the temporary directory.
func runtimeDirectory() -> String {
    if let base = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !base.isEmpty { return base + "/switchyard" }
    return FileManager.default.temporaryDirectory.path + "/switchyard-\(getuid())"
}

/// A short hex digest of `text` (FNV-1a, 64 bits): file names of ids that `fileSafe` makes equal stay apart.
func fnv1a(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    return String(hash, radix: 16)
}

/// `text` with everything but letters, digits, '-', '_' and '.' replaced by '_', for file names.
func fileSafe(_ text: String) -> String {
    String(text.map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) ? $0 : "_" })
}
