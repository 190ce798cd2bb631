extension LatencyHistogram {
    /// The samples recorded since `earlier`, an older cumulative histogram of the same series (or
    /// merge): bucket counts subtracted, never below 0 (a series that left the merge between the
    /// two can make a bucket shrink; its samples simply drop out of the window). The smallest and
    /// largest samples are read off the remaining buckets, so they are known within the layout's
    /// error only.
    public func since(_ earlier: LatencyHistogram) -> LatencyHistogram {
        var window = LatencyHistogram()
        for (index, n) in buckets {
            let before = earlier.buckets[index] ?? 0
            if n > before { window.buckets[index] = n - before }
        }
        window.count = window.buckets.values.reduce(0, Self.saturatingAdd)
        window.sum = Swift.max(0, sum - earlier.sum)
        if let low = window.buckets.keys.min(), let high = window.buckets.keys.max() {
            window.min = Self.bounds(of: low).lower
            window.max = Self.bounds(of: high).upper - 1
        }
        return window
    }

    /// Cumulative counts at fixed upper bounds (inclusive), in order: what a Prometheus histogram
    /// exposes as `le` buckets. Every bound must be a bucket boundary minus one (as
    /// `prometheusBounds` are), so each count is exact.
    public func cumulative(at bounds: [Int64]) -> [UInt64] {
        let sorted = buckets.keys.sorted()
        var out: [UInt64] = []
        out.reserveCapacity(bounds.count)
        var seen: UInt64 = 0
        var next = 0
        for bound in bounds {
            while next < sorted.count, Self.bounds(of: sorted[next]).upper - 1 <= bound {
                seen = Self.saturatingAdd(seen, buckets[sorted[next]]!)
                next += 1
            }
            out.append(seen)
        }
        return out
    }

    /// The upper bounds (µs, inclusive) exported to Prometheus: four per power of two, from 15 µs
    /// to 7 × 2^34 − 1 µs (about 33 hours), each the last value of a bucket of the layout, so exported
    /// counts are exact and `histogram_quantile` over summed buckets is a true cluster quantile
    /// within one of these buckets (at most 25 % wide). The same for every histogram and every
    /// process, as Prometheus needs to sum buckets across series.
    public static let prometheusBounds: [Int64] = {
        var out: [Int64] = []
        for power in 4..<37 {
            for quarter in 0..<4 {
                // 2^power × (4 + quarter) / 4 is a bucket's lower bound; minus one is the upper
                // (inclusive) bound of the bucket below it.
                out.append((Int64(4 + quarter) << (power - 2)) - 1)
            }
        }
        return out
    }()
}

extension MetricsSnapshot {
    /// What happened between `earlier` (an older merge) and this merge: counters and histograms
    /// subtracted (never below 0), gauges as they are now.
    public func since(_ earlier: MetricsSnapshot) -> MetricsSnapshot {
        var window = MetricsSnapshot(worker: worker, series: series, startedAt: earlier.takenAt, takenAt: takenAt)
        for (key, value) in counters { window.counters[key] = Swift.max(0, value - (earlier.counters[key] ?? 0)) }
        window.gauges = gauges
        for (key, histogram) in histograms {
            window.histograms[key] = earlier.histograms[key].map { histogram.since($0) } ?? histogram
        }
        return window
    }
}
