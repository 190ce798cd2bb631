import CoreMetrics
import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardResilience
import Synchronization

/// Why a target of a chain was passed over without a call.
enum TargetRefusal: Error, Sendable {
    case circuitOpen(BreakerRefusal)
    case rateLimited(retryIn: Duration)
    /// The job's tokens are more than the target's token bucket holds.
    case tooLarge(tokens: Int, capacity: Int)
    /// The limiter's Redis is unreachable and the target fails closed.
    case limiterUnavailable

    var step: (outcome: JobRoute.Step.Outcome, code: String) {
        switch self {
        case .circuitOpen(let r): return (.circuitOpen, r.state.rawValue)
        case .rateLimited: return (.rateLimited, "rate_limited")
        case .tooLarge: return (.rateLimited, "tokens_over_limit")
        case .limiterUnavailable: return (.rateLimited, "limiter_unavailable")
        }
    }

    var retryIn: Duration? {
        switch self {
        case .circuitOpen(let r): return r.retryIn
        case .rateLimited(let d): return d
        case .tooLarge, .limiterUnavailable: return nil
        }
    }
}

/// One job's calls to one target of its chain. The chain executor sets it as a task-local
/// value around the provider adapter; the adapter's transport asks it before every HTTP attempt
/// (breaker, then rate limit) and tells it how each attempt went, so retries inside an adapter
/// count against the breaker and the limits as the calls they are.
final class TargetCall: Sendable {
    @TaskLocal static var current: TargetCall?

    let target: ResilienceTarget
    let resilience: Resilience?
    /// Tokens to reserve with the first admitted attempt.
    let estimatedTokens: Int
    /// Where each attempt's time and outcome go (`switchyard_target_call_seconds{target}`,
    /// `switchyard_target_calls_total{target,outcome}`); nil: nowhere.
    let metrics: (any MetricsFactory)?
    private let reserved = Mutex<Int?>(nil)

    init(target: ResilienceTarget, resilience: Resilience?, estimatedTokens: Int, metrics: (any MetricsFactory)? = nil) {
        self.target = target
        self.resilience = resilience
        self.estimatedTokens = estimatedTokens
        self.metrics = metrics
    }

    /// An admitted attempt, to hand back to `end`.
    struct Ticket: Sendable {
        let permit: BreakerPermit?
        let started: ContinuousClock.Instant
    }

    /// Admits one attempt: the breaker's local copy first (no Redis), then the rate limit (the
    /// first attempt reserves the job's tokens), then the breaker's permit (which may be a
    /// half-open probe, so it is taken last).
    func begin() async throws -> Ticket {
        guard let resilience else { return Ticket(permit: nil, started: .now) }
        if let refusal = resilience.breakers.refusesLocally(target) { throw TargetRefusal.circuitOpen(refusal) }
        if target.rateLimit != nil {
            let first = reserved.withLock { $0 == nil }
            switch try await resilience.limits.acquire(target, tokens: first ? estimatedTokens : 0) {
            case .admitted(let tokens):
                if first { reserved.withLock { $0 = tokens } }
            case .limited(let retryIn): throw TargetRefusal.rateLimited(retryIn: retryIn)
            case .tooLarge(let tokens, let capacity): throw TargetRefusal.tooLarge(tokens: tokens, capacity: capacity)
            case .unavailable: throw TargetRefusal.limiterUnavailable
            }
        }
        switch await resilience.breakers.permit(target) {
        case .success(let permit): return Ticket(permit: permit, started: .now)
        case .failure(let refusal): throw TargetRefusal.circuitOpen(refusal)
        }
    }

    /// Tells the breaker how an attempt went. `answeredAt` ends the time that decides whether
    /// the call was slow (a stream's is its first answer, not its end: a long answer is not a
    /// slow target); by default, now.
    func end(_ ticket: Ticket, _ outcome: CallOutcome, answeredAt: ContinuousClock.Instant? = nil) async {
        if let metrics {
            let name: String
            switch outcome {
            case .success: name = "success"
            case .failure: name = "failure"
            case .abandoned: name = "abandoned"
            }
            // Targets are the providers file's (and a worker's own): a bounded label.
            Counter(label: "switchyard_target_calls_total", dimensions: [("target", target.id), ("outcome", name)], factory: metrics).increment()
            let (seconds, atto) = (ContinuousClock.now - ticket.started).components
            CoreMetrics.Timer(label: "switchyard_target_call_seconds", dimensions: [("target", target.id)], factory: metrics)
                .recordNanoseconds(seconds * 1_000_000_000 + atto / 1_000_000_000)
            // Only streams say when their answer began.
            if case .success = outcome, let answeredAt {
                let (s, a) = (answeredAt - ticket.started).components
                CoreMetrics.Timer(label: "switchyard_time_to_first_token_seconds", dimensions: [("target", target.id)], factory: metrics)
                    .recordNanoseconds(s * 1_000_000_000 + a / 1_000_000_000)
            }
        }
        guard let resilience, let permit = ticket.permit else { return }
        await resilience.breakers.record(permit, target: target, outcome: outcome, duration: (answeredAt ?? .now) - ticket.started)
    }

