import SwitchyardCore
import SwitchyardMetrics

/// Reads a worker's metrics snapshot (the JSON `MetricsSnapshot` encodes) with the project's byte
/// parser, `JSONValue.parse`: the coordinator reads every worker's snapshot on each scrape, and
/// Foundation's `JSONDecoder` took about 20 times as long on them (`switchyard-bench
/// coordinator`). The same checks as the `Codable` path: a corrupt snapshot is refused, never
/// trapped on.
enum SnapshotDecoding {
    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    static func snapshot(_ bytes: [UInt8]) throws -> MetricsSnapshot {
        guard let o = try JSONValue.parse(bytes).object else { throw Problem(description: "not an object") }
        func string(_ key: String) throws -> String {
            guard let s = o[key]?.string else { throw Problem(description: "'\(key)' missing") }
            return s
        }
        func number(_ value: JSONValue?, _ what: String) throws -> Double {
            guard let n = value?.number, n.isFinite else { throw Problem(description: "'\(what)' is not a number") }
            return n
        }
        var snapshot = MetricsSnapshot(
            worker: try string("worker"),
            series: try string("series"),
            startedAt: try number(o["started_at"], "started_at"),
            takenAt: try number(o["taken_at"], "taken_at")
        )
        func entries(_ name: String) throws -> [(MetricsRegistry.Key, JSONValue)] {
            guard let list = o[name]?.array else { throw Problem(description: "'\(name)' missing") }
            return try list.map { entry in
                guard let e = entry.object, let k = e["key"]?.object, let label = k["label"]?.string, let value = e["value"],
                    let dimensions = k["dimensions"]?.object
                else { throw Problem(description: "an entry of '\(name)' is not {key, value}") }
                var pairs: [(String, String)] = []
                for (name, v) in dimensions {
                    guard let s = v.string else { throw Problem(description: "a dimension is not a string") }
                    pairs.append((name, s))
                }
                return (MetricsRegistry.Key(label, pairs), value)
            }
        }
        for (key, value) in try entries("counters") { snapshot.counters[key] = try number(value, "a counter") }
        for (key, value) in try entries("gauges") { snapshot.gauges[key] = try number(value, "a gauge") }
        for (key, value) in try entries("histograms") {
            guard let h = value.object, let flat = h["b"]?.array else { throw Problem(description: "a histogram is not an object with 'b'") }
            var buckets: [UInt64] = []
            buckets.reserveCapacity(flat.count)
            for n in flat { buckets.append(try unsigned(n)) }
            snapshot.histograms[key] = try LatencyHistogram(
                layout: Int(try unsigned(h["p"] ?? .null)),
                flatBuckets: buckets,
                count: try unsigned(h["n"] ?? .null),
                sum: try number(h["s"], "a histogram's sum"),
                min: try signed(h["min"] ?? .null),
                max: try signed(h["max"] ?? .null)
            )
        }
        return snapshot
    }

    /// A whole number from 0 to 2^64 − 1, else refused.
    static func unsigned(_ value: JSONValue) throws -> UInt64 {
        guard let n = value.number, n.isFinite, n >= 0, n == n.rounded(), n < 0x1p64 else {
            throw Problem(description: "expected a whole number of 0 or more")
        }
        return UInt64(n)
    }

    /// A whole number, clamped to Int64 (an empty histogram's minimum is Int64.max, which a
    /// Double rounds up past it).
    static func signed(_ value: JSONValue) throws -> Int64 {
        guard let n = value.number, n.isFinite, n == n.rounded() else { throw Problem(description: "expected a whole number") }
        if n >= 0x1p63 { return .max }
        if n < -0x1p63 { return .min }
        return Int64(n)
    }
}
