import Synchronization

/// A wake-up for one waiting loop: `notify` from anywhere; `wait` returns once per burst of
/// notifies (a notify while nobody waits is kept for the next wait). Waits end early when the
/// waiting task is cancelled; a timed-out wait leaves the signal as it was.
final class Signal: Sendable {
    private struct State {
        var pending = false
        var finished = false
        var next = 0
        var waiters: [Int: CheckedContinuation<Bool, Never>] = [:]
        /// Waits whose timer or cancellation came before they began waiting.
        var expired: Set<Int> = []
    }
    private let state = Mutex(State())

    func notify() {
        let waiters = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            if s.waiters.isEmpty {
                s.pending = true
                return []
            }
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: true) }
    }

    /// Waits for a notify (or returns at once if one came since the last wait). False when
    /// finished or cancelled.
    func wait() async -> Bool {
        await wait(timeout: nil)
    }

    /// Waits for a notify for at most `timeout`; false when the time ran out, or finished.
    func wait(timeout: Duration?) async -> Bool {
        let id = state.withLock { s -> Int in
            defer { s.next += 1 }
            return s.next
        }
        let timer = timeout.map { timeout in
            Task {
                try? await Task.sleep(for: timeout)
                self.resume(id, with: false)
            }
        }
        defer { timer?.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now = state.withLock { s -> Bool? in
                    if s.pending {
                        s.pending = false
                        return true
                    }
                    if s.finished || Task.isCancelled || s.expired.remove(id) != nil { return false }
                    s.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            self.resume(id, with: false)
        }
    }

    private func resume(_ id: Int, with value: Bool) {
        let waiter = state.withLock { s -> CheckedContinuation<Bool, Never>? in
            if let waiter = s.waiters.removeValue(forKey: id) { return waiter }
            // Not waiting yet (or done already): a wait that has not begun must not begin.
            if id >= s.next - 1 { s.expired.insert(id) }
            return nil
        }
        waiter?.resume(returning: value)
    }

    func finish() {
        let waiters = state.withLock { s -> [CheckedContinuation<Bool, Never>] in
            s.finished = true
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: false) }
    }
}
