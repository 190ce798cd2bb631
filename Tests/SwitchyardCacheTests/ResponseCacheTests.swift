import Foundation
import Logging
import SwitchyardCore
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization
import Testing

@testable import SwitchyardCache

/// Counts calls of a stand-in computation and lets a test hold them.
final class Upstream: Sendable {
    private let calls = Mutex(0)
    let delay: Duration
    init(delay: Duration = .milliseconds(200)) { self.delay = delay }
    var count: Int { calls.withLock { $0 } }

    func answer(_ text: String = "the answer") async throws -> JobOutput {
        calls.withLock { $0 += 1 }
        try await Task.sleep(for: delay)
        return JobOutput(output: .object(["content": .string(text)]), usage: JobUsage(promptTokens: 3, completionTokens: 2, totalTokens: 5))
    }
}

@Suite("Response cache against a real redis-server", .serialized)
struct ResponseCacheTests {
    static let job = Job(
        kind: .chat,
        model: "m",
        input: JobInput(messages: [ChatMessage(role: "user", content: "same question")], parameters: ["temperature": .number(0)])
    )
    static let key = CacheKey(job: job, target: .provider("p", model: "m"))

    static func cache(_ server: RedisServer, leaseTTL: Duration = .seconds(10), maxEntryBytes: Int = 1 << 20) -> ResponseCache {
        var configuration = ResponseCacheConfiguration(queue: "test")
        configuration.leaseTTL = leaseTTL
        configuration.maxEntryBytes = maxEntryBytes
        return ResponseCache(
            redis: RedisConnectionPool(configuration: server.configuration),
            configuration: configuration,
            logger: Logger(label: "test")
        )
    }

