import Testing

@testable import SwitchyardRedis

@Suite("Pool bookkeeping, on its own")
struct ConnectionPoolStateMachineTests {
    typealias Machine = ConnectionPoolStateMachine<String, String>

    @Test func createsUpToTheLimitThenQueues() {
        var pool = Machine(maximum: 2)
        guard case .create = pool.lease(id: 1, waiter: "w1") else {
            Issue.record("expected create")
            return
        }
        guard case .create = pool.lease(id: 2, waiter: "w2") else {
            Issue.record("expected create")
            return
        }
        guard case .wait = pool.lease(id: 3, waiter: "w3") else {
            Issue.record("expected wait")
            return
        }
        #expect(pool.open == 2)
        #expect(pool.waiting == 1)
    }

    @Test func releaseHandsOverInArrivalOrder() {
        var pool = Machine(maximum: 1)
        _ = pool.lease(id: 1, waiter: "a")
        _ = pool.lease(id: 2, waiter: "b")
        _ = pool.lease(id: 3, waiter: "c")
        guard case .handOver(let c1, let w1) = pool.release("conn") else {
            Issue.record("expected hand-over")
            return
        }
        #expect(c1 == "conn" && w1 == "b")
        guard case .handOver(_, let w2) = pool.release("conn") else {
            Issue.record("expected hand-over")
            return
        }
        #expect(w2 == "c")
        guard case .keep = pool.release("conn") else {
            Issue.record("expected keep")
            return
        }
        #expect(pool.idle == ["conn"])
        guard case .use(let reused) = pool.lease(id: 4, waiter: "d") else {
            Issue.record("expected use")
            return
        }
        #expect(reused == "conn")
    }

    @Test func cancelledWaiterIsSkipped() {
        var pool = Machine(maximum: 1)
        _ = pool.lease(id: 1, waiter: "a")
        _ = pool.lease(id: 2, waiter: "b")
        _ = pool.lease(id: 3, waiter: "c")
        #expect(pool.cancel(id: 2) == "b")
        guard case .handOver(_, let next) = pool.release("conn") else {
            Issue.record("expected hand-over")
            return
        }
        #expect(next == "c")
    }

    @Test func cancellationBeforeQueueingIsRemembered() {
        var pool = Machine(maximum: 1)
        _ = pool.lease(id: 1, waiter: "a")
        #expect(pool.cancel(id: 2) == nil)
        guard case .cancelled = pool.lease(id: 2, waiter: "b") else {
            Issue.record("expected cancelled")
            return
        }
        #expect(pool.waiting == 0)
    }

    @Test func shutDownFailsWaitersAndClosesReturns() {
        var pool = Machine(maximum: 1)
        _ = pool.lease(id: 1, waiter: "a")
        _ = pool.lease(id: 2, waiter: "b")
        let (idle, waiters) = pool.shutDown()
        #expect(idle.isEmpty && waiters == ["b"])
        guard case .close = pool.release("conn") else {
            Issue.record("expected close")
            return
        }
        guard case .fail(let error) = pool.lease(id: 3, waiter: "c") else {
            Issue.record("expected fail")
            return
        }
        #expect(error.code == .closed)
        #expect(pool.open == 0)
    }

    @Test func failedCreationFreesItsSlot() {
        var pool = Machine(maximum: 1)
        guard case .create = pool.lease(id: 1, waiter: "a") else {
            Issue.record("expected create")
            return
        }
        pool.creationFailed()
        guard case .create = pool.lease(id: 2, waiter: "b") else {
            Issue.record("expected create again")
            return
        }
    }
}
