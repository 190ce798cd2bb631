import Foundation
import Logging
import SwitchyardCore
import SwitchyardRedis
import Synchronization

/// A reliable job queue on Redis Streams: one stream per priority lane, one consumer group.
///
/// Delivery is at least once: a job runs until one final result is written, and a job whose
/// worker vanished is reclaimed when its lease runs out. A result, once final, is never
/// overwritten. See docs/ARCHITECTURE.md for the key layout and the guarantees.
public final class JobQueue: Sendable {
    public let configuration: QueueConfiguration
    public let keys: QueueKeys
    public let redis: RedisConnectionPool
    let logger: Logger
    /// Finishes that no replica confirmed since the last warning (`noteReplication`).
    let unconfirmed = Mutex<(jobs: Int, lastLine: ContinuousClock.Instant?)>((0, nil))

    public init(configuration: QueueConfiguration, redis: RedisConnectionPool, logger: Logger = Logger(label: "switchyard.queue")) {
        self.configuration = configuration
        self.keys = QueueKeys(queue: configuration.name)
        self.redis = redis
        self.logger = logger
    }

    static func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: - Set-up

    /// Creates the consumer group on every lane (and the lanes), if missing. Safe to call often.
    public func ensureGroups() async throws {
        let commands = keys.lanes.map { RedisCommand("XGROUP", "CREATE", $0, QueueKeys.group, "0", "MKSTREAM") }
        for reply in try await redis.pipeline(commands) {
            if let message = reply.errorMessage, !message.hasPrefix("BUSYGROUP") { throw RedisError(.serverError, message) }
        }
    }

    // MARK: - Push

    /// Queues one job. With an idempotency key, a second push of the same key returns the first job's id.
    public func push(_ job: Job) async throws -> PushOutcome {
        try await push([job])[0]
    }

    /// Queues many jobs, pipelined in chunks of at most `chunkSize` jobs and about `chunkBytes`
    /// bytes: one round trip per chunk. Every job is checked before the first write, so a bad one
    /// pushes nothing (`JobValidationError`, naming the job's index and field). When Redis fails
    /// after some chunks were written, throws `PartialPushError` with how many were.
    /// A job whose id was pushed already (its record lives: see `QueueKeys.job`) is not queued
    /// or counted again, and comes back as a duplicate; so is one whose idempotency key was used.
    public func push(_ jobs: [Job], chunkSize: Int = 500, chunkBytes: Int = 4 << 20) async throws -> [PushOutcome] {
        for (index, job) in jobs.enumerated() {
            do {
                try Self.checkKeyPart(job.id, field: "id")
                if let batch = job.batch { try Self.checkKeyPart(batch, field: "batch") }
                if let key = job.idempotencyKey { try Self.checkKeyPart(key, field: "idempotency_key") }
            } catch {
                throw JobValidationError(field: jobs.count > 1 ? "jobs[\(index)].\(error.field)" : error.field, problem: error.problem)
            }
        }
        let now = Self.nowMs()
        var outcomes: [PushOutcome] = []
        outcomes.reserveCapacity(jobs.count)
        var start = 0
        while start < jobs.count {
            // A chunk: up to chunkSize jobs and about chunkBytes, in calls of up to
            // Push.jobsPerCall jobs, pipelined.
            var calls: [QueueScripts.Push] = []
            var taken = 0
            var bytes = 0
            while start + taken < jobs.count, taken < chunkSize, taken == 0 || bytes < chunkBytes {
                let job = jobs[start + taken]
                let json = job.encodedJSON()
                if calls.isEmpty || calls[calls.count - 1].count >= QueueScripts.Push.jobsPerCall {
                    calls.append(QueueScripts.Push(keys: keys, configuration: configuration, nowMs: now))
                }
                bytes += calls[calls.count - 1].append(job, json: json, keys: keys, nowMs: now)
                taken += 1
            }
            do {
                let replies = try await pipelineScripts(calls.map(\.command) + waitForReplicas, scripts: [QueueScripts.push])
                for (call, reply) in zip(calls, replies) {
                    outcomes += try QueueScripts.Push.outcomes(reply, ids: call.ids)
                }
                if case .replicated(let wanted, let timeout) = configuration.durability {
                    let confirmed = replies.last?.int ?? 0
                    if confirmed < wanted {
                        throw ReplicationTimeout(pushed: start + taken, confirmedBy: confirmed, wanted: wanted, timeout: timeout)
                    }
                }
            } catch let error as ReplicationTimeout {
                throw error
            } catch {
                if start == 0 { throw error }
                throw PartialPushError(pushed: start, error: error)
            }
            start += taken
        }
        return outcomes
    }

    /// Ids that become parts of keys and of delayed-set members: no control characters (the
    /// members' separator is one), not empty, not absurdly long.
    static func checkKeyPart(_ value: String, field: String) throws(JobValidationError) {
        guard !value.isEmpty, value.utf8.count <= 256, !value.unicodeScalars.contains(where: { $0.value < 32 || $0.value == 127 }) else {
            throw JobValidationError(field: field, problem: "must be 1-256 bytes without control characters")
        }
    }

