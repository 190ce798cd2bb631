/// The bookkeeping of a connection pool, free of I/O and locks so it can be tested on its own.
///
/// Leases hand out an idle connection, ask the owner to open a new one while under the limit, or
/// queue the caller. A release hands the connection straight to the oldest waiter.
struct ConnectionPoolStateMachine<Connection, Waiter> {
    enum LeaseAction {
        case use(Connection)
        /// Open a new connection; it already counts against the limit.
        case create
        /// The waiter was queued and will be handed a connection by a release.
        case wait
        case fail(RedisError)
        /// The caller's task was cancelled before it could be queued.
        case cancelled
    }

    enum ReleaseAction {
        case handOver(Connection, to: Waiter)
        case keep
        /// The pool is shut down: close the connection.
        case close(Connection)
    }

    let maximum: Int
    private(set) var idle: [Connection] = []
    private(set) var open = 0
    private var waiters: [(id: UInt64, waiter: Waiter)] = []
    private var waitersHead = 0
    private var cancelledBeforeWaiting: Set<UInt64> = []
    private(set) var isShutDown = false

    init(maximum: Int) {
        precondition(maximum >= 1, "a pool needs room for at least one connection")
        self.maximum = maximum
    }

    var waiting: Int { waiters.count - waitersHead }
    var leased: Int { open - idle.count }

    /// A lease that never waits: nil means the caller must wait.
    mutating func leaseNow() -> LeaseAction? {
        if isShutDown { return .fail(RedisError(.closed, "the Redis pool is shut down")) }
        if let connection = idle.popLast() { return .use(connection) }
        if open < maximum {
            open += 1
            return .create
        }
        return nil
    }

    mutating func lease(id: UInt64, waiter: Waiter) -> LeaseAction {
        if cancelledBeforeWaiting.remove(id) != nil { return .cancelled }
        if let action = leaseNow() { return action }
        waiters.append((id, waiter))
        return .wait
    }

    mutating func release(_ connection: Connection) -> ReleaseAction {
        if isShutDown {
            open -= 1
            return .close(connection)
        }
        if waitersHead < waiters.count {
            let next = waiters[waitersHead].waiter
            waitersHead += 1
            compactWaiters()
            return .handOver(connection, to: next)
        }
        idle.append(connection)
        return .keep
    }

    /// The owner could not open the connection it was told to create.
    mutating func creationFailed() { open -= 1 }

    /// Removes a waiting caller whose task was cancelled; nil if it was not waiting (yet).
    mutating func cancel(id: UInt64) -> Waiter? {
        if let index = waiters[waitersHead...].firstIndex(where: { $0.id == id }) {
            let removed = waiters.remove(at: index).waiter
            compactWaiters()
            return removed
        }
        cancelledBeforeWaiting.insert(id)
        return nil
    }

    /// Shuts down: returns the idle connections to close and the waiters to fail.
    mutating func shutDown() -> (idle: [Connection], waiters: [Waiter]) {
        isShutDown = true
        let toClose = idle
        open -= idle.count
        idle.removeAll()
        let toFail = waiters[waitersHead...].map(\.waiter)
        waiters.removeAll()
        waitersHead = 0
        return (toClose, toFail)
    }

    private mutating func compactWaiters() {
        if waitersHead == waiters.count {
            waiters.removeAll(keepingCapacity: true)
            waitersHead = 0
        } else if waitersHead > 64 && waitersHead * 2 > waiters.count {
            waiters.removeFirst(waitersHead)
            waitersHead = 0
        }
    }
}
