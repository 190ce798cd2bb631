import SwitchyardCore
import SwitchyardRedis

/// One call of a queue script, its keys and arguments named. Lua reads them by position; each
/// call type is the one place that fixes those positions, in the order the script's doc comment
/// lists them, so Swift and Lua cannot drift apart one argument at a time.
protocol QueueScriptCall {
    static var script: RedisScript { get }
    /// KEYS, in the script's order.
    var keys: [any RedisArgument] { get }
    /// ARGV, in the script's order.
    var arguments: [any RedisArgument] { get }
}

extension QueueScriptCall {
    /// EVALSHA for a pipeline (`JobQueue.pipelineScripts` reloads the script when Redis lost it).
    var command: RedisCommand { RedisCommand("EVALSHA", arguments: [Self.script.sha1, keys.count] + keys + arguments) }
}

extension RedisConnectionPool {
    /// Runs a queue script call (loading the script when Redis does not have it).
    func evaluate<Call: QueueScriptCall>(_ call: Call) async throws -> RESPValue {
        let reply = try await evaluate(Call.script, keys: call.keys, arguments: call.arguments)
        try reply.throwingServerError()
        return reply
    }
}

extension QueueScripts {
    /// `push`: queue (or schedule) up to `jobsPerCall` jobs, each with its record, batch and
    /// idempotency key.
    struct Push: QueueScriptCall {
        static let script = QueueScripts.push
        /// Jobs per script call; the calls of a chunk go in one pipeline.
        static let jobsPerCall = 64
        var keys: [any RedisArgument]
        var arguments: [any RedisArgument]
        /// The ids of the jobs appended, in order.
        private(set) var ids: [String] = []
        var count: Int { ids.count }

        init(keys k: QueueKeys, configuration: QueueConfiguration, nowMs: Int64) {
            keys = k.lanes + [k.delayed, k.stats, k.batches]
            arguments = [nowMs, configuration.resultTTL.wholeSeconds, configuration.idempotencyTTL.wholeSeconds]
        }

        /// Adds a job; returns the bytes it adds to the call (its JSON, twice for a delayed job).
        @discardableResult
        mutating func append(_ job: Job, json: [UInt8], keys k: QueueKeys, nowMs: Int64) -> Int {
            let batch = job.batch ?? ""
            let idempotencyKey = job.idempotencyKey ?? ""
            let dueMs = job.notBefore.map { Int64($0 * 1000) } ?? 0
            // A job not due yet waits in the delayed set, as the member the promote script reads.
            let member =
                dueMs > nowMs
                ? DelayedMember(lane: job.priority, jobID: job.id, attempt: 1, maxAttempts: job.maxAttempts, batch: batch, payload: json).bytes
                : []
            let lane = 1 + (JobPriority.inOrder.firstIndex(of: job.priority) ?? 1)
            // Most jobs: due now, no batch, no idempotency key, and so no extra.
            var extra: [UInt8] = []
            if !batch.isEmpty || !idempotencyKey.isEmpty || !member.isEmpty {
                extra = Array(batch.utf8) + [31] + Array(idempotencyKey.utf8) + [31] + Array(String(dueMs).utf8) + [31] + member
            }
            arguments += [job.id, json, job.maxAttempts, job.model, lane, extra]
            ids.append(job.id)
            return json.count + member.count
        }

        /// Per job: queued, a duplicate idempotency key (the first job's id), or an id pushed already.
        /// The reply is {flags, existing ids...} (see `QueueScripts.push`).
        static func outcomes(_ reply: RESPValue, ids: [String]) throws -> [PushOutcome] {
            try reply.throwingServerError()
            guard let parts = reply.array, let flags = parts.first?.string.map(Array.init), flags.count == ids.count else {
                throw RedisError(.unexpectedReply, "push returned \(reply) for \(ids.count) jobs")
            }
            var existing = parts.dropFirst().makeIterator()
            return try zip(flags, ids).map { flag, id in
                switch flag {
                case "1": return .queued(id: id)
                case "2": return .duplicate(existingID: id)
                case "0":
                    guard let first = existing.next()?.string else {
                        throw RedisError(.unexpectedReply, "push returned too few existing ids: \(reply)")
                    }
                    return .duplicate(existingID: first)
                default: throw RedisError(.unexpectedReply, "push returned the flag \(flag)")
                }
            }
        }
    }

