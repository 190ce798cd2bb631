import CHiredis
import CHiredisShim
import Foundation
import Logging
import Synchronization

/// How long a command waits for its reply.
public enum RedisTimeout: Sendable, Hashable {
    /// The configuration's `commandTimeout`.
    case `default`
    /// Wait for ever: for `BLOCK 0` reads. Cancel the task to stop waiting.
    case never
    /// A timeout of its own, for example the BLOCK time of a read plus a margin.
    case after(Duration)
}

/// One connection to Redis, with a thread of its own.
///
/// Calls from any number of tasks are queued and run in order on the connection's thread, so the
/// blocking hiredis calls never run on Swift's cooperative pool. The connection opens lazily,
/// reconnects with backoff after the server goes away, and re-runs AUTH, SELECT and CLIENT SETNAME
/// each time.
///
/// While the server is unreachable, a command waits up to `reconnectWait` for it to come back and
/// then fails with `connectionFailed`. A command whose connection breaks while it is in flight fails
/// with `connectionLost` and is not retried: the server may already have run it.
///
/// Cancelling the calling task interrupts a command that is waiting for its reply (a blocking read,
/// say); the connection is then closed, since the reply may still arrive, and reopens on next use.
public final class RedisConnection: @unchecked Sendable {
    public let configuration: RedisConfiguration
    let logger: Logger
    private let thread: SerialThread
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let shared = Mutex(SharedState())

    private struct SharedState {
        var nextJob: UInt64 = 0
        var running: UInt64?
        var cancelledBeforeStart: Set<UInt64> = []
        var wakePending = false
        var closed = false
    }

    /// The slot map or the Sentinel's master; nil for one server.
    let topology: RedisTopology?

    /// One socket per server this connection talks to: one for a single server or behind
    /// Sentinel, up to one per master of a cluster.
    struct NodeSocket {
        var context: UnsafeMutablePointer<redisContext>?
        var failedAttempts = 0
        var nextAttempt = ContinuousClock.now
        var lastError: RedisError?
        /// Behind Sentinel: the topology's generation when this socket was opened.
        var generation: UInt64 = 0
    }

    // Touched only on `thread`.
    var sockets: [RedisConfiguration.Endpoint: NodeSocket] = [:]
    /// Where the last command went; `receive` reads from there.
    var lastEndpoint: RedisConfiguration.Endpoint?