    // MARK: - Taking work

    /// Takes up to `count` new entries without waiting, high lane first. Entries of jobs that are
    /// already final (cancelled) are acknowledged and skipped on the server.
    public func take(consumer: String, count: Int) async throws -> [Delivery] {
        try await takeNotingPauses(consumer: consumer, count: count).deliveries
    }

    /// `take`, and the lanes it skipped because they are paused (`*`: the whole queue).
    public func takeNotingPauses(consumer: String, count: Int) async throws -> (deliveries: [Delivery], paused: Set<String>) {
        guard count > 0 else { return ([], []) }
        return QueueScripts.Take.decode(try await redis.evaluate(QueueScripts.Take(keys: keys, consumer: consumer, count: count)))
    }

    /// Takes up to `count` entries with warm-model routing: jobs for models in `warm` first, then
    /// jobs of one model no live worker holds warm; jobs for a model another live worker holds
    /// warm are parked for it for up to `routing.longestWait`, after which they count as cold (a
    /// model at a time); a job of another model that has waited longer than the oldest warm one
    /// by more than a quarter of the lease goes first (no starving); a worker with nothing else to
    /// do shares a model whose parked backlog exceeds `routing.shareAfter` jobs per worker holding
    /// it. With `slots`, no more jobs of a model are taken than there are free slots for it (jobs
    /// of a warm model whose slots are busy stay parked). The first `busyModels` of `warm` (0 by
    /// default) are the models of jobs running here: no more models run at once than `cacheSize`,
    /// counting those and the ones this take starts, so with a cache of one a take never starts
    /// two models that would evict each other. Keep `longestWait` at most a quarter of the lease,
    /// as workers do.
    /// Also publishes `warm` (and withdraws `released`) in the warm-model index.
    /// See docs/ARCHITECTURE.md, "Warm-model routing".
    public func takeWarm(
        consumer: String,
        count: Int,
        warm: [String],
        released: [String] = [],
        cacheSize: Int,
        busyModels: Int = 0,
        slots: WarmSlots? = nil,
        routing: WarmRouting
    ) async throws -> WarmTake {
        let call = QueueScripts.TakeWarm(
            keys: keys,
            consumer: consumer,
            count: count,
            warm: warm,
            released: released,
            cacheSize: cacheSize,
            busyModels: busyModels,
            slots: slots,
            routing: routing,
            starveGapMs: configuration.lease.milliseconds / 4,
            nowMs: Self.nowMs()
        )
        return try QueueScripts.TakeWarm.decode(try await redis.evaluate(call))
    }

    /// Waits on a dedicated connection until any lane gets an entry newer than `after` (one id per
    /// lane, from `takeWarm`), without taking it (XREAD ... BLOCK). Returns whether one arrived.
    /// Cancel the calling task to stop waiting.
    public func waitForNewEntries(on connection: RedisConnection, after: [String], block: Duration) async throws -> Bool {
        let ids = after.count == keys.lanes.count ? after : Array(repeating: "$", count: keys.lanes.count)
        let blockMs = max(1, Int(block.milliseconds))
        let command = RedisCommand("XREAD", arguments: ["COUNT", 1, "BLOCK", blockMs, "STREAMS"] + keys.lanes + ids)
        let reply = try await connection.send(command, timeout: .after(block + connection.configuration.commandTimeout))
        try reply.throwingServerError()
        return !(reply.array ?? []).isEmpty
    }

    /// Withdraws a worker's claims in the warm-model index (it stopped, or routing is off).
    public func withdrawWarm(workerID: String, models: [String]) async throws {
        guard !models.isEmpty else { return }
        _ = try await redis.pipeline(models.map { RedisCommand("ZREM", keys.warm($0), workerID) })
    }

    /// Renews a worker's claims in the warm-model index for `ttl`, and the mark that a routing
    /// worker is alive (so a busy one that takes nothing for a while still keeps parked entries in place).
    public func renewWarm(workerID: String, models: [String], ttl: Duration) async throws {
        let expiry = Self.nowMs() + ttl.milliseconds
        _ = try await redis.pipeline(
            models.map { RedisCommand("ZADD", keys.warm($0), expiry, workerID) }
                + [RedisCommand("SET", keys.routing, workerID, "PX", max(1, ttl.milliseconds))]
        )
    }

    /// Live workers holding `model` warm, from the warm-model index.
    public func warmHolders(of model: String) async throws -> [String] {
        (try await redis.send("ZRANGEBYSCORE", keys.warm(model), Self.nowMs(), "+inf").array ?? []).compactMap(\.string)
    }

    /// Waits on a dedicated connection until entries arrive on any lane (XREADGROUP ... BLOCK),
    /// then returns them, high lane first. Returns [] after `block` with nothing.
    /// Cancel the calling task to stop waiting.
    /// `lanes` limits the read to some lanes (default: all of them).
    public func waitForWork(
        on connection: RedisConnection,
        consumer: String,
        count: Int,
        block: Duration,
        lanes: [JobPriority] = JobPriority.inOrder
    ) async throws -> [Delivery] {
        try await waitForWorkNotingPauses(on: connection, consumer: consumer, count: count, block: block, lanes: lanes).deliveries
    }