    /// `take`: up to `count` new entries, lanes in priority order.
    struct Take: QueueScriptCall {
        static let script = QueueScripts.take
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(keys k: QueueKeys, consumer: String, count: Int) {
            keys = [k.paused] + k.lanes
            arguments = [QueueKeys.group, consumer, count] + JobPriority.inOrder.map(\.rawValue)
        }

        /// The reply: {{deliveries}, {paused lane names, '*' for the whole queue}}.
        static func decode(_ reply: RESPValue) -> (deliveries: [Delivery], paused: Set<String>) {
            let parts = reply.array ?? []
            guard parts.count == 2 else { return ([], []) }
            return (deliveries(parts[0]), Set((parts[1].array ?? []).compactMap(\.string)))
        }
    }

    /// `takeWarm`: a take with warm-model routing (see the script's doc comment).
    struct TakeWarm: QueueScriptCall {
        static let script = QueueScripts.takeWarm
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(
            keys k: QueueKeys,
            consumer: String,
            count: Int,
            warm: [String],
            released: [String],
            cacheSize: Int,
            busyModels: Int,
            slots: WarmSlots?,
            routing: WarmRouting,
            starveGapMs: Int64,
            nowMs: Int64
        ) {
            keys = [k.paused] + k.lanes
            // Fixed arguments first, then the lists, each after its length (the free slots share the
            // warm models' length), then the lane names.
            let fixed: [any RedisArgument] = [
                QueueKeys.group, consumer, max(0, count), QueueKeys.parkedConsumer, routing.lookahead,
                routing.longestWait.milliseconds, nowMs, nowMs + routing.claimTTL.milliseconds, max(1, cacheSize), routing.shareAfter,
                max(0, busyModels), max(1, starveGapMs), slots.map { max(1, $0.perServer) } ?? 0,
            ]
            let free: [any RedisArgument] = warm.map { model in slots.map { max(0, $0.free[model] ?? $0.perServer) } ?? -1 }
            arguments = fixed + [warm.count] + warm + free + [released.count] + released + JobPriority.inOrder.map(\.rawValue)
        }

        /// The reply: {{deliveries}, {last entry id per lane}, wake in ms or -1, model claimed or '',
        /// {paused lane names}}.
        static func decode(_ reply: RESPValue) throws -> WarmTake {
            let parts = reply.array ?? []
            guard parts.count == 5 else { throw RedisError(.unexpectedReply, "the warm take returned \(parts.count) parts, expected 5") }
            let wake = parts[2].int ?? -1
            return WarmTake(
                deliveries: deliveries(parts[0]),
                lastEntryIDs: (parts[1].array ?? []).compactMap(\.string),
                wakeAfter: wake >= 0 ? .milliseconds(wake) : nil,
                claimedModel: parts[3].string.flatMap { $0.isEmpty ? nil : $0 },
                paused: Set((parts[4].array ?? []).compactMap(\.string))
            )
        }
    }

    /// `{{lane index, entry id, fields} or {lane index, entry id, id, attempt, max, batch, job}, ...}`
    /// as both takes return them (`QueueScripts.deliveryOf`).
    static func deliveries(_ reply: RESPValue) -> [Delivery] {
        (reply.array ?? []).compactMap { item in
            guard let parts = item.array, parts.count >= 3, let index = parts[0].int, JobPriority.inOrder.indices.contains(index - 1),
                let entry = parts[1].string
            else { return nil }
            let lane = JobPriority.inOrder[index - 1]
            if parts.count == 7 { return Delivery(lane: lane, entryID: entry, values: parts[2...]) }
            guard parts.count == 3, let fields = parts[2].array else { return nil }
            return Delivery(lane: lane, entryID: entry, fields: fields)
        }
    }

    /// `finish`: write results and acknowledge their entries, many at once.
    struct Finish: QueueScriptCall {
        static let script = QueueScripts.finish
        private(set) var keys: [any RedisArgument]
        private(set) var arguments: [any RedisArgument]

        init(keys k: QueueKeys, resultTTL: Duration) {
            keys = [k.stats, k.done] + k.lanes
            arguments = [QueueKeys.group, resultTTL.wholeSeconds, k.lanes.count]
        }

