import Foundation
import ServiceLifecycle
import SwitchyardCore
import SwitchyardRedis

extension BreakerBoard {
    /// Subscribes to breaker changes and keeps the local copy, until graceful shutdown or
    /// cancellation. A lost subscription (Redis restarted, the connection killed) is made again
    /// with backoff; until every breaker has been read again, `permit` asks Redis.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await self.subscribeLoop()
        }
    }

    func subscribeLoop() async {
        var failures = 0
        var first = true
        // A quiet minute ends a subscription on purpose; only a lost one counts as a resubscribe.
        var lost = false
        while !Task.isCancelled {
            let connection = RedisConnection(configuration: subscriberConfiguration, logger: logger)
            defer { connection.close() }
            do {
                _ = try await connection.send(RedisCommand("SUBSCRIBE", ResilienceKeys.changesChannel))
                // Subscribed first, then read: a change made in between arrives as a message.
                try await refreshAll()
                state.withLock { s in
                    s.trusted = true
                    s.subscribed = true
                    if !first && lost { s.statistics.resubscribes += 1 }
                }
                first = false
                lost = false
                failures = 0
                while !Task.isCancelled {
                    // A quiet minute closes the connection and subscribes again: a silently dead
                    // connection is found within a minute.
                    let message: RESPValue
                    do {
                        message = try await connection.receive(timeout: .after(.seconds(60)))
                    } catch let error as RedisError where error.code == .timeout {
                        break
                    }
                    handle(message)
                }
            } catch {
                if Task.isCancelled { break }
                failures += 1
                lost = true
                logger.warning("breaker subscription lost; the local copy is not trusted until it is back: \(error)")
            }
            state.withLock { s in
                s.trusted = false
                s.subscribed = false
            }
            if Task.isCancelled { break }
            if failures > 0 {
                try? await Task.sleep(for: Backoff(base: .milliseconds(50), cap: .seconds(2)).delay(attempt: failures))
            }
        }
    }

    /// Reads every registered breaker from Redis and replaces the local copy.
    func refreshAll() async throws {
        let targets = state.withLock { Array($0.targets.values) }
        for target in targets {
            let status = try await self.status(target)
            // Both times on Redis's clock: a worker's skew does not move the end.
            let until = status.openUntil.map { ContinuousClock.now + .milliseconds(Int64(($0 - status.readAt) * 1000)) }
            apply(target.id, Copy(state: status.state, generation: status.generation, until: until, reason: status.reason), force: true)
        }
    }

    /// One Pub/Sub message: ["message", channel, payload].
    func handle(_ message: RESPValue) {
        guard let parts = message.array, parts.count == 3, parts[0].string == "message", let payload = parts[2].bytes,
            let json = try? JSONValue.parse(payload), let target = json["t"]?.string, let st = json["s"]?.string,
            let breakerState = BreakerState(rawValue: st), let generation = json["g"]?.integer
        else { return }
        let untilMs = json["u"]?.integer ?? 0
        let madeAt = json["n"]?.integer ?? 0
        let received = Date().timeIntervalSince1970 * 1000
        let local = Self.localInstant(untilMs: untilMs, serverNowMs: madeAt, now: ContinuousClock.now)
        apply(target, Copy(state: breakerState, generation: generation, until: local, reason: json["r"]?.string ?? ""))
        state.withLock { $0.statistics.changesReceived += 1 }
        let madeAtMs = json["m"]?.string.flatMap(Double.init).map { $0 / 1000 } ?? Double(madeAt)
        onChange?(Change(target: target, state: breakerState, generation: generation, madeAtMs: madeAtMs, receivedAtMs: received))
    }
}