    /// Settles the reserved tokens against the real usage: a failed call's are all given back;
    /// an answer without usage keeps its reservation.
    func settle(answered: Bool, usage: JobUsage?) async {
        guard let resilience, let reservedTokens = reserved.withLock({ $0 }), reservedTokens > 0 else { return }
        let reported = usage.flatMap { u in u.totalTokens ?? ((u.promptTokens ?? 0) + (u.completionTokens ?? 0)) }
        let used = answered ? (reported ?? reservedTokens) : 0
        await resilience.limits.settle(target, tokens: used - reservedTokens)
    }

    /// What the breaker makes of an answer or a transport error.
    func outcome(head: HTTPResponseHead?, error: HTTPClientError?, invalidResponse: Bool = false) -> CallOutcome {
        let kinds = target.breaker.failures
        if let head {
            let status = head.status
            var kind: BreakerSettings.FailureKind?
            switch status {
            case 200..<300: kind = invalidResponse ? .invalidResponse : nil
            case 401, 403: kind = .authentication
            case 408: kind = .timeout
            case 429: kind = .rateLimited
            case 501: kind = nil  // not implemented: a capability this target lacks, not its health
            case 500...599: kind = .serverError
            default: kind = nil  // the request's own fault: the target answered
            }
            guard let kind, kinds.contains(kind) else { return .success }
            let retryAfter = (status == 429 || status == 503) ? RetryPolicy.retryAfter(head) : nil
            return .failure(retryAfter: retryAfter.flatMap { $0 > .zero ? $0 : nil })
        }
        if let error {
            switch error.code {
            case .timeout: return kinds.contains(.timeout) ? .failure() : .success
            case .connectFailed, .connectionLost, .transport, .tls: return kinds.contains(.connection) ? .failure() : .success
            default: return .success
            }
        }
        return invalidResponse && kinds.contains(.invalidResponse) ? .failure() : .success
    }

    /// Sends `request` under `policy`, each attempt admitted and recorded. Returns the last
    /// response with its attempt still open (the caller ends it once it has read the body), or
    /// throws the last transport error (recorded) or a `TargetRefusal`.
    func execute(_ request: HTTPRequest, client: HTTPClient, policy: RetryPolicy) async throws -> (HTTPResponse, Ticket) {
        var attempt = 1
        while true {
            let ticket = try await begin()
            var response: HTTPResponse?
            var failure: HTTPClientError?
            do {
                response = try await client.execute(request)
            } catch let error as HTTPClientError {
                failure = error
            } catch {
                await end(ticket, .abandoned)
                throw error
            }
            switch policy.decide(attempt: attempt, request: request, response: response?.head, error: failure) {
            case .done:
                if let response { return (response, ticket) }
                await end(ticket, outcome(head: nil, error: failure))
                throw failure!
            case .giveUp(let reason):
                if let response { return (response.withGiveUpReason(reason), ticket) }
                await end(ticket, outcome(head: nil, error: failure))
                throw HTTPClientError(
                    failure!.code,
                    "\(failure!.message) (\(reason))",
                    mayHaveReachedServer: failure!.mayHaveReachedServer,
                    curlCode: failure!.curlCode
                )
            case .retry(let delay):
                await end(ticket, outcome(head: response?.head, error: failure))
                try await pause(delay)
                attempt += 1
            }
        }
    }

    /// Waits before the next attempt, unless the breaker has opened meanwhile (this attempt's
    /// failure, or another worker's, tripped it): then the chain moves on at once.
    func pause(_ delay: Duration) async throws {
        if let refusal = resilience?.breakers.refusesLocally(target) { throw TargetRefusal.circuitOpen(refusal) }
        try await Task.sleep(for: delay)
    }
}