    /// `waitForWork`, and the paused lanes (`*`: the whole queue) as of the moment the read
    /// returned: `HKEYS` is pipelined behind the blocking read, and Redis runs it as soon as the
    /// read is served, so a pause set while the read waited is seen without another round trip.
    public func waitForWorkNotingPauses(
        on connection: RedisConnection,
        consumer: String,
        count: Int,
        block: Duration,
        lanes: [JobPriority] = JobPriority.inOrder
    ) async throws -> (deliveries: [Delivery], paused: Set<String>) {
        let blockMs = max(1, Int(block.milliseconds))
        let streams = lanes.map(keys.lane)
        let command = RedisCommand(
            "XREADGROUP",
            arguments: ["GROUP", QueueKeys.group, consumer, "COUNT", count, "BLOCK", blockMs, "STREAMS"] + streams
                + Array(repeating: ">", count: streams.count)
        )
        let replies = try await connection.pipeline(
            [command, RedisCommand("HKEYS", keys.paused)],
            timeout: .after(block + connection.configuration.commandTimeout)
        )
        for reply in replies { try reply.throwingServerError() }
        let paused = Set((replies.count > 1 ? replies[1].array ?? [] : []).compactMap(\.string))
        return (deliveries(fromRead: replies[0]), paused)
    }

    /// The entries of an `XREADGROUP` reply, high lane first.
    func deliveries(fromRead reply: RESPValue) -> [Delivery] {
        guard let streams = reply.array else { return [] }
        var deliveries: [Delivery] = []
        for stream in streams {
            guard let parts = stream.array, parts.count == 2, let name = parts[0].string,
                let lane = JobPriority.inOrder.first(where: { keys.lane($0) == name }), let entries = parts[1].array
            else { continue }
            for entry in entries {
                guard let e = entry.array, e.count == 2, let id = e[0].string else { continue }
                if let delivery = Delivery(lane: lane, entryID: id, fields: e[1].array ?? []) { deliveries.append(delivery) }
            }
        }
        return deliveries.sorted { $0.lane < $1.lane }
    }

    // MARK: - Finishing

    /// Writes final results and acknowledges their entries atomically, many at once; a job that
    /// already has a final result keeps it. Writes in chunks of at most `chunkSize` results and
    /// about `chunkBytes` bytes, so a batch of large results (base64 images) stays well under
    /// Redis's query buffer limit. Returns how many results were written. A completion with
    /// `notify` set has its job id published on `keys.done` once its result key holds a final
    /// result.
    @discardableResult
    public func finish(_ completions: [Completion], chunkSize: Int = 200, chunkBytes: Int = 4 << 20) async throws -> Int {
        try await finishReportingFenced(completions, chunkSize: chunkSize, chunkBytes: chunkBytes).written
    }

    /// `finish`, and the ids of jobs whose result was fenced off: their entry was no longer
    /// pending (the reclaim gave it to another attempt after this worker's lease ran out), so
    /// nothing was written; the final result is (or will be) the other attempt's.
    public func finishReportingFenced(
        _ completions: [Completion],
        chunkSize: Int = 200,
        chunkBytes: Int = 4 << 20
    ) async throws -> (written: Int, fenced: [String]) {
        var written = 0
        var fenced: [String] = []
        var call = QueueScripts.Finish(keys: keys, resultTTL: configuration.resultTTL)
        var count = 0
        var bytes = 0
        func send() async throws {
            let reply: [RESPValue]
            if waitForReplicas.isEmpty {
                reply = try await redis.evaluate(call).array ?? []
            } else {
                // The WAIT rides in the same round trip, on the node that ran the script.
                let replies = try await redis.pipeline([call.command] + waitForReplicas, scripts: [QueueScripts.finish])
                reply = try replies[0].throwingServerError().array ?? []
                noteReplication(confirmed: replies[1].int ?? 0, jobs: count)
            }
            written += reply.first?.int ?? 0
            fenced += reply.dropFirst().compactMap(\.string)
        }
        for completion in completions {
            let json = completion.encodedResult ?? completion.result.encodedJSON()
            if count > 0 && (count >= chunkSize || bytes + json.count > chunkBytes) {
                try await send()
                call = QueueScripts.Finish(keys: keys, resultTTL: configuration.resultTTL)
                count = 0
                bytes = 0
            }
            call.append(completion, keys: keys, json: json)
            count += 1
            bytes += json.count
        }
        if count > 0 { try await send() }
        return (written, fenced)
    }

