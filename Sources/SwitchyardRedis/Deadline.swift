import Synchronization

/// Runs `body`, giving up after `limit`: the caller gets `timeout` at once, and the body's task is
/// cancelled and left to end by itself (a Redis command waiting for its reply is interrupted; a
/// connection attempt ends within its own timeouts). Breakers, limits and the coordinator's readiness use it so a slow
/// or unreachable Redis costs a call at most their call timeout, whatever the connection's
/// reconnect wait or a wait for a pooled connection.
///
/// `late` sees a result that came after the caller was given up on (a probe granted too late,
/// say, to give back).
public func withDeadline<T: Sendable>(
    _ limit: Duration,
    late: (@Sendable (Result<T, any Error>) -> Void)? = nil,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    let waiter = Mutex<CheckedContinuation<T, any Error>?>(nil)
    let take = { @Sendable in
        waiter.withLock { slot -> CheckedContinuation<T, any Error>? in
            defer { slot = nil }
            return slot
        }
    }
    return try await withCheckedThrowingContinuation { continuation in
        waiter.withLock { $0 = continuation }
        // Unstructured: the caller's cancellation does not reach it, so a cancelled job still
        // hands back what it must (a half-open probe's outcome).
        let work = Task { await Result(catching: body) }
        let timer = Task {
            try? await Task.sleep(for: limit)
            guard !Task.isCancelled else { return }
            take()?.resume(throwing: RedisError(.timeout, "no answer from Redis within \(limit)"))
            work.cancel()
        }
        Task {
            let result = await work.value
            timer.cancel()
            if let waiter = take() {
                waiter.resume(with: result)
            } else {
                late?(result)
            }
        }
    }
}

extension Result where Failure == any Error {
    /// The outcome of an async throwing body.
    public init(catching body: () async throws -> Success) async {
        do {
            self = .success(try await body())
        } catch {
            self = .failure(error)
        }
    }
}
