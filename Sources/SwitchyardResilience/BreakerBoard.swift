import Foundation
import Logging
import ServiceLifecycle
import SwitchyardRedis
import Synchronization

/// A breaker's state, as stored and published.
public enum BreakerState: String, Sendable, Hashable, Codable, CaseIterable {
    case closed
    case open
    case halfOpen = "half_open"
    /// Held open by an operator until closed or reset.
    case forcedOpen = "forced_open"
    /// Held closed by an operator: outcomes are counted but never open it.
    case forcedClosed = "forced_closed"
}

/// How a call to a target went, as its breaker sees it.
public enum CallOutcome: Sendable, Hashable {
    /// The target answered (a refusal of the request itself, a 400 say, is an answer too).
    case success
    /// One of the breaker's `failures`; `retryAfter` when the target asked to be left alone
    /// (a 429 or 503 with `Retry-After`), which opens the breaker for that long (at most
    /// `max_wait_ms`).
    case failure(retryAfter: Duration? = nil)
    /// The call ended without saying anything about the target (the job was cancelled, or
    /// timed out on its own clock): not counted, and a half-open probe is given back at once.
    case abandoned
}

/// Leave to make one call, from `BreakerBoard.permit`. Hand it back with `record`.
public struct BreakerPermit: Sendable {
    public let target: String
    /// The breaker's generation the call was admitted under; -1 when not known.
    public let generation: Int
    /// A half-open probe: its outcome decides whether the breaker closes.
    public let probe: Bool
    /// False when the target has no breaker, or the decision was taken without Redis.
    let tracked: Bool
}

/// Why a breaker refused a call.
public struct BreakerRefusal: Error, Sendable, Hashable {
    public let target: String
    public let state: BreakerState
    /// How long until it may let a call through again; nil for an operator's forced open.
    public let retryIn: Duration?
    public let reason: String
}

/// Every target's circuit breaker, shared by the cluster through Redis.
///
/// State lives in Redis and changes only inside one Lua script (`BreakerScripts`), on the
/// server's clock. Each change is published; the board's `run()` subscribes on a connection of
/// its own and keeps a local copy, so `permit` decides with no Redis round trip while a breaker
/// is closed, or open with time left. It asks Redis only when an open period has ended, while
/// half-open, or while its copy is not trusted: before the first subscription, and after a lost
/// one until every breaker has been read again.
///
/// When Redis cannot be reached, calls are let through (fail open: a breaker is an optimisation
/// and the provider's own errors still end failed calls), counted in `statistics.redisErrors`,
/// and Redis is left alone for a second before it is tried again.
///
/// Do not use one board per job or per call: it holds a subscription. One per worker process.
public final class BreakerBoard: Service, Sendable {
    public struct Statistics: Sendable, Hashable {
        /// Calls refused by an open breaker.
        public var refused = 0
        /// Half-open probes granted to this worker.
        public var probes = 0
        /// Outcomes recorded in Redis.
        public var recorded = 0
        /// Breaker calls that could not reach Redis (the call went ahead).
        public var redisErrors = 0
        /// Subscriptions made again after one was lost.
        public var resubscribes = 0
        /// Changes received from other workers (and this one) over Pub/Sub.
        public var changesReceived = 0
    }

    /// A change as it reached this worker: for measuring propagation.
    public struct Change: Sendable {
        public let target: String
        public let state: BreakerState
        public let generation: Int
        /// The server's clock when the change was made, and this machine's when it arrived (ms
        /// since 1970, to the µs).
        public let madeAtMs: Double
        public let receivedAtMs: Double
    }

    struct Copy: Sendable {
        var state: BreakerState
        var generation: Int
        /// Open: when the open period ends. Half-open: until when every probe is out.
        var until: ContinuousClock.Instant?
        var reason: String
    }

    struct State: Sendable {
        var copies: [String: Copy] = [:]
        var targets: [String: ResilienceTarget] = [:]
        /// Set once every breaker has been read after the subscription was made.
        var trusted = false
        var redisPause = RedisPause()
        var statistics = Statistics()
        var subscribed = false
    }

    let redis: RedisConnectionPool
    let subscriberConfiguration: RedisConfiguration
    let logger: Logger
    let state = Mutex(State())
    let onChange: (@Sendable (Change) -> Void)?
    /// The longest a breaker's Redis call may take before the call goes ahead without it.
    let callTimeout: Duration

