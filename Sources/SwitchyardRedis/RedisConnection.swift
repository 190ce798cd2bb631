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

    // Touched only on `thread`.
    private var context: UnsafeMutablePointer<redisContext>?
    private var failedAttempts = 0
    private var nextAttempt = ContinuousClock.now
    private var lastConnectError: RedisError?

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
    }

    deinit {
        // Jobs hold the connection strongly, so none is running here.
        if let context { redisFree(context) }
        thread.stop()
        syr_close(wakeRead)
        syr_close(wakeWrite)
    }

    /// Sends one command and returns its reply. An error reply is thrown as `serverError`.
    @discardableResult
    public func send(_ command: RedisCommand, timeout: RedisTimeout = .default) async throws -> RESPValue {
        try await perform(timeout: timeout) { connection, ms in try connection.exchange([command], timeoutMs: ms)[0] }
            .throwingServerError()
    }

    /// Sends one command built from its name and arguments.
    @discardableResult
    public func send(_ name: String, _ arguments: any RedisArgument...) async throws -> RESPValue {
        try await send(RedisCommand(name, arguments: arguments))
    }

    /// Sends all commands in one write and reads all replies: one round trip. Error replies are
    /// returned in place (`.error`), so one failing command does not hide the others' replies.
    public func pipeline(_ commands: [RedisCommand], timeout: RedisTimeout = .default) async throws -> [RESPValue] {
        if commands.isEmpty { return [] }
        return try await perform(timeout: timeout) { connection, ms in try connection.exchange(commands, timeoutMs: ms) }
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
            let reply = try connection.exchange([call], timeoutMs: ms)[0]
            guard case .error(let message) = reply, message.hasPrefix("NOSCRIPT") else { return reply }
            connection.logger.debug("script \(script.sha1) missing on the server; loading it")
            try connection.exchange([RedisCommand("SCRIPT", "LOAD", script.source)], timeoutMs: ms)[0].throwingServerError()
            return try connection.exchange([call], timeoutMs: ms)[0]
        }.throwingServerError()
    }

    /// Reads one reply that arrives without a command of its own: a Pub/Sub message on a
    /// connection that has sent SUBSCRIBE. It never opens a connection (a subscription does not
    /// survive a reconnect): with no socket open it fails with `connectionLost` at once. A
    /// timeout closes the socket, as for any command.
    public func receive(timeout: RedisTimeout = .never) async throws -> RESPValue {
        try await perform(timeout: timeout) { connection, ms in
            guard let context = connection.context else {
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
        _ = thread.submit { [self] in disconnect() }
        thread.stop()
    }

    /// Whether a socket is open right now (false before first use and after a failure).
    public var isConnected: Bool {
        get async { (try? await perform(timeout: .default) { connection, _ in connection.context != nil }) ?? false }
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

    /// Writes the commands, reads one reply per command. Any transport failure closes the socket.
    @discardableResult
    private func exchange(_ commands: [RedisCommand], timeoutMs: Int32) throws -> [RESPValue] {
        let context = try connectedContext()
        return try exchange(commands, on: context, timeoutMs: timeoutMs)
    }

    private func exchange(
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

    /// Closes the broken socket (if it is the current one) and describes what went wrong.
    private func transportFailure(
        _ rc: Int32,
        on failed: UnsafeMutablePointer<redisContext>,
        during command: RedisCommand
    ) -> any Error {
        let detail = String(cString: UnsafeRawPointer(failed.pointer(to: \.errstr)!).assumingMemoryBound(to: CChar.self))
        if failed == context { disconnect() }
        switch rc {
        case SYR_CANCELLED:
            return interruption()
        case SYR_TIMEOUT:
            return RedisError(.timeout, "no reply to \(command.name) from \(configuration.endpoint) within the timeout")
        case SYR_EOF:
            return RedisError(.connectionLost, "\(configuration.endpoint) closed the connection during \(command.name)")
        case SYR_PROTOCOL:
            return RedisError(.protocolError, "the reply to \(command.name) is not valid RESP: \(detail)")
        default:
            return RedisError(.connectionLost, "connection to \(configuration.endpoint) failed during \(command.name): \(detail)")
        }
    }

    private func disconnect() {
        if let context { redisFree(context) }
        context = nil
    }

    /// An open, authenticated context: the current one if the server has not closed it, or a new
    /// one, retrying with backoff for up to `reconnectWait`.
    private func connectedContext() throws -> UnsafeMutablePointer<redisContext> {
        if let context {
            if syr_peer_closed(context) == 0 { return context }
            logger.warning("Redis closed the connection; reconnecting")
            disconnect()
        }
        let deadline = ContinuousClock.now + configuration.reconnectWait
        while true {
            let now = ContinuousClock.now
            if nextAttempt > now {
                // Still inside the backoff after a failed attempt: wait for it if the deadline allows.
                if nextAttempt > deadline {
                    throw lastConnectError ?? RedisError(.connectionFailed, "cannot reach \(configuration.endpoint)")
                }
                let sleepMs = Int32(clamping: (nextAttempt - now).roundedUpMilliseconds)
                if syr_sleep(wakeRead, sleepMs) == SYR_CANCELLED { throw interruption() }
            }
            do {
                let context = try openContext()
                if failedAttempts > 0 { logger.info("reconnected to Redis after \(failedAttempts) failed attempts") }
                failedAttempts = 0
                lastConnectError = nil
                self.context = context
                return context
            } catch let error as RedisError {
                // Every failed attempt backs off, so a wrong password does not hammer the server either.
                failedAttempts += 1
                lastConnectError = error
                nextAttempt = ContinuousClock.now + Backoff.reconnect.delay(attempt: failedAttempts)
                guard error.code == .connectionFailed else { throw error }
                if failedAttempts == 1 { logger.warning("cannot reach Redis: \(error.message); retrying with backoff") }
                if nextAttempt > deadline { throw error }
            }
        }
    }

    /// Why a wait was woken: the connection was closed, or the caller's task was cancelled.
    private func interruption() -> any Error {
        shared.withLock { $0.closed } ? RedisError(.closed, "the connection was closed") : CancellationError()
    }

    /// Opens and authenticates a socket. Throws `RedisError`, or `CancellationError` when the
    /// caller's task was cancelled during the handshake.
    private func openContext() throws -> UnsafeMutablePointer<redisContext> {
        let connectMs = configuration.connectTimeout.roundedUpMilliseconds
        let tv = timeval(tv_sec: connectMs / 1000, tv_usec: .init((connectMs % 1000) * 1000))
        let opened: UnsafeMutablePointer<redisContext>?
        switch configuration.endpoint {
        case .tcp(let host, let port): opened = redisConnectWithTimeout(host, Int32(port), tv)
        case .unixSocket(let path): opened = redisConnectUnixWithTimeout(path, tv)
        }
        guard let context = opened else { throw RedisError(.connectionFailed, "cannot allocate a hiredis context") }
        if context.pointee.err != 0 {
            let why = String(cString: UnsafeRawPointer(context.pointer(to: \.errstr)!).assumingMemoryBound(to: CChar.self))
            redisFree(context)
            throw RedisError(.connectionFailed, "cannot connect to \(configuration.endpoint): \(why)")
        }
        if case .tcp = configuration.endpoint {
            // Notices a peer that vanished without closing (a host that went away); TCP only.
            redisEnableKeepAlive(context)
        }
        if syr_prepare(context) != SYR_OK {
            redisFree(context)
            throw RedisError(.connectionFailed, "cannot set up the socket to \(configuration.endpoint)")
        }
        do {
            try handshake(context)
        } catch {
            redisFree(context)
            throw error
        }
        return context
    }

    /// AUTH, SELECT and CLIENT SETNAME in one round trip.
    private func handshake(_ context: UnsafeMutablePointer<redisContext>) throws {
        var commands: [RedisCommand] = []
        if let password = configuration.password {
            if let user = configuration.username {
                commands.append(RedisCommand("AUTH", user, password))
            } else {
                commands.append(RedisCommand("AUTH", password))
            }
        }
        if configuration.database != 0 { commands.append(RedisCommand("SELECT", configuration.database)) }
        if let name = configuration.clientName { commands.append(RedisCommand("CLIENT", "SETNAME", name)) }
        if commands.isEmpty { return }
        let replies: [RESPValue]
        let timeoutMs = Int32(clamping: configuration.connectTimeout.roundedUpMilliseconds)
        do {
            replies = try exchange(commands, on: context, timeoutMs: timeoutMs)
        } catch let error as RedisError where error.code != .closed {
            throw RedisError(.connectionFailed, "handshake with \(configuration.endpoint) failed: \(error.message)")
        }
        for (command, reply) in zip(commands, replies) {
            guard let message = reply.errorMessage else { continue }
            let user = configuration.username ?? "default"
            switch command.name {
            case "AUTH":
                throw RedisError(.authenticationFailed, "authentication as user '\(user)' at \(configuration.endpoint) failed: \(message)")
            case _ where message.hasPrefix("NOAUTH"):
                throw RedisError(
                    .authenticationFailed,
                    "\(configuration.endpoint) requires a password: give one in the URL or \(RedisConfiguration.EnvironmentKey.password)"
                )
            case "SELECT":
                throw RedisError(.invalidConfiguration, "database \(configuration.database): \(message)")
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
