import Foundation
import SwitchyardCore
import SwitchyardRedis

/// Where one job is now, for `switchyard job <id>`.
public struct JobLocation: Sendable {
    public enum Place: Sendable, Equatable {
        /// Its final result is written (succeeded, failed, dead, cancelled).
        case finished
        /// On a lane, not yet taken: `position` 1 is the next entry a worker takes from the lane.
        case waiting(position: Int)
        /// Set aside by warm-model routing for a worker that holds its model warm.
        case parked
        /// Taken by `worker`, which has held it for `heldFor` seconds (since it took it or last
        /// renewed its lease).
        case running(worker: String, heldFor: Double)
        /// In the delayed set until `due` (seconds since the Unix epoch): scheduled, or a retry.
        case delayed(due: Double)
        /// Delivered, but held by no consumer (dropped from the group's pending list by hand): no
        /// reclaim will bring it back; `dlq`-style repair is by hand.
        case orphaned
        /// Known (its record lives) but in none of those places when it was looked up: between
        /// two of them (a retry being scheduled, a delayed job being promoted: look again), or
        /// finished with a result that expired before its record (a shorter result TTL).
        case between
        /// No record, no result: never pushed here, or expired.
        case unknown
    }

    public var id: String
    public var place: Place
    /// `high`, `default` or `low` when it is on a lane or delayed.
    public var lane: String?
    /// The attempt it is on, or will run as.
    public var attempt: Int?
    public var maxAttempts: Int?
    public var batch: String?
    /// The job as pushed (JSON), when it was found on a lane or in the delayed set, or it failed.
    public var job: [UInt8]?
    public var result: JobResult?
    /// Its attempts that did not end it, oldest first (`QueueKeys.attempts`); the one that ended
    /// it is `result`.
    public var attempts: [AttemptRecord] = []
}

extension JobQueue {
    /// Whether this queue knows the job: its record or its result lives, or else (the record can
    /// expire while a job waits in a long backlog) it is on a lane or delayed (`locate`).
    public func isKnown(jobID: String) async throws -> Bool {
        if try await redis.send("EXISTS", keys.job(jobID), keys.result(jobID)).int ?? 0 > 0 { return true }
        return try await locate(jobID: jobID).place != .unknown
    }

    /// Looks for the job everywhere it can be: its result, the lanes (each scanned, up to
    /// `scanLimit` entries a lane), its consumer in the group, the delayed set. Meant for a person
    /// inspecting one job, not for a hot path: it reads whole lanes.
    public func locate(jobID: String, scanLimit: Int = 200_000) async throws -> JobLocation {
        var location = JobLocation(id: jobID, place: .unknown)
        let first = try await redis.pipeline([
            RedisCommand("GET", keys.result(jobID)), RedisCommand("GET", keys.job(jobID)), RedisCommand("LRANGE", keys.attempts(jobID), 0, 99),
            RedisCommand("GET", keys.failedJob(jobID)),
        ])
        for reply in first { try reply.throwingServerError() }
        location.attempts = (first[2].array ?? []).compactMap { $0.bytes.flatMap { try? JSONDecoder().decode(AttemptRecord.self, from: Data($0)) } }
        if let bytes = first[0].bytes {
            location.place = .finished
            location.result = try? JSONDecoder().decode(JobResult.self, from: Data(bytes))
            location.batch = location.result?.batch
            if let failed = first[3].bytes.flatMap(FailedJobRecord.init) {
                location.lane = failed.lane.rawValue
                location.maxAttempts = failed.maxAttempts
                location.job = failed.payload
            }
            return location
        }
        // The record can expire before the job ends (a backlog older than its TTL, a dead letter
        // retried later, a job pushed by a version without records): look everywhere anyway.
        if let batch = first[1].bytes {
            location.batch = batch.isEmpty ? nil : String(decoding: batch, as: UTF8.self)
            location.place = .between
        }

        for lane in JobPriority.inOrder {
            let key = keys.lane(lane)
            guard let (entryID, fields, waitingBefore) = try await find(jobID: jobID, in: key, limit: scanLimit) else { continue }
            location.lane = lane.rawValue
            location.attempt = fields["attempt"].flatMap { Int($0) }
            location.maxAttempts = fields["max"].flatMap { Int($0) }
            location.job = fields["job"].map { Array($0.utf8) }
            if let waitingBefore {
                location.place = .waiting(position: waitingBefore + 1)
            } else {
                // Delivered: who holds it, and for how long since its lease was last renewed.
                let pending = try await redis.send("XPENDING", key, QueueKeys.group, entryID, entryID, 1)
                let row = pending.array?.first?.array ?? []
                let consumer = row.count > 2 ? row[1].string ?? "" : ""
                let idle = row.count > 2 ? Double(row[2].int ?? 0) / 1000 : 0
                if consumer.isEmpty {
                    location.place = .orphaned
                } else {
                    location.place = consumer == QueueKeys.parkedConsumer ? .parked : .running(worker: consumer, heldFor: idle)
                }
            }
            return location
        }
        if let (member, dueMs) = try await delayedMember(jobID: jobID), let delayed = Self.delayedJob(member, dueMs: dueMs) {
            location.place = .delayed(due: delayed.due)
            location.lane = delayed.lane
            location.attempt = delayed.attempt
            location.maxAttempts = delayed.maxAttempts
            location.job = Array(member.split(separator: 31, maxSplits: 5, omittingEmptySubsequences: false).last ?? [])
        }
        return location
    }