    /// Many identical requests at once, spread over four "workers" (caches with their own
    /// connections, as separate processes would have): one computation, one answer for all.
    @Test func identicalRequestsAcrossWorkersAreComputedOnce() async throws {
        let server = try RedisServer()
        let caches = (0..<4).map { _ in Self.cache(server) }
        let upstream = Upstream()
        let outputs = try await withThrowingTaskGroup(of: JobOutput.self) { group in
            for i in 0..<40 {
                let cache = caches[i % 4]
                group.addTask {
                    try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(30)) { try await upstream.answer() }
                }
            }
            return try await group.reduce(into: [JobOutput]()) { $0.append($1) }
        }
        #expect(upstream.count == 1)
        #expect(Set(outputs.map(\.output)).count == 1)
        let statuses = outputs.compactMap(\.cache?.status)
        #expect(statuses.filter { $0 == .miss }.count == 1)
        #expect(statuses.filter { $0 == .coalesced }.count == 39)
        // A later request is a plain hit, with usage kept.
        let later = try await caches[2].answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(later.cache?.status == .hit && later.usage?.totalTokens == 5 && upstream.count == 1)
        for cache in caches { cache.close() }
    }

    @Test func aFailedCallIsNotStoredAndOneWaiterTakesOver() async throws {
        let server = try RedisServer()
        let a = Self.cache(server)
        let b = Self.cache(server)
        let calls = Mutex(0)
        // The first call fails (a 429, say) after a while; b waits for it meanwhile.
        let first = Task {
            try await a.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(10)) {
                calls.withLock { $0 += 1 }
                try await Task.sleep(for: .milliseconds(300))
                throw JobFailure(code: "provider_rate_limited", message: "429")
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        let second = try await b.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(10)) {
            calls.withLock { $0 += 1 }
            return JobOutput(output: .string("fresh"))
        }
        await #expect(throws: JobFailure.self) { try await first.value }
        #expect(second.output == .string("fresh") && second.cache?.status == .miss)
        #expect(calls.withLock { $0 } == 2)
        #expect(b.statistics.takeovers == 1)
        a.close()
        b.close()
    }

    @Test func aLeaderThatStopsRenewingIsReplacedAndItsLateAnswerRefused() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        let keys = Self.key.redisKey(queue: "test", namespace: nil)
        // A leader that died: its lease exists, nobody renews it (long enough to outlast a slow
        // start of the call below on a loaded machine).
        try await pool.send("SET", keys + ":lease", "dead-leader", "PX", 2500)
        let cache = Self.cache(server, leaseTTL: .seconds(2))
        let upstream = Upstream(delay: .milliseconds(10))
        let output = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(10)) {
            try await upstream.answer("taken over")
        }
        #expect(output.output["content"] == .string("taken over") && upstream.count == 1)
        #expect(cache.statistics.takeovers == 1)
        // The dead leader's answer, arriving late, is refused: its token no longer holds.
        try await pool.send("SET", keys + ":lease", "someone-else", "PX", 5000)
        let late = try await pool.evaluate(
            CacheScripts.store,
            keys: [keys, keys + ":lease", keys + ":done"],
            arguments: ["dead-leader", Array(#"{"output":"stale"}"#.utf8), 60_000, 60_000, "1"]
        )
        #expect(late.int == 0)
        let kept = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(kept.output["content"] == .string("taken over"))
        cache.close()
        pool.shutDown()
    }

    @Test func aCorruptEntryIsAMissAndIsOverwritten() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        try await pool.send("SET", Self.key.redisKey(queue: "test", namespace: nil), [0xff, 0x00, 0x7b] as [UInt8])
        let cache = Self.cache(server)
        let upstream = Upstream(delay: .zero)
        let output = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(output.cache?.status == .miss && upstream.count == 1)
        let again = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(again.cache?.status == .hit && upstream.count == 1)
        cache.close()
        pool.shutDown()
    }

    @Test func policiesAndLimits() async throws {
        let server = try RedisServer()
        let cache = Self.cache(server, maxEntryBytes: 1000)
        let upstream = Upstream(delay: .zero)
        // bypass: computed, nothing stored.
        let bypass = try await cache.answer(key: Self.key, namespace: nil, use: .none, bound: .seconds(5)) { try await upstream.answer() }
        #expect(bypass.cache?.status == .bypass)
        // Too large: computed, not stored, counted.
        let big = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) {
            JobOutput(output: .string(String(repeating: "x", count: 5000)))
        }
        #expect(big.cache?.status == .miss && cache.statistics.tooLarge == 1)
        let afterBig = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer("v1") }
        #expect(afterBig.cache?.status == .miss)
        // refresh: skips the read, replaces the entry.
        let refreshed = try await cache.answer(key: Self.key, namespace: nil, use: .writeOnly, bound: .seconds(5)) { try await upstream.answer("v2") }
        #expect(refreshed.output["content"] == .string("v2"))
        let read = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer("v3") }
        #expect(read.cache?.status == .hit && read.output["content"] == .string("v2"))
        // Namespaces are separate key spaces.
        let other = try await cache.answer(key: Self.key, namespace: "tenant", use: .readWrite, bound: .seconds(5)) {
            try await upstream.answer("v4")
        }
        #expect(other.cache?.status == .miss && other.output["content"] == .string("v4"))
        cache.close()
    }

    @Test func aJobsTTLIsKeptWithinTheMaximum() async throws {
        let server = try RedisServer()
        let pool = RedisConnectionPool(configuration: server.configuration)
        var configuration = ResponseCacheConfiguration(queue: "test")
        configuration.maxTTL = .seconds(3600)
        let cache = ResponseCache(redis: pool, configuration: configuration, logger: Logger(label: "test"))
        let upstream = Upstream(delay: .zero)
        _ = try await cache.answer(key: Self.key, namespace: "a", use: .readWrite, bound: .seconds(5), ttl: .seconds(100)) {
            try await upstream.answer()
        }
        _ = try await cache.answer(key: Self.key, namespace: "b", use: .readWrite, bound: .seconds(5), ttl: .seconds(90_000)) {
            try await upstream.answer()
        }
        _ = try await cache.answer(key: Self.key, namespace: "c", use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        func ttl(_ namespace: String) async throws -> Int {
            try await pool.send("PTTL", Self.key.redisKey(queue: "test", namespace: namespace)).int ?? -2
        }
        #expect((90_000...100_000).contains(try await ttl("a")))
        #expect((3_500_000...3_600_000).contains(try await ttl("b")))
        #expect((290_000...300_000).contains(try await ttl("c")))
        cache.close()
        pool.shutDown()
    }

    @Test func theNearCacheServesHotKeysWithoutRedisForItsTTL() async throws {
        let server = try RedisServer()
        var configuration = ResponseCacheConfiguration(queue: "test")
        configuration.nearCacheTTL = .milliseconds(500)
        var redis = server.configuration
        redis.reconnectWait = .zero
        redis.connectTimeout = .milliseconds(200)
        let cache = ResponseCache(redis: RedisConnectionPool(configuration: redis), configuration: configuration, logger: Logger(label: "test"))
        let upstream = Upstream(delay: .zero)
        _ = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        server.kill()
        let hot = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(hot.cache?.status == .hit && upstream.count == 1)
        try await Task.sleep(for: .milliseconds(600))
        // Past its near TTL, with Redis gone: computed, the cache stepping aside.
        let cold = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
        #expect(cold.cache?.status == .bypass && upstream.count == 2)
        cache.close()
    }

    /// A leader whose job is stopped gives its lease up at once: a waiter on another worker takes
    /// over without waiting out the lease, and the stopped worker's cache stays on.
    @Test func aStoppedLeaderReleasesItsLeaseAtOnce() async throws {
        let server = try RedisServer()
        let a = Self.cache(server, leaseTTL: .seconds(20))
        let b = Self.cache(server, leaseTTL: .seconds(20))
        let upstream = Upstream(delay: .zero)
        let leader = Task {
            try await a.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(30)) {
                try await Task.sleep(for: .seconds(60))
                return JobOutput(output: .string("never"))
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        let waiter = Task { try await b.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(30)) { try await upstream.answer() } }
        try await Task.sleep(for: .milliseconds(200))
        let clock = ContinuousClock()
        let stopped = clock.now
        leader.cancel()
        let output = try await waiter.value
        #expect(clock.now - stopped < .seconds(5), "the waiter waited out the lease")
        #expect(output.cache?.status == .miss && b.statistics.takeovers == 1)
        #expect(a.statistics.errors == 0)
        a.close()
        b.close()
    }

    @Test func theNearCacheNeverOutlivesAnEntrysTTL() async throws {
        let server = try RedisServer()
        let cache = Self.cache(server)
        let upstream = Upstream(delay: .zero)
        _ = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5), ttl: .milliseconds(300)) {
            try await upstream.answer("v1")
        }
        try await Task.sleep(for: .milliseconds(500))
        let later = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer("v2") }
        #expect(later.output["content"] == .string("v2") && later.cache?.status == .miss)
        cache.close()
    }

    @Test func withItsRedisGoneTheCacheStepsAsideAndJobsStillRun() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(try LoopbackPort.free())")
        configuration.connectTimeout = .milliseconds(200)
        configuration.reconnectWait = .zero
        let cache = ResponseCache(
            redis: RedisConnectionPool(configuration: configuration),
            configuration: ResponseCacheConfiguration(queue: "test"),
            logger: Logger(label: "test")
        )
        let upstream = Upstream(delay: .zero)
        for _ in 0..<3 {
            let output = try await cache.answer(key: Self.key, namespace: nil, use: .readWrite, bound: .seconds(5)) { try await upstream.answer() }
            #expect(output.cache?.status == .bypass)
        }
        #expect(upstream.count == 3 && cache.statistics.errors >= 1)
        cache.close()
    }
}
