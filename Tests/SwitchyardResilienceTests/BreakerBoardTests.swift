import Foundation
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization
import Testing

@testable import SwitchyardResilience

/// Breakers shared by several boards ("workers", each with a pool of its own) on a private
/// redis-server. Serialized: the open periods are a few hundred ms and should not share the CPU
/// with the other breaker tests.
@Suite("Circuit breakers against a real redis-server", .serialized)
struct BreakerBoardTests {
    // MARK: - Helpers

    static func target(_ id: String, _ breaker: BreakerSettings, probeLeaseMs: Int = 30_000) -> ResilienceTarget {
        ResilienceTarget(id: id, breaker: breaker, probeLeaseMs: probeLeaseMs)
    }

    /// `count` boards on `server`, each running (subscribed) in a child task until `body` ends.
    static func withBoards(
        _ server: RedisServer,
        count: Int = 4,
        targets: [ResilienceTarget],
        waitUntilTrusted: Bool = true,
        _ body: ([BreakerBoard]) async throws -> Void
    ) async throws {
        let pools = (0..<count).map { _ in RedisConnectionPool(configuration: server.configuration) }
        let boards = pools.map { BreakerBoard(redis: $0, targets: targets) }
        defer {
            for pool in pools { pool.shutDown() }
            withExtendedLifetime(server) {}
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for board in boards { group.addTask { try await board.run() } }
            defer { group.cancelAll() }
            if waitUntilTrusted {
                let trusted = await eventually(timeout: .seconds(10)) { boards.allSatisfy(\.isTrusted) }
                try #require(trusted, "every board subscribed and read its breakers")
            }
            try await body(boards)
        }
    }

    /// One call through `board` that ends with `outcome`.
    static func call(
        _ board: BreakerBoard,
        _ target: ResilienceTarget,
        _ outcome: CallOutcome = .failure(),
        duration: Duration = .milliseconds(1)
    ) async throws {
        let permit = try await board.permit(target).get()
        await board.record(permit, target: target, outcome: outcome, duration: duration)
    }

    /// Asks every board for `each` permits at once; the granted ones and the refusals.
    static func permitsAtOnce(
        _ boards: [BreakerBoard],
        _ target: ResilienceTarget,
        each: Int = 10
    ) async
        -> (granted: [(BreakerBoard, BreakerPermit)], refused: [BreakerRefusal])
    {
        await withTaskGroup(of: (Int, Result<BreakerPermit, BreakerRefusal>).self) { group in
            for (i, board) in boards.enumerated() {
                for _ in 0..<each { group.addTask { (i, await board.permit(target)) } }
            }
            var granted: [(BreakerBoard, BreakerPermit)] = []
            var refused: [BreakerRefusal] = []
            for await (i, result) in group {
                switch result {
                case .success(let permit): granted.append((boards[i], permit))
                case .failure(let refusal): refused.append(refusal)
                }
            }
            return (granted, refused)
        }
    }

    /// How long the breaker's current open period is, from `since` to `openUntil`, in ms.
    static func openPeriodMs(_ status: BreakerStatus) -> Int {
        Int((((status.openUntil ?? 0) - (status.since ?? 0)) * 1000).rounded())
    }

    /// EVALSHA calls the server has run so far (to tell a local decision from a Redis one).
    static func scriptCalls(_ pool: RedisConnectionPool) async throws -> Int {
        let info = try await pool.send("INFO", "commandstats").string ?? ""
        guard let line = info.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_evalsha:") }),
            let calls = line.split(separator: ",").first?.split(separator: "=").last
        else { return 0 }
        return Int(calls) ?? 0
    }

    static func isGranted(_ board: BreakerBoard, _ target: ResilienceTarget) async -> Bool {
        if case .success = await board.permit(target) { return true }
        return false
    }

    static func grantedCount(_ boards: [BreakerBoard], _ target: ResilienceTarget) async -> Int {
        var granted = 0
        for board in boards where await isGranted(board, target) { granted += 1 }
        return granted
    }