    /// Schedules the next attempt of a failed delivery after `delay`, and adds `record` (this
    /// attempt) to the job's history (`QueueKeys.attempts`). Returns false if the job became
    /// final meanwhile (cancelled).
    @discardableResult
    public func retry(_ delivery: Delivery, after delay: Duration, record: AttemptRecord? = nil) async throws -> Bool {
        let dueMs = Self.nowMs() + delay.milliseconds
        var record = record
        record?.nextAttemptAt = Double(dueMs) / 1000
        // The history lives as long as the job's result could: past the next attempt's due time.
        let ttl = configuration.resultTTL + delay + .seconds(3600)
        return try await redis.evaluate(QueueScripts.Retry(delivery, keys: keys, dueMs: dueMs, record: record, historyTTL: ttl)).int == 1
    }

    /// Sends a delivery to the dead-letter stream with its reason, and (when the job id is known)
    /// writes its final `dead` result. Returns false if the job was already final.
    @discardableResult
    public func deadLetter(_ delivery: Delivery, reason: String, result: JobResult?) async throws -> Bool {
        let call = QueueScripts.DeadLetterDelivery(
            delivery,
            reason: reason,
            result: result,
            keys: keys,
            configuration: configuration,
            nowMs: Self.nowMs()
        )
        return try await redis.evaluate(call).int == 1
    }

    // MARK: - Leases

    /// Refreshes the lease of entries this consumer holds (resets their idle time). Returns the
    /// entries still held, as `Delivery.key`s: one missing was reclaimed by another worker after
    /// its lease ran out.
    public func refreshLeases(consumer: String, entries: [JobPriority: [String]]) async throws -> Set<String> {
        var commands: [RedisCommand] = []
        var lanes: [JobPriority] = []
        for (lane, ids) in entries where !ids.isEmpty {
            commands.append(
                RedisCommand("XCLAIM", arguments: [keys.lane(lane), QueueKeys.group, consumer, 0] + ids + ["JUSTID"])
            )
            lanes.append(lane)
        }
        if commands.isEmpty { return [] }
        var held: Set<String> = []
        for (lane, reply) in zip(lanes, try await redis.pipeline(commands)) {
            try reply.throwingServerError()
            for id in reply.array ?? [] { if let s = id.string { held.insert(Delivery.key(lane: lane, entryID: s)) } }
        }
        return held
    }

    /// Entries pending for `consumer` on every lane (delivered to it, not finished).
    public func pendingEntries(consumer: String, limit: Int = 10_000) async throws -> [Delivery] {
        let commands = JobPriority.inOrder.map { RedisCommand("XPENDING", keys.lane($0), QueueKeys.group, "-", "+", limit, consumer) }
        var out: [Delivery] = []
        for (lane, reply) in zip(JobPriority.inOrder, try await redis.pipeline(commands)) {
            try reply.throwingServerError()
            for entry in reply.array ?? [] {
                if let id = entry.array?.first?.string { out.append(Delivery(lane: lane, entryID: id)) }
            }
        }
        return out
    }

    /// The entries `consumer` holds (pending for it) that are not in `known` (`Delivery.key`s), with their fields:
    /// deliveries whose reply never reached the worker (a lost take reply, a read cut short).
    /// Entries that no longer exist in their stream are acknowledged and left out.
    public func orphans(consumer: String, known: Set<String>) async throws -> [Delivery] {
        let missing = try await pendingEntries(consumer: consumer).filter { !known.contains($0.key) }
        if missing.isEmpty { return [] }
        let replies = try await redis.pipeline(missing.map { RedisCommand("XRANGE", keys.lane($0.lane), $0.entryID, $0.entryID) })
        var found: [Delivery] = []
        var gone: [Delivery] = []
        for (pending, reply) in zip(missing, replies) {
            try reply.throwingServerError()
            if let entry = reply.array?.first?.array, entry.count == 2, let fields = entry[1].array,
                let delivery = Delivery(lane: pending.lane, entryID: pending.entryID, fields: fields)
            {
                found.append(delivery)
            } else {
                gone.append(pending)
            }
        }
        if !gone.isEmpty {
            _ = try await redis.pipeline(gone.map { RedisCommand("XACK", keys.lane($0.lane), QueueKeys.group, $0.entryID) })
        }
        return found  // lane order, oldest first: as XPENDING lists them
    }

    /// Reclaims entries whose lease ran out, on every lane: each goes back on its lane as its
    /// next attempt, or to the dead-letter stream when it has none left.
    @discardableResult
    public func reclaimExpired(consumer: String, limit: Int = 100) async throws -> (requeued: Int, dead: Int) {
        let now = Self.nowMs()
        let commands = JobPriority.inOrder.map { lane in
            QueueScripts.Reclaim(lane: lane, consumer: consumer, limit: limit, keys: keys, configuration: configuration, nowMs: now).command
        }
        var requeued = 0
        var dead = 0
        for reply in try await pipelineScripts(commands, scripts: [QueueScripts.reclaim]) {
            try reply.throwingServerError()
            requeued += reply.array?.first?.int ?? 0
            dead += reply.array?.last?.int ?? 0
        }
        return (requeued, dead)
    }

