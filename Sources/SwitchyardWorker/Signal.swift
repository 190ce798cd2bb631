/// A wake-up for one waiting loop: `notify` from anywhere, `wait` returns once per burst of notifies.
final class Signal: Sendable {
    private let stream: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    func notify() { continuation.yield() }

    /// Waits for a notify (or returns at once if one came since the last wait). False when finished.
    func wait() async -> Bool {
        var iterator = stream.makeAsyncIterator()
        return await iterator.next() != nil
    }

    func finish() { continuation.finish() }
}