    /// Makes the connection; it connects on first use.
    public init(configuration: RedisConfiguration, logger: Logger = Logger(label: "switchyard.redis")) {
        ignoreSIGPIPE
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "redis"] = "\(configuration.endpoint)"
        self.logger = logger
        var fds: [Int32] = [-1, -1]
        // Out of file descriptors: the process cannot do useful work; say so plainly.
        if syr_wake_pipe(&fds) != 0 { fatalError("cannot create a pipe for a Redis connection: out of file descriptors?") }
        self.wakeRead = fds[0]
        self.wakeWrite = fds[1]
        self.thread = SerialThread(name: "redis \(configuration.endpoint)")
        switch configuration.deployment {
        case .standalone:
            self.topology = nil
        case .cluster:
            self.topology = RedisTopology.shared(for: configuration.deployment)
        case .sentinel(let sentinel):
            let topology = RedisTopology.shared(for: configuration.deployment)
            self.topology = topology
            // Once per deployment and process, not per command.
            RedisSentinelWatch.start(for: topology, sentinel: sentinel, configuration: configuration, logger: logger)
        }
    }

    deinit {
        // Jobs hold the connection strongly, so none is running here.
        for socket in sockets.values { if let context = socket.context { redisFree(context) } }
        thread.stop()
        syr_close(wakeRead)
        syr_close(wakeWrite)
    }

    /// Sends one command and returns its reply. An error reply is thrown as `serverError`.
    @discardableResult
    public func send(_ command: RedisCommand, timeout: RedisTimeout = .default) async throws -> RESPValue {
        try await perform(timeout: timeout) { connection, ms in try connection.run([command], timeoutMs: ms)[0] }
            .throwingServerError()
    }

    /// Sends one command built from its name and arguments.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RESPValue {
        try await send(RedisCommand(name, arguments: arguments))
    }

    /// Sends all commands in one write and reads all replies: one round trip (one per node on a
    /// cluster). Error replies are returned in place (`.error`), so one failing command does not
    /// hide the others' replies. An `EVALSHA` of one of `scripts` that the server does not have
    /// (NOSCRIPT) is sent again after the script is loaded on that server.
    public func pipeline(
        _ commands: [RedisCommand],
        scripts: [RedisScript] = [],
        timeout: RedisTimeout = .default
    ) async throws -> [RESPValue] {
        if commands.isEmpty { return [] }
        return try await perform(timeout: timeout) { connection, ms in try connection.run(commands, timeoutMs: ms, scripts: scripts) }
    }

    /// Runs a Lua script by SHA, loading it first if the server does not have it (NOSCRIPT).
    @discardableResult
    public func evaluate(
        _ script: RedisScript,
        keys: [any RedisArgument] = [],
        arguments: [any RedisArgument] = [],
        timeout: RedisTimeout = .default
    ) async throws -> RESPValue {
        let call = RedisCommand("EVALSHA", arguments: [script.sha1, keys.count] + keys + arguments)
        return try await perform(timeout: timeout) { connection, ms in
            try connection.run([call], timeoutMs: ms, scripts: [script])[0]
        }.throwingServerError()
    }

    /// Reads one reply that arrives without a command of its own: a Pub/Sub message on a
    /// connection that has sent SUBSCRIBE. It never opens a connection (a subscription does not
    /// survive a reconnect): with no socket open it fails with `connectionLost` at once. A
    /// timeout closes the socket, as for any command.
    public func receive(timeout: RedisTimeout = .never) async throws -> RESPValue {
        try await perform(timeout: timeout) { connection, ms in
            guard let endpoint = connection.lastEndpoint, let context = connection.sockets[endpoint]?.context else {
                throw RedisError(.connectionLost, "no connection to \(connection.configuration.endpoint) is open to receive on")
            }
            var raw: UnsafeMutableRawPointer?
            let rc = syr_read_reply(context, connection.wakeRead, ms, &raw)
            guard rc == SYR_OK, let raw else {
                throw connection.transportFailure(rc, on: context, during: RedisCommand("SUBSCRIBE"))
            }
            defer { freeReplyObject(raw) }
            return RESPValue(reply: raw.assumingMemoryBound(to: redisReply.self))
        }
    }

    /// Closes the socket and stops the thread. Later calls fail with `closed`; a command waiting for
    /// a blocking reply is interrupted.
    public func close() {
        let first = shared.withLock { state -> Bool in
            defer { state.closed = true }
            if state.running != nil { syr_wake(wakeWrite) }
            return !state.closed
        }
        guard first else { return }
        _ = thread.submit { [self] in for endpoint in sockets.keys { disconnect(endpoint) } }
        thread.stop()
    }

    /// Whether a socket is open right now (false before first use and after a failure).
    public var isConnected: Bool {
        get async {
            (try? await perform(timeout: .default) { connection, _ in connection.sockets.values.contains { $0.context != nil } }) ?? false
        }
    }

    // MARK: - Running work on the connection's thread

    private func perform<T: Sendable>(
        timeout: RedisTimeout,
        _ body: @escaping @Sendable (RedisConnection, Int32) throws -> T
    ) async throws -> T {
        let timeoutMs: Int32
        switch timeout {
        case .default: timeoutMs = Int32(clamping: max(1, configuration.commandTimeout.roundedUpMilliseconds))
        case .never: timeoutMs = -1
        case .after(let d): timeoutMs = Int32(clamping: max(1, d.roundedUpMilliseconds))
        }
        let id = shared.withLock { state -> UInt64 in
            state.nextJob &+= 1
            return state.nextJob
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
                let queued = thread.submit { [self] in
                    let start = shared.withLock { state -> Bool in
                        if state.closed || state.cancelledBeforeStart.remove(id) != nil { return false }
                        state.running = id
                        if state.wakePending {
                            syr_drain(wakeRead)
                            state.wakePending = false
                        }
                        return true
                    }
                    guard start else {
                        continuation.resume(throwing: interruption())
                        return
                    }
                    let result = Result { try body(self, timeoutMs) }
                    shared.withLock { $0.running = nil }
                    continuation.resume(with: result)
                }
                if !queued { continuation.resume(throwing: RedisError(.closed, "the connection was closed")) }
            }
        } onCancel: {
            shared.withLock { state in
                if state.running == id {
                    state.wakePending = true
                    syr_wake(wakeWrite)
                } else {
                    state.cancelledBeforeStart.insert(id)
                }
            }
        }
    }

    // MARK: - On the connection's thread

    /// Sends the commands where they belong (the server, the Sentinel's master, or each key's
    /// cluster node) and reads one reply per command, in order.
    func run(_ commands: [RedisCommand], timeoutMs: Int32, scripts: [RedisScript] = []) throws -> [RESPValue] {
        switch configuration.deployment {
        case .standalone:
            let context = try connectedContext(to: configuration.endpoint, wait: configuration.reconnectWait)
            return try exchange(commands, on: context, timeoutMs: timeoutMs, scripts: scripts)
        case .cluster(let seeds):
            return try clusterExchange(commands, timeoutMs: timeoutMs, scripts: scripts, seeds: seeds)
        case .sentinel(let sentinel):
            return try sentinelExchange(commands, timeoutMs: timeoutMs, scripts: scripts, sentinel: sentinel)
        }
    }

    /// `exchange`, then: an `EVALSHA` of one of `scripts` that this server does not have is sent
    /// again after `SCRIPT LOAD` on the same server.
    func exchange(
        _ commands: [RedisCommand],
        on context: UnsafeMutablePointer<redisContext>,
        timeoutMs: Int32,
        scripts: [RedisScript]
    ) throws -> [RESPValue] {
        var replies = try exchange(commands, on: context, timeoutMs: timeoutMs)
        if scripts.isEmpty { return replies }
        // Up to three loads: a SCRIPT FLUSH by someone else can land between a load and the call.
        for _ in 0..<3 {
            let missing = replies.indices.filter { replies[$0].errorMessage?.hasPrefix("NOSCRIPT") == true }
            if missing.isEmpty { return replies }
            logger.debug("scripts missing on the server; loading them")
            for reply in try exchange(scripts.map { RedisCommand("SCRIPT", "LOAD", $0.source) }, on: context, timeoutMs: timeoutMs) {
                try reply.throwingServerError()
            }
            // A WAIT after a script sent again must come after it again, or it would vouch for
            // nothing.
            let resend = missing + replies.indices.filter { $0 > missing[0] && commands[$0].name == "WAIT" }
            let again = try exchange(resend.map { commands[$0] }, on: context, timeoutMs: timeoutMs)
            for (index, reply) in zip(resend, again) { replies[index] = reply }
        }
        return replies
    }

    /// Writes the commands, reads one reply per command. Any transport failure closes the socket.
    func exchange(
        _ commands: [RedisCommand],
        on context: UnsafeMutablePointer<redisContext>,
        timeoutMs: Int32
    ) throws -> [RESPValue] {
        for command in commands {
            let rc = command.encoded.withUnsafeBytes { bytes in
                redisAppendFormattedCommand(context, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
            }
            if rc != REDIS_OK { throw transportFailure(SYR_IO, on: context, during: commands[0]) }
        }
        let flushed = syr_flush(context, wakeRead, timeoutMs)
        if flushed != SYR_OK { throw transportFailure(flushed, on: context, during: commands[0]) }
        var replies: [RESPValue] = []
        replies.reserveCapacity(commands.count)
        for command in commands {
            var raw: UnsafeMutableRawPointer?
            let rc = syr_read_reply(context, wakeRead, timeoutMs, &raw)
            guard rc == SYR_OK, let raw else { throw transportFailure(rc, on: context, during: command) }
            replies.append(RESPValue(reply: raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
        return replies
    }

    /// Closes the broken socket and describes what went wrong.
    private func transportFailure(
        _ rc: Int32,
        on failed: UnsafeMutablePointer<redisContext>,
        during command: RedisCommand
    ) -> any Error {
        let detail = String(cString: UnsafeRawPointer(failed.pointer(to: \.errstr)!).assumingMemoryBound(to: CChar.self))
        let known = sockets.first(where: { $0.value.context == failed })?.key
        // A socket of its own (a sentinel asked once) is freed by its opener.
        if let known { disconnect(known) }
        let endpoint = known ?? configuration.endpoint
        switch rc {
        case SYR_CANCELLED:
            return interruption()
        case SYR_TIMEOUT:
            return RedisError(.timeout, "no reply to \(command.name) from \(endpoint) within the timeout")
        case SYR_EOF:
            return RedisError(.connectionLost, "\(endpoint) closed the connection during \(command.name)")
        case SYR_PROTOCOL:
            return RedisError(.protocolError, "the reply to \(command.name) is not valid RESP: \(detail)")
        default:
            return RedisError(.connectionLost, "connection to \(endpoint) failed during \(command.name): \(detail)")
        }
    }

    func disconnect(_ endpoint: RedisConfiguration.Endpoint) {
        if let context = sockets[endpoint]?.context {
            redisFree(context)
            sockets[endpoint]?.context = nil
        }
    }

    /// An open, authenticated socket to `endpoint`: the current one if the server has not closed
    /// it, or a new one, retrying with backoff for up to `wait` (zero: one attempt, unless the
    /// last one failed so recently that its backoff has not run out).
    func connectedContext(
        to endpoint: RedisConfiguration.Endpoint,
        wait: Duration,
        generation: UInt64 = 0
    ) throws -> UnsafeMutablePointer<redisContext> {
        lastEndpoint = endpoint
        if let context = sockets[endpoint]?.context {
            if syr_peer_closed(context) == 0 && sockets[endpoint]?.generation == generation { return context }
            if syr_peer_closed(context) != 0 { logger.warning("Redis closed the connection; reconnecting", metadata: ["node": "\(endpoint)"]) }
            disconnect(endpoint)
        }
        var socket = sockets[endpoint] ?? NodeSocket()
        let deadline = ContinuousClock.now + wait
        while true {
            let now = ContinuousClock.now
            if socket.nextAttempt > now {
                // Still inside the backoff after a failed attempt: wait for it if the deadline allows.
                if socket.nextAttempt > deadline {
                    throw socket.lastError ?? RedisError(.connectionFailed, "cannot reach \(endpoint)")
                }
                let sleepMs = Int32(clamping: (socket.nextAttempt - now).roundedUpMilliseconds)
                if syr_sleep(wakeRead, sleepMs) == SYR_CANCELLED { throw interruption() }
            }
            do {
                let context = try openContext(to: endpoint)
                if socket.failedAttempts > 0 {
                    logger.info("reconnected to Redis after \(socket.failedAttempts) failed attempts", metadata: ["node": "\(endpoint)"])
                }
                socket = NodeSocket(context: context, generation: generation)
                sockets[endpoint] = socket
                return context
            } catch let error as RedisError {
                // Every failed attempt backs off, so a wrong password does not hammer the server either.
                socket.failedAttempts += 1
                socket.lastError = error
                socket.nextAttempt = ContinuousClock.now + Backoff.reconnect.delay(attempt: socket.failedAttempts)
                sockets[endpoint] = socket
                guard error.code == .connectionFailed else { throw error }
                if socket.failedAttempts == 1 {
                    logger.warning("cannot reach Redis: \(error.message); retrying with backoff", metadata: ["node": "\(endpoint)"])
                }
                if socket.nextAttempt > deadline { throw error }
            }
        }
    }

    /// Sleeps on the connection's thread; a close or a cancellation wakes it early.
    func pause(_ duration: Duration) throws {
        if syr_sleep(wakeRead, Int32(clamping: duration.roundedUpMilliseconds)) == SYR_CANCELLED { throw interruption() }
    }

    /// Why a wait was woken: the connection was closed, or the caller's task was cancelled.
    func interruption() -> any Error {
        shared.withLock { $0.closed } ? RedisError(.closed, "the connection was closed") : CancellationError()
    }

    /// What a new socket sends before its first command.
    struct Handshake {
        var username: String?
        var password: String?
        var database = 0
        var clientName: String?
        /// Behind Sentinel: ask `ROLE` and refuse a server that is not a master (a sentinel's
        /// answer can be stale for a moment after a failover).
        var requireMaster = false
    }

    /// The handshake for data nodes, from the configuration.
    var dataHandshake: Handshake {
        var handshake = Handshake(
            username: configuration.username,
            password: configuration.password,
            database: configuration.database,
            clientName: configuration.clientName
        )
        if case .sentinel = configuration.deployment { handshake.requireMaster = true }
        return handshake
    }

    /// Opens and authenticates a socket. Throws `RedisError`, or `CancellationError` when the
    /// caller's task was cancelled during the handshake.
    func openContext(to endpoint: RedisConfiguration.Endpoint, handshake: Handshake? = nil) throws -> UnsafeMutablePointer<redisContext> {
        let connectMs = configuration.connectTimeout.roundedUpMilliseconds
        let tv = timeval(tv_sec: connectMs / 1000, tv_usec: .init((connectMs % 1000) * 1000))
        let opened: UnsafeMutablePointer<redisContext>?
        switch endpoint {
        case .tcp(let host, let port): opened = redisConnectWithTimeout(host, Int32(port), tv)
        case .unixSocket(let path): opened = redisConnectUnixWithTimeout(path, tv)
        }
        guard let context = opened else { throw RedisError(.connectionFailed, "cannot allocate a hiredis context") }
        if context.pointee.err != 0 {
            let why = String(cString: UnsafeRawPointer(context.pointer(to: \.errstr)!).assumingMemoryBound(to: CChar.self))
            redisFree(context)
            throw RedisError(.connectionFailed, "cannot connect to \(endpoint): \(why)")
        }
        if case .tcp = endpoint {
            // Notices a peer that vanished without closing (a host that went away); TCP only.
            redisEnableKeepAlive(context)
        }
        if syr_prepare(context) != SYR_OK {
            redisFree(context)
            throw RedisError(.connectionFailed, "cannot set up the socket to \(endpoint)")
        }
        do {
            try perform(handshake ?? dataHandshake, on: context, endpoint: endpoint)
        } catch {
            redisFree(context)
            throw error
        }
        return context
    }

    /// AUTH, SELECT, CLIENT SETNAME (and ROLE behind Sentinel) in one round trip.
    private func perform(_ handshake: Handshake, on context: UnsafeMutablePointer<redisContext>, endpoint: RedisConfiguration.Endpoint) throws {
        var commands: [RedisCommand] = []
        if let password = handshake.password {
            if let user = handshake.username {
                commands.append(RedisCommand("AUTH", user, password))
            } else {
                commands.append(RedisCommand("AUTH", password))
            }
        }
        if handshake.database != 0 { commands.append(RedisCommand("SELECT", handshake.database)) }
        if let name = handshake.clientName { commands.append(RedisCommand("CLIENT", "SETNAME", name)) }
        if handshake.requireMaster { commands.append(RedisCommand("ROLE")) }
        if commands.isEmpty { return }
        let replies: [RESPValue]
        let timeoutMs = Int32(clamping: configuration.connectTimeout.roundedUpMilliseconds)
        do {
            replies = try exchange(commands, on: context, timeoutMs: timeoutMs)
        } catch let error as RedisError where error.code != .closed {
            throw RedisError(.connectionFailed, "handshake with \(endpoint) failed: \(error.message)")
        }
        for (command, reply) in zip(commands, replies) {
            if command.name == "ROLE", reply.errorMessage == nil {
                let role = reply.array?.first?.string ?? "unknown"
                if role != "master" {
                    throw RedisError(.connectionFailed, "\(endpoint) is a \(role), not the master (a failover is under way)")
                }
                continue
            }
            guard let message = reply.errorMessage else { continue }
            let user = handshake.username ?? "default"
            switch command.name {
            case "AUTH":
                throw RedisError(.authenticationFailed, "authentication as user '\(user)' at \(endpoint) failed: \(message)")
            case _ where message.hasPrefix("NOAUTH"):
                throw RedisError(
                    .authenticationFailed,
                    "\(endpoint) requires a password: give one in the URL or \(RedisConfiguration.EnvironmentKey.password)"
                )
            case "SELECT":
                throw RedisError(.invalidConfiguration, "database \(handshake.database): \(message)")
            default:
                throw RedisError(.serverError, "\(command.name) during connect: \(message)")
            }
        }
    }
}

/// A write to a socket the server has closed raises SIGPIPE, which would end the process; the
/// write's error is handled instead.
private let ignoreSIGPIPE: Void = { _ = signal(SIGPIPE, SIG_IGN) }()

extension RESPValue {
    init(reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .bulk(r.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: r.str, count: r.len)))
        case REDIS_REPLY_STATUS:
            self = .status(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_ERROR:
            self = .error(String(decoding: UnsafeRawBufferPointer(start: r.str, count: r.len), as: UTF8.self))
        case REDIS_REPLY_INTEGER:
            self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RESPValue] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements { items.append(RESPValue(reply: r.element[i]!)) }
            self = .array(items)
        default:
            self = .null
        }
    }
}
