import Foundation
import SwitchyardCore
import SwitchyardRedis

/// Who paused a lane (or the whole queue), and when.
public struct PauseInfo: Sendable, Hashable, Codable {
    /// `user@host` of whoever paused it.
    public var by: String
    /// Unix seconds.
    public var at: Double

    public init(by: String, at: Double) {
        self.by = by
        self.at = at
    }
}

/// What `JobQueue.purge` removed.
public struct PurgeCounts: Sendable, Hashable, Codable {
    /// New entries on the lanes.
    public var waiting = 0
    /// Entries warm-model routing had set aside (waiting too).
    public var parked = 0
    public var delayed = 0

    public init() {}

    public var total: Int { waiting + parked + delayed }
}

/// A job in the delayed set (scheduled, or waiting for its retry), as `switchyard delayed list`
/// shows it.
public struct DelayedJob: Sendable, Hashable, Codable {
    public var id: String
    public var lane: String
    /// The attempt it will run as.
    public var attempt: Int
    public var maxAttempts: Int
    public var batch: String?
    /// Unix seconds.
    public var due: Double
    public var model: String?

    enum CodingKeys: String, CodingKey {
        case id, lane, attempt, batch, due, model
        case maxAttempts = "max_attempts"
    }
}

/// A batch with its progress, as `switchyard batches` shows it.
public struct BatchSummary: Sendable, Hashable {
    public var id: String
    /// When its first job was pushed (Unix seconds).
    public var created: Double
    public var progress: BatchProgress
}

/// What `JobQueue.retryJob` did.
public enum RetryJobOutcome: Sendable, Hashable {
    /// Queued again on this lane as attempt 1.
    case requeued(lane: String)
    /// It has not ended (waiting, running, delayed): nothing to retry.
    case notFinished
    /// It ended with this status (succeeded, cancelled): only failed and dead jobs are retried.
    case notRetryable(status: JobResult.Status)
    /// It ended `failed` or `dead` (nil: its result cannot be read), but what it needs to run
    /// again is gone (it ended before this version kept it, its record expired, or its dead letter
    /// was purged).
    case payloadGone(status: JobResult.Status?)
    case unknown
}

extension JobQueue {
    // MARK: - Pausing

    /// Pauses one lane, or the whole queue (`lane` nil): workers take nothing new from it until
    /// it is resumed; running jobs finish, retries and delayed jobs still reach their lanes.
    public func pause(lane: JobPriority?, by: String) async throws {
        let info = PauseInfo(by: by, at: Date().timeIntervalSince1970)
        let json = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        try await redis.send("HSET", keys.paused, lane?.rawValue ?? "*", json).throwingServerError()
    }

    /// Resumes one lane, or everything (`lane` nil: the whole queue and every lane). Returns how
    /// many pauses it lifted.
    @discardableResult
    public func resume(lane: JobPriority?) async throws -> Int {
        if let lane {
            let reply = try await redis.send("HDEL", keys.paused, lane.rawValue)
            try reply.throwingServerError()
            return reply.int ?? 0
        }
        let replies = try await redis.pipeline([RedisCommand("HLEN", keys.paused), RedisCommand("DEL", keys.paused)])
        for reply in replies { try reply.throwingServerError() }
        return replies[0].int ?? 0
    }

    /// The paused lanes' names (`*`: the whole queue).
    public func pausedLanes() async throws -> Set<String> {
        let reply = try await redis.send("HKEYS", keys.paused)
        try reply.throwingServerError()
        return Set((reply.array ?? []).compactMap(\.string))
    }

    /// The paused lanes (`*`: the whole queue) and who paused them.
    public func pauses() async throws -> [String: PauseInfo] {
        let reply = try await redis.send("HGETALL", keys.paused)
        try reply.throwingServerError()
        var out: [String: PauseInfo] = [:]
        for (lane, json) in reply.stringPairs ?? [:] {
            out[lane] = (try? JSONDecoder().decode(PauseInfo.self, from: Data(json.utf8))) ?? PauseInfo(by: "?", at: 0)
        }
        return out
    }

    // MARK: - Purging

