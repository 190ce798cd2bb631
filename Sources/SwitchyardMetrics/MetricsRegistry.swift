import CoreMetrics
import Foundation
import Synchronization

/// A swift-metrics backend that keeps every metric of one process, cumulative since it started,
/// for its snapshot (`snapshot()`), which the worker publishes to Redis on each heartbeat.
///
/// Counters add up; timers and aggregating recorders fill a `LatencyHistogram` (timers in µs);
/// meters and non-aggregating recorders keep their last value. Pass it as the `factory` of the
/// metrics a library creates, or bootstrap `MetricsSystem` with it.
///
/// Labels must be bounded (queue, lane, status, target): never a job id or a prompt, or the
/// snapshot grows with every job.
public final class MetricsRegistry: MetricsFactory, Sendable {
    /// A metric's name and its dimensions, as one key: `label{k="v",...}`, dimensions sorted.
    public struct Key: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
        public var label: String
        public var dimensions: [String: String]

        public init(_ label: String, _ dimensions: [(String, String)] = []) {
            self.label = label
            self.dimensions = Dictionary(dimensions, uniquingKeysWith: { _, last in last })
        }

        public var description: String {
            dimensions.isEmpty
                ? label : label + "{" + dimensions.keys.sorted().map { "\($0)=\"\(dimensions[$0]!)\"" }.joined(separator: ",") + "}"
        }

        public static func < (a: Key, b: Key) -> Bool { a.description < b.description }
    }

    struct State {
        /// Bumped by every change: a snapshot equal to the last one published need not be sent again.
        var version = 0
        var counters: [Key: Double] = [:]
        var gauges: [Key: Double] = [:]
        var histograms: [Key: LatencyHistogram] = [:]
    }

    let state = Mutex(State())
    /// Tells this process's numbers from those of an earlier one with the same worker id: a
    /// restarted worker starts a new series.
    public let series: String
    public let startedAt: Double

    public init(series: String = UUID().uuidString) {
        self.series = series
        self.startedAt = Date().timeIntervalSince1970
    }

    /// Bumped by every change since the process started (0: nothing recorded yet).
    public var version: Int { state.withLock { $0.version } }

    /// Everything so far.
    public func snapshot(worker: String) -> MetricsSnapshot {
        state.withLock { s in
            MetricsSnapshot(
                worker: worker,
                series: series,
                startedAt: startedAt,
                takenAt: Date().timeIntervalSince1970,
                counters: s.counters,
                gauges: s.gauges,
                histograms: s.histograms
            )
        }
    }

    // MARK: - Handlers

    final class CounterBox: CounterHandler, FloatingPointCounterHandler, Sendable {
        let registry: MetricsRegistry
        let key: Key
        init(_ registry: MetricsRegistry, _ key: Key) {
            self.registry = registry
            self.key = key
        }
        func increment(by amount: Int64) { increment(by: Double(amount)) }
        func increment(by amount: Double) {
            guard amount.isFinite else { return }  // JSON has no room for it
            registry.state.withLock { s in
                s.counters[key, default: 0] += amount
                s.version &+= 1
            }
        }
        func reset() { registry.state.withLock { $0.counters[key] = 0 } }
    }

    final class ValueBox: RecorderHandler, MeterHandler, TimerHandler, Sendable {
        let registry: MetricsRegistry
        let key: Key
        let aggregate: Bool
        init(_ registry: MetricsRegistry, _ key: Key, aggregate: Bool) {
            self.registry = registry
            self.key = key
            self.aggregate = aggregate
        }
        func record(_ value: Int64) {
            registry.state.withLock { s in
                if aggregate { s.histograms[key, default: LatencyHistogram()].record(value) } else { s.gauges[key] = Double(value) }
                s.version &+= 1
            }
        }
        func record(_ value: Double) {
            guard value.isFinite else { return }
            guard aggregate else { return set(value) }
            record(Int64(exactly: value.rounded()) ?? (value < 0 ? 0 : .max))
        }
        func set(_ value: Int64) { set(Double(value)) }
        func set(_ value: Double) { update { $0 = value } }
        func increment(by amount: Double) { update { $0 += amount } }
        func decrement(by amount: Double) { update { $0 -= amount } }
        private func update(_ change: (inout Double) -> Void) {
            registry.state.withLock { s in
                var value = s.gauges[key] ?? 0
                change(&value)
                guard value.isFinite else { return }  // JSON has no room for it
                s.gauges[key] = value
                s.version &+= 1
            }
        }
        /// Timers keep microseconds.
        func recordNanoseconds(_ duration: Int64) {
            registry.state.withLock { s in
                s.histograms[key, default: LatencyHistogram()].record(duration / 1000)
                s.version &+= 1
            }
        }
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler { CounterBox(self, Key(label, dimensions)) }
    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        CounterBox(self, Key(label, dimensions))
    }
    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        ValueBox(self, Key(label, dimensions), aggregate: false)
    }
    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        ValueBox(self, Key(label, dimensions), aggregate: aggregate)
    }
    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        ValueBox(self, Key(label, dimensions), aggregate: true)
    }
    // Cumulative by design: a metric's numbers stay in the snapshot when its handle goes.
    public func destroyCounter(_ handler: any CounterHandler) {}
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    public func destroyMeter(_ handler: any MeterHandler) {}
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    public func destroyTimer(_ handler: any TimerHandler) {}
}

