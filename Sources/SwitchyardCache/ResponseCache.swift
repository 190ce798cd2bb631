import Foundation
import Logging
import SwitchyardCore
import SwitchyardRedis
import Synchronization

/// How the response cache behaves. Every default is stated on its property.
public struct ResponseCacheConfiguration: Sendable {
    /// The queue whose key namespace the cache uses (`syc:<queue>:…`). Default: `default`.
    public var queue: String
    /// How long an answer is kept. Default: 5 minutes.
    public var ttl: Duration
    /// The longest a job or a model's setting may ask answers to be kept. Default: 24 hours.
    public var maxTTL: Duration
    /// Answers larger than this (stored JSON) are not kept, and counted. Default: 1 MiB.
    public var maxEntryBytes: Int
    /// How long the completion signal of a computed request lives, for waiters that arrive late.
    /// Default: 60 s.
    public var signalTTL: Duration
    /// How long a lease on a key lasts without renewal; the computing worker renews it every
    /// third of that, so a dead leader is replaced within about this long. Default: 10 s.
    public var leaseTTL: Duration
    /// The in-process near cache in front of Redis, for hot keys: how many bytes of answers it
    /// holds (least recently stored go first; 0 turns it off). Default: 8 MiB.
    public var nearCacheBytes: Int
    /// How long the near cache serves an answer without asking Redis; an answer refreshed on
    /// another worker reaches this one within this long. Default: 2 s.
    public var nearCacheTTL: Duration
    /// After a failure of the cache's Redis, how long the cache steps aside (every job runs
    /// without it) before it tries again; failures are logged once per such interval. Default: 5 s.
    public var retryAfterFailure: Duration

    public init(
        queue: String = "default",
        ttl: Duration = .seconds(300),
        maxTTL: Duration = .seconds(86400),
        maxEntryBytes: Int = 1 << 20,
        signalTTL: Duration = .seconds(60),
        leaseTTL: Duration = .seconds(10),
        nearCacheBytes: Int = 8 << 20,
        nearCacheTTL: Duration = .seconds(2),
        retryAfterFailure: Duration = .seconds(5)
    ) {
        self.queue = queue
        self.ttl = ttl
        self.maxTTL = maxTTL
        self.maxEntryBytes = maxEntryBytes
        self.signalTTL = signalTTL
        self.leaseTTL = leaseTTL
        self.nearCacheBytes = nearCacheBytes
        self.nearCacheTTL = nearCacheTTL
        self.retryAfterFailure = retryAfterFailure
    }
}

/// Counts of what the cache did, since the worker started.
public struct ResponseCacheStatistics: Sendable, Hashable, Codable {
    public var hits = 0
    public var misses = 0
    public var coalesced = 0
    public var takeovers = 0
    public var stores = 0
    public var tooLarge = 0
    public var bypassed = 0
    public var errors = 0
    public var bytesStored = 0

    enum CodingKeys: String, CodingKey {
        case hits, misses, coalesced, takeovers, stores
        case tooLarge = "too_large"
        case bypassed, errors
        case bytesStored = "bytes_stored"
    }

    public init() {}
}

/// The cluster-wide response cache, in Redis, with single flight in this process and across
/// workers.
///
/// `answer(key:use:bound:compute:)` returns a cached answer, or computes one, at most once per
/// key at a time across the cluster: the first caller takes a lease on the key (a token with an
/// expiry, in Lua) and computes; identical requests elsewhere wait for its completion signal (a
/// blocking `XREAD` on a per-key stream, no polling) and read its answer. A leader that dies or
/// outlives its lease is replaced by one waiter (its token no longer matches, so its late answer
/// is refused); a leader whose call fails signals the failure and one waiter takes over. Only
/// successful answers under `maxEntryBytes` are stored. When the cache's Redis fails, the cache
/// steps aside: jobs run without it and none fails because of it.
///
/// Do not use it for requests whose answers vary (see `CacheUse`): it would hand one caller's
/// sample to every other.
public final class ResponseCache: Sendable {
    public let configuration: ResponseCacheConfiguration
    let redis: RedisConnectionPool
    let logger: Logger
    private let state = Mutex(State())
    private let flights = Flights()
    private let near: NearCache

    struct State {
        var stats = ResponseCacheStatistics()
        /// Until when the cache steps aside after a failure of its Redis.
        var downUntil: ContinuousClock.Instant?
        /// Idle connections for blocking waits.
        var idle: [RedisConnection] = []
    }

