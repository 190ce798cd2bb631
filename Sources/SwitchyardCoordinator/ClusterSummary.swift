import Foundation
import SwitchyardMetrics
import SwitchyardQueue

/// Quantiles of one latency histogram, in seconds (within `LatencyHistogram.relativeError`).
public struct LatencyQuantiles: Sendable, Codable, Hashable {
    public var count: UInt64
    public var p50: Double
    public var p95: Double
    public var p99: Double
    public var max: Double

    init?(_ histogram: LatencyHistogram) {
        guard histogram.count > 0, let p50 = histogram.quantile(0.5), let p95 = histogram.quantile(0.95),
            let p99 = histogram.quantile(0.99)
        else { return nil }
        count = histogram.count
        // Histograms hold µs.
        self.p50 = p50 / 1e6
        self.p95 = p95 / 1e6
        self.p99 = p99 / 1e6
        max = Double(histogram.max) / 1e6
    }
}

/// What the cluster did over a span of time, from the difference of two merged snapshots (or
/// one, since the workers started).
public struct ActivitySummary: Sendable, Codable, Hashable {
    /// Unix time the span starts and ends.
    public var from: Double
    public var to: Double
    /// Attempts by how they ended (`succeeded`, `failed`, `dead`, `cancelled`, `retried`, `handed_back`).
    public var attempts: [String: Int]
    /// Succeeded attempts per second over the span.
    public var throughput: Double
    /// Push (or due time) to start, and one attempt's run, over the span.
    public var queueWait: LatencyQuantiles?
    public var run: LatencyQuantiles?
    /// Prompt and completion tokens of succeeded jobs.
    public var tokensIn: Int
    public var tokensOut: Int
    /// Succeeded jobs by how the response cache served them (`hit`, `miss`, `coalesced`, `bypass`).
    public var cache: [String: Int]

    enum CodingKeys: String, CodingKey {
        case from, to, attempts, throughput
        case queueWait = "queue_wait"
        case run
        case tokensIn = "tokens_in"
        case tokensOut = "tokens_out"
        case cache
    }

    /// A counter's value as a count: snapshots come from Redis, so a value no worker could have
    /// written (negative, not finite, beyond 2^50) is clamped, never trapped on.
    static func count(_ value: Double) -> Int {
        guard value.isFinite, value > 0 else { return 0 }
        return Int(min(value, 0x1p50))
    }

    /// Sums `snapshot` (a merge, or a window of one) over every label but the one that matters.
    init(_ snapshot: MetricsSnapshot, from: Double, to: Double) {
        // A merge of nothing starts at 0: an empty span, not one since 1970.
        self.from = from > 0 ? from : to
        self.to = to
        attempts = [:]
        cache = [:]
        tokensIn = 0
        tokensOut = 0
        var wait = LatencyHistogram()
        var run = LatencyHistogram()
        for (key, value) in snapshot.counters {
            switch key.label {
            case "switchyard_attempts_total": attempts[key.dimensions["status"] ?? "?", default: 0] &+= Self.count(value)
            case "switchyard_cache_answers_total": cache[key.dimensions["status"] ?? "?", default: 0] &+= Self.count(value)
            case "switchyard_tokens_total":
                if key.dimensions["direction"] == "in" { tokensIn &+= Self.count(value) } else { tokensOut &+= Self.count(value) }
            default: break
            }
        }
        for (key, histogram) in snapshot.histograms {
            if key.label == "switchyard_queue_wait_seconds" { wait.merge(histogram) }
            if key.label == "switchyard_run_seconds" { run.merge(histogram) }
        }
        queueWait = LatencyQuantiles(wait)
        self.run = LatencyQuantiles(run)
        throughput = to > from ? Double(attempts["succeeded"] ?? 0) / (to - from) : 0
    }
}

/// The cluster at a glance: `GET /api/v1/cluster`.
public struct ClusterSummary: Sendable, Codable {
    public struct Workers: Sendable, Codable {
        public var alive: Int
        public var inFlight: Int
        public var capacity: Int
        public var rssBytes: Int

        enum CodingKeys: String, CodingKey {
            case alive
            case inFlight = "in_flight"
            case capacity
            case rssBytes = "rss_bytes"
        }
    }

    public var queue: String
    /// Unix time the numbers were read.
    public var now: Double
    public var lanes: [QueueStatus.Lane]
    public var delayed: Int
    public var dead: Int
    /// The queue's cumulative counters kept in Redis (pushed, succeeded, failed, dead, ...).
    public var counters: [String: Int]
    public var workers: Workers
    /// The last 1, 5, 15 and 60 minutes (`1m`, `5m`, `15m`, `60m`); a window reaches back only as
    /// far as the coordinators' history does (its `from` says where it starts).
    public var windows: [String: ActivitySummary]
    /// Everything the live and recently stopped workers' series hold (24 h at most).
    public var total: ActivitySummary
    /// The workers' resilience counters, summed.
    public var resilience: [String: Int]
    /// How many metrics series were merged.
    public var series: Int
}
