import Foundation

/// Runs a blocking call (starting a server and waiting for its port, waiting for a command to
/// exit) on a thread of its own instead of Swift's cooperative pool, whose few threads (one per
/// core) every other test's tasks need meanwhile.
public func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result(catching: body)) }
    }
}