    public init(redis: RedisConnectionPool, configuration: ResponseCacheConfiguration = ResponseCacheConfiguration(), logger: Logger) {
        self.redis = redis
        self.configuration = configuration
        self.logger = logger
        self.near = NearCache(capacity: configuration.nearCacheBytes, ttl: configuration.nearCacheTTL)
    }

    public var statistics: ResponseCacheStatistics { state.withLock { $0.stats } }

    /// Closes the connections kept for waiting.
    public func close() {
        for connection in state.withLock({ s -> [RedisConnection] in
            defer { s.idle.removeAll() }
            return s.idle
        }) {
            connection.close()
        }
    }

    /// The answer for `key`: from the cache, from an identical request in flight, or from
    /// `compute` (at most `bound` is spent waiting for others). `use` is what the job's policy
    /// allows; `ttl` how long a new answer is kept (default `ttl`, at most `maxTTL`).
    public func answer(
        key: CacheKey,
        namespace: String?,
        use: CacheUse,
        bound: Duration,
        ttl: Duration? = nil,
        compute: @escaping @Sendable () async throws -> JobOutput
    ) async throws -> JobOutput {
        let ttl = min(ttl ?? configuration.ttl, configuration.maxTTL)
        let clock = ContinuousClock()
        let began = clock.now
        func tagged(_ output: JobOutput, _ status: JobResult.CacheInfo.Status, waited: Duration = .zero) -> JobOutput {
            var output = output
            let spent = (clock.now - began) - waited
            output.cache = .init(status: status, lookupMs: spent.inMilliseconds)
            return output
        }
        switch use {
        case .none:
            count { $0.bypassed += 1 }
            let computeStart = clock.now
            let output = try await compute()
            return tagged(output, .bypass, waited: clock.now - computeStart)
        case .writeOnly:
            let computeStart = clock.now
            let output = try await compute()
            let spent = clock.now - computeStart
            if isUp { await storeFresh(key: key, namespace: namespace, output: output, ttl: ttl) }
            near.put(key.redisKey(queue: configuration.queue, namespace: namespace), output, ttl: ttl)
            return tagged(output, .miss, waited: spent)
        case .readWrite:
            if let hot = near.get(key.redisKey(queue: configuration.queue, namespace: namespace)) {
                count { $0.hits += 1 }
                return tagged(hot, .hit)
            }
            // One call per key in this process; followers share the leader's answer.
            return try await flights.run(key.redisKey(queue: configuration.queue, namespace: namespace), bound: bound) {
                try await self.cluster(key: key, namespace: namespace, bound: bound, ttl: ttl, compute: compute)
            } shared: { output in
                var shared = output
                shared.cache = .init(status: .coalesced, lookupMs: output.cache?.lookupMs ?? 0)
                self.count { $0.coalesced += 1 }
                return shared
            }
        }
    }

    // MARK: - Across the cluster

    private func cluster(
        key: CacheKey,
        namespace: String?,
        bound: Duration,
        ttl: Duration,
        compute: @escaping @Sendable () async throws -> JobOutput
    ) async throws -> JobOutput {
        let clock = ContinuousClock()
        let began = clock.now
        let keys = CacheKeys(key: key, queue: configuration.queue, namespace: namespace)
        var waited = false
        var computing = Duration.zero
        func tagged(_ output: JobOutput, _ status: JobResult.CacheInfo.Status) -> JobOutput {
            var output = output
            let spent = clock.now - began - computing
            output.cache = .init(status: status, lookupMs: spent.inMilliseconds)
            return output
        }
        func bypass() async throws -> JobOutput {
            // A stopped job computes nothing.
            try Task.checkCancellation()
            count { $0.bypassed += 1 }
            let start = clock.now
            let output = try await compute()
            computing = clock.now - start
            return tagged(output, .bypass)
        }
        while true {
            guard isUp else { return try await bypass() }
            let token = UUID().uuidString
            let lease: Lease
            do {
                lease = try await takeLease(keys, token: token, ttl: configuration.leaseTTL)
            } catch {
                try Task.checkCancellation()
                stepAside(error)
                return try await bypass()
            }
            switch lease {
            case .hit(let bytes, let remaining):
                if let output = Self.decode(bytes) {
                    near.put(keys.entry, output, ttl: remaining)
                    count { stats in
                        if waited { stats.coalesced += 1 } else { stats.hits += 1 }
                    }
                    return tagged(output, waited ? .coalesced : .hit)
                }
                // Corrupt or from another version: a miss; drop it and go round again.
                logger.warning("response cache: an entry could not be decoded; treating it as a miss")
                _ = try? await redis.send("DEL", keys.entry)
                continue
            case .acquired:
                if waited { count { $0.takeovers += 1 } }
                let start = clock.now
                let output: JobOutput
                let renewal = Task { await self.renew(keys, token: token) }
                defer { renewal.cancel() }
                do {
                    // A stopped leader gives its lease up at once, even if its call goes on (an
                    // abandoned executor): a waiter elsewhere takes over, and its late answer is refused.
                    output = try await withTaskCancellationHandler {
                        try await compute()
                    } onCancel: {
                        renewal.cancel()
                        Task.detached { await self.signal(keys, token: token, failed: true) }
                    }
                    renewal.cancel()
                } catch {
                    renewal.cancel()
                    computing = clock.now - start
                    // Detached: a cancelled task's Redis calls would fail at once.
                    await Task.detached { await self.signal(keys, token: token, failed: true) }.value
                    throw error
                }
                computing = clock.now - start
                count { $0.misses += 1 }
                await store(keys, token: token, output: output, ttl: ttl)
                return tagged(output, .miss)
            case .held(let remaining, let lastSignal):
                waited = true
                let left = bound - (clock.now - began)
                if left <= .zero { return try await bypass() }
                // Wait for the leader's signal, at most until its lease runs out (then take over).
                let wait = min(left, remaining + .milliseconds(50))
                do {
                    try await waitForSignal(keys, after: lastSignal, for: wait)
                } catch {
                    try Task.checkCancellation()
                    if error is CancellationError { throw error }
                    stepAside(error)
                    return try await bypass()
                }
            }
        }
    }