    /// Cancels every job that waits on the lanes or in the delayed set, in steps of `step` per lane
    /// (so Redis is never blocked for long): each gets a final `cancelled` result naming `by`,
    /// counted in its batch, so waiting pushers and batches finish. Running jobs are left to finish.
    public func purge(by: String, step: Int = 500) async throws -> PurgeCounts {
        try await ensureGroups()
        let consumer = "~purge"
        let result = JobResult(
            id: "",
            status: .cancelled,
            attempts: 0,
            timings: .init(finished: Date().timeIntervalSince1970),
            error: .init(code: "cancelled", message: "purged from the queue by \(by)")
        )
        var counts = PurgeCounts()
        while true {
            let call = QueueScripts.Purge(keys: keys, consumer: consumer, count: step, result: result, resultTTL: configuration.resultTTL)
            let removed = (try await redis.evaluate(call).array ?? []).map { $0.int ?? 0 }
            guard removed.count == 3 else { throw RedisError(.unexpectedReply, "purge returned \(removed.count) counts, expected 3") }
            counts.waiting += removed[0]
            counts.parked += removed[1]
            counts.delayed += removed[2]
            if removed.allSatisfy({ $0 == 0 }) { break }
        }
        // The purge consumer holds nothing now: leave no trace of it in the group.
        _ = try await redis.pipeline(keys.lanes.map { RedisCommand("XGROUP", "DELCONSUMER", $0, QueueKeys.group, consumer) })
        return counts
    }

    // MARK: - Delayed jobs

    /// The delayed set, soonest first, up to `limit`.
    public func delayedJobs(limit: Int = 100) async throws -> [DelayedJob] {
        let reply = try await redis.send("ZRANGE", keys.delayed, 0, max(0, limit - 1), "WITHSCORES")
        try reply.throwingServerError()
        let items = reply.array ?? []
        var jobs: [DelayedJob] = []
        var i = 0
        while i + 1 < items.count {
            if let member = items[i].bytes, let job = Self.delayedJob(member, dueMs: Double(items[i + 1].string ?? "") ?? 0) {
                jobs.append(job)
            }
            i += 2
        }
        return jobs
    }