    /// The lane entry of the job, its fields, and how many entries wait before it (nil when it
    /// has been delivered). Delivered entries are few (the jobs running or set aside, and
    /// acknowledged ones are deleted): they are read by id from the group's pending list; the
    /// waiting ones are scanned from the group's last-delivered id, 200 at a time.
    private func find(jobID: String, in lane: String, limit: Int) async throws -> (String, [String: String], Int?)? {
        // A lane nobody has pushed to has no stream yet (XINFO answers "no such key").
        guard try await redis.send("EXISTS", lane).int == 1 else { return nil }
        let group = Self.workersGroup(in: try await redis.send("XINFO", "GROUPS", lane))
        let hasGroup = group != nil
        let lastDelivered = group?["last-delivered-id"]?.string ?? "0-0"
        // Delivered: every id in the pending list (an orphaned one is not there, and is found by
        // the scan of what is at or before the last-delivered id below, only when nothing else is).
        var pendingIDs: [String] = []
        var start = "-"
        while hasGroup && pendingIDs.count < limit {
            let page = try await redis.send("XPENDING", lane, QueueKeys.group, start, "+", 1000).array ?? []
            let ids = page.compactMap { $0.array?.first?.string }
            pendingIDs += ids
            guard ids.count == 1000, let last = ids.last else { break }
            start = "(" + last
        }
        for chunk in stride(from: 0, to: pendingIDs.count, by: 200) {
            let ids = pendingIDs[chunk..<min(chunk + 200, pendingIDs.count)]
            let replies = try await redis.pipeline(ids.map { RedisCommand("XRANGE", lane, $0, $0) })
            for (entryID, reply) in zip(ids, replies) {
                guard let fields = reply.array?.first?.array, fields.count == 2 else { continue }
                let values = Self.pairs(fields[1].array ?? [])
                if values["id"] == jobID { return (entryID, values, nil) }
            }
        }
        // Waiting: after the last-delivered id, in order.
        var waiting = 0
        var scanned = 0
        for (from, delivered) in [("(" + lastDelivered, false), ("-", true)] {
            var start = from
            while scanned < limit {
                let reply = try await redis.send("XRANGE", lane, start, delivered ? lastDelivered : "+", "COUNT", 200)
                try reply.throwingServerError()
                let entries = reply.array ?? []
                if entries.isEmpty { break }
                for entry in entries {
                    guard let parts = entry.array, parts.count == 2, let entryID = parts[0].string else { continue }
                    let fields = Self.pairs(parts[1].array ?? [])
                    if fields["id"] == jobID { return (entryID, fields, delivered ? nil : waiting) }
                    if !delivered { waiting += 1 }
                    start = "(" + entryID
                }
                scanned += entries.count
            }
        }
        return nil
    }

    /// A flat RESP array of names and values as a dictionary of strings.
    static func pairs(_ flat: [RESPValue]) -> [String: String] {
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < flat.count {
            if let name = flat[i].string { out[name] = flat[i + 1].string }
            i += 2
        }
        return out
    }

    /// `text` with the glob characters of a MATCH pattern escaped.
    static func globEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if "*?[]\\".contains(c) { out.append("\\") }
            out.append(c)
        }
        return out
    }
}