    enum Lease {
        case hit([UInt8], remaining: Duration?)
        case acquired
        case held(remaining: Duration, lastSignal: String)
    }

    private func takeLease(_ keys: CacheKeys, token: String, ttl: Duration) async throws -> Lease {
        let reply = try await redis.evaluate(CacheScripts.lease, keys: keys.all, arguments: [token, ttl.milliseconds])
        try reply.throwingServerError()
        let parts = reply.array ?? []
        switch parts.first?.int {
        case 2:
            let remaining = parts.count > 2 ? parts[2].int.flatMap { $0 > 0 ? Duration.milliseconds($0) : nil } : nil
            return .hit(parts.count > 1 ? parts[1].bytes ?? [] : [], remaining: remaining)
        case 1: return .acquired
        default:
            let remaining = parts.count > 1 ? max(0, parts[1].int ?? 0) : 0
            let last = parts.count > 2 ? parts[2].string ?? "0-0" : "0-0"
            return .held(remaining: .milliseconds(remaining), lastSignal: last)
        }
    }

    /// Keeps this caller's lease alive while it computes (every third of the lease TTL).
    private func renew(_ keys: CacheKeys, token: String) async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.leaseTTL / 3)
            if Task.isCancelled { return }
            let held = try? await redis.evaluate(CacheScripts.renew, keys: keys.all, arguments: [token, configuration.leaseTTL.milliseconds])
            if held?.int == 0 { return }
        }
    }

    /// Stores a computed answer if this caller still holds the lease, and signals waiters.
    private func store(_ keys: CacheKeys, token: String, output: JobOutput, ttl: Duration) async {
        let bytes = Self.encode(output)
        if bytes.count > configuration.maxEntryBytes {
            count { $0.tooLarge += 1 }
            await signal(keys, token: token, failed: true)
            return
        }
        near.put(keys.entry, output, bytes: bytes.count, ttl: ttl)
        do {
            let reply = try await redis.evaluate(
                CacheScripts.store,
                keys: keys.all,
                arguments: [token, bytes, ttl.milliseconds, configuration.signalTTL.milliseconds, "1"]
            )
            try reply.throwingServerError()
            if reply.int == 1 {
                count {
                    $0.stores += 1
                    $0.bytesStored += bytes.count
                }
            } else {
                logger.info("response cache: this worker's lease on a key ran out before its answer came; another worker computes it")
            }
        } catch {
            stepAside(error)
        }
    }

    /// `refresh`: store whatever lease is held (the answer is new), and signal.
    private func storeFresh(key: CacheKey, namespace: String?, output: JobOutput, ttl: Duration) async {
        let keys = CacheKeys(key: key, queue: configuration.queue, namespace: namespace)
        let bytes = Self.encode(output)
        guard bytes.count <= configuration.maxEntryBytes else {
            count { $0.tooLarge += 1 }
            return
        }
        do {
            let reply = try await redis.evaluate(
                CacheScripts.store,
                keys: keys.all,
                arguments: ["", bytes, ttl.milliseconds, configuration.signalTTL.milliseconds, "0"]
            )
            try reply.throwingServerError()
            count {
                $0.stores += 1
                $0.bytesStored += bytes.count
            }
        } catch {
            stepAside(error)
        }
    }

    /// Gives the lease up after a failure and wakes the waiters, one of which takes over.
    private func signal(_ keys: CacheKeys, token: String, failed: Bool) async {
        do {
            _ = try await redis.evaluate(CacheScripts.release, keys: keys.all, arguments: [token, configuration.signalTTL.milliseconds])
        } catch {
            stepAside(error)
        }
    }

    /// Blocks until the key's completion stream has an entry newer than `after`, or `duration` passes.
    private func waitForSignal(_ keys: CacheKeys, after: String, for duration: Duration) async throws {
        let connection =
            state.withLock { $0.idle.popLast() } ?? RedisConnection(configuration: redis.configuration, logger: logger)
        var reusable = false
        defer {
            // At most a few are kept for the next waits; the rest close.
            let kept =
                reusable
                && state.withLock { s -> Bool in
                    guard s.idle.count < 8 else { return false }
                    s.idle.append(connection)
                    return true
                }
            if !kept { connection.close() }
        }
        let blockMs = max(1, duration.milliseconds)
        let reply = try await connection.send(
            RedisCommand("XREAD", "COUNT", 1, "BLOCK", blockMs, "STREAMS", keys.signal, after),
            timeout: .after(duration + connection.configuration.commandTimeout)
        )
        try reply.throwingServerError()
        reusable = true
    }

    // MARK: - Failure of the cache

    private var isUp: Bool {
        state.withLock { s in
            guard let until = s.downUntil else { return true }
            if ContinuousClock.now >= until {
                s.downUntil = nil
                return true
            }
            return false
        }
    }

    /// The cache's Redis failed: step aside for a while (logged once per interval).
    private func stepAside(_ error: any Error) {
        // A stopped job's calls fail with this at once: not a failure of the cache's Redis.
        if error is CancellationError || Task.isCancelled { return }
        let first = state.withLock { s -> Bool in
            s.stats.errors += 1
            let first = s.downUntil == nil
            s.downUntil = ContinuousClock.now + configuration.retryAfterFailure
            return first
        }
        if first {
            logger.warning("response cache: its Redis failed (\(error)); jobs run without it for \(configuration.retryAfterFailure)")
        }
    }

    private func count(_ change: (inout ResponseCacheStatistics) -> Void) {
        state.withLock { change(&$0.stats) }
    }

    // MARK: - Entries

    /// `{"output":…,"usage":{…}}`, by the one JSON writer.
    static func encode(_ output: JobOutput) -> [UInt8] {
        var object: [String: JSONValue] = ["output": output.output]
        if let usage = output.usage {
            var u: [String: JSONValue] = [:]
            if let n = usage.promptTokens { u["prompt_tokens"] = .number(Double(n)) }
            if let n = usage.completionTokens { u["completion_tokens"] = .number(Double(n)) }
            if let n = usage.totalTokens { u["total_tokens"] = .number(Double(n)) }
            if let n = usage.images { u["images"] = .number(Double(n)) }
            object["usage"] = .object(u)
        }
        return JSONValue.object(object).jsonBytes
    }

    static func decode(_ bytes: [UInt8]) -> JobOutput? {
        guard let value = try? JSONValue.parse(bytes), let object = value.object, let output = object["output"] else { return nil }
        var usage: JobUsage?
        if let u = object["usage"]?.object {
            usage = JobUsage(
                promptTokens: u["prompt_tokens"]?.integer,
                completionTokens: u["completion_tokens"]?.integer,
                totalTokens: u["total_tokens"]?.integer,
                images: u["images"]?.integer
            )
        }
        return JobOutput(output: output, usage: usage)
    }
}