    static func delayedJob(_ member: [UInt8], dueMs: Double) -> DelayedJob? {
        let parts = member.split(separator: 31, maxSplits: 5, omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        let text = parts.prefix(5).map { String(decoding: $0, as: UTF8.self) }
        let model = (try? JSONValue.parse(Array(parts[5])))?["model"]?.string
        return DelayedJob(
            id: text[1],
            lane: text[0],
            attempt: Int(text[2]) ?? 1,
            maxAttempts: Int(text[3]) ?? 1,
            batch: text[4].isEmpty ? nil : text[4],
            due: dueMs / 1000,
            model: model
        )
    }

    /// Makes a delayed job due now and moves it (with any others due) onto its lane. Returns
    /// false when no delayed job has this id.
    public func promote(jobID: String) async throws -> Bool {
        guard let (member, _) = try await delayedMember(jobID: jobID) else { return false }
        // Due before every other member (XX: only if it is still there), so the promote that
        // follows moves it first however many others are overdue.
        try await redis.send("ZADD", keys.delayed, "XX", 0, member).throwingServerError()
        _ = try await promoteDue()
        // Gone from the set: moved now, or by a worker's promote meanwhile.
        return try await redis.send("ZSCORE", keys.delayed, member).isNull
    }

    /// The job's member of the delayed set and its due time (ms), found by scanning the set
    /// (members are the entry's fields joined by the unit separator, the id second).
    func delayedMember(jobID: String) async throws -> ([UInt8], Double)? {
        var cursor = "0"
        repeat {
            let reply = try await redis.send("ZSCAN", keys.delayed, cursor, "MATCH", "*\u{1F}\(Self.globEscaped(jobID))\u{1F}*", "COUNT", 1000)
            try reply.throwingServerError()
            let parts = reply.array ?? []
            cursor = parts.first?.string ?? "0"
            let members = parts.count > 1 ? parts[1].array ?? [] : []
            var i = 0
            while i + 1 < members.count {
                if let member = members[i].bytes, Self.delayedJob(member, dueMs: 0)?.id == jobID {
                    return (member, Double(members[i + 1].string ?? "") ?? 0)
                }
                i += 2
            }
        } while cursor != "0"
        return nil
    }

    // MARK: - Batches

    /// The newest batches first, up to `limit`, with their progress. Batches whose counts have
    /// expired are dropped from the index on the way.
    public func recentBatches(limit: Int = 20) async throws -> [BatchSummary] {
        let reply = try await redis.send("ZREVRANGE", keys.batches, 0, max(0, limit - 1), "WITHSCORES")
        try reply.throwingServerError()
        let items = reply.array ?? []
        var ids: [(String, Double)] = []
        var i = 0
        while i + 1 < items.count {
            if let id = items[i].string { ids.append((id, (Double(items[i + 1].string ?? "") ?? 0) / 1000)) }
            i += 2
        }
        guard !ids.isEmpty else { return [] }
        let counts = try await redis.pipeline(ids.map { RedisCommand("HGETALL", keys.batch($0.0)) })
        var out: [BatchSummary] = []
        var gone: [String] = []
        for ((id, created), reply) in zip(ids, counts) {
            let pairs = reply.stringPairs ?? [:]
            guard !pairs.isEmpty else {
                gone.append(id)
                continue
            }
            out.append(BatchSummary(id: id, created: created, progress: BatchProgress(counts: pairs)))
        }
        if !gone.isEmpty { _ = try? await redis.send(RedisCommand("ZREM", arguments: [keys.batches] + gone)) }
        return out
    }

    // MARK: - Retrying one job

    /// Runs a job that ended `failed` or `dead` again, as attempt 1 with the same payload,
    /// counted again in its batch; the attempt that ended it is kept in its history.
    public func retryJob(id jobID: String) async throws -> RetryJobOutcome {
        let replies = try await redis.pipeline([RedisCommand("GET", keys.result(jobID)), RedisCommand("GET", keys.failedJob(jobID))])
        for reply in replies { try reply.throwingServerError() }
        guard let raw = replies[0].bytes else {
            return try await isKnown(jobID: jobID) ? .notFinished : .unknown
        }
        guard let result = try? JSONDecoder().decode(JobResult.self, from: Data(raw)) else { return .payloadGone(status: nil) }
        switch result.status {
        case .failed:
            guard let bytes = replies[1].bytes, let record = FailedJobRecord(bytes) else { return .payloadGone(status: .failed) }
            let call = QueueScripts.RetryFailed(
                jobID: jobID,
                resultAsRead: raw,
                batch: result.batch ?? "",
                lane: record.lane,
                keys: keys,
                recordTTL: configuration.resultTTL,
                ended: AttemptRecord(ended: result)
            )
            switch try await redis.evaluate(call).int {
            case 1: return .requeued(lane: record.lane.rawValue)
            case 0: return try await retryJob(id: jobID)  // it changed meanwhile: look again
            default: return .payloadGone(status: .failed)
            }
        case .dead:
            // Its payload is in the dead-letter stream (capped, newest last): look for its entry.
            // (retryDeadLetter keeps the ended attempt in the history.)
            if let entry = try await deadLetterEntry(jobID: jobID), try await retryDeadLetter(entryID: entry.entryID) != nil {
                return .requeued(lane: entry.lane)
            }
            // Another retry may have run it again meanwhile: then it has not ended.
            return try await redis.send("EXISTS", keys.result(jobID)).int == 0 ? .notFinished : .payloadGone(status: .dead)
        case .succeeded, .cancelled:
            return .notRetryable(status: result.status)
        }
    }

    /// The newest dead letter of this job, scanning the stream from its newest entry.
    func deadLetterEntry(jobID: String) async throws -> DeadLetter? {
        var end = "+"
        while true {
            let page = try await redis.send("XREVRANGE", keys.dead, end, "-", "COUNT", 1000)
            try page.throwingServerError()
            let entries = page.array ?? []
            for entry in entries {
                guard let e = entry.array, e.count == 2, let id = e[0].string else { continue }
                let f = e[1].array ?? []
                var h: [String: String] = [:]
                var i = 0
                while i + 1 < f.count {
                    if let k = f[i].string { h[k] = f[i + 1].string }
                    i += 2
                }
                if h["id"] == jobID {
                    return DeadLetter(
                        entryID: id,
                        jobID: jobID,
                        lane: h["lane"] ?? "default",
                        attempt: Int(h["attempt"] ?? "") ?? 0,
                        reason: h["reason"] ?? "",
                        failedAt: (Double(h["failed_at"] ?? "") ?? 0) / 1000,
                        payload: h["job"] ?? ""
                    )
                }
            }
            guard entries.count == 1000, let last = entries.last?.array?.first?.string else { return nil }
            end = "(" + last
        }
    }

    // MARK: - Every queue on this Redis

    /// The names of the queues that have keys on this Redis (found by SCAN; cheap for Redis, but
    /// it walks the whole keyspace).
    public static func queueNames(on redis: RedisConnectionPool) async throws -> [String] {
        // On a cluster each master holds its own slots' keys: every one is scanned.
        let found = try await redis.forEachPrimary { connection -> Set<String> in
            var names: Set<String> = []
            for pattern in ["sy:{*}:stats", "sy:{*}:workers", "sy:{*}:lane:*", "sy:{*}:paused"] {
                var cursor = "0"
                repeat {
                    let reply = try await connection.send("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
                    let parts = reply.array ?? []
                    cursor = parts.first?.string ?? "0"
                    for key in (parts.count > 1 ? parts[1].array ?? [] : []).compactMap(\.string) {
                        guard key.hasPrefix("sy:{"), let close = key.range(of: "}:", options: .backwards) else { continue }
                        names.insert(String(key[key.index(key.startIndex, offsetBy: 4)..<close.lowerBound]))
                    }
                } while cursor != "0"
            }
            return names
        }
        return found.reduce(into: Set<String>()) { $0.formUnion($1) }.sorted()
    }
}