    /// Moves due retries and delayed jobs onto their lanes. Returns how many, and when the next is due.
    @discardableResult
    public func promoteDue(limit: Int = 500) async throws -> (moved: Int, nextDue: Date?) {
        let reply = try await redis.evaluate(QueueScripts.Promote(keys: keys, nowMs: Self.nowMs(), limit: limit))
        let parts = reply.array ?? []
        let moved = parts.first?.int ?? 0
        let next = parts.count > 1 ? parts[1].double.map { Date(timeIntervalSince1970: $0 / 1000) } : nil
        return (moved, next)
    }

    /// Gives unfinished entries back to the queue for another worker to run at once, without
    /// counting an attempt (graceful drain).
    @discardableResult
    public func handBack(_ deliveries: [Delivery]) async throws -> Int {
        var total = 0
        for lane in JobPriority.inOrder {
            let ids = deliveries.filter { $0.lane == lane }.map(\.entryID)
            if ids.isEmpty { continue }
            total += try await redis.evaluate(QueueScripts.HandBack(lane: lane, entryIDs: ids, keys: keys)).int ?? 0
        }
        return total
    }

    // MARK: - Results, cancellation, batches

    public func result(of jobID: String) async throws -> JobResult? {
        try await results(of: [jobID])[0]
    }

    /// Results in the order asked, nil where a job has none (yet).
    public func results(of jobIDs: [String]) async throws -> [JobResult?] {
        var out: [JobResult?] = []
        out.reserveCapacity(jobIDs.count)
        for start in stride(from: 0, to: jobIDs.count, by: 1000) {
            let chunk = Array(jobIDs[start..<min(start + 1000, jobIDs.count)])
            let reply = try await redis.send(RedisCommand("MGET", arguments: chunk.map(keys.result)))
            for value in reply.array ?? [] {
                out.append(value.bytes.flatMap { try? JobResult(json: $0) })
            }
        }
        return out
    }

    /// Cancels a job that has no final result yet. A queued job is skipped when reached; a running
    /// one is stopped by its worker's watch loop (within about a quarter of a second); a delayed
    /// one stays cancelled when its due time comes. Nothing is written for a job that is already
    /// final or that the queue does not know (never pushed, or its record has expired).
    public func cancel(jobID: String) async throws -> CancelOutcome {
        let result = JobResult(
            id: jobID,
            status: .cancelled,
            attempts: 0,
            timings: .init(finished: Date().timeIntervalSince1970),
            error: .init(code: "cancelled", message: "cancelled by request")
        )
        let reply = try await redis.evaluate(QueueScripts.Cancel(jobID: jobID, result: result, keys: keys, resultTTL: configuration.resultTTL))
        switch reply.int {
        case 1: return .cancelled
        case 0: return .alreadyFinal
        default: return .unknown
        }
    }

    public func batchProgress(_ batch: String) async throws -> BatchProgress {
        BatchProgress(counts: try await redis.send("HGETALL", keys.batch(batch)).stringPairs ?? [:])
    }

    public func batchJobIDs(_ batch: String) async throws -> [String] {
        (try await redis.send("LRANGE", keys.batchJobs(batch), 0, -1).array ?? []).compactMap(\.string)
    }

    // MARK: - Status and dead letters

    public func status() async throws -> QueueStatus {
        // Per lane its length and pending summary, then the delayed set, the dead letters and the counters.
        var commands: [RedisCommand] = []
        for lane in keys.lanes {
            commands.append(RedisCommand("XLEN", lane))
            commands.append(RedisCommand("XPENDING", lane, QueueKeys.group))
        }
        commands.append(RedisCommand("ZCARD", keys.delayed))
        commands.append(RedisCommand("XLEN", keys.dead))
        commands.append(RedisCommand("HGETALL", keys.stats))
        commands.append(RedisCommand("HGETALL", keys.paused))
        let replies = try await redis.pipeline(commands)
        let laneReplies = replies.prefix(keys.lanes.count * 2)
        let (delayed, dead, stats) = (replies[laneReplies.count], replies[laneReplies.count + 1], replies[laneReplies.count + 2])
        var lanes: [QueueStatus.Lane] = []
        for (i, lane) in JobPriority.inOrder.enumerated() {
            let length = laneReplies[i * 2].int ?? 0
            let summary = laneReplies[i * 2 + 1].array ?? []
            let pending = summary.first?.int ?? 0
            // Entries set aside by warm-model routing are pending for the parked consumer, yet waiting.
            var parked = 0
            if summary.count == 4 {
                for consumer in summary[3].array ?? [] {
                    if let pair = consumer.array, pair.count == 2, pair[0].string == QueueKeys.parkedConsumer {
                        parked = pair[1].int ?? Int(pair[1].string ?? "") ?? 0
                    }
                }
            }
            lanes.append(
                .init(name: lane.rawValue, waiting: max(0, length - pending + parked), pending: pending - parked, parked: parked)
            )
        }
        // Best effort: a status without the ages is still a status.
        if let ages = try? await oldestWaiting() {
            for i in lanes.indices { lanes[i].oldestWaitingSeconds = ages[JobPriority.inOrder[i]] }
        }
        return QueueStatus(
            queue: configuration.name,
            lanes: lanes,
            delayed: delayed.int ?? 0,
            dead: dead.int ?? 0,
            counters: (stats.stringPairs ?? [:]).compactMapValues(Int.init),
            workers: try await workers(),
            paused: (replies[laneReplies.count + 3].stringPairs ?? [:]).mapValues {
                (try? JSONDecoder().decode(PauseInfo.self, from: Data($0.utf8))) ?? PauseInfo(by: "?", at: 0)
            }
        )
    }