/// The keys of one request in the cache; they share the digest's hash tag (one slot).
struct CacheKeys {
    let entry: String
    let lease: String
    let signal: String

    init(key: CacheKey, queue: String, namespace: String?) {
        entry = key.redisKey(queue: queue, namespace: namespace)
        lease = entry + ":lease"
        signal = entry + ":done"
    }

    /// KEYS of every cache script: entry, lease, completion signal.
    var all: [any RedisArgument] { [entry, lease, signal] }
}

/// Identical requests in one process share one call.
final class Flights: Sendable {
    private let running = Mutex<[String: SharedAnswer]>([:])

    /// Runs `body` for `key` unless a call for it is running; then waits for that call's answer
    /// and returns it through `shared`. A follower stops waiting when its own task is cancelled;
    /// a follower whose leader was cancelled (its job stopped) tries again, maybe as the leader.
    func run(
        _ key: String,
        bound: Duration,
        _ body: @Sendable () async throws -> JobOutput,
        shared: (JobOutput) -> JobOutput
    ) async throws -> JobOutput {
        let deadline = ContinuousClock.now + bound
        while true {
            let (answer, leading) = running.withLock { r -> (SharedAnswer, Bool) in
                if let answer = r[key] { return (answer, false) }
                let answer = SharedAnswer()
                r[key] = answer
                return (answer, true)
            }
            if leading {
                let result: Result<JobOutput, any Error>
                do {
                    result = .success(try await body())
                } catch {
                    result = .failure(error)
                }
                running.withLock { _ = $0.removeValue(forKey: key) }
                answer.settle(result)
                return try result.get()
            }
            do {
                guard let output = try await answer.wait(until: deadline) else {
                    // The leader outlasted this job's bound: this one goes its own way.
                    return try await body()
                }
                return shared(output)
            } catch is CancellationError {
                try Task.checkCancellation()
            }
        }
    }
}

