import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Synchronization

extension Coordinator {
    /// Waits for a job's final result, at most `timeout`; nil when it has none by then (the job
    /// keeps running).
    ///
    /// Woken by the queue's done channel (`QueueKeys.done`), on which finishing a job that asked
    /// for it (`Job.notify`) publishes its id: the result is read as soon as it is written. The
    /// result key is also read every `ResultWaiters.fallbackPoll` (about a second) whatever
    /// happens, because some final results are announced by nobody (a job dead-lettered by the
    /// reclaim or its worker, a cancelled one, one finished by a worker that predates `notify`)
    /// and a message can be lost (a reconnect); so a wait never hangs. While the queue's
    /// subscription is down, the key is read soon at first and less often as the wait grows.
    ///
    /// The job is already pushed: a Redis failure meanwhile is ridden out until the deadline (the
    /// job may well finish), never answered as if the job had failed. On graceful shutdown the
    /// wait ends at once with a 503 that names the job, so the coordinator stops promptly.
    func waitForResult(queue: JobQueue, id: String, timeout: Duration) async throws -> JobResult? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        let name = queue.configuration.name
        // Registered before the first read: a message that comes after it wakes this waiter.
        let waiter = resultWaiters.register(queue: name, id: id)
        defer { resultWaiters.unregister(waiter) }
        do {
            return try await cancelWhenGracefulShutdown {
                var pause = Duration.milliseconds(2)
                while true {
                    do {
                        if let result = try await queue.result(of: id) { return result }
                    } catch is CancellationError {
                        throw CancellationError()
                    } catch {
                        self.logger.warning("reading a result failed; waiting on", metadata: ["job": "\(id)", "error": "\(error)"])
                    }
                    let now = clock.now
                    if now >= deadline { return nil }
                    let poll = self.resultWaiters.isLive(name) ? ResultWaiters.fallbackPoll : pause
                    await self.resultWaiters.wait(waiter, upTo: min(poll, deadline - now))
                    try Task.checkCancellation()
                    pause = min(pause * 2, .milliseconds(100))
                }
            }
        } catch is CancellationError where Task.isShuttingDownGracefully {
            throw APIError(
                .serviceUnavailable,
                "the coordinator is shutting down; job '\(id)' keeps running: GET /api/v1/jobs/\(id) finds its result",
                type: "server_error",
                code: "shutting_down"
            )
        }
    }
}

/// The requests waiting for job results, and one Pub/Sub subscription per served queue to the
/// channel on which finished jobs are announced (`QueueKeys.done`). A message wakes the waiters
/// of its job id; a subscription made (again) or lost wakes every waiter of its queue, so that
/// each reads its result key once more (a job may have finished unannounced meanwhile).
final class ResultWaiters: Sendable {
    /// How often a waiter reads its result key while its queue's subscription is live.
    static let fallbackPoll = Duration.seconds(1)
    /// A subscription that hears nothing for this long is made again: a silently dead connection
    /// is found within this time.
    static let quietLimit = Duration.seconds(60)

    struct Token: Sendable, Hashable {
        let job: JobKey
        let serial: UInt64
    }

    struct JobKey: Sendable, Hashable {
        let queue: String
        let id: String
    }

    private struct Waiter {
        var continuation: CheckedContinuation<Void, Never>?
        /// A wake came while the waiter was not suspended: its next wait returns at once.
        var woken = false
    }

    private struct State {
        var waiters: [JobKey: [UInt64: Waiter]] = [:]
        var serial: UInt64 = 0
        /// Queues whose subscription is confirmed and not known to be lost.
        var live: Set<String> = []
    }

    private let state = Mutex(State())
    private let configuration: RedisConfiguration
    private let queues: [QueueKeys]
    private let logger: Logger

    /// `configuration` is the Redis the queues live in; each subscription gets a connection of its own.
    init(configuration: RedisConfiguration, queues: [String], logger: Logger) {
        self.configuration = configuration
        self.queues = queues.map { QueueKeys(queue: $0) }
        self.logger = logger
    }

    func register(queue: String, id: String) -> Token {
        state.withLock { s in
            s.serial += 1
            let token = Token(job: JobKey(queue: queue, id: id), serial: s.serial)
            s.waiters[token.job, default: [:]][token.serial] = Waiter()
            return token
        }
    }

    func unregister(_ token: Token) {
        let continuation = state.withLock { s -> CheckedContinuation<Void, Never>? in
            let waiter = s.waiters[token.job]?.removeValue(forKey: token.serial)
            if s.waiters[token.job]?.isEmpty == true { s.waiters[token.job] = nil }
            return waiter?.continuation
        }
        continuation?.resume()
    }