    /// The fields of the `workers` group in an `XINFO GROUPS` reply (nil when the group or the
    /// stream does not exist).
    static func workersGroup(in reply: RESPValue) -> [String: RESPValue]? {
        for group in reply.array ?? [] {
            let fields = group.array ?? []
            var info: [String: RESPValue] = [:]
            var i = 0
            while i + 1 < fields.count {
                if let name = fields[i].string { info[name] = fields[i + 1] }
                i += 2
            }
            if info["name"]?.string == QueueKeys.group { return info }
        }
        return nil
    }

    /// Per lane, the age in seconds of the oldest entry the workers' group has not read yet (the
    /// first after the group's last-delivered id); lanes where none waits are absent.
    public func oldestWaiting() async throws -> [JobPriority: Double] {
        let groups = try await redis.pipeline(keys.lanes.map { RedisCommand("XINFO", "GROUPS", $0) })
        var after: [(JobPriority, String)] = []
        for (lane, reply) in zip(JobPriority.inOrder, groups) {
            if let last = Self.workersGroup(in: reply)?["last-delivered-id"]?.string { after.append((lane, last)) }
        }
        if after.isEmpty { return [:] }
        // Entry ids are Redis's clock: the age is measured on it too, whatever this host's clock says.
        var firsts = try await redis.pipeline(
            after.map { RedisCommand("XRANGE", keys.lane($0.0), "(" + $0.1, "+", "COUNT", 1) } + [RedisCommand("TIME")]
        )
        let time = firsts.removeLast().array ?? []
        let now =
            time.count == 2
            ? (Double(time[0].string ?? "") ?? 0) * 1000 + (Double(time[1].string ?? "") ?? 0) / 1000 : Double(Self.nowMs())
        var ages: [JobPriority: Double] = [:]
        for ((lane, _), reply) in zip(after, firsts) {
            guard let id = reply.array?.first?.array?.first?.string, let ms = id.split(separator: "-").first.flatMap({ Double($0) })
            else { continue }
            ages[lane] = max(0, (now - ms) / 1000)
        }
        return ages
    }

    public func deadLetters(limit: Int = 100) async throws -> [DeadLetter] {
        let reply = try await redis.send("XREVRANGE", keys.dead, "+", "-", "COUNT", limit)
        return (reply.array ?? []).compactMap { entry in
            guard let e = entry.array, e.count == 2, let id = e[0].string else { return nil }
            var h: [String: String] = [:]
            let f = e[1].array ?? []
            var i = 0
            while i + 1 < f.count {
                if let k = f[i].string { h[k] = f[i + 1].string ?? "<\(f[i + 1].bytes?.count ?? 0) bytes, not UTF-8>" }
                i += 2
            }
            return DeadLetter(
                entryID: id,
                jobID: h["id"] ?? "",
                lane: h["lane"] ?? "",
                attempt: Int(h["attempt"] ?? "") ?? 0,
                reason: h["reason"] ?? "",
                failedAt: (Double(h["failed_at"] ?? "") ?? 0) / 1000,
                payload: h["job"] ?? ""
            )
        }
    }

    /// Puts a dead letter back on its lane as a fresh job. Returns its job id, nil if no such entry.
    /// The attempt that ended the job (its `dead` result) stays in the job's history.
    public func retryDeadLetter(entryID: String) async throws -> String? {
        // The result, read before the script clears it, for the history.
        let entry = try await redis.send("XRANGE", keys.dead, entryID, entryID)
        try entry.throwingServerError()
        let fields = entry.array?.first?.array?.last?.array ?? []
        var jobID = ""
        var i = 0
        while i + 1 < fields.count {
            if fields[i].string == "id" { jobID = fields[i + 1].string ?? "" }
            i += 2
        }
        let ended = jobID.isEmpty ? nil : try await result(of: jobID)
        let record = ended.flatMap { $0.status == .dead ? AttemptRecord(ended: $0) : nil }
        let call = QueueScripts.RetryDeadLetter(entryID: entryID, keys: keys, recordTTL: configuration.resultTTL, ended: record)
        return try await redis.evaluate(call).string
    }

    /// Deletes every dead letter. Returns how many there were.
    @discardableResult
    public func purgeDeadLetters() async throws -> Int {
        let replies = try await redis.pipeline([RedisCommand("XLEN", keys.dead), RedisCommand("DEL", keys.dead)])
        return replies[0].int ?? 0
    }

    // MARK: - Worker registry