        mutating func append(_ completion: Completion, keys k: QueueKeys, json: [UInt8]) {
            let d = completion.delivery
            // What `retry <id>` needs, for a job that failed (rare: nothing for the others).
            let failed =
                completion.result.status == .failed && !d.payload.isEmpty
                ? FailedJobRecord(lane: d.lane, maxAttempts: d.maxAttempts, payload: d.payload).bytes : []
            let notify = completion.notify && !d.jobID.isEmpty
            // Most jobs: no batch, nobody waiting, not failed, and so no extra.
            var extra: [UInt8] = []
            if notify || !d.batch.isEmpty || !failed.isEmpty {
                extra = Array((notify ? "1" : "0").utf8) + Array(String(d.batch.utf8.count).utf8) + [UInt8(ascii: ":")] + Array(d.batch.utf8) + failed
            }
            arguments += [
                JobPriority.inOrder.firstIndex(of: d.lane)! + 1, d.entryID, completion.result.status.rawValue, json, d.jobID, d.attempt, extra,
            ]
        }
    }

    /// `retry`: schedule a failed attempt's next one.
    struct Retry: QueueScriptCall {
        static let script = QueueScripts.retry
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(_ delivery: Delivery, keys k: QueueKeys, dueMs: Int64, record: AttemptRecord?, historyTTL: Duration) {
            keys = [
                k.lane(delivery.lane), k.delayed, k.result(delivery.jobID), k.stats, k.attempts(delivery.jobID), k.job(delivery.jobID),
                k.batch(delivery.batch), k.batchJobs(delivery.batch),
            ]
            let member = DelayedMember(
                lane: delivery.lane,
                jobID: delivery.jobID,
                attempt: delivery.attempt + 1,
                maxAttempts: delivery.maxAttempts,
                batch: delivery.batch,
                payload: delivery.payload
            )
            arguments = [QueueKeys.group, delivery.entryID, dueMs, member.bytes, record?.jsonBytes ?? [], historyTTL.wholeSeconds]
        }
    }

    /// `deadLetter`: move a delivery to the dead-letter stream with its reason (and final result).
    struct DeadLetterDelivery: QueueScriptCall {
        static let script = QueueScripts.deadLetter
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(_ delivery: Delivery, reason: String, result: JobResult?, keys k: QueueKeys, configuration: QueueConfiguration, nowMs: Int64) {
            keys = [k.lane(delivery.lane), k.dead, k.result(delivery.jobID), k.batch(delivery.batch), k.stats]
            arguments = [
                QueueKeys.group, delivery.entryID, reason, delivery.payload, delivery.jobID, delivery.attempt, result?.encodedJSON() ?? [],
                delivery.batch.isEmpty ? "0" : "1", configuration.resultTTL.wholeSeconds, configuration.deadLetterLimit,
                delivery.lane.rawValue, nowMs, delivery.maxAttempts, delivery.batch,
            ]
        }
    }

    /// `reclaim`: requeue or dead-letter one lane's entries whose lease ran out.
    struct Reclaim: QueueScriptCall {
        static let script = QueueScripts.reclaim
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(lane: JobPriority, consumer: String, limit: Int, keys k: QueueKeys, configuration: QueueConfiguration, nowMs: Int64) {
            let lease = configuration.lease.milliseconds
            keys = [k.lane(lane), k.dead, k.stats]
            arguments = [
                QueueKeys.group, consumer, lease, limit, lane.rawValue, configuration.resultTTL.wholeSeconds, configuration.deadLetterLimit,
                nowMs, QueueKeys.parkedConsumer, max(1, lease / 2), max(1, lease / 4), Self.deadResultTemplate,
            ]
        }

        /// The `dead` result the script writes for a job whose last attempt's lease ran out, made
        /// by the one JSON writer; the script fills in id, attempts, batch, message and finish time.
        static let deadResultTemplate = JobResult(
            id: "",
            status: .dead,
            attempts: 0,
            timings: .init(finished: 0),
            error: .init(code: "lease_expired", message: "")
        ).encodedJSON()
    }

