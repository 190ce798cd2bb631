import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import Testing

/// Warm-model routing's take, against a real redis-server. Workers are played by consumer names;
/// a worker's warm models are what it passes to `takeWarm`.
@Suite("Warm-model routing")
struct WarmRoutingTests {
    func job(_ model: String, _ prompt: String = "hi", priority: JobPriority = .default) -> Job {
        var job = chatJob(prompt, priority: priority)
        job.model = model
        return job
    }

    /// Publishes `models` as warm on `worker` without taking anything.
    func claim(_ f: QueueFixture, _ worker: String, _ models: [String], routing: WarmRouting = WarmRouting()) async throws {
        _ = try await f.queue.takeWarm(consumer: worker, count: 0, warm: models, cacheSize: 1, routing: routing)
    }

    func models(of deliveries: [Delivery]) throws -> [String] { try deliveries.map { try $0.decodeJob().model } }

    @Test(arguments: Backend.allCases) func aJobForAModelWarmOnAnotherWorkerWaitsForThatWorker(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        try await claim(f, "b", ["m2"])
        let forB = job("m2")
        let forA = job("m1")
        _ = try await f.queue.push([forB, forA])

        let a = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(a.deliveries.map(\.jobID) == [forA.id])
        // Set aside, it still counts as waiting; a wake-up is due when it may go to anyone.
        let wake = try #require(a.wakeAfter)
        #expect(wake > .zero && wake <= .seconds(2))
        let lane = try await f.queue.status().lanes.first { $0.name == "default" }
        #expect(lane?.waiting == 1 && lane?.parked == 1 && lane?.pending == 1)

        let b = try await f.queue.takeWarm(consumer: "b", count: 2, warm: ["m2"], cacheSize: 1, routing: WarmRouting())
        #expect(b.deliveries.map(\.jobID) == [forB.id])
        // Taken entries are ordinary deliveries: finishing them works as always.
        #expect(try await f.queue.finish([succeeded(a.deliveries[0]), succeeded(b.deliveries[0])]) == 2)
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 0)
        #expect(try await f.queue.status().lanes.allSatisfy { $0.waiting == 0 && $0.pending == 0 && $0.parked == 0 })
    }

    @Test(arguments: Backend.allCases) func aWarmJobIsTakenBeforeOlderColdOnesThenOneColdModelIsClaimed(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let cold1 = job("m3", "1")
        let cold2 = job("m4", "2")
        let cold3 = job("m3", "3")
        let warm = job("m1", "4")
        _ = try await f.queue.push([cold1, cold2, cold3, warm])

        let first = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(first.deliveries.map(\.jobID) == [warm.id])
        #expect(first.claimedModel == nil)
        // Nothing warm left: the oldest cold job's model, and only that model's jobs.
        let second = try await f.queue.takeWarm(consumer: "a", count: 3, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(second.deliveries.map(\.jobID) == [cold1.id, cold3.id])
        #expect(second.claimedModel == "m3")
        #expect(try await f.queue.warmHolders(of: "m3") == ["a"])
        // A full cache gives up its least recently used model.
        #expect(try await f.queue.warmHolders(of: "m1").isEmpty)
        // Another worker now leaves m3 to "a" and takes m4.
        let other = try await f.queue.takeWarm(consumer: "b", count: 3, warm: [], cacheSize: 1, routing: WarmRouting())
        #expect(other.deliveries.map(\.jobID) == [cold2.id])
    }

    /// A server takes `parallel` requests at once: a worker takes no more jobs of a model than it
    /// has free slots for, and the rest wait, parked, for a worker with a free slot.
    @Test(arguments: Backend.allCases) func routingCountsFreeSlotsNotJustWarmModels(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let m1 = (0..<6).map { job("m1", "m1 \($0)") }
        let m2 = (0..<5).map { job("m2", "m2 \($0)") }
        _ = try await f.queue.push(m1 + m2)
        // "a" holds m1 warm with 3 of 4 slots busy: one more m1 job, not six.
        let busy = WarmSlots(perServer: 4, free: ["m1": 1])
        let a = try await f.queue.takeWarm(consumer: "a", count: 8, warm: ["m1"], cacheSize: 2, slots: busy, routing: WarmRouting())
        #expect(try models(of: a.deliveries.filter { (try? $0.decodeJob().model) == "m1" }).count == 1)
        // With room left and a second cache place, it loads m2, but takes only a fresh server's 4 slots' worth.
        #expect(a.deliveries.map(\.jobID) == [m1[0].id] + m2.prefix(4).map(\.id))
        #expect(a.claimedModel == "m2")
        // Every m1 slot busy: nothing more for "a" (its m1 jobs stay parked, not taken).
        let full = WarmSlots(perServer: 4, free: ["m1": 0, "m2": 0])
        #expect(
            try await f.queue.takeWarm(consumer: "a", count: 8, warm: ["m1", "m2"], cacheSize: 2, slots: full, routing: WarmRouting()).deliveries
                .isEmpty
        )
        // "b" also holds m1 warm, all its slots free: it gets the m1 jobs "a" had no slot for.
        let b = try await f.queue.takeWarm(
            consumer: "b",
            count: 8,
            warm: ["m1"],
            cacheSize: 1,
            slots: WarmSlots(perServer: 4),
            routing: WarmRouting()
        )
        #expect(b.deliveries.map(\.jobID) == m1[1..<5].map(\.id))
        // Without slots (nil), the same take takes every warm job it can.
        let c = try await f.queue.takeWarm(consumer: "b", count: 8, warm: ["m1", "m2"], cacheSize: 2, routing: WarmRouting())
        #expect(Set(c.deliveries.map(\.jobID)) == [m1[5].id, m2[4].id])
    }

    @Test(arguments: Backend.allCases) func jobsWithoutAModelAndHigherLanesKeepTheirOrder(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        var plain = job("", "no model")
        plain.model = ""
        let low = job("m1", "low", priority: .low)
        let high = job("m9", "high", priority: .high)
        _ = try await f.queue.push([low, plain, high])
        let taken = try await f.queue.takeWarm(consumer: "a", count: 3, warm: ["m1"], cacheSize: 2, routing: WarmRouting())
        // High lane first (its cold job is claimed), then the default lane's model-less job, then low.
        #expect(taken.deliveries.map(\.jobID) == [high.id, plain.id, low.id])
        #expect(taken.claimedModel == "m9")
    }

    @Test(arguments: Backend.allCases) func aJobSetAsideTooLongGoesToAnyWorker(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let routing = WarmRouting(longestWait: .milliseconds(300))
        try await claim(f, "b", ["m2"], routing: routing)
        let waiting = job("m2")
        _ = try await f.queue.push(waiting)
        let early = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: routing)
        #expect(early.deliveries.isEmpty)
        let wake = try #require(early.wakeAfter)
        #expect(wake <= .milliseconds(300))
        try await Task.sleep(for: wake + .milliseconds(100))
        let late = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: routing)
        #expect(late.deliveries.map(\.jobID) == [waiting.id])
        #expect(late.deliveries.first?.attempt == 1)
    }

    @Test(arguments: Backend.allCases) func anIdleWorkerSharesAModelOnlyWhenItsBacklogIsLong(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        try await claim(f, "b", ["m2"])
        let routing = WarmRouting(longestWait: .seconds(60), shareAfter: 4)
        let first = (0..<4).map { job("m2", "\($0)") }
        _ = try await f.queue.push(first)
        // Four waiting for one warm worker is not more than four: leave them to it.
        #expect(try await f.queue.takeWarm(consumer: "a", count: 2, warm: [], cacheSize: 1, routing: routing).deliveries.isEmpty)
        let more = [job("m2", "4"), job("m1", "5")]
        _ = try await f.queue.push(more)
        // A worker with its own work does not share.
        let busy = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: routing)
        #expect(busy.deliveries.map(\.jobID) == [more[1].id])
        // Five for one: an idle worker loads m2 too and takes the oldest.
        let idle = try await f.queue.takeWarm(consumer: "c", count: 2, warm: [], cacheSize: 1, routing: routing)
        #expect(idle.deliveries.map(\.jobID) == [first[0].id, first[1].id])
        #expect(idle.claimedModel == "m2")
        #expect(try await f.queue.warmHolders(of: "m2").sorted() == ["b", "c"])
        // Now two hold it warm and three wait: nobody else joins.
        #expect(try await f.queue.takeWarm(consumer: "d", count: 2, warm: [], cacheSize: 1, routing: routing).deliveries.isEmpty)
    }

    @Test(arguments: Backend.allCases) func entriesCarryTheirModelThroughRetriesAndOldEntriesAreDecoded(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let lane = f.queue.keys.lane(.default)
        func modelField() async throws -> String? {
            let entries = try await f.pool.send("XRANGE", lane, "-", "+").array ?? []
            let fields = entries.first?.array?[1].array?.compactMap(\.string) ?? []
            return stride(from: 0, to: fields.count - 1, by: 2).first { fields[$0] == "model" }.map { fields[$0 + 1] }
        }
        let retried = job("m5")
        _ = try await f.queue.push(retried)
        #expect(try await modelField() == "m5")
        let taken = try await f.queue.take(consumer: "a", count: 1)
        _ = try await f.queue.retry(try #require(taken.first), after: .zero)
        _ = try await f.queue.promoteDue()
        #expect(try await modelField() == "m5")
        for delivery in try await f.queue.take(consumer: "a", count: 1) { _ = try await f.queue.finish([succeeded(delivery)]) }

        // An entry from an older producer, without the field: its JSON is read instead.
        try await claim(f, "b", ["m2"])
        let old = job("m2")
        try await f.pool.send(
            RedisCommand("XADD", arguments: [lane, "*", "id", old.id, "attempt", "1", "max", "3", "batch", "", "job", old.encodedJSON()])
        )
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: WarmRouting()).deliveries.isEmpty)
        #expect(
            try await f.queue.takeWarm(consumer: "b", count: 1, warm: ["m2"], cacheSize: 1, routing: WarmRouting()).deliveries.map(\.jobID) == [
                old.id
            ]
        )
    }

    @Test(arguments: Backend.allCases) func jobsPastTheLongestWaitGoOneModelAtATimeNotInQueueOrder(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let routing = WarmRouting(longestWait: .milliseconds(100))
        try await claim(f, "b", ["m2", "m3"], routing: routing)
        let jobs = [job("m2", "0"), job("m3", "1"), job("m2", "2"), job("m3", "3")]
        _ = try await f.queue.push(jobs)
        #expect(try await f.queue.takeWarm(consumer: "a", count: 4, warm: [], cacheSize: 1, routing: routing).deliveries.isEmpty)
        try await Task.sleep(for: .milliseconds(200))
        // All four waited too long for "b": "a" loads one model and takes its jobs, not all four.
        let taken = try await f.queue.takeWarm(consumer: "a", count: 4, warm: [], cacheSize: 1, routing: routing)
        #expect(taken.deliveries.map(\.jobID) == [jobs[0].id, jobs[2].id])
        #expect(taken.claimedModel == "m2")
    }

    @Test(arguments: Backend.allCases) func aColdJobDoesNotStarveBehindAStreamOfWarmOnes(on backend: Backend) async throws {
        // The starve gap is a quarter of the lease: 250 ms here.
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        let cold = job("m3")
        _ = try await f.queue.push([cold, job("m1")])
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: WarmRouting()).deliveries.count == 1)
        try await Task.sleep(for: .milliseconds(400))
        let fresh = job("m1", "fresh")
        _ = try await f.queue.push(fresh)
        let taken = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(taken.deliveries.map(\.jobID) == [cold.id])
        #expect(taken.claimedModel == "m3")
        #expect(
            try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: WarmRouting()).deliveries.map(\.jobID) == [
                fresh.id
            ]
        )
    }

    @Test(arguments: Backend.allCases) func aWorkerWhoseRunningJobsFillItsCacheDrainsForAStarvingJob(on backend: Backend) async throws {
        // The starve gap is a quarter of the lease: 250 ms here.
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        let cold = job("m3")
        _ = try await f.queue.push([cold, job("m1")])
        // Concurrency 2, a cache of one: an m1 job runs (busy 1), the m3 job cannot load beside it.
        #expect(try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: WarmRouting()).deliveries.count == 1)
        try await Task.sleep(for: .milliseconds(400))
        // Another m1 job comes while the first runs. Starting it would keep m1 busy; the m3 job has
        // waited longer than the gap beyond it, so the worker takes nothing and lets m1 drain.
        let fresh = job("m1", "fresh")
        _ = try await f.queue.push(fresh)
        let drained = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, busyModels: 1, routing: WarmRouting())
        #expect(drained.deliveries.isEmpty)
        // A job without a model takes no cache slot: it still runs.
        var plain = job("", "no model")
        plain.model = ""
        _ = try await f.queue.push(plain)
        let free = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, busyModels: 1, routing: WarmRouting())
        #expect(free.deliveries.map(\.jobID) == [plain.id])
        // The m1 job ended: the starving one goes first, then m1's.
        let taken = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(taken.deliveries.map(\.jobID) == [cold.id])
        #expect(taken.claimedModel == "m3")
    }

    @Test(arguments: Backend.allCases) func aStarvingJobDoesNotCutTheLookShort(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        let starving = job("m9", "old")
        _ = try await f.queue.push(starving)
        try await Task.sleep(for: .milliseconds(400))
        // A cache of two, m1 running (busy 1), m2 warm but idle: the m2 jobs come before the
        // m1 one. Once the starving m9 job takes the second cache slot, m2's cannot start, so
        // the look must go on to the m1 job rather than stop at the two m2 jobs it could start.
        let m2 = [job("m2", "1"), job("m2", "2")]
        let m1 = job("m1", "3")
        _ = try await f.queue.push(m2 + [m1])
        let take = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1", "m2"], cacheSize: 2, busyModels: 1, routing: WarmRouting())
        #expect(take.deliveries.map(\.jobID) == [starving.id, m1.id])
        #expect(take.claimedModel == "m9")
    }

    @Test(arguments: Backend.allCases) func aModelWhoseClaimATakeWithdrewIsNotStartedInALaterLane(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        // A cache of two holding m1 and m2 (least recently used), nothing running: a cold m3 job on
        // the high lane, an m2 job on the default one. Loading m3 evicts m2, so m2's job waits.
        let cold = job("m3", "1", priority: .high)
        let m2 = job("m2", "2")
        _ = try await f.queue.push([cold, m2])
        let take = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1", "m2"], cacheSize: 2, routing: WarmRouting())
        #expect(take.deliveries.map(\.jobID) == [cold.id])
        #expect(take.claimedModel == "m3")
        #expect(try await f.queue.warmHolders(of: "m2").isEmpty)
    }

    @Test(arguments: Backend.allCases) func claimsOfStoppedOrSilentWorkersHoldNothing(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        // A claim that is not renewed runs out.
        try await claim(f, "silent", ["m2"], routing: WarmRouting(claimTTL: .milliseconds(200)))
        try await claim(f, "stopped", ["m3"])
        try await f.queue.withdrawWarm(workerID: "stopped", models: ["m3"])
        try await Task.sleep(for: .milliseconds(300))
        let jobs = [job("m2"), job("m3")]
        _ = try await f.queue.push(jobs)
        let a = try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: WarmRouting())
        #expect(a.deliveries.map(\.jobID) == [jobs[0].id])
        let b = try await f.queue.takeWarm(consumer: "b", count: 1, warm: [], cacheSize: 1, routing: WarmRouting())
        #expect(b.deliveries.map(\.jobID) == [jobs[1].id])
        // A model no longer warm here is withdrawn by the next take.
        _ = try await f.queue.takeWarm(consumer: "a", count: 0, warm: [], released: ["m2"], cacheSize: 1, routing: WarmRouting())
        #expect(try await f.queue.warmHolders(of: "m2").isEmpty)
    }

    @Test(arguments: Backend.allCases) func aCancelledJobSetAsideIsDropped(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        try await claim(f, "b", ["m2"])
        let waiting = job("m2")
        _ = try await f.queue.push(waiting)
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: WarmRouting()).deliveries.isEmpty)
        #expect(try await f.queue.cancel(jobID: waiting.id) == .cancelled)
        #expect(try await f.queue.takeWarm(consumer: "b", count: 1, warm: ["m2"], cacheSize: 1, routing: WarmRouting()).deliveries.isEmpty)
        #expect(try await f.pool.send("XLEN", f.queue.keys.lane(.default)).int == 0)
    }

    @Test(arguments: Backend.allCases) func whileRoutingWorkersLiveTheReclaimKeepsParkedJobsInPlace(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        // As a worker would run it: the longest wait at most a quarter of the lease.
        let routing = WarmRouting(longestWait: .milliseconds(250), claimTTL: .seconds(60))
        try await claim(f, "b", ["m2"], routing: routing)
        let older = job("m2", "older")
        _ = try await f.queue.push(older)
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: routing).deliveries.isEmpty)
        let entry = try await f.pool.send("XRANGE", f.queue.keys.lane(.default), "-", "+").array?.first?.array?.first?.string
        let newer = job("m7", "newer")
        _ = try await f.queue.push(newer)
        try await Task.sleep(for: .milliseconds(600))
        let (requeued, dead) = try await f.queue.reclaimExpired(consumer: "a")
        #expect(requeued == 0 && dead == 0)
        // Same entry, same place: not re-added behind the newer job, and not claimed as lost.
        #expect(try await f.pool.send("XRANGE", f.queue.keys.lane(.default), "-", "+").array?.first?.array?.first?.string == entry)
        // Past the longest wait, so a worker without work of its own loads m2 for it, as attempt 1.
        let taken = try await f.queue.takeWarm(consumer: "c", count: 1, warm: [], cacheSize: 1, routing: routing)
        #expect(taken.deliveries.map(\.jobID) == [older.id])
        #expect(taken.deliveries.first?.attempt == 1)
    }

    @Test(arguments: Backend.allCases) func withNoRoutingWorkerLeftTheReclaimGivesParkedJobsBack(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend) { $0.lease = .seconds(1) }
        defer { f.close() }
        try await f.queue.ensureGroups()
        try await claim(f, "b", ["m2"], routing: WarmRouting(longestWait: .seconds(60), claimTTL: .seconds(60)))
        let waiting = job("m2")
        _ = try await f.queue.push(waiting)
        let routing = WarmRouting(longestWait: .seconds(60))
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: routing).deliveries.isEmpty)
        // Not yet half a lease: it stays parked.
        _ = try await f.queue.reclaimExpired(consumer: "a")
        #expect(try await f.queue.status().lanes.first { $0.name == "default" }?.parked == 1)
        // The routing workers are gone (their mark ran out).
        try await f.pool.send("DEL", f.queue.keys.routing)
        try await Task.sleep(for: .milliseconds(600))
        let (requeued, dead) = try await f.queue.reclaimExpired(consumer: "a")
        #expect(requeued == 0 && dead == 0)
        #expect(try await f.queue.status().counters["unparked"] == 1)
        // Back on the lane as it was: a plain take gets attempt 1.
        let taken = try await f.queue.take(consumer: "c", count: 1)
        #expect(taken.map(\.jobID) == [waiting.id])
        #expect(taken.first?.attempt == 1)
    }

    @Test(arguments: Backend.allCases) func aWorkerWithEveryCacheSlotBusyTakesOnlyWarmJobs(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        let cold = job("m3")
        let warm = job("m1")
        _ = try await f.queue.push([cold, warm])
        let busy = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, busyModels: 1, routing: WarmRouting())
        #expect(busy.deliveries.map(\.jobID) == [warm.id])
        #expect(busy.claimedModel == nil)
        #expect(try await f.queue.warmHolders(of: "m1") == ["a"])
        let free = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(free.deliveries.map(\.jobID) == [cold.id])
        // Jobs past the longest wait, for another model, wait for a worker that can load it.
        let noWait = WarmRouting(longestWait: .zero)
        try await claim(f, "b", ["m2"], routing: noWait)
        let overdue = job("m2")
        _ = try await f.queue.push(overdue)
        #expect(try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, busyModels: 1, routing: noWait).deliveries.isEmpty)
        let loads = try await f.queue.takeWarm(consumer: "a", count: 1, warm: ["m1"], cacheSize: 1, routing: noWait)
        #expect(loads.deliveries.map(\.jobID) == [overdue.id])
    }

    @Test(arguments: Backend.allCases) func aTakeStartsNoMoreModelsThanTheCacheHolds(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        // A cache of one holding m1, nothing running: an m1 job and an older cold m2 job.
        let cold = job("m2", "1")
        let warm = job("m1", "2")
        _ = try await f.queue.push([cold, warm])
        // Taking both would run m1 and m2 side by side, and each would evict the other's server.
        let one = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(one.deliveries.map(\.jobID) == [warm.id])
        #expect(one.claimedModel == nil)
        #expect(try await f.queue.warmHolders(of: "m1") == ["a"])
        // The m1 job ended: m2 may load now.
        let next = try await f.queue.takeWarm(consumer: "a", count: 2, warm: ["m1"], cacheSize: 1, routing: WarmRouting())
        #expect(next.deliveries.map(\.jobID) == [cold.id])
        #expect(next.claimedModel == "m2")

        // A cache of two holding m1 (least recently used) and m3, nothing running: an m3 job and
        // a cold m4 job both start, and the claim that goes is m1's, not that of m3, which now runs.
        let m3 = job("m3", "3")
        let m4 = job("m4", "4")
        _ = try await f.queue.push([m3, m4])
        let two = try await f.queue.takeWarm(consumer: "b", count: 2, warm: ["m3", "m1"], cacheSize: 2, routing: WarmRouting())
        #expect(Set(two.deliveries.map(\.jobID)) == [m3.id, m4.id])
        #expect(two.claimedModel == "m4")
        #expect(try await f.queue.warmHolders(of: "m3") == ["b"])
        #expect(try await f.queue.warmHolders(of: "m1").contains("b") == false)
        // With m3's job running (busy 1) and m4's too, a new m1 job waits: both cache slots run.
        let m1 = job("m1", "5")
        _ = try await f.queue.push(m1)
        let full = try await f.queue.takeWarm(consumer: "b", count: 2, warm: ["m3", "m4", "m1"], cacheSize: 2, busyModels: 2, routing: WarmRouting())
        #expect(full.deliveries.isEmpty)
    }

    @Test(arguments: Backend.allCases) func waitingForNewEntriesIgnoresJobsSetAside(on backend: Backend) async throws {
        let f = try QueueFixture(backend: backend)
        defer { f.close() }
        try await f.queue.ensureGroups()
        try await claim(f, "b", ["m2"])
        _ = try await f.queue.push(job("m2"))
        let take = try await f.queue.takeWarm(consumer: "a", count: 1, warm: [], cacheSize: 1, routing: WarmRouting())
        #expect(take.deliveries.isEmpty && take.lastEntryIDs.count == 3)
        let connection = RedisConnection(configuration: f.pool.configuration)
        defer { connection.close() }
        #expect(try await f.queue.waitForNewEntries(on: connection, after: take.lastEntryIDs, block: .milliseconds(200)) == false)
        let pushed = Task {
            try await Task.sleep(for: .milliseconds(100))
            _ = try await f.queue.push(job("m1"))
        }
        #expect(try await f.queue.waitForNewEntries(on: connection, after: take.lastEntryIDs, block: .seconds(10)) == true)
        try await pushed.value
    }
}