    /// `redis` carries the breakers' keys; the subscription gets a connection of its own with the
    /// same configuration. `onChange` sees every change received (benchmarks measure with it).
    public init(
        redis: RedisConnectionPool,
        targets: [ResilienceTarget] = [],
        logger: Logger = Logger(label: "switchyard.breakers"),
        onChange: (@Sendable (Change) -> Void)? = nil
    ) {
        self.redis = redis
        self.subscriberConfiguration = redis.configuration
        self.logger = logger
        self.onChange = onChange
        self.callTimeout = min(redis.configuration.commandTimeout, .seconds(1))
        register(targets)
    }

    /// Adds targets whose breakers the board keeps copies of (re-read after each subscription).
    public func register(_ targets: [ResilienceTarget]) {
        state.withLock { s in
            for target in targets { s.targets[target.id] = target }
        }
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Whether the local copy is trusted (subscribed, and every breaker read since).
    public var isTrusted: Bool { state.withLock { $0.trusted } }

    /// The local copy's state of a target, nil when it has none.
    public func localState(_ target: String) -> BreakerState? { state.withLock { $0.copies[target]?.state } }

    // MARK: - The hot path

    /// What the local copy alone says about a call.
    enum LocalDecision {
        case allow(generation: Int)
        case refuse(BreakerRefusal)
        case askRedis
    }

    func decideLocally(_ target: ResilienceTarget, now: ContinuousClock.Instant) -> LocalDecision {
        let id = target.id
        return state.withLock { s in
            // A target first met here (a worker-scoped one) is re-read after every subscription from now on.
            if s.targets[id] == nil { s.targets[id] = target }
            guard s.trusted, let copy = s.copies[id] else { return .askRedis }
            switch copy.state {
            case .closed, .forcedClosed:
                return .allow(generation: copy.generation)
            case .forcedOpen:
                s.statistics.refused += 1
                return .refuse(BreakerRefusal(target: id, state: .forcedOpen, retryIn: nil, reason: copy.reason))
            case .open, .halfOpen:
                if let until = copy.until, now < until {
                    s.statistics.refused += 1
                    let retryIn = copy.state == .halfOpen ? nil : until - now
                    return .refuse(BreakerRefusal(target: id, state: copy.state, retryIn: retryIn, reason: copy.reason))
                }
                return .askRedis
            }
        }
    }

    /// The refusal the local copy alone gives (open with time left, or forced open); nil when a
    /// call may go ahead or Redis must be asked. No Redis round trip, no probe taken: this is the
    /// hot path's check (a lock and a dictionary lookup).
    public func refusesLocally(_ target: ResilienceTarget) -> BreakerRefusal? {
        guard target.breaker.enabled else { return nil }
        if case .refuse(let refusal) = decideLocally(target, now: .now) { return refusal }
        return nil
    }

    /// Whether `target` may be called now: a permit to hand back through `record`, or why not.
    /// No Redis round trip while the local copy is trusted and the breaker closed (or open with
    /// time left).
    public func permit(_ target: ResilienceTarget) async -> Result<BreakerPermit, BreakerRefusal> {
        guard target.breaker.enabled else { return .success(BreakerPermit(target: target.id, generation: -1, probe: false, tracked: false)) }
        let now = ContinuousClock.now
        switch decideLocally(target, now: now) {
        case .allow(let generation):
            return .success(BreakerPermit(target: target.id, generation: generation, probe: false, tracked: true))
        case .refuse(let refusal):
            return .failure(refusal)
        case .askRedis:
            break
        }
        // A probe granted after this call gave up on Redis would stay out until its lease ends:
        // give it back at once.
        let giveBack: @Sendable (Result<RESPValue, any Error>) -> Void = { [self] late in
            guard case .success(let reply) = late, let items = reply.array, items.count == 6, items[0].int == 1, items[5].int == 1,
                let generation = items[2].int
            else { return }
            Task {
                // Straight to Redis, which has just answered: the pause after a failure is for calls.
                _ = await self.call(BreakerScripts.record, target: target, extra: [String(generation), "-1", "1", "0"], duringOutage: true)
            }
        }
        guard let reply = await call(BreakerScripts.permit, target: target, extra: [], late: giveBack) else {
            return .success(BreakerPermit(target: target.id, generation: -1, probe: false, tracked: false))
        }
        // {granted, state, generation, until, now, probe}
        guard let items = reply.array, items.count == 6, let granted = items[0].int, let st = items[1].string,
            let breakerState = BreakerState(rawValue: st), let generation = items[2].int, let until = items[3].int, let serverNow = items[4].int
        else {
            logger.warning("unexpected reply from the breaker's permit script", metadata: ["target": "\(target.id)"])
            return .success(BreakerPermit(target: target.id, generation: -1, probe: false, tracked: false))
        }
        let local = Self.localInstant(untilMs: until, serverNowMs: serverNow, now: ContinuousClock.now)
        apply(
            target.id,
            Copy(state: breakerState, generation: generation, until: local, reason: ""),
            keepReason: true,
            fromRedis: true,
            serverNowMs: serverNow
        )
        if granted == 1 {
            let probe = items[5].int == 1
            if probe { state.withLock { $0.statistics.probes += 1 } }
            return .success(BreakerPermit(target: target.id, generation: generation, probe: probe, tracked: true))
        }
        state.withLock { $0.statistics.refused += 1 }
        // Half-open with every probe out: the probes' outcomes, not the lease, decide when it
        // opens up, so there is no wait to promise.
        let retryIn = breakerState == .halfOpen ? nil : local.map { $0 - ContinuousClock.now }
        let reason = breakerState == .halfOpen ? "half-open: every probe call is out" : (state.withLock { $0.copies[target.id]?.reason } ?? "")
        return .failure(BreakerRefusal(target: target.id, state: breakerState, retryIn: retryIn, reason: reason))
    }

    /// Records how a permitted call went: `duration` decides whether it was slow.
    public func record(_ permit: BreakerPermit, target: ResilienceTarget, outcome: CallOutcome, duration: Duration) async {
        guard permit.tracked || target.breaker.enabled else { return }
        var code = 0
        var retryAfterMs: Int64 = 0
        switch outcome {
        case .success:
            code = duration >= .milliseconds(target.breaker.slowCallMs) ? 2 : 0
        case .failure(let retryAfter):
            code = duration >= .milliseconds(target.breaker.slowCallMs) ? 3 : 1
            if let retryAfter { retryAfterMs = max(1, retryAfter.milliseconds) }
        case .abandoned:
            // Only a probe has anything to give back.
            guard permit.probe else { return }
            code = -1
        }
        let extra = [String(permit.generation), String(code), permit.probe ? "1" : "0", String(retryAfterMs)]
        guard let reply = await call(BreakerScripts.record, target: target, extra: extra) else { return }
        state.withLock { $0.statistics.recorded += 1 }
        applyReply(reply, target: target.id)
    }

    // MARK: - Operators

    /// What an operator may order a breaker to do.
    public enum Order: String, Sendable, CaseIterable {
        /// Hold it open (no calls) until closed or reset.
        case open
        /// Hold it closed (calls always go) until reset.
        case close
        /// Back to closed and automatic, window and openings cleared.
        case reset
    }

    /// Forces a state, recorded with `note` (who and why). Throws when Redis cannot be reached.
    @discardableResult
    public func force(_ target: ResilienceTarget, _ order: Order, note: String) async throws -> BreakerStatus {
        let reply = try await redis.evaluate(
            BreakerScripts.force,
            keys: [ResilienceKeys.breaker(target.id), ResilienceKeys.window(target.id)],
            arguments: arguments(target, extra: [order.rawValue, note])
        )
        applyReply(reply, target: target.id)
        return try await status(target)
    }

    /// The breaker as Redis has it now.
    public func status(_ target: ResilienceTarget) async throws -> BreakerStatus {
        let reply = try await redis.evaluate(
            BreakerScripts.read,
            keys: [ResilienceKeys.breaker(target.id), ResilienceKeys.window(target.id)],
            arguments: arguments(target, extra: [])
        )
        guard let status = BreakerStatus(reply: reply, target: target.id) else {
            throw RedisError(.protocolError, "unexpected reply from the breaker's read script for \(target.id)")
        }
        return status
    }

    // MARK: - Redis calls

    func arguments(_ target: ResilienceTarget, extra: [String]) -> [any RedisArgument] {
        (target.breaker.scriptArguments(target: target.id, probeLeaseMs: target.probeLeaseMs, random: Double.random(in: 0..<1)) + extra)
            .map { $0 as any RedisArgument }
    }

    /// Runs a breaker script; nil (counted) when Redis cannot be reached within `callTimeout`
    /// (connecting and waiting for a pooled connection included), in which case Redis is left
    /// alone for a second. It runs in a task of its own, so a cancelled job still hands back
    /// its outcome (a half-open probe above all).
    func call(
        _ script: RedisScript,
        target: ResilienceTarget,
        extra: [String],
        late: (@Sendable (Result<RESPValue, any Error>) -> Void)? = nil,
        duringOutage: Bool = false
    ) async -> RESPValue? {
        let skip =
            !duringOutage
            && state.withLock { s -> Bool in
                guard s.redisPause.isOn() else { return false }
                s.statistics.redisErrors += 1
                return true
            }
        if skip { return nil }
        let keys: [any RedisArgument] = [ResilienceKeys.breaker(target.id), ResilienceKeys.window(target.id)]
        let arguments = arguments(target, extra: extra)
        let result = await Result { [redis, callTimeout] in
            try await withDeadline(callTimeout, late: late) { try await redis.evaluate(script, keys: keys, arguments: arguments) }
        }
        switch result {
        case .success(let reply):
            return reply
        case .failure(let error):
            state.withLock { s in
                s.statistics.redisErrors += 1
                s.redisPause.start()
            }
            logger.warning("breaker for \(target.id) could not reach Redis; the call goes ahead: \(error)")
            return nil
        }
    }

    /// Applies a {state, generation, until, now, ...} reply.
    func applyReply(_ reply: RESPValue, target: String) {
        guard let items = reply.array, items.count >= 4, let st = items[0].string, let breakerState = BreakerState(rawValue: st),
            let generation = items[1].int, let until = items[2].int, let serverNow = items[3].int
        else { return }
        let local = Self.localInstant(untilMs: until, serverNowMs: serverNow, now: ContinuousClock.now)
        apply(
            target,
            Copy(state: breakerState, generation: generation, until: local, reason: ""),
            keepReason: true,
            fromRedis: true,
            serverNowMs: serverNow
        )
    }

    /// Takes `copy` unless the local copy already has a later generation (`force`: always, for
    /// a full re-read, which also heals a copy ahead of a restarted Redis). A reply straight from
    /// Redis with generation 0 means Redis holds no state for the breaker (never changed, or
    /// lost: expired, flushed): it replaces a copy that would refuse or ask, if Redis answered
    /// after that copy's change was made (a generation is at least its change's time in ms; an
    /// older reply overtaken by the change's message must not undo it).
    func apply(
        _ target: String,
        _ copy: Copy,
        keepReason: Bool = false,
        force: Bool = false,
        fromRedis: Bool = false,
        serverNowMs: Int = 0
    ) {
        state.withLock { s in
            if let current = s.copies[target], !force, current.generation > copy.generation {
                let lost = fromRedis && copy.generation == 0 && current.state != .closed && serverNowMs > current.generation
                if !lost { return }
            }
            var copy = copy
            if keepReason, let current = s.copies[target], current.generation == copy.generation { copy.reason = current.reason }
            s.copies[target] = copy
        }
    }

    /// The local instant of a server time, from the server's own clock reading.
    static func localInstant(untilMs: Int, serverNowMs: Int, now: ContinuousClock.Instant) -> ContinuousClock.Instant? {
        guard untilMs > 0 else { return nil }
        return now + .milliseconds(untilMs - serverNowMs)
    }
}

/// A breaker as `switchyard breakers` shows it.
public struct BreakerStatus: Sendable, Hashable {
    public var target: String
    public var state: BreakerState
    public var generation: Int
    /// Open or forced: until when (Unix seconds); nil otherwise.
    public var openUntil: Double?
    public var openingsInARow: Int
    /// When it last changed (Unix seconds); nil if it never has.
    public var since: Double?
    public var reason: String
    /// Who forced it and why, when an operator did.
    public var forcedBy: String?
    public var probesGranted: Int
    public var probesSucceeded: Int
    public var probesFailed: Int
    public var calls: Int
    public var failures: Int
    public var slowCalls: Int
    /// Redis's clock when it was read (Unix seconds): `openUntil` is on this clock.
    public var readAt: Double