    /// `promote`: move due members of the delayed set onto their lanes.
    struct Promote: QueueScriptCall {
        static let script = QueueScripts.promote
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(keys k: QueueKeys, nowMs: Int64, limit: Int) {
            keys = [k.delayed]
            arguments = [nowMs, limit]
        }
    }

    /// `handBack`: give entries back for another worker to run now, with no attempt counted.
    struct HandBack: QueueScriptCall {
        static let script = QueueScripts.handBack
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(lane: JobPriority, entryIDs: [String], keys k: QueueKeys) {
            keys = [k.lane(lane)]
            arguments = [QueueKeys.group] + entryIDs
        }
    }

    /// `heartbeat`: a worker's registry entry, unless another process holds the id.
    struct Heartbeat: QueueScriptCall {
        static let script = QueueScripts.heartbeat
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(_ info: WorkerInfo, json: [UInt8], ttl: Duration, force: Bool, keys k: QueueKeys, nowMs: Int64) {
            keys = [k.worker(info.id), k.workers, k.drainRequest(info.id)]
            // Workers silent for ten TTLs leave the set, so it stays small without anyone calling status.
            arguments = [
                json, ttl.wholeSeconds, nowMs, info.id, Int(info.pid), info.host, nowMs - ttl.milliseconds * 10, force ? "1" : "0",
                info.token ?? "",
            ]
        }
    }

    /// `dropConsumer`: remove a worker from the lanes' group where it holds nothing.
    struct DropConsumer: QueueScriptCall {
        static let script = QueueScripts.dropConsumer
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(workerID: String, keys k: QueueKeys) {
            keys = k.lanes
            arguments = [QueueKeys.group, workerID]
        }
    }

    /// `cancel`: a final `cancelled` result for a known job that has none.
    struct Cancel: QueueScriptCall {
        static let script = QueueScripts.cancel
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(jobID: String, result: JobResult, keys k: QueueKeys, resultTTL: Duration) {
            keys = [k.result(jobID), k.job(jobID), k.stats]
            arguments = [result.encodedJSON(), resultTTL.wholeSeconds]
        }
    }

    /// `retryDeadLetter`: put a dead letter back on its lane as a fresh job.
    struct RetryDeadLetter: QueueScriptCall {
        static let script = QueueScripts.retryDeadLetter
        let keys: [any RedisArgument]
        let arguments: [any RedisArgument]

        init(entryID: String, keys k: QueueKeys, recordTTL: Duration, ended: AttemptRecord?) {
            keys = [k.dead, k.stats]
            arguments = [entryID, recordTTL.wholeSeconds, ended?.jsonBytes ?? []]
        }
    }
}

/// A member of the delayed set: `lane \31 id \31 attempt \31 max \31 batch \31 json`, the
/// ASCII unit separator (31) between fields, which JSON never holds unescaped. Written only
/// here (for the push and retry scripts); read by the promote script.
struct DelayedMember {
    let bytes: [UInt8]

    init(lane: JobPriority, jobID: String, attempt: Int, maxAttempts: Int, batch: String, payload: [UInt8]) {
        var member: [UInt8] = []
        member.reserveCapacity(payload.count + 64)
        for part in [lane.rawValue, jobID, String(attempt), String(maxAttempts), batch] {
            member.append(contentsOf: part.utf8)
            member.append(31)
        }
        member.append(contentsOf: payload)
        bytes = member
    }
}

/// What `switchyard retry` needs of a job that failed: `lane \31 max \31 json`.
struct FailedJobRecord {
    let lane: JobPriority
    let maxAttempts: Int
    let payload: [UInt8]

    init(lane: JobPriority, maxAttempts: Int, payload: [UInt8]) {
        self.lane = lane
        self.maxAttempts = maxAttempts
        self.payload = payload
    }

    init?(_ bytes: [UInt8]) {
        let parts = bytes.split(separator: 31, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, let lane = JobPriority(rawValue: String(decoding: parts[0], as: UTF8.self)),
            let max = Int(String(decoding: parts[1], as: UTF8.self))
        else { return nil }
        self.init(lane: lane, maxAttempts: max, payload: Array(parts[2]))
    }

    var bytes: [UInt8] { Array(lane.rawValue.utf8) + [31] + Array(String(maxAttempts).utf8) + [31] + payload }
}
