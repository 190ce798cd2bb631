/// A histogram whose buckets are the same in every process, so histograms from many workers
/// merge exactly (bucket counts add up) and a quantile of the merge is a true cluster quantile,
/// not an average of per-worker ones.
///
/// Log-linear buckets over non-negative integers (microseconds for latencies): values below
/// 2^`precisionBits` have a bucket each; above, every power of two is split into
/// 2^(`precisionBits` − 1) equal buckets. A bucket is at most 1/2^(`precisionBits` − 1) of its
/// lower bound wide: with the fixed 7 bits, a quantile read as a bucket's midpoint is within
/// 1/128 (0.8 %) of a sample in that bucket (`relativeError`). Storage is sparse: only buckets
/// that hold samples.
public struct LatencyHistogram: Sendable, Hashable, Codable {
    /// Fixed for every process: changing it would make histograms of different versions unmergeable.
    public static let precisionBits = 7
    /// The most a quantile differs from a sample in its bucket, relative to the sample.
    public static let relativeError = 1.0 / Double(1 << precisionBits)
    /// Values are clamped to 0...`largest` (2^62: 146 years in µs), so every bucket's bounds fit
    /// in an Int64.
    public static let largest: Int64 = 1 << 62
    /// The highest bucket index a histogram can hold; a decoded one above it is refused.
    public static let largestIndex = index(of: largest)

    /// Sample count per bucket index.
    public internal(set) var buckets: [Int: UInt64] = [:]
    public internal(set) var count: UInt64 = 0
    public internal(set) var sum: Double = 0
    public internal(set) var min: Int64 = .max
    public internal(set) var max: Int64 = 0

    public init() {}

    public mutating func record(_ value: Int64) {
        let v = Swift.min(Swift.max(value, 0), Self.largest)
        buckets[Self.index(of: v)] = Self.saturatingAdd(buckets[Self.index(of: v)] ?? 0, 1)
        count = Self.saturatingAdd(count, 1)
        sum += Double(v)
        min = Swift.min(min, v)
        max = Swift.max(max, v)
    }

    /// Adds another histogram's samples (exact: the layouts are the same).
    public mutating func merge(_ other: LatencyHistogram) {
        // Counts saturate rather than overflow.
        for (index, n) in other.buckets { buckets[index] = Self.saturatingAdd(buckets[index] ?? 0, n) }
        count = Self.saturatingAdd(count, other.count)
        sum += other.sum
        min = Swift.min(min, other.min)
        max = Swift.max(max, other.max)
    }

    /// The value at quantile `q` (0...1): the midpoint of the bucket holding it, clamped to the
    /// smallest and largest samples; nil when empty.
    public func quantile(_ q: Double) -> Double? {
        guard count > 0 else { return nil }
        // The epsilon keeps 0.07 × 100 (7.000000000000001) at rank 7.
        let rank = Swift.max(1, UInt64((Swift.min(Swift.max(q, 0), 1) * Double(count) - 1e-9).rounded(.up)))
        var seen: UInt64 = 0
        for index in buckets.keys.sorted() {
            seen = Self.saturatingAdd(seen, buckets[index]!)
            if seen >= rank {
                let (lower, upper) = Self.bounds(of: index)
                let mid = (Double(lower) + Double(upper) - 1) / 2
                return Swift.min(Swift.max(mid, Double(min)), Double(max))
            }
        }
        return Double(max)
    }

    /// The bucket a value falls in.
    public static func index(of value: Int64) -> Int {
        let v = UInt64(Swift.max(value, 0))
        let p = precisionBits
        let msb = 63 - v.leadingZeroBitCount
        if v == 0 || msb < p { return Int(v) }
        let shift = msb - p + 1
        return (shift << (p - 1)) + Int(v >> UInt64(shift))
    }

    /// A bucket's values: lower bound inclusive, upper exclusive.
    public static func bounds(of index: Int) -> (lower: Int64, upper: Int64) {
        let p = precisionBits
        if index < 1 << p { return (Int64(index), Int64(index) + 1) }
        let shift = (index >> (p - 1)) - 1
        let mantissa = Int64(index - (shift << (p - 1)))
        return (mantissa << shift, (mantissa + 1) << shift)
    }

    /// Cumulative counts at each bucket's upper bound, in order: Prometheus's `le` buckets.
    public var cumulative: [(upperBound: Int64, count: UInt64)] {
        var seen: UInt64 = 0
        return buckets.keys.sorted().map { index in
            seen = Self.saturatingAdd(seen, buckets[index]!)
            // The bucket's largest value: `le` is inclusive.
            return (Self.bounds(of: index).upper - 1, seen)
        }
    }

    static func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? .max : sum
    }

    enum CodingKeys: String, CodingKey {
        case layout = "p"
        case buckets = "b"
        case count = "n"
        case sum = "s"
        case min, max
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                layout: try c.decode(Int.self, forKey: .layout),
                flatBuckets: try c.decode([UInt64].self, forKey: .buckets),
                count: try c.decode(UInt64.self, forKey: .count),
                sum: try c.decode(Double.self, forKey: .sum),
                min: try c.decode(Int64.self, forKey: .min),
                max: try c.decode(Int64.self, forKey: .max)
            )
        } catch let error as LatencyHistogram.DecodingProblem {
            throw DecodingError.dataCorruptedError(forKey: .buckets, in: c, debugDescription: error.description)
        }
    }

    /// A histogram whose buckets arrive as [index, count, index, count, ...] (compact, and JSON
    /// objects need string keys), checked: a snapshot read from Redis may be corrupt, and nothing
    /// in it may trap or be merged into another layout.
    public init(layout: Int, flatBuckets flat: [UInt64], count: UInt64, sum: Double, min: Int64, max: Int64) throws(DecodingProblem) {
        guard layout == Self.precisionBits else { throw DecodingProblem(description: "another bucket layout") }
        guard flat.count % 2 == 0 else { throw DecodingProblem(description: "expected index, count pairs") }
        var total: UInt64 = 0
        buckets.reserveCapacity(flat.count / 2)
        for i in stride(from: 0, to: flat.count, by: 2) {
            guard flat[i] <= UInt64(Self.largestIndex), buckets[Int(flat[i])] == nil else {
                throw DecodingProblem(description: "a bucket index out of the layout, or twice")
            }
            buckets[Int(flat[i])] = flat[i + 1]
            total = Self.saturatingAdd(total, flat[i + 1])
        }
        guard count == total else { throw DecodingProblem(description: "the count is not the buckets' sum") }
        guard sum.isFinite else { throw DecodingProblem(description: "the sum is not finite") }
        self.count = count
        self.sum = sum
        self.min = min
        self.max = max
    }

    /// Why a histogram read from elsewhere was refused.
    public struct DecodingProblem: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.precisionBits, forKey: .layout)
        try c.encode(buckets.keys.sorted().flatMap { [UInt64($0), buckets[$0]!] }, forKey: .buckets)
        try c.encode(count, forKey: .count)
        try c.encode(sum, forKey: .sum)
        try c.encode(min, forKey: .min)
        try c.encode(max, forKey: .max)
    }
}