/// The answer of one in-process flight, for its followers.
final class SharedAnswer: Sendable {
    private struct Slot {
        var result: Result<JobOutput, any Error>?
        var waiters: [Int: CheckedContinuation<Result<JobOutput, any Error>, Never>] = [:]
        var next = 0
    }
    private let slot = Mutex(Slot())

    func settle(_ result: Result<JobOutput, any Error>) {
        let waiters = slot.withLock { s -> [CheckedContinuation<Result<JobOutput, any Error>, Never>] in
            s.result = result
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: result) }
    }

    /// The answer, or nil when `deadline` passes first; `CancellationError` as soon as the waiting
    /// task is cancelled.
    func wait(until deadline: ContinuousClock.Instant) async throws -> JobOutput? {
        let id = slot.withLock { s -> Int in
            defer { s.next += 1 }
            return s.next
        }
        let timer = Task {
            try? await Task.sleep(until: deadline)
            if !Task.isCancelled {
                slot.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: .failure(FlightTimeout()))
            }
        }
        defer { timer.cancel() }
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<JobOutput, any Error>, Never>) in
                let ready = slot.withLock { s -> Result<JobOutput, any Error>? in
                    if let result = s.result { return result }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    if ContinuousClock.now >= deadline { return .failure(FlightTimeout()) }
                    s.waiters[id] = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            slot.withLock { $0.waiters.removeValue(forKey: id) }?.resume(returning: .failure(CancellationError()))
        }
        if case .failure(let error) = result, error is FlightTimeout { return nil }
        return try result.get()
    }

    struct FlightTimeout: Error {}
}

/// Recent answers in this process, bounded by bytes, each served for a short TTL without asking
/// Redis. The least recently stored go first when it is full.
final class NearCache: Sendable {
    private struct Entry {
        let output: JobOutput
        let bytes: Int
        let expires: ContinuousClock.Instant
        let order: UInt64
    }
    private struct State {
        var entries: [String: Entry] = [:]
        var bytes = 0
        var next: UInt64 = 0
    }
    private let state = Mutex(State())
    let capacity: Int
    let ttl: Duration

    init(capacity: Int, ttl: Duration) {
        self.capacity = capacity
        self.ttl = ttl
    }

    func get(_ key: String) -> JobOutput? {
        guard capacity > 0 else { return nil }
        return state.withLock { s -> JobOutput? in
            guard let entry = s.entries[key] else { return nil }
            if entry.expires <= .now {
                s.entries[key] = nil
                s.bytes -= entry.bytes
                return nil
            }
            return entry.output
        }
    }

    /// Keeps `output` for the near TTL, or for `ttl` when that is shorter (the entry's own life in Redis).
    func put(_ key: String, _ output: JobOutput, bytes: Int? = nil, ttl entryTTL: Duration? = nil) {
        guard capacity > 0 else { return }
        let size = bytes ?? ResponseCache.encode(output).count
        guard size <= capacity / 4 else { return }
        state.withLock { s in
            if let old = s.entries.removeValue(forKey: key) { s.bytes -= old.bytes }
            s.next += 1
            s.entries[key] = Entry(output: output, bytes: size, expires: .now + min(ttl, entryTTL ?? ttl), order: s.next)
            s.bytes += size
            while s.bytes > capacity, let oldest = s.entries.min(by: { $0.value.order < $1.value.order }) {
                s.entries[oldest.key] = nil
                s.bytes -= oldest.value.bytes
            }
        }
    }
}
