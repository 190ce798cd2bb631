import CProcessShim
import CoreMetrics
import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardHTTP

/// A warm local model server, lent out for one request.
public struct ModelServerLease: Sendable {
    public let model: String
    public let baseURL: String
    public let pid: Int32
}

/// Errors of the model-server manager; messages name the model.
public struct ModelServerError: Error, Sendable, CustomStringConvertible {
    public let model: String
    public let message: String
    public let retryable: Bool
    /// The model can never be loaded on this worker as configured (pinned models take the room).
    public let cannotFit: Bool
    let exitedWhileLoading: Bool

    init(model: String, message: String, retryable: Bool, exitedWhileLoading: Bool = false, cannotFit: Bool = false) {
        self.model = model
        self.message = message
        self.retryable = retryable
        self.exitedWhileLoading = exitedWhileLoading
        self.cannotFit = cannotFit
    }

    public var description: String { "model server for '\(model)': \(message)" }
}

/// Each worker's LRU of local model-server processes.
///
/// A server starts from an argv template (no shell) on a free loopback port and is lent out only
/// once healthy. Requests for a model that is starting wait for that start instead of starting
/// it twice. Servers are evicted by least-recent use when the cache is full or the memory budget
/// would be exceeded, never while they serve a request (the new request waits instead), and after
/// an idle TTL; pinned models stay. A server that exited or crashed is started again on next use.
/// A server serves up to the profile's `parallel` requests at once (its slots); more callers wait
/// for a slot.
/// `shutdown` stops every server (SIGTERM, a grace period, then SIGKILL).
public actor ModelServerManager: Service {
    public struct Configuration: Sendable {
        public var readinessTimeout: Duration
        public var idleTTL: Duration?
        public var stopGrace: Duration
        public var logDirectory: String
        /// A file listing the servers this manager has running (pid and start time per line), so
        /// that a new worker with the same id stops those an earlier one left behind. Default:
        /// nil, none. (On Linux a server also dies with its worker; the file covers other systems.)
        public var pidFile: String?
        /// How often `run()` stops servers idle for longer than `idleTTL`. Default: 5 s.
        public var idleSweepInterval: Duration
        /// Where the manager records its metrics (`switchyard_model_loads_total{model,outcome}`
        /// with outcome `ready`, `exited` or `timeout`,
        /// `switchyard_model_load_seconds{model}`, `switchyard_model_evictions_total{model}`,
        /// `switchyard_model_restarts_total{model}`): the worker's registry. Default: nil, none.
        public var metrics: (any MetricsFactory)?
        /// Picks the port for a new server. Default: a free loopback port (`LoopbackPort.free`).
        public var portPicker: @Sendable () throws -> Int = { try LoopbackPort.free() }

        /// Defaults: readiness within 120 s, idle TTL 600 s, 10 s between SIGTERM and SIGKILL,
        /// logs in the temporary directory, no PID file, an idle sweep every 5 s.
        public init(
            readinessTimeout: Duration = .seconds(120),
            idleTTL: Duration? = .seconds(600),
            stopGrace: Duration = .seconds(10),
            logDirectory: String = FileManager.default.temporaryDirectory.path,
            pidFile: String? = nil,
            idleSweepInterval: Duration = .seconds(5)
        ) {
            self.readinessTimeout = readinessTimeout
            self.idleTTL = idleTTL
            self.stopGrace = stopGrace
            self.logDirectory = logDirectory
            self.pidFile = pidFile
            self.idleSweepInterval = idleSweepInterval
        }
    }

    public struct Statistics: Sendable, Hashable {
        public var loads = 0
        public var evictions = 0
        public var restarts = 0
        public var coldStarts: [Duration] = []
        public var warm: [String] = []
    }

    private struct Server {
        var process: ChildProcess
        var port: Int
        var inFlight = 0
        var lastUsed = ContinuousClock.now
    }

    public let catalog: ModelCatalog
    public let profile: HardwareProfile
    public let configuration: Configuration
    private let logger: Logger
    private let probe: HTTPClient
    private var servers: [String: Server] = [:]
    private var starting: [String: Task<Server, any Error>] = [:]
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    /// Callers waiting for a free slot of a model's server, by model: that server is busy too.
    private var slotWaiters: [String: Int] = [:]
    /// The token of each model's start in progress.
    private var startTokens: [String: UInt64] = [:]
    /// Starts that failed, by token, for a minute: every caller that waited for one gets its error
    /// (rather than each starting the server again in turn).
    private var failedStarts: [UInt64: (error: any Error, at: ContinuousClock.Instant)] = [:]
    private var nextToken: UInt64 = 0
    private var stats = Statistics()
    private var closed = false
    /// Servers being stopped: waited for by `shutdown`.
    private var stopping: [ChildProcess] = []
    /// Every server process started and not known to have exited (for the PID file).
    private var children: [ChildProcess] = []
    private let (began, beginSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    private var hasBegun = false

    /// Stops what an earlier worker with this PID file left (before any server of this manager
    /// starts), then lets `run()` load the pinned models. A worker calls it, and waits for it,
    /// once it holds its id and before it takes a job.
    public func begin() {
        guard !hasBegun, !closed else { return }
        hasBegun = true
        reapLeftovers()
        beginSignal.yield()
    }

    public init(catalog: ModelCatalog, profile: HardwareProfile, configuration: Configuration = Configuration(), logger: Logger) {
        self.catalog = catalog
        self.profile = profile
        self.configuration = configuration
        self.logger = logger
        self.probe = HTTPClient(configuration: HTTPClientConfiguration(maxConnectionsPerHost: 2))
    }

    /// As a service of the worker's group: stops servers an earlier worker with the same PID
    /// file left behind, loads the pinned models, stops idle servers now and then, and on
    /// graceful shutdown (after the worker, which comes later in the group, has drained) stops
    /// every server.
    /// It waits for `begin()` first: a worker calls it once it holds its id, so a worker refused
    /// for a live worker's id neither stops that one's servers nor starts any.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            for await _ in self.began { break }
        }
        // Stopped before the worker held its id: nothing was reaped, nothing is loaded.
        if Task.isCancelled || closed || !hasBegun {
            await shutdown()
            return
        }
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.preloadPinned() }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: self.configuration.idleSweepInterval)
                        await self.evictIdle()
                    }
                }
            }
        }
        await shutdown()
    }

    /// The pinned models not yet tried since `begin()`, in catalog order: empty once each has
    /// loaded or failed to (a failure is logged, and the model's first job tries again). The
    /// worker is not ready while it is not empty, so a rollout waits for warm servers. Before
    /// `begin()`, every pinned model.
    public var pinnedLoading: [String] {
        preloadDone ? [] : Array(catalog.pinned.dropFirst(pinnedTried))
    }
    private var pinnedTried = 0
    private var preloadDone = false

    /// Loads every pinned model, so their jobs never wait for a cold start; a failure is logged
    /// (the first job for the model tries again).
    public func preloadPinned() async {
        defer { preloadDone = true }
        for model in catalog.pinned where !Task.isCancelled {
            defer { pinnedTried += 1 }
            do {
                release(try await acquire(model))
            } catch is CancellationError {
                return
            } catch {
                logger.warning("could not load pinned model \(model): \(error)")
            }
        }
    }

    /// Stops the processes an earlier manager recorded in the PID file that still run (the same
    /// pid and start time, so a recycled pid is left alone).
    private func reapLeftovers() {
        guard let path = configuration.pidFile, let text = try? String(contentsOfFile: path, encoding: .utf8) else { return }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            // Without a start time (no /proc: macOS) a pid may have been recycled: leave it alone.
            guard parts.count == 2, let pid = Int32(parts[0]), let started = Int64(parts[1]), pid > 1, started >= 0,
                !children.contains(where: { $0.pid == pid })
            else { continue }
            if syp_process_start_time(pid) == started {
                logger.warning("stopping model server pid \(pid), left running by an earlier worker with this id")
                kill(pid, SIGKILL)
            }
        }
        recordPIDs()
    }

    /// Rewrites the PID file with the servers running now.
    private func recordPIDs() {
        children.removeAll { !$0.isRunning }
        guard let path = configuration.pidFile else { return }
        let lines = children.map { "\($0.pid) \(syp_process_start_time($0.pid))\n" }.joined()
        do {
            try Data(lines.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            logger.warning("cannot write the PID file \(path): \(error)")
        }
    }

    public var statistics: Statistics {
        var s = stats
        s.warm = servers.keys.sorted()
        return s
    }

    /// Models loaded or loading, most recently used first (loading ones lead: they are about to be used).
    public var warmModels: [String] {
        starting.keys.sorted() + servers.sorted { $0.value.lastUsed > $1.value.lastUsed }.map(\.key)
    }

    /// PIDs of the servers running now.
    public var pids: [String: Int32] { servers.mapValues(\.process.pid) }

    /// Runs `body` with a ready server for `model`, starting or waiting for one as needed.
    public func withServer<T: Sendable>(_ model: String, _ body: @Sendable (ModelServerLease) async throws -> T) async throws -> T {
        let lease = try await acquire(model)
        defer { release(lease) }
        return try await body(lease)
    }

    /// Lends a ready server for `model`, starting one (evicting idle ones) or waiting for room as
    /// needed. Every wait ends when the calling task is cancelled (a job's timeout or `cancel`),
    /// and a cancelled caller never evicts a server or starts one. A model that can never fit,
    /// because pinned models fill the cache or the memory budget, fails at once (`cannotFit`).
    public func acquire(_ model: String) async throws -> ModelServerLease {
        guard let entry = catalog.models[model] else {
            throw ModelServerError(model: model, message: "not in the model catalog", retryable: false)
        }
        // The start this caller waits for, its own or another caller's.
        var awaited: UInt64?
        while true {
            if closed { throw ModelServerError(model: model, message: "the manager is shut down", retryable: true) }
            if let token = awaited, let failure = failedStarts[token] { throw failure.error }
            if var server = servers[model] {
                if server.process.isRunning {
                    // Every slot busy: wait for one rather than queue inside the server. While
                    // callers wait for its slots, the server is not evicted (`makeRoom`).
                    if server.inFlight >= profile.parallel {
                        slotWaiters[model, default: 0] += 1
                        defer {
                            if let n = slotWaiters[model], n > 1 { slotWaiters[model] = n - 1 } else { slotWaiters[model] = nil }
                        }
                        try await waitForChange()
                        continue
                    }
                    server.inFlight += 1
                    server.lastUsed = .now
                    servers[model] = server
                    return ModelServerLease(model: model, baseURL: "http://127.0.0.1:\(server.port)/v1", pid: server.process.pid)
                }
                // Exited or crashed since its last use: start it again.
                logger.warning("model server for \(model) exited (pid \(server.process.pid)); starting it again")
                servers[model] = nil
                stats.restarts += 1
                if let metrics = configuration.metrics {
                    Counter(label: "switchyard_model_restarts_total", dimensions: [("model", model)], factory: metrics).increment()
                }
                wakeWaiters()
                continue
            }
            if starting[model] != nil {
                awaited = startTokens[model]
                try await waitForChange()
                continue
            }
            // Past its timeout or cancelled: evict nothing and load nothing for a job that is over.
            try Task.checkCancellation()
            if let reason = neverFits(model, entry: entry) {
                throw ModelServerError(model: model, message: reason, retryable: true, cannotFit: true)
            }
            if !makeRoom(for: model, entry: entry) {
                try await waitForChange()
                continue
            }
            let token = nextToken
            nextToken += 1
            awaited = token
            startTokens[model] = token
            starting[model] = Task { try await self.startAndInstall(model, entry: entry, token: token) }
            try await waitForChange()
        }
    }

    /// Why `model` can never be loaded next to the pinned models that are loaded (they are never
    /// evicted), or nil when it can.
    private func neverFits(_ model: String, entry: ModelCatalog.Entry) -> String? {
        let pinned = Set(catalog.pinned).intersection(Set(servers.keys).union(starting.keys)).subtracting([model])
        if pinned.count >= profile.modelCacheSize {
            return "cannot be loaded here: pinned models (\(pinned.sorted().joined(separator: ", "))) fill the model cache "
                + "(\(profile.modelCacheSize)), and pinned models are never evicted"
        }
        let memory = pinned.compactMap { catalog.models[$0]?.memoryMB }.reduce(0, +)
        if !pinned.isEmpty && memory + entry.memoryMB > profile.memoryBudgetMB {
            return "cannot be loaded here: it needs \(entry.memoryMB) MB and pinned models (\(pinned.sorted().joined(separator: ", "))) "
                + "hold \(memory) of the \(profile.memoryBudgetMB) MB budget, and pinned models are never evicted"
        }
        return nil
    }

    /// Starts a server and installs it, in one step on the actor, so everyone waiting for the
    /// start finds it installed when they resume. A failure is kept a minute for those who waited.
    private func startAndInstall(_ model: String, entry: ModelCatalog.Entry, token: UInt64) async throws -> Server {
        do {
            let server = try await start(model, entry: entry)
            starting[model] = nil
            startTokens[model] = nil
            servers[model] = server
            wakeWaiters()
            return server
        } catch {
            starting[model] = nil
            startTokens[model] = nil
            let now = ContinuousClock.now
            failedStarts = failedStarts.filter { now - $0.value.at < .seconds(60) }
            failedStarts[token] = (error, now)
            wakeWaiters()
            throw error
        }
    }

    /// Gives back a lease. A lease of a server that has since exited and been replaced does not
    /// count against the replacement.
    public func release(_ lease: ModelServerLease) {
        guard servers[lease.model]?.process.pid == lease.pid else { return }
        release(lease.model)
    }

    /// Gives back a lease of the model's current server.
    public func release(_ model: String) {
        guard var server = servers[model] else { return }
        server.inFlight = max(0, server.inFlight - 1)
        server.lastUsed = .now
        servers[model] = server
        wakeWaiters()
    }

    /// Stops servers idle for longer than the TTL (pinned ones stay). Call it now and then.
    public func evictIdle() {
        guard let ttl = configuration.idleTTL else { return }
        let now = ContinuousClock.now
        for (model, server) in servers where server.inFlight == 0 && !catalog.pinned.contains(model) && now - server.lastUsed >= ttl {
            logger.info("stopping \(model): idle for more than \(ttl)")
            stop(model)
        }
    }

    /// Stops every server and waits for each to exit.
    public func shutdown() async {
        closed = true
        for task in starting.values { _ = try? await task.value }
        for model in Array(servers.keys) { stop(model) }
        wakeWaiters()
        // Waited for on a thread of its own: sleeping in waitpid must not hold a cooperative thread,
        // and a cancelled caller still waits (a sleep would return at once and spin).
        let pending = stopping
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                for process in pending { process.waitForExit() }
                done.resume()
            }
        }
        stopping.removeAll()
        recordPIDs()
        probe.shutdown()
    }

    // MARK: - Capacity

    /// Evicts least-recently-used idle servers until `model` fits; false if it must wait for a
    /// busy one to finish.
    private func makeRoom(for model: String, entry: ModelCatalog.Entry) -> Bool {
        func fits() -> Bool {
            let count = servers.count + starting.count
            let memory =
                servers.keys.compactMap { catalog.models[$0]?.memoryMB }.reduce(0, +)
                + starting.keys.compactMap { catalog.models[$0]?.memoryMB }.reduce(0, +)
            return count < profile.modelCacheSize && memory + entry.memoryMB <= profile.memoryBudgetMB
        }
        while !fits() {
            let candidates = servers.filter { $0.value.inFlight == 0 && slotWaiters[$0.key] == nil && !catalog.pinned.contains($0.key) }
            guard let victim = candidates.min(by: { $0.value.lastUsed < $1.value.lastUsed })?.key else {
                // Everything is busy (or pinned): a model bigger than the whole budget never fits.
                return servers.isEmpty && starting.isEmpty
            }
            logger.info("evicting \(victim) (least recently used) to make room for \(model)")
            stats.evictions += 1
            if let metrics = configuration.metrics {
                Counter(label: "switchyard_model_evictions_total", dimensions: [("model", victim)], factory: metrics).increment()
            }
            stop(victim)
        }
        return true
    }

    /// Waits until a server is released, stopped or installed, or a start fails; throws
    /// `CancellationError` as soon as the calling task is cancelled.
    private func waitForChange() async throws {
        let id = nextToken
        nextToken += 1
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // Cancelled before the wait began: the handler has run already and found nothing to wake.
                if Task.isCancelled { continuation.resume() } else { waiters[id] = continuation }
            }
        } onCancel: {
            Task { await self.wake(id) }
        }
        try Task.checkCancellation()
    }

    private func wake(_ id: UInt64) {
        waiters.removeValue(forKey: id)?.resume()
    }

    private func wakeWaiters() {
        let all = waiters
        waiters.removeAll()
        for waiter in all.values { waiter.resume() }
    }

    /// SIGTERM, a grace period, then SIGKILL, on a thread of its own: waiting for a process to
    /// exit must not hold a thread of the cooperative pool.
    private func stop(_ model: String) {
        guard let server = servers.removeValue(forKey: model) else { return }
        let process = server.process
        let grace = configuration.stopGrace
        stopping.removeAll { !$0.isRunning }
        stopping.append(process)
        Thread.detachNewThread { process.terminate(grace: grace) }
    }

    // MARK: - Starting

    /// Starts a server, trying again on a new port when one exits while loading: the free port
    /// it was given can be taken by another process before the server binds it.
    private func start(_ model: String, entry: ModelCatalog.Entry) async throws -> Server {
        var attempt = 1
        while true {
            do {
                return try await startOnce(model, entry: entry)
            } catch let error as ModelServerError where error.exitedWhileLoading && attempt < 3 {
                logger.warning("\(error); trying again")
                attempt += 1
            }
        }
    }

    private func startOnce(_ model: String, entry: ModelCatalog.Entry) async throws -> Server {
        let clock = ContinuousClock()
        let began = clock.now
        let port = try configuration.portPicker()
        var template = entry.command ?? profile.serverCommand
        template += entry.extraArguments
        var withTemplate = profile
        withTemplate.serverCommand = template
        let argv = withTemplate.command(model: entry.file, port: port, contextSize: entry.contextSize)
        guard let executable = argv.first else { throw ModelServerError(model: model, message: "empty server command", retryable: false) }
        let log = "\(configuration.logDirectory)/switchyard-model-\(model.filter { $0.isLetter || $0.isNumber || $0 == "-" })-\(port).log"
        let process: ChildProcess
        do {
            process = try ChildProcess(executable: executable, arguments: Array(argv.dropFirst()), outputPath: log)
        } catch {
            throw ModelServerError(model: model, message: "cannot start \(executable): \(error)", retryable: false)
        }
        children.append(process)
        recordPIDs()
        logger.info("starting model server for \(model) (pid \(process.pid), port \(port))")
        let deadline = clock.now + configuration.readinessTimeout
        while clock.now < deadline {
            if closed {
                stopping.append(process)
                let grace = configuration.stopGrace
                Thread.detachNewThread { process.terminate(grace: grace) }
                throw ModelServerError(model: model, message: "the manager is shut down", retryable: true)
            }
            if !process.isRunning {
                // The server's own words stay in the worker's log: they may quote paths, arguments
                // or environment that a job's submitter has no business reading.
                let tail = ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(2000)
                logger.warning(
                    "model server for \(model) exited while loading (\(describeExit(process.status))); the end of its log \(log):\n\(tail)"
                )
                if let metrics = configuration.metrics {
                    Counter(label: "switchyard_model_loads_total", dimensions: [("model", model), ("outcome", "exited")], factory: metrics)
                        .increment()
                }
                throw ModelServerError(
                    model: model,
                    message: "the server exited while loading (\(describeExit(process.status))); its log is in the worker's log",
                    retryable: true,
                    exitedWhileLoading: true
                )
            }
            // Only our own server's answer counts: another process may have taken the port.
            if LoopbackPort.isListening(on: port, byProcessTreeOf: process.pid) != false, await isReady(port: port, entry: entry),
                process.isRunning
            {
                let took = clock.now - began
                stats.loads += 1
                stats.coldStarts.append(took)
                if let metrics = configuration.metrics {
                    Counter(label: "switchyard_model_loads_total", dimensions: [("model", model), ("outcome", "ready")], factory: metrics).increment()
                    let (s, a) = took.components
                    CoreMetrics.Timer(label: "switchyard_model_load_seconds", dimensions: [("model", model)], factory: metrics)
                        .recordNanoseconds(s * 1_000_000_000 + a / 1_000_000_000)
                }
                logger.info("model server for \(model) ready after \(took) (pid \(process.pid))")
                return Server(process: process, port: port)
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        stopping.append(process)
        let grace = configuration.stopGrace
        Thread.detachNewThread { process.terminate(grace: grace) }
        if let metrics = configuration.metrics {
            Counter(label: "switchyard_model_loads_total", dimensions: [("model", model), ("outcome", "timeout")], factory: metrics).increment()
        }
        throw ModelServerError(model: model, message: "not ready within \(configuration.readinessTimeout)", retryable: true)
    }

    /// llama-server: /health is 503 while loading and 200 when ready. mlx_lm.server answers before
    /// its model is loaded, and llama-cpp-python only listens once loaded: for those a real
    /// /v1/models answer is the sign. Either way the answer must name our model file: a free port
    /// can be taken by another server between our pick and our server's bind, and that one's
    /// answer must not count.
    private func isReady(port: Int, entry: ModelCatalog.Entry) async -> Bool {
        let base = "http://127.0.0.1:\(port)"
        func get(_ path: String) async -> HTTPResponse? {
            try? await probe.execute(HTTPRequest(url: base + path, connectTimeout: .seconds(1), timeout: .seconds(5)))
        }
        if entry.framework == .llamaCpp {
            guard let health = await get("/health"), health.status == 200 else { return false }
        }
        guard let models = await get("/v1/models"), models.status == 200 else { return false }
        if entry.framework == .openAICompatible { return true }
        let name = URL(fileURLWithPath: entry.file).lastPathComponent
        return String(decoding: models.body, as: UTF8.self).contains(name)
    }
}

/// "exit code N" or "signal N" for a raw wait status.
func describeExit(_ status: Int32?) -> String {
    guard let status else { return "still running" }
    if status < 0 { return "exit status unknown" }
    return status & 0x7f == 0 ? "exit code \((status >> 8) & 0xff)" : "signal \(status & 0x7f)"
}