    /// Records a worker's heartbeat; the entry expires after `ttl` without one.
    /// Returns false, writing nothing, when the id is registered to another process (another pid
    /// or host) and `force` is false: a second worker took the id while this one was away.
    @discardableResult
    public func heartbeat(_ info: WorkerInfo, ttl: Duration, force: Bool = false) async throws -> Bool {
        try await beat(info, ttl: ttl, force: force) != .displaced
    }

    /// What a heartbeat found.
    public enum HeartbeatReply: Sendable, Equatable {
        /// Recorded: the id is this process's.
        case recorded
        /// Recorded, and someone asked this process to drain (`requestDrain`).
        case drainRequested
        /// Not recorded: another process holds the id.
        case displaced
    }

    /// A heartbeat that also tells whether a drain was asked of this process.
    public func beat(_ info: WorkerInfo, ttl: Duration, force: Bool = false) async throws -> HeartbeatReply {
        let json = Array(try JSONEncoder().encode(info))
        let call = QueueScripts.Heartbeat(info, json: json, ttl: ttl, force: force, keys: keys, nowMs: Self.nowMs())
        switch try await redis.evaluate(call).int {
        case 1: return .recorded
        case 2: return .drainRequested
        default: return .displaced
        }
    }

    /// Asks the live worker `workerID` to drain and exit: it sees the request at its next
    /// heartbeat (every 2 s), stops taking jobs, lets its running jobs finish within its grace
    /// and exits 0. The request names the process (its registry token), so a process started
    /// later with the same id is not stopped by it; it expires after 10 minutes. Returns the
    /// worker's entry (without a `token`: a version that cannot be asked, and nothing was
    /// written), or nil when no live worker has the id.
    public func requestDrain(workerID: String) async throws -> WorkerInfo? {
        guard let bytes = try await redis.send("GET", keys.worker(workerID)).bytes,
            let info = try? JSONDecoder().decode(WorkerInfo.self, from: Data(bytes))
        else { return nil }
        // An entry without a token comes from a version that does not read drain requests.
        guard let token = info.token else { return info }
        try await redis.send("SET", keys.drainRequest(workerID), token, "EX", 600).throwingServerError()
        return info
    }

    /// What is left to do on the queue: delayed jobs due within `dueWithin`, then per lane the
    /// entries a worker holds (the group's pending count) and whether any waits (an entry after
    /// the group's last-delivered id). What `worker --burst` waits for. Entries that are neither
    /// (delivered, then dropped from the pending list by hand) do not count. The delayed set is
    /// read first: a job moving from it to a lane meanwhile is then seen on the lane.
    /// Waiting entries of the lanes in `skipping` (paused ones) do not count.
    public func remainingWork(
        dueWithin: Duration,
        skipping: Set<JobPriority> = []
    ) async throws -> (waiting: Int, running: Int, delayedSoon: Int) {
        let delayed = try await redis.send("ZCOUNT", keys.delayed, "-inf", Self.nowMs() + dueWithin.milliseconds)
        try delayed.throwingServerError()
        var running = 0
        var after: [(String, String)] = []
        for (lane, reply) in zip(keys.lanes, try await redis.pipeline(keys.lanes.map { RedisCommand("XINFO", "GROUPS", $0) })) {
            // A lane nobody pushed to has no stream (an error reply): nothing there.
            guard let info = Self.workersGroup(in: reply) else { continue }
            running += info["pending"]?.int ?? 0
            if skipping.contains(where: { keys.lane($0) == lane }) {
                // Entries parked on a skipped (paused) lane wait there; they do not run.
                let summary = try await redis.send("XPENDING", lane, QueueKeys.group)
                for consumer in (summary.array ?? []).last?.array ?? [] {
                    if let pair = consumer.array, pair.count == 2, pair[0].string == QueueKeys.parkedConsumer {
                        running -= pair[1].int ?? Int(pair[1].string ?? "") ?? 0
                    }
                }
                continue
            }
            after.append((lane, info["last-delivered-id"]?.string ?? "0-0"))
        }
        var waiting = 0
        if !after.isEmpty {
            let firsts = try await redis.pipeline(after.map { RedisCommand("XRANGE", $0.0, "(" + $0.1, "+", "COUNT", 1) })
            waiting = firsts.filter { !($0.array ?? []).isEmpty }.count
        }
        return (waiting, running, delayed.int ?? 0)
    }

    /// Registers a worker as it starts: its entry is written only when no live worker holds the
    /// id. Returns nil when registered, else the live worker's entry (nothing is written then).
    public func register(_ info: WorkerInfo, ttl: Duration) async throws -> WorkerInfo? {
        let json = try JSONEncoder().encode(info)
        let replies = try await redis.pipeline([
            RedisCommand("SET", keys.worker(info.id), Array(json), "NX", "GET", "EX", ttl.wholeSeconds)
        ])
        try replies[0].throwingServerError()
        if let bytes = replies[0].bytes {
            if let holder = try? JSONDecoder().decode(WorkerInfo.self, from: Data(bytes)) {
                // Our own entry: an earlier try of this call whose reply was lost.
                if holder.token != nil && holder.token == info.token { return nil }
                return holder
            }
            // Unreadable (another version wrote it): ours now.
            try await heartbeat(info, ttl: ttl, force: true)
            return nil
        }
        try await redis.send("ZADD", keys.workers, Self.nowMs(), info.id)
        return nil
    }