/// One process's cumulative metrics at one moment, as published to Redis.
public struct MetricsSnapshot: Sendable, Codable {
    public var worker: String
    /// A new value per process start: a restarted worker's numbers are a new series.
    public var series: String
    public var startedAt: Double
    public var takenAt: Double
    public var counters: [MetricsRegistry.Key: Double]
    public var gauges: [MetricsRegistry.Key: Double]
    public var histograms: [MetricsRegistry.Key: LatencyHistogram]

    enum CodingKeys: String, CodingKey {
        case worker, series
        case startedAt = "started_at"
        case takenAt = "taken_at"
        case counters, gauges, histograms
    }

    struct Entry<V: Codable>: Codable {
        var key: MetricsRegistry.Key
        var value: V
    }

    public init(
        worker: String,
        series: String,
        startedAt: Double,
        takenAt: Double,
        counters: [MetricsRegistry.Key: Double] = [:],
        gauges: [MetricsRegistry.Key: Double] = [:],
        histograms: [MetricsRegistry.Key: LatencyHistogram] = [:]
    ) {
        self.worker = worker
        self.series = series
        self.startedAt = startedAt
        self.takenAt = takenAt
        self.counters = counters
        self.gauges = gauges
        self.histograms = histograms
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        worker = try c.decode(String.self, forKey: .worker)
        series = try c.decode(String.self, forKey: .series)
        startedAt = try c.decode(Double.self, forKey: .startedAt)
        takenAt = try c.decode(Double.self, forKey: .takenAt)
        // Dictionaries keyed by structs go as lists of entries.
        func map<V: Codable>(_ entries: [Entry<V>]) -> [MetricsRegistry.Key: V] {
            Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
        }
        counters = map(try c.decode([Entry<Double>].self, forKey: .counters))
        gauges = map(try c.decode([Entry<Double>].self, forKey: .gauges))
        histograms = map(try c.decode([Entry<LatencyHistogram>].self, forKey: .histograms))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(worker, forKey: .worker)
        try c.encode(series, forKey: .series)
        try c.encode(startedAt, forKey: .startedAt)
        try c.encode(takenAt, forKey: .takenAt)
        try c.encode(counters.keys.sorted().map { Entry(key: $0, value: counters[$0]!) }, forKey: .counters)
        try c.encode(gauges.keys.sorted().map { Entry(key: $0, value: gauges[$0]!) }, forKey: .gauges)
        try c.encode(histograms.keys.sorted().map { Entry(key: $0, value: histograms[$0]!) }, forKey: .histograms)
    }

    /// The cluster's numbers from every series' snapshot: counters and histograms summed (a
    /// merged quantile is a true cluster quantile); gauges summed over the series that reported
    /// within `liveWithin` seconds of the newest (a stopped worker's last value is not current).
    /// A series given twice counts once, with its newest snapshot.
    public static func merge(_ snapshots: [MetricsSnapshot], liveWithin: Double = 30) -> MetricsSnapshot {
        var newest: [String: MetricsSnapshot] = [:]
        for snapshot in snapshots where (newest[snapshot.series]?.takenAt ?? -.infinity) < snapshot.takenAt {
            newest[snapshot.series] = snapshot
        }
        let latest = newest.values.map(\.takenAt).max() ?? 0
        var merged = MetricsSnapshot(worker: "*", series: "*", startedAt: newest.values.map(\.startedAt).min() ?? 0, takenAt: latest)
        for snapshot in newest.values {
            merged.counters.merge(snapshot.counters, uniquingKeysWith: +)
            if snapshot.takenAt >= latest - liveWithin { merged.gauges.merge(snapshot.gauges, uniquingKeysWith: +) }
            for (key, histogram) in snapshot.histograms { merged.histograms[key, default: LatencyHistogram()].merge(histogram) }
        }
        return merged
    }
}
