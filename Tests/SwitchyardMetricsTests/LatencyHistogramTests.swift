import CoreMetrics
import Foundation
import SwitchyardMetrics
import Testing

@Suite("Histograms that merge exactly")
struct LatencyHistogramTests {
    @Test func everyValueFallsInABucketNoWiderThanTheStatedError() {
        var previousUpper: Int64 = 0
        for index in 0..<3_000 {
            let (lower, upper) = LatencyHistogram.bounds(of: index)
            #expect(lower == previousUpper, "buckets are contiguous at \(index)")
            #expect(upper > lower)
            // A quantile is its bucket's midpoint: no further than this from any value in it.
            if lower > 0 { #expect(Double(upper - 1 - lower) / 2 / Double(lower) <= LatencyHistogram.relativeError) }
            #expect(LatencyHistogram.index(of: lower) == index && LatencyHistogram.index(of: upper - 1) == index)
            previousUpper = upper
        }
        for value: Int64 in [0, 1, 127, 128, 129, 1_000, 65_535, 1_000_000, 123_456_789, Int64(Int32.max)] {
            let (lower, upper) = LatencyHistogram.bounds(of: LatencyHistogram.index(of: value))
            #expect(lower <= value && value < upper, "\(value) in [\(lower), \(upper))")
        }
    }

    /// Four workers with different latency distributions: the merge is the histogram of all
    /// samples, and its p50/p99 are within the stated error of the exact ones.
    @Test func mergedQuantilesAreTrueClusterQuantiles() {
        var rng = SystemRandomNumberGenerator()
        let distributions: [(inout SystemRandomNumberGenerator) -> Int64] = [
            { Int64.random(in: 1_000...5_000, using: &$0) },  // uniform 1–5 ms
            { Int64(-log(Double.random(in: 0.0001..<1, using: &$0)) * 20_000) },  // exponential, mean 20 ms
            { Bool.random(using: &$0) ? Int64.random(in: 800...1_200, using: &$0) : Int64.random(in: 90_000...110_000, using: &$0) },  // bimodal
            { Int64(exp(Double.random(in: 8...13, using: &$0))) },  // log-uniform 3 ms–440 ms
        ]
        var all: [Int64] = []
        var perWorker: [LatencyHistogram] = []
        var everything = LatencyHistogram()
        for (i, draw) in distributions.enumerated() {
            var h = LatencyHistogram()
            for _ in 0..<(5_000 * (i + 1)) {
                let v = draw(&rng)
                h.record(v)
                everything.record(v)
                all.append(v)
            }
            perWorker.append(h)
        }
        let merged = perWorker.reduce(into: LatencyHistogram()) { $0.merge($1) }
        #expect(merged == everything)
        all.sort()
        for q in [0.5, 0.9, 0.99, 0.999] {
            let exact = Double(all[Int((q * Double(all.count)).rounded(.up)) - 1])
            let estimate = merged.quantile(q)!
            #expect(abs(estimate - exact) / exact <= LatencyHistogram.relativeError + 1e-9, "q \(q): \(estimate) vs exact \(exact)")
        }
        // What per-worker averaging would give is not the cluster's p99.
        let averaged = perWorker.map { $0.quantile(0.99)! }.reduce(0, +) / 4
        let exact99 = Double(all[Int((0.99 * Double(all.count)).rounded(.up)) - 1])
        #expect(abs(averaged - exact99) / exact99 > LatencyHistogram.relativeError)
    }

    @Test func aRegistryKeepsWhatSwiftMetricsRecordsAndItsSnapshotRoundTrips() throws {
        let registry = MetricsRegistry()
        let counter = Counter(label: "jobs_total", dimensions: [("status", "ok")], factory: registry)
        counter.increment(by: 3)
        Counter(label: "jobs_total", dimensions: [("status", "ok")], factory: registry).increment()
        Counter(label: "jobs_total", dimensions: [("status", "failed")], factory: registry).increment()
        let timer = CoreMetrics.Timer(label: "run_seconds", factory: registry)
        timer.recordMilliseconds(12)
        timer.recordMilliseconds(30)
        Meter(label: "in_flight", factory: registry).set(2)
        let snapshot = registry.snapshot(worker: "w1")
        #expect(snapshot.counters[.init("jobs_total", [("status", "ok")])] == 4)
        #expect(snapshot.counters[.init("jobs_total", [("status", "failed")])] == 1)
        #expect(snapshot.histograms[.init("run_seconds")]?.count == 2)
        #expect(snapshot.gauges[.init("in_flight")] == 2)
        let decoded = try JSONDecoder().decode(MetricsSnapshot.self, from: JSONEncoder().encode(snapshot))
        #expect(decoded.counters == snapshot.counters && decoded.histograms == snapshot.histograms && decoded.series == registry.series)
        var another = decoded
        another.series = "another process"
        let merged = MetricsSnapshot.merge([snapshot, another])
        #expect(merged.counters[.init("jobs_total", [("status", "ok")])] == 8)
        #expect(merged.histograms[.init("run_seconds")]?.count == 4)
    }

    /// A snapshot read from Redis may be corrupt or hostile: decoding refuses it, nothing traps.
    @Test func badHistogramsAreRefusedAndExtremeValuesDoNotTrap() throws {
        func decode(_ text: String) -> LatencyHistogram? { try? JSONDecoder().decode(LatencyHistogram.self, from: Data(text.utf8)) }
        #expect(decode(#"{"p": 7, "b": [5, 2], "n": 2, "s": 10, "min": 5, "max": 5}"#)?.count == 2)
        #expect(decode(#"{"p": 6, "b": [5, 2], "n": 2, "s": 10, "min": 5, "max": 5}"#) == nil, "another layout")
        #expect(decode(#"{"p": 7, "b": [18446744073709551615, 1], "n": 1, "s": 1, "min": 1, "max": 1}"#) == nil, "an index out of the layout")
        #expect(decode(#"{"p": 7, "b": [5, 1, 5, 1], "n": 2, "s": 1, "min": 1, "max": 1}"#) == nil, "an index twice")
        #expect(decode(#"{"p": 7, "b": [5, 1], "n": 18446744073709551615, "s": 1, "min": 1, "max": 1}"#) == nil, "a count that is not the sum")
        var extreme = LatencyHistogram()
        extreme.record(.max)
        extreme.record(.min)
        #expect(extreme.quantile(1)! <= Double(LatencyHistogram.largest) && extreme.quantile(0) == 0)
        #expect(extreme.cumulative.allSatisfy { $0.upperBound >= 0 })
        var full = try #require(decode(#"{"p": 7, "b": [5, 18446744073709551615], "n": 18446744073709551615, "s": 1, "min": 5, "max": 5}"#))
        full.merge(full)
        #expect(full.count == .max && full.quantile(0.5) == 5)
    }

    @Test func aSeriesCountsOnceAndOnlyCurrentGaugesAreSummed() {
        let key = MetricsRegistry.Key("in_flight")
        let counter = MetricsRegistry.Key("jobs_total")
        let old = MetricsSnapshot(worker: "a", series: "s1", startedAt: 0, takenAt: 100, counters: [counter: 5], gauges: [key: 3])
        let newer = MetricsSnapshot(worker: "a", series: "s1", startedAt: 0, takenAt: 200, counters: [counter: 7], gauges: [key: 1])
        let stopped = MetricsSnapshot(worker: "b", series: "s2", startedAt: 0, takenAt: 50, counters: [counter: 10], gauges: [key: 8])
        let merged = MetricsSnapshot.merge([old, newer, stopped])
        #expect(merged.counters[counter] == 17)
        #expect(merged.gauges[key] == 1)
    }
}