    public var failureRate: Double { calls == 0 ? 0 : Double(failures) * 100 / Double(calls) }
    public var slowCallRate: Double { calls == 0 ? 0 : Double(slowCalls) * 100 / Double(calls) }
    public var probesInFlight: Int { max(0, probesGranted - probesSucceeded - probesFailed) }

    init?(reply: RESPValue, target: String) {
        guard let v = reply.array, v.count == 14, let st = v[0].string, let state = BreakerState(rawValue: st) else { return nil }
        self.target = target
        self.state = state
        generation = v[1].int ?? 0
        let until = v[2].int ?? 0
        openUntil = until > 0 ? Double(until) / 1000 : nil
        openingsInARow = v[4].int ?? 0
        let since = v[5].int ?? 0
        self.since = since > 0 ? Double(since) / 1000 : nil
        reason = v[6].string ?? ""
        let forced = v[7].string ?? ""
        forcedBy = forced.isEmpty ? nil : forced
        probesGranted = v[8].int ?? 0
        probesSucceeded = v[9].int ?? 0
        probesFailed = v[10].int ?? 0
        calls = v[11].int ?? 0
        failures = v[12].int ?? 0
        slowCalls = v[13].int ?? 0
        readAt = Double(v[3].int ?? 0) / 1000
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (s, atto) = components
        return s * 1000 + atto / 1_000_000_000_000_000
    }
}