    /// Removes a worker from the registry, and from each lane's consumer group when it holds no
    /// pending entries there (removing one that does would orphan them).
    public func deregister(workerID: String) async throws {
        _ = try await redis.pipeline([
            RedisCommand("DEL", keys.worker(workerID)), RedisCommand("ZREM", keys.workers, workerID),
            RedisCommand("DEL", keys.drainRequest(workerID)),
        ])
        _ = try await redis.evaluate(QueueScripts.DropConsumer(workerID: workerID, keys: keys))
    }

    /// How long a worker process's metrics snapshot outlives its last update: the merged
    /// counters of the cluster do not drop when a worker stops or restarts (its old series
    /// stays in the sum) until then.
    public static let metricsRetention: Duration = .seconds(86_400)

    /// Publishes a worker process's cumulative metrics snapshot (JSON).
    public func publishMetrics(worker: String, series: String, json: [UInt8]) async throws {
        let key = keys.metrics(worker: worker, series: series)
        let replies = try await redis.pipeline([
            RedisCommand("SET", key, json, "PX", Self.metricsRetention.milliseconds),
            RedisCommand("ZADD", keys.metricsIndex, Self.nowMs(), key),
        ])
        for reply in replies { try reply.throwingServerError() }
    }

    /// Every metrics snapshot within the retention (JSON), live workers' and those of processes
    /// that stopped; keys that expired leave the index.
    public func metricsSnapshots() async throws -> [[UInt8]] {
        let oldest = Self.nowMs() - Self.metricsRetention.milliseconds
        _ = try await redis.send("ZREMRANGEBYSCORE", keys.metricsIndex, "-inf", "(\(oldest)")
        let names = (try await redis.send("ZRANGE", keys.metricsIndex, 0, -1).array ?? []).compactMap(\.string)
        if names.isEmpty { return [] }
        var values: [RESPValue] = []
        for start in stride(from: 0, to: names.count, by: 200) {
            let chunk = Array(names[start..<min(start + 200, names.count)])
            values += try await redis.send(RedisCommand("MGET", arguments: chunk)).array ?? []
        }
        let gone = zip(names, values).filter { $0.1.isNull }.map(\.0)
        if !gone.isEmpty { try await redis.send(RedisCommand("ZREM", arguments: [keys.metricsIndex] + gone)) }
        return values.compactMap(\.bytes)
    }

    /// Workers whose registry entry is alive; forgets those whose entry has expired.
    public func workers() async throws -> [WorkerInfo] {
        let ids = (try await redis.send("ZRANGE", keys.workers, 0, -1).array ?? []).compactMap(\.string)
        if ids.isEmpty { return [] }
        let values = try await redis.send(RedisCommand("MGET", arguments: ids.map(keys.worker))).array ?? []
        var alive: [WorkerInfo] = []
        var gone: [String] = []
        for (id, value) in zip(ids, values) {
            if let bytes = value.bytes, let info = try? JSONDecoder().decode(WorkerInfo.self, from: Data(bytes)) {
                alive.append(info)
            } else {
                gone.append(id)
            }
        }
        if !gone.isEmpty { try await redis.send(RedisCommand("ZREM", arguments: [keys.workers] + gone)) }
        return alive
    }

    // MARK: - Durability

    /// `WAIT` for the replicas that `configuration.durability` asks for, to pipeline behind a
    /// write; empty for `.acknowledged`.
    var waitForReplicas: [RedisCommand] {
        guard case .replicated(let replicas, let timeout) = configuration.durability else { return [] }
        return [RedisCommand("WAIT", replicas, max(1, timeout.milliseconds))]
    }

    /// A finish whose results no replica confirmed in time: they are on the master, and a
    /// failover before it replicates them would make those jobs run again. Logged at most once
    /// per 10 s, with the count since the last line.
    func noteReplication(confirmed: Int, jobs: Int) {
        guard case .replicated(let wanted, let timeout) = configuration.durability, confirmed < wanted else { return }
        let line = unconfirmed.withLock { state -> Int? in
            state.jobs += jobs
            let now = ContinuousClock.now
            guard state.lastLine.map({ now - $0 >= .seconds(10) }) ?? true else { return nil }
            state.lastLine = now
            defer { state.jobs = 0 }
            return state.jobs
        }
        if let line {
            logger.warning(
                "results of \(line) jobs not confirmed by \(wanted) replica(s) within \(timeout); a failover now would run them again",
                metadata: ["queue": "\(configuration.name)"]
            )
        }
    }

    // MARK: - Scripts in pipelines

    /// Sends EVALSHA commands in one pipeline; if the server lost the scripts (restart, SCRIPT
    /// FLUSH), loads them and sends the affected commands again.
    func pipelineScripts(_ commands: [RedisCommand], scripts: [RedisScript]) async throws -> [RESPValue] {
        try await redis.pipeline(commands, scripts: scripts)
    }
}