    /// Waits until every board has subscribed again and re-read its breakers.
    static func allResubscribed(_ boards: [BreakerBoard]) async -> Bool {
        await eventually(timeout: .seconds(15)) { boards.allSatisfy { $0.statistics.resubscribes >= 1 && $0.isTrusted } }
    }

    static func localStates(_ boards: [BreakerBoard], _ target: ResilienceTarget) -> [BreakerState?] {
        boards.map { $0.localState(target.id) }
    }

    // MARK: - Tests

    /// Failures recorded round robin by four workers open the breaker at minimum_calls, not one
    /// call earlier, and every worker then refuses from its local copy alone.
    @Test func failureRateAcrossBoardsOpensTheBreaker() async throws {
        let server = try RedisServer()
        let target = Self.target("t1/failure-rate", BreakerSettings(windowSize: 20, minimumCalls: 8, failureRateThreshold: 50))
        try await Self.withBoards(server, targets: [target]) { boards in
            #expect(Self.localStates(boards, target) == Array(repeating: .closed, count: 4))
            for i in 0..<7 { try await Self.call(boards[i % 4], target) }
            let seven = try await boards[0].status(target)
            #expect(seven.state == .closed && seven.calls == 7 && seven.failures == 7)

            try await Self.call(boards[7 % 4], target)
            let eight = try await boards[0].status(target)
            #expect(eight.state == .open)
            #expect(eight.openingsInARow == 1)
            #expect(eight.reason.contains("failure rate"), "\(eight.reason)")
            #expect(eight.calls == 0, "the window is cleared on opening")

            let everyCopyOpen = await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .open } }
            #expect(everyCopyOpen, "\(Self.localStates(boards, target))")
            // Refused with no Redis round trip.
            let pool = RedisConnectionPool(configuration: server.configuration)
            defer { pool.shutDown() }
            let before = try await Self.scriptCalls(pool)
            for board in boards {
                let refused = await board.permit(target)
                guard case .failure(let refusal) = refused else {
                    Issue.record("an open breaker let a call through: \(refused)")
                    continue
                }
                #expect(refusal.state == .open)
                #expect((refusal.retryIn ?? .zero) > .seconds(5), "\(String(describing: refusal.retryIn))")
                #expect(board.statistics.refused == 1)
            }
            #expect(try await Self.scriptCalls(pool) == before, "the refusals asked Redis")
        }
    }

    /// Half-open lets exactly half_open_calls probes through the whole cluster; a failed probe
    /// set opens it again for longer, a successful one closes it everywhere.
    @Test func halfOpenProbesAreLimitedClusterWide() async throws {
        let server = try RedisServer()
        let settings = BreakerSettings(
            windowSize: 2,
            minimumCalls: 2,
            failureRateThreshold: 50,
            waitMs: 300,
            waitMultiplier: 2,
            jitter: 0,
            halfOpenCalls: 2
        )
        let target = Self.target("t2/half-open", settings)
        try await Self.withBoards(server, targets: [target]) { boards in
            try await Self.call(boards[0], target)
            try await Self.call(boards[1], target)
            let first = try await boards[0].status(target)
            #expect(first.state == .open && first.openingsInARow == 1)
            #expect(Self.openPeriodMs(first) == 300)

            // After the wait: two probes in all, whatever the number of boards and calls.
            try await Task.sleep(for: .milliseconds(450))
            let round1 = await Self.permitsAtOnce(boards, target)
            #expect(round1.granted.count == 2)
            #expect(round1.granted.allSatisfy { $0.1.probe })
            #expect(round1.refused.allSatisfy { $0.state == .halfOpen }, "\(round1.refused.map(\.state))")
            #expect(round1.refused.allSatisfy { $0.retryIn == nil }, "a half-open refusal promises no wait")
            let halfOpen = try await boards[0].status(target)
            #expect(halfOpen.state == .halfOpen && halfOpen.probesGranted == 2 && halfOpen.probesInFlight == 2)

            // One probe of two fails (50 %, at the threshold): open again, for twice as long.
            guard round1.granted.count == 2 else { return }
            let (b1, p1) = round1.granted[0]
            let (b2, p2) = round1.granted[1]
            await b1.record(p1, target: target, outcome: .success, duration: .milliseconds(1))
            #expect(try await boards[0].status(target).state == .halfOpen, "one outcome of two decides nothing")
            await b2.record(p2, target: target, outcome: .failure(), duration: .milliseconds(1))
            let second = try await boards[0].status(target)
            #expect(second.state == .open)
            #expect(second.openingsInARow == 2)
            #expect(Self.openPeriodMs(second) == 600, "the second opening lasts wait_ms × wait_multiplier")
            #expect(second.reason.contains("probes failed"), "\(second.reason)")
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .open } })

            // The next probe set succeeds: closed, openings forgotten, every copy closed.
            try await Task.sleep(for: .milliseconds(750))
            let round2 = await Self.permitsAtOnce(boards, target)
            #expect(round2.granted.count == 2 && round2.granted.allSatisfy { $0.1.probe })
            for (board, permit) in round2.granted {
                await board.record(permit, target: target, outcome: .success, duration: .milliseconds(1))
            }
            let closed = try await boards[0].status(target)
            #expect(closed.state == .closed && closed.openingsInARow == 0 && closed.calls == 0)
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .closed } })
            for board in boards {
                let permit = await board.permit(target)
                #expect((try? permit.get())?.probe == false, "\(permit)")
            }
        }
    }

    /// An abandoned call (cancelled, say) says nothing about the target: not counted while
    /// closed, and a half-open probe's grant is given back at once rather than after its lease.
    @Test func anAbandonedCallIsNotCountedAndGivesItsProbeBack() async throws {
        let server = try RedisServer()
        let settings = BreakerSettings(windowSize: 4, minimumCalls: 2, failureRateThreshold: 50, waitMs: 300, jitter: 0, halfOpenCalls: 1)
        let target = Self.target("t2b/abandoned", settings, probeLeaseMs: 60_000)
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            let abandoned = try await boards[0].permit(target).get()
            await boards[0].record(abandoned, target: target, outcome: .abandoned, duration: .seconds(120))
            #expect(try await boards[0].status(target).calls == 0)
            #expect(boards[0].refusesLocally(target) == nil)

            try await Self.call(boards[0], target)
            try await Self.call(boards[1], target)
            #expect(await eventually(timeout: .seconds(5)) { boards[1].refusesLocally(target)?.state == .open })
            try await Task.sleep(for: .milliseconds(450))
            let probe = try await boards[0].permit(target).get()
            #expect(probe.probe)
            #expect((try? await boards[0].permit(target).get()) == nil, "one probe at a time")
            await boards[0].record(probe, target: target, outcome: .abandoned, duration: .milliseconds(1))
            let given = try await boards[0].status(target)
            #expect(given.state == .halfOpen && given.probesGranted == 0)
            // Granted again at once, well within the 60 s lease; its success closes the breaker.
            let again = try await boards[0].permit(target).get()
            #expect(again.probe)
            await boards[0].record(again, target: target, outcome: .success, duration: .milliseconds(1))
            #expect(try await boards[0].status(target).state == .closed)
        }
    }

    /// A probe given back is the cluster's again: a board that was refused while it was out may
    /// take it, without waiting for the probe lease.
    @Test func anAbandonedProbeCanBeTakenByAnotherBoard() async throws {
        let server = try RedisServer()
        let settings = BreakerSettings(windowSize: 4, minimumCalls: 2, failureRateThreshold: 50, waitMs: 300, jitter: 0, halfOpenCalls: 1)
        let target = Self.target("t2c/abandoned-elsewhere", settings, probeLeaseMs: 60_000)
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            try await Self.call(boards[0], target)
            try await Self.call(boards[0], target)
            try await Task.sleep(for: .milliseconds(450))
            let probe = try await boards[0].permit(target).get()
            #expect(probe.probe)
            #expect((try? await boards[1].permit(target).get()) == nil, "the only probe is out")
            await boards[0].record(probe, target: target, outcome: .abandoned, duration: .milliseconds(1))
            #expect(try await boards[0].status(target).probesGranted == 0)
            let taken = await eventually(timeout: .seconds(3)) { (try? await boards[1].permit(target).get())?.probe == true }
            #expect(taken, "board 1 still refuses the probe given back: \(String(describing: boards[1].refusesLocally(target)))")
        }
    }

    /// Answers that come, but slowly, open the breaker once the slow-call rate reaches its threshold.
    @Test func slowCallsOpenTheBreaker() async throws {
        let server = try RedisServer()
        let target = Self.target(
            "t3/slow",
            BreakerSettings(windowSize: 10, minimumCalls: 4, failureRateThreshold: 50, slowCallMs: 100, slowCallRateThreshold: 50)
        )
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            // 1 slow of 4: 25 %.
            for i in 0..<4 {
                try await Self.call(boards[i % 2], target, .success, duration: .milliseconds(i == 0 ? 150 : 5))
            }
            let quarter = try await boards[0].status(target)
            #expect(quarter.state == .closed && quarter.calls == 4 && quarter.slowCalls == 1 && quarter.failures == 0)
            // 3 slow of 6: 50 %.
            try await Self.call(boards[0], target, .success, duration: .milliseconds(100))
            #expect(try await boards[0].status(target).state == .closed)
            try await Self.call(boards[1], target, .success, duration: .milliseconds(250))
            let status = try await boards[0].status(target)
            #expect(status.state == .open)
            #expect(status.reason.lowercased().contains("slow"), "\(status.reason)")
        }
    }

    /// Jitter spreads an opening but never past max_wait_ms.
    @Test func anOpeningStaysWithinMaxWait() async throws {
        let server = try RedisServer()
        let target = Self.target(
            "t3b/max-wait",
            BreakerSettings(windowSize: 2, minimumCalls: 2, waitMs: 1_000, maxWaitMs: 1_000, jitter: 0.5)
        )
        try await Self.withBoards(server, count: 1, targets: [target]) { boards in
            var periods: [Int] = []
            for _ in 0..<6 {
                try await Self.call(boards[0], target)
                try await Self.call(boards[0], target)
                periods.append(Self.openPeriodMs(try await boards[0].status(target)))
                try await boards[0].force(target, .reset, note: "test")
            }
            #expect(periods.allSatisfy { (500...1_000).contains($0) }, "\(periods)")
        }
    }

    /// A Retry-After opens a closed breaker at once for at least that long; a shorter one later
    /// never shortens the opening, a longer one lengthens it.
    @Test func retryAfterOpensAtOnceAndIsNeverShortened() async throws {
        let server = try RedisServer()
        let target = Self.target("t4/retry-after", BreakerSettings(windowSize: 20, minimumCalls: 10, waitMs: 1_000, jitter: 0.2))
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            let early = try await boards[1].permit(target).get()
            try await Self.call(boards[0], target, .failure(retryAfter: .seconds(5)))
            let opened = try await boards[0].status(target)
            #expect(opened.state == .open, "one Retry-After opens it below minimum_calls")
            #expect(Self.openPeriodMs(opened) == 5_000, "the Retry-After, not wait_ms ± jitter")
            #expect((opened.openUntil ?? 0) >= Date().timeIntervalSince1970 + 4.5)
            #expect(opened.reason.contains("Retry-After"), "\(opened.reason)")

            // A call admitted before the opening reports a shorter Retry-After: no change at all.
            await boards[1].record(early, target: target, outcome: .failure(retryAfter: .seconds(1)), duration: .milliseconds(1))
            let after = try await boards[0].status(target)
            #expect(after.state == .open && after.openUntil == opened.openUntil && after.generation == opened.generation)

            // The other board refuses locally for about the 5 s.
            #expect(await eventually(timeout: .seconds(5)) { boards[1].localState(target.id) == .open })
            if case .failure(let refusal) = await boards[1].permit(target) {
                #expect((refusal.retryIn ?? .zero) > .seconds(4))
            } else {
                Issue.record("the breaker let a call through during a Retry-After")
            }

            // A longer one lengthens it.
            await boards[1].record(early, target: target, outcome: .failure(retryAfter: .seconds(8)), duration: .milliseconds(1))
            let longer = try await boards[0].status(target)
            #expect((longer.openUntil ?? 0) >= (opened.openUntil ?? 0) + 2.5)
        }
    }

    /// An operator's open, close and reset: held open against everything, held closed against
    /// any failure rate, and back to automatic with an empty window.
    @Test func forcedStates() async throws {
        let server = try RedisServer()
        let target = Self.target("t5/forced", BreakerSettings(windowSize: 10, minimumCalls: 4, failureRateThreshold: 50))
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        try await Self.withBoards(server, targets: [target]) { boards in
            let opened = try await boards[0].force(target, .open, note: "ops: maintenance")
            #expect(opened.state == .forcedOpen && opened.forcedBy == "ops: maintenance")
            #expect(try await pool.send("PTTL", ResilienceKeys.breaker(target.id)).int == -1, "a forced state does not expire")
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .forcedOpen } })
            for board in boards {
                guard case .failure(let refusal) = await board.permit(target) else {
                    Issue.record("a forced-open breaker let a call through")
                    continue
                }
                #expect(refusal.state == .forcedOpen && refusal.retryIn == nil)
            }
            // Outcomes, even under the current generation and with a Retry-After, change nothing.
            let current = BreakerPermit(target: target.id, generation: opened.generation, probe: false, tracked: true)
            for _ in 0..<5 { await boards[1].record(current, target: target, outcome: .failure(), duration: .milliseconds(1)) }
            await boards[1].record(current, target: target, outcome: .failure(retryAfter: .seconds(3)), duration: .milliseconds(1))
            let ignored = try await boards[0].status(target)
            #expect(ignored.state == .forcedOpen && ignored.generation == opened.generation && ignored.calls == 0)

            // Held closed: every failure is counted, none opens it.
            let closed = try await boards[0].force(target, .close, note: "ops: ignore the errors")
            #expect(closed.state == .forcedClosed && closed.forcedBy == "ops: ignore the errors")
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .forcedClosed } })
            for i in 0..<12 { try await Self.call(boards[i % 4], target) }
            let held = try await boards[0].status(target)
            #expect(held.state == .forcedClosed && held.calls == 10 && held.failures == 10)

            // Reset: closed, automatic, window and openings cleared, and the key expires again.
            let reset = try await boards[2].force(target, .reset, note: "ops")
            #expect(reset.state == .closed && reset.calls == 0 && reset.failures == 0 && reset.forcedBy == nil && reset.openingsInARow == 0)
            #expect(try await pool.send("PTTL", ResilienceKeys.breaker(target.id)).int ?? -1 > 0)
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .closed } })
            for i in 0..<4 { try await Self.call(boards[i], target) }
            #expect(try await boards[0].status(target).state == .open, "automatic again")
        }
    }

    /// An outcome from a call admitted before a transition (an older generation) is not counted.
    @Test func outcomesOfAnEarlierGenerationAreIgnored() async throws {
        let server = try RedisServer()
        let target = Self.target("t6/generation", BreakerSettings(windowSize: 10, minimumCalls: 4, failureRateThreshold: 50))
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            let old = try await boards[0].permit(target).get()
            for i in 0..<4 { try await Self.call(boards[i % 2], target) }
            #expect(try await boards[0].status(target).state == .open)
            let reset = try await boards[1].force(target, .reset, note: "test")
            #expect(reset.state == .closed && reset.generation > old.generation)
            for _ in 0..<6 { await boards[0].record(old, target: target, outcome: .failure(), duration: .milliseconds(1)) }
            let status = try await boards[0].status(target)
            #expect(status.state == .closed && status.calls == 0, "calls: \(status.calls)")
            // A current permit's outcome is counted (the check above is not vacuous).
            #expect(await eventually(timeout: .seconds(5)) { boards[0].localState(target.id) == .closed })
            try await Self.call(boards[0], target)
            #expect(try await boards[0].status(target).calls == 1)
        }
    }

    /// A killed subscription is made again; changes made meanwhile reach the local copy.
    @Test func aKilledSubscriptionIsMadeAgain() async throws {
        let server = try RedisServer()
        let target = Self.target("t7/resubscribe", BreakerSettings())
        let missed = Self.target("t7/missed", BreakerSettings())
        let admin = RedisConnectionPool(configuration: server.configuration)
        let other = BreakerBoard(redis: admin, targets: [target])
        defer { admin.shutDown() }
        try await Self.withBoards(server, count: 1, targets: [target, missed]) { boards in
            let board = boards[0]
            #expect(board.statistics.resubscribes == 0)
            #expect(board.localState(missed.id) == .closed)
            // A change whose message the board never gets (written without a PUBLISH): only the
            // re-read after the new subscription can bring it.
            try await admin.send("HSET", ResilienceKeys.breaker(missed.id), "st", "forced_open", "g", 1, "f", "ops", "r", "forced open")
            let killed = try await admin.send("CLIENT", "KILL", "TYPE", "pubsub").int
            #expect(killed == 1)
            try await other.force(target, .open, note: "while the subscription was down")
            let back = await eventually(timeout: .seconds(10)) { board.statistics.resubscribes >= 1 && board.isTrusted }
            #expect(back, "resubscribes \(board.statistics.resubscribes), trusted \(board.isTrusted)")
            #expect(board.localState(target.id) == .forcedOpen)
            #expect(board.localState(missed.id) == .forcedOpen)
            for t in [target, missed] {
                guard case .failure(let refusal) = await board.permit(t) else {
                    Issue.record("the board let a call to \(t.id) through a breaker forced open while it was not subscribed")
                    continue
                }
                #expect(refusal.state == .forcedOpen)
            }
            // And the new subscription carries changes.
            try await other.force(target, .reset, note: "ops")
            #expect(await eventually(timeout: .seconds(5)) { board.localState(target.id) == .closed })
        }
    }

    /// A board also keeps copies of targets it was never given (first seen through `permit`):
    /// those must not stay stale, and trusted, after the subscription is made again.
    @Test func aTargetNotRegisteredIsNotLeftStaleAfterAResubscribe() async throws {
        let server = try RedisServer()
        let target = Self.target("t7b/unregistered", BreakerSettings())
        let admin = RedisConnectionPool(configuration: server.configuration)
        let other = BreakerBoard(redis: admin, targets: [target])
        defer { admin.shutDown() }
        try await Self.withBoards(server, count: 1, targets: []) { boards in
            let board = boards[0]
            _ = try await board.permit(target).get()
            let opened = try await other.force(target, .open, note: "ops")
            #expect(await eventually(timeout: .seconds(5)) { board.localState(target.id) == .forcedOpen })
            // The operator's reset, made while the board is not subscribed (its message lost):
            // written without a PUBLISH, so the test does not depend on who is faster.
            try await admin.send(
                "HSET",
                ResilienceKeys.breaker(target.id),
                "st",
                "closed",
                "g",
                opened.generation + 1,
                "f",
                "",
                "r",
                "reset",
                "u",
                0
            )
            #expect(try await other.status(target).state == .closed)
            _ = try await admin.send("CLIENT", "KILL", "TYPE", "pubsub")
            #expect(await eventually(timeout: .seconds(10)) { board.statistics.resubscribes >= 1 && board.isTrusted })
            let result = await board.permit(target)
            #expect((try? result.get()) != nil, "the breaker is closed in Redis; the board, trusted again, still says \(result)")
        }
    }

    /// Redis restarts and loses every breaker: the boards subscribe again and find the open
    /// breaker closed, with no step by anyone.
    @Test func aRedisRestartIsSurvived() async throws {
        let server = try RedisServer()
        let target = Self.target("t8/restart", BreakerSettings(windowSize: 10, minimumCalls: 2, failureRateThreshold: 50, waitMs: 60_000))
        try await Self.withBoards(server, targets: [target]) { boards in
            try await Self.call(boards[0], target)
            try await Self.call(boards[1], target)
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .open } })

            try server.restart()
            #expect(await Self.allResubscribed(boards), "resubscribes \(boards.map(\.statistics.resubscribes))")
            #expect(Self.localStates(boards, target).allSatisfy { $0 == .closed }, "\(Self.localStates(boards, target))")
            let status = try await boards[0].status(target)
            #expect(status.state == .closed)
            let granted = await Self.grantedCount(boards, target)
            #expect(granted == boards.count)
            // The breakers work as before on the new server.
            try await Self.call(boards[2], target)
            try await Self.call(boards[3], target)
            #expect(try await boards[0].status(target).state == .open)
            #expect(await eventually(timeout: .seconds(5)) { Self.localStates(boards, target).allSatisfy { $0 == .open } })
        }
    }

    /// A time window forgets the calls of seconds that left it.
    @Test func aTimeWindowForgetsOldCalls() async throws {
        let server = try RedisServer()
        let target = Self.target("t9/time-window", BreakerSettings(window: .time, windowSize: 2, minimumCalls: 6, failureRateThreshold: 50))
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            for i in 0..<5 { try await Self.call(boards[i % 2], target) }
            let five = try await boards[0].status(target)
            #expect(five.state == .closed && five.calls == 5 && five.failures == 5)
            try await Task.sleep(for: .milliseconds(2_500))
            for i in 0..<3 { try await Self.call(boards[i % 2], target) }
            let status = try await boards[0].status(target)
            #expect(status.state == .closed, "8 failures in all, but only 3 in the last 2 s")
            #expect(status.calls <= 3 && status.failures <= 3, "calls \(status.calls), failures \(status.failures)")
            // Within the window they do count.
            for i in 0..<3 { try await Self.call(boards[i % 2], target) }
            #expect(try await boards[0].status(target).state == .open)
        }
    }

    /// Without Redis a breaker lets calls through (fail open), counts the errors, and leaves
    /// Redis alone for a while; an operator's order fails loudly.
    @Test func aBreakerFailsOpenWithoutRedis() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(try RedisServer.freePort())")
        configuration.connectTimeout = .milliseconds(200)
        configuration.reconnectWait = .zero
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        let board = BreakerBoard(redis: pool)
        let target = Self.target("t10/no-redis", BreakerSettings())
        let first = try await board.permit(target).get()
        #expect(first.generation == -1 && !first.probe)
        #expect(board.statistics.redisErrors == 1)
        // Within the second that Redis is left alone, no attempt: still granted, still counted.
        let second = try await board.permit(target).get()
        await board.record(second, target: target, outcome: .failure(), duration: .milliseconds(1))
        #expect(board.statistics.redisErrors == 3 && board.statistics.recorded == 0)
        await #expect(throws: (any Error).self) { try await board.force(target, .open, note: "ops") }
        // A disabled breaker never asks.
        let off = Self.target("t10/off", BreakerSettings(enabled: false))
        #expect(try await board.permit(off).get().generation == -1)
        #expect(board.statistics.redisErrors == 3)
    }

    /// `callTimeout` is documented as "the longest a breaker's Redis call may take before the
    /// call goes ahead without it" (at most 1 s). With the default RedisConfiguration
    /// (reconnect_wait 3 s), a call to an unreachable Redis must still go ahead within about that.
    /// A bound on a documented timeout, with a wide margin, not a measure of speed.
    @Test func anUnreachableRedisDelaysACallNoLongerThanTheCallTimeout() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(try RedisServer.freePort())")
        // A connection would wait this long for Redis to come back: the call must not.
        configuration.reconnectWait = .seconds(10)
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        let board = BreakerBoard(redis: pool)
        #expect(board.callTimeout <= .seconds(1))
        let start = ContinuousClock.now
        let permit = await board.permit(Self.target("t11/slow-no-redis", BreakerSettings()))
        let took = ContinuousClock.now - start
        #expect((try? permit.get()) != nil)
        #expect(took < board.callTimeout + .seconds(2), "a permit took \(took) with Redis unreachable")

        let limiter = RateLimiter(redis: pool)
        let limited = ResilienceTarget(id: "t11/limit", rateLimit: RateLimitSettings(requests: 5, maxWaitMs: 0))
        let limiterStart = ContinuousClock.now
        _ = try await limiter.acquire(limited, tokens: 0)
        let limiterTook = ContinuousClock.now - limiterStart
        #expect(limiterTook < limiter.callTimeout + .seconds(2), "a rate-limit decision took \(limiterTook) with Redis unreachable")
    }

    /// "An idle target's keys go away by themselves": reading a breaker must not leave a key
    /// that never expires.
    @Test func readingATimeWindowBreakerLeavesNoKeyWithoutExpiry() async throws {
        let server = try RedisServer()
        let target = Self.target("t9b/idle", BreakerSettings(window: .time, windowSize: 30))
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let board = BreakerBoard(redis: pool, targets: [target])
        _ = try await board.status(target)
        let ttl = try await pool.send("PTTL", ResilienceKeys.window(target.id)).int
        #expect(ttl != -1, "\(ResilienceKeys.window(target.id)) was left without an expiry by a read")
        withExtendedLifetime(server) {}
    }

    /// Keys gone (expired, flushed) while every copy holds a later generation: outcomes still
    /// count, the breaker still opens, and every copy follows.
    @Test func aBreakerWhoseKeysAreLostStillOpens() async throws {
        let server = try RedisServer()
        let target = Self.target("t12/lost", BreakerSettings(windowSize: 20, minimumCalls: 4, waitMs: 60_000, halfOpenCalls: 1))
        try await Self.withBoards(server, count: 2, targets: [target]) { boards in
            // Open it, force it closed and reset it: copies hold a generation well above 0.
            for _ in 0..<4 { try await Self.call(boards[0], target) }
            try await boards[0].force(target, .reset, note: "test")
            #expect(await eventually(timeout: .seconds(5)) { boards.allSatisfy { $0.localState(target.id) == .closed } })
            let admin = RedisConnection(configuration: server.configuration)
            defer { admin.close() }
            try await admin.send("FLUSHALL")
            for _ in 0..<4 { try await Self.call(boards[1], target) }
            let after = try await boards[0].status(target)
            #expect(after.state == .open, "\(after) \(boards[1].statistics)")
            #expect(await eventually(timeout: .seconds(5)) { boards.allSatisfy { $0.localState(target.id) == .open } })
        }
    }

    /// A Retry-After opens the breaker for what the target asked, not the growing wait, and
    /// does not count as an opening in a row.
    @Test func aRetryAfterOpensForWhatItAsks() async throws {
        let server = try RedisServer()
        let target = Self.target("t13/ra", BreakerSettings(minimumCalls: 10, waitMs: 60_000, jitter: 0))
        try await Self.withBoards(server, count: 1, targets: [target]) { boards in
            try await Self.call(boards[0], target, .failure(retryAfter: .milliseconds(400)))
            let status = try await boards[0].status(target)
            #expect(status.state == .open && status.openingsInARow == 0)
            #expect(abs(Self.openPeriodMs(status) - 400) <= 2, "open for \(Self.openPeriodMs(status)) ms")
        }
    }
}
