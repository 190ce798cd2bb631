import Foundation
import Logging
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardRedis

/// Reads one queue's cluster view from Redis: its status, the workers' merged metrics, and the
/// minute history coordinators keep there. Holds no state of its own, so every coordinator
/// answers the same.
struct ClusterReader: Sendable {
    let queue: JobQueue
    let logger: Logger

    /// Windows the summary reports, by name and minutes.
    static let windows: [(name: String, minutes: Int)] = [("1m", 1), ("5m", 5), ("15m", 15), ("60m", 60)]
    /// How long minute records are kept.
    static let historyMinutes = 120

    var keys: QueueKeys { queue.keys }

    /// The merge of every series' snapshot; snapshots that cannot be read are skipped (and logged).
    func merged() async throws -> (snapshot: MetricsSnapshot, series: Int) {
        let raw = try await queue.metricsSnapshots()
        var snapshots: [MetricsSnapshot] = []
        snapshots.reserveCapacity(raw.count)
        for bytes in raw {
            do {
                snapshots.append(try SnapshotDecoding.snapshot(bytes))
            } catch {
                logger.warning("skipping a metrics snapshot that cannot be read", metadata: ["error": "\(error)"])
            }
        }
        return (MetricsSnapshot.merge(snapshots), snapshots.count)
    }

    func summary() async throws -> ClusterSummary {
        let status = try await queue.status()
        let (merged, series) = try await merged()
        let now = Date().timeIntervalSince1970
        let minute = Int(now / 60)
        // From the record at the start of the minute `minutes` before this one: a window is
        // `minutes` to `minutes` + 1 long, and its `from` says exactly.
        let wanted = Self.windows.map { minute - $0.minutes }
        let records = try await history(minutes: wanted)
        var windows: [String: ActivitySummary] = [:]
        for (window, recordMinute) in zip(Self.windows, wanted) {
            // The record at the window's start, or the oldest one after it, or none (all so far).
            let base = records[recordMinute] ?? records.filter { $0.key > recordMinute }.min { $0.key < $1.key }?.value
            if let base {
                windows[window.name] = ActivitySummary(merged.since(base), from: base.takenAt, to: now)
            } else {
                windows[window.name] = ActivitySummary(merged, from: merged.startedAt, to: now)
            }
        }
        var resilience: [String: Int] = [:]
        for worker in status.workers { resilience.merge(worker.resilience ?? [:], uniquingKeysWith: +) }
        return ClusterSummary(
            queue: status.queue,
            now: now,
            lanes: status.lanes,
            delayed: status.delayed,
            dead: status.dead,
            counters: status.counters,
            workers: .init(
                alive: status.workers.count,
                inFlight: status.workers.reduce(0) { $0 + $1.inFlight },
                capacity: status.workers.reduce(0) { $0 + $1.concurrency },
                rssBytes: status.workers.reduce(0) { $0 + $1.rssBytes }
            ),
            windows: windows,
            total: ActivitySummary(merged, from: merged.startedAt, to: now),
            resilience: resilience,
            series: series
        )
    }

    /// Minute records that exist among `minutes`.
    func history(minutes: [Int]) async throws -> [Int: MetricsSnapshot] {
        let reply = try await queue.redis.send(RedisCommand("HMGET", arguments: [keys.metricsHistory] + minutes.map(String.init)))
        var out: [Int: MetricsSnapshot] = [:]
        for (minute, value) in zip(minutes, reply.array ?? []) {
            if let bytes = value.bytes, let snapshot = try? SnapshotDecoding.snapshot(bytes) {
                out[minute] = snapshot
            }
        }
        if out.count < Set(minutes).count {
            // Missing minutes (no coordinator ran then): fall back on whatever records are later.
            let all = (try await queue.redis.send("HKEYS", keys.metricsHistory).array ?? []).compactMap { $0.string.flatMap(Int.init) }
            let floor = minutes.min() ?? 0
            let extra = all.filter { $0 >= floor && out[$0] == nil }.sorted().prefix(1)
            if !extra.isEmpty {
                let values = try await queue.redis.send(RedisCommand("HMGET", arguments: [keys.metricsHistory] + extra.map(String.init)))
                for (minute, value) in zip(extra, values.array ?? []) {
                    if let bytes = value.bytes, let snapshot = try? SnapshotDecoding.snapshot(bytes) {
                        out[minute] = snapshot
                    }
                }
            }
        }
        return out
    }

    /// The per-minute summaries of the last `minutes` minutes, oldest first, then the minute in
    /// progress (measured up to now).
    func timeline(minutes: Int) async throws -> [ActivitySummary] {
        let now = Date().timeIntervalSince1970
        let minute = Int(now / 60)
        let wanted = Array((minute - minutes)..<minute)
        let reply = try await queue.redis.send(RedisCommand("HMGET", arguments: [keys.metricsTimeline] + wanted.map(String.init)))
        let decoder = JSONDecoder()
        var out = (reply.array ?? []).compactMap { value in value.bytes.flatMap { try? decoder.decode(ActivitySummary.self, from: Data($0)) } }
        // The span in progress, from this minute's record; in the first seconds of a minute, before
        // an upkeep round has recorded it, from the last minute's (whose summary is not written yet).
        let records = try await history(minutes: [minute, minute - 1])
        if let base = records[minute] ?? records[minute - 1] {
            let (merged, _) = try await merged()
            out.append(ActivitySummary(merged.since(base), from: base.takenAt, to: now))
        }
        return out
    }

    /// Writes this minute's record if no coordinator has yet, and the summary of the minute
    /// before; drops records older than `historyMinutes`. Cheap when the record exists (one
    /// HEXISTS), so every coordinator may call it every few seconds.
    func recordMinute(now: Double = Date().timeIntervalSince1970) async throws {
        let minute = Int(now / 60)
        if try await queue.redis.send("HEXISTS", keys.metricsHistory, String(minute)).int == 1 { return }
        let (merged, _) = try await merged()
        var record = merged
        record.takenAt = now
        let encoder = JSONEncoder()
        let written = try await queue.redis.send("HSETNX", keys.metricsHistory, String(minute), Array(try encoder.encode(record)))
        guard written.int == 1 else { return }  // another coordinator was first
        if let previous = try await history(minutes: [minute - 1])[minute - 1], previous.takenAt < now {
            let summary = ActivitySummary(record.since(previous), from: previous.takenAt, to: now)
            try await queue.redis.send("HSET", keys.metricsTimeline, String(minute - 1), Array(try encoder.encode(summary)))
        }
        let oldest = minute - Self.historyMinutes
        for key in [keys.metricsHistory, keys.metricsTimeline] {
            let stale = (try await queue.redis.send("HKEYS", key).array ?? []).compactMap(\.string).filter { (Int($0) ?? 0) < oldest }
            if !stale.isEmpty { try await queue.redis.send(RedisCommand("HDEL", arguments: [key] + stale)) }
        }
    }
}