    func isLive(_ queue: String) -> Bool { state.withLock { $0.live.contains(queue) } }

    /// How many requests wait now (for tests and logs).
    var waiting: Int { state.withLock { $0.waiters.values.reduce(0) { $0 + $1.count } } }

    /// Suspends until the waiter is woken (its job was announced, its queue's subscription
    /// changed), `limit` has passed, or the calling task is cancelled. Returns at once when a
    /// wake came since the last wait.
    func wait(_ token: Token, upTo limit: Duration) async {
        let timer = Task {
            try? await Task.sleep(for: limit)
            if !Task.isCancelled { self.wake(token) }
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { s -> Bool in
                    guard var waiter = s.waiters[token.job]?[token.serial] else { return true }
                    if waiter.woken || Task.isCancelled {
                        waiter.woken = false
                        s.waiters[token.job]?[token.serial] = waiter
                        return true
                    }
                    waiter.continuation = continuation
                    s.waiters[token.job]?[token.serial] = waiter
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            self.wake(token)
        }
    }

    /// Wakes one waiter (its timer ran out, its task was cancelled).
    private func wake(_ token: Token) {
        let continuation = state.withLock { s -> CheckedContinuation<Void, Never>? in
            guard var waiter = s.waiters[token.job]?[token.serial] else { return nil }
            defer { s.waiters[token.job]?[token.serial] = waiter }
            if let continuation = waiter.continuation {
                waiter.continuation = nil
                return continuation
            }
            waiter.woken = true
            return nil
        }
        continuation?.resume()
    }

    /// Wakes every waiter of `job`, or of every job of `queue`.
    private func wakeAll(job: JobKey? = nil, queue: String? = nil) {
        let continuations = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            var out: [CheckedContinuation<Void, Never>] = []
            let keys = job.map { [$0] } ?? s.waiters.keys.filter { $0.queue == queue }
            for key in keys {
                guard var waiters = s.waiters[key] else { continue }
                for serial in waiters.keys {
                    if let continuation = waiters[serial]?.continuation {
                        out.append(continuation)
                        waiters[serial]?.continuation = nil
                    } else {
                        waiters[serial]?.woken = true
                    }
                }
                s.waiters[key] = waiters
            }
            return out
        }
        for continuation in continuations { continuation.resume() }
    }

    private func setLive(_ queue: String, _ live: Bool) {
        let changed = state.withLock { s in live ? s.live.insert(queue).inserted : s.live.remove(queue) != nil }
        // Made: anything finished before it went unheard. Lost: poll soon until it is back.
        if changed { wakeAll(queue: queue) }
    }

    /// Keeps every queue's subscription until cancelled, making a lost one again with backoff.
    func run() async {
        await withDiscardingTaskGroup { group in
            for keys in queues {
                group.addTask { await self.subscribe(keys) }
            }
        }
    }

    private func subscribe(_ keys: QueueKeys) async {
        var failures = 0
        while !Task.isCancelled {
            let connection = RedisConnection(configuration: configuration, logger: logger)
            do {
                _ = try await connection.send(RedisCommand("SUBSCRIBE", keys.done))
                if failures > 0 { logger.notice("result announcements are back", metadata: ["queue": "\(keys.queue)"]) }
                failures = 0
                setLive(keys.queue, true)
                while !Task.isCancelled {
                    let message: RESPValue
                    do {
                        message = try await connection.receive(timeout: .after(Self.quietLimit))
                    } catch let error as RedisError where error.code == .timeout {
                        break
                    }
                    handle(message, queue: keys.queue)
                }
            } catch {
                if !Task.isCancelled {
                    failures += 1
                    // Once per outage: waiting requests read their results by polling meanwhile.
                    if failures == 1 {
                        logger.warning(
                            "lost the subscription to result announcements; waiting requests poll until it is back",
                            metadata: ["queue": "\(keys.queue)", "error": "\(error)"]
                        )
                    }
                }
            }
            connection.close()
            setLive(keys.queue, false)
            if failures > 0 && !Task.isCancelled {
                try? await Task.sleep(for: Backoff(base: .milliseconds(50), cap: .seconds(2)).delay(attempt: failures))
            }
        }
    }

    /// One Pub/Sub message: ["message", channel, job id].
    private func handle(_ message: RESPValue, queue: String) {
        guard let parts = message.array, parts.count == 3, parts[0].string == "message", let id = parts[2].string else { return }
        wakeAll(job: JobKey(queue: queue, id: id))
    }
}
