import Foundation
import SwitchyardCore
import SwitchyardResilience

extension ProvidersFile {
    /// One target of a chain, resolved: its provider, the model name it is sent, and the breaker,
    /// limits and price that apply (the chain entry's, else the provider's, else the file's).
    public struct ResolvedTarget: Sendable {
        public var provider: String
        public var upstreamModel: String
        public var resilience: ResilienceTarget
        public var price: TargetPrice?

        public var id: String { resilience.id }
    }

    /// A chain entry with its settings; nil for a provider that is not configured, or a
    /// worker-scoped one when no worker id is given. A target's id is `<provider>/<upstream
    /// model>`, with `@<worker id>` for a worker-scoped provider.
    public func resolve(_ entry: ChainTarget, jobModel: String, workerID: String?) -> ResolvedTarget? {
        guard let configuration = providers.first(where: { $0.name == entry.provider }) else { return nil }
        let upstream = entry.model ?? jobModel
        var id = "\(entry.provider)/\(upstream)"
        if configuration.scope == .worker {
            guard let workerID else { return nil }
            id += "@\(workerID)"
        }
        let target = ResilienceTarget(
            id: id,
            breaker: entry.breaker ?? configuration.breaker ?? breaker ?? BreakerSettings(),
            rateLimit: entry.rateLimit ?? configuration.rateLimit,
            probeLeaseMs: configuration.timeoutMs + 5_000
        )
        return ResolvedTarget(provider: entry.provider, upstreamModel: upstream, resilience: target, price: entry.price ?? configuration.price)
    }

    /// Every target of the file's chains whose breaker and limits the cluster shares.
    public var sharedTargets: [ResilienceTarget] {
        var seen: Set<String> = []
        var out: [ResilienceTarget] = []
        for model in models.keys.sorted() {
            for entry in models[model]!.chain {
                guard let target = resolve(entry, jobModel: model, workerID: nil), seen.insert(target.id).inserted else { continue }
                out.append(target.resilience)
            }
        }
        return out
    }

    /// The settings of a target by its id, as the file gives them: one of its chains' targets,
    /// else (a target of the default provider, or of a worker-scoped one) its provider's.
    public func target(id: String) -> ResilienceTarget? {
        let worker = id.firstIndex(of: "@").map { String(id[id.index(after: $0)...]) }
        for model in models.keys.sorted() {
            for entry in models[model]!.chain {
                if let t = resolve(entry, jobModel: model, workerID: worker ?? ""), t.id == id { return t.resilience }
            }
        }
        guard let slash = id.firstIndex(of: "/"), let configuration = providers.first(where: { $0.name == String(id[..<slash]) }) else {
            return nil
        }
        return ResilienceTarget(
            id: id,
            breaker: configuration.breaker ?? breaker ?? BreakerSettings(),
            rateLimit: configuration.rateLimit,
            probeLeaseMs: configuration.timeoutMs + 5_000
        )
    }
}

extension ProviderExecutor {
    typealias ResolvedTarget = ProvidersFile.ResolvedTarget

    /// The chain a job goes along, before ordering: the route it names (when allowed), else its
    /// model's chain, else the default provider.
    func chain(for job: Job) throws(JobFailure) -> [ProvidersFile.ChainTarget] {
        let route = file.models[job.model]
        if let requested = job.route {
            if let refusal = file.routeRefusal(requested, model: job.model) {
                throw JobFailure(
                    code: "route_not_allowed",
                    message: "route '\(requested)' is not allowed for model '\(job.model)': \(refusal)",
                    retryable: false
                )
            }
            guard providers[requested] != nil else {
                throw JobFailure(
                    code: "no_provider",
                    message: "no provider serves model '\(job.model)' (route '\(requested)' is not configured)",
                    retryable: false
                )
            }
            // The chain's provider-side name applies only when the job goes to that provider.
            return [route?.chain.first(where: { $0.provider == requested }) ?? ProvidersFile.ChainTarget(provider: requested)]
        }
        if let chain = route?.chain, !chain.isEmpty { return chain }
        if let name = file.defaultProvider { return [ProvidersFile.ChainTarget(provider: name)] }
        throw JobFailure(code: "no_provider", message: "no provider serves model '\(job.model)'", retryable: false)
    }

    func resolve(_ entry: ProvidersFile.ChainTarget, jobModel: String, workerID: String?) -> ResolvedTarget? {
        file.resolve(entry, jobModel: jobModel, workerID: workerID)
    }

    /// The targets in the order the model's `order` asks for.
    func ordered(_ targets: [ResolvedTarget], model: String) -> [ResolvedTarget] {
        switch file.models[model]?.order ?? .listed {
        case .listed:
            return targets
        case .cost:
            return targets.enumerated().sorted { a, b in
                let ca = a.element.price?.typicalCallCost ?? .infinity
                let cb = b.element.price?.typicalCallCost ?? .infinity
                return ca != cb ? ca < cb : a.offset < b.offset
            }.map(\.element)
        case .health:
            func rank(_ t: ResolvedTarget) -> Int {
                switch resilience?.breakers.localState(t.id) {
                case .halfOpen: return 1
                case .open: return 2
                case .forcedOpen: return 3
                default: return 0
                }
            }
            return targets.enumerated().sorted { a, b in
                let ra = rank(a.element)
                let rb = rank(b.element)
                return ra != rb ? ra < rb : a.offset < b.offset
            }.map(\.element)
        }
    }

    /// Tokens to reserve against a target's token limit: the prompt's estimate (4 characters a
    /// token) and the job's `max_tokens`, else the limit's `assumed_output_tokens`.
    static func estimatedTokens(_ job: Job, limit: RateLimitSettings?) -> Int {
        guard let limit, limit.tokens != nil else { return 0 }
        var characters = 0
        for message in job.input.messages ?? [] { characters += message.content.count + 16 }
        characters += job.input.prompt?.count ?? 0
        for text in job.input.texts ?? [] { characters += text.count }
        let prompt = (characters + 3) / 4
        guard job.kind == .chat else { return max(prompt, 1) }
        let parameters = job.input.parameters ?? [:]
        let output = (parameters["max_tokens"] ?? parameters["max_completion_tokens"])?.integer ?? limit.assumedOutputTokens
        return max(prompt + output, 1)
    }

    /// Goes along the job's chain until a target answers.
    func runChain(_ job: Job, context: JobContext) async throws -> JobOutput {
        let entries = try chain(for: job)
        let targets = ordered(entries.compactMap { resolve($0, jobModel: job.model, workerID: context.workerID) }, model: job.model)
        var steps: [JobRoute.Step] = []
        var last: JobFailure?
        var soonest: Duration?
        for target in targets {
            guard let provider = providers[target.provider] else { continue }
            try Task.checkCancellation()
            let call = TargetCall(
                target: target.resilience,
                resilience: resilience,
                estimatedTokens: Self.estimatedTokens(job, limit: target.resilience.rateLimit),
                metrics: metrics
            )
            let started = ContinuousClock.now
            func elapsed() -> Double {
                let (s, atto) = (ContinuousClock.now - started).components
                return Double(s) * 1000 + Double(atto) / 1e15
            }
            do {
                var output = try await TargetCall.$current.withValue(call) {
                    try await provider.run(job, model: target.upstreamModel)
                }
                await call.settle(answered: true, usage: output.usage)
                steps.append(JobRoute.Step(target: target.id, outcome: .answered, ms: elapsed()))
                output.route = JobRoute(target: target.id, steps: steps, costUSD: target.price?.cost(of: output.usage))
                return output
            } catch let refusal as TargetRefusal {
                await call.settle(answered: false, usage: nil)
                let step = refusal.step
                steps.append(JobRoute.Step(target: target.id, outcome: step.outcome, code: step.code, ms: elapsed()))
                last = JobFailure(code: step.outcome.rawValue, message: Self.describe(refusal, target: target.id), retryable: true)
                if let wait = refusal.retryIn { soonest = min(soonest ?? wait, wait) }
            } catch let error as ProviderError {
                await call.settle(answered: false, usage: nil)
                var failure = error.jobFailure
                steps.append(JobRoute.Step(target: target.id, outcome: .failed, code: failure.code, ms: elapsed()))
                // A request error fails the same way everywhere; a cancelled job stops here. A
                // refused key, or a parameter this target's adapter does not send (found before
                // any call), is this target's own: the next may answer (if none does, the job
                // fails for good).
                // So are a 404 (each target has its own name for the model) and a 501 (a
                // capability this target lacks).
                let targetsOwn =
                    error.code == .authentication || error.code == .unsupportedParameter || error.status == 404 || error.status == 501
                if (!failure.retryable && !targetsOwn) || Task.isCancelled {
                    if targets.count > 1 { failure.message += " (at \(target.id); path: \(Self.describe(steps)))" }
                    throw failure
                }
                last = failure
                soonest = nil
            } catch {
                // Cancelled: give the reserved tokens back (it survives the cancellation).
                await call.settle(answered: false, usage: nil)
                throw error
            }
        }
        guard var failure = last else {
            throw JobFailure(code: "no_provider", message: "no target serves model '\(job.model)'", retryable: false)
        }
        if targets.count > 1 { failure.message = "no target answered (\(Self.describe(steps))); last: \(failure.message)" }
        // Every target refused without a call: a retry helps only once the soonest of them reopens.
        if steps.allSatisfy({ $0.outcome != .failed }) { failure.retryAfter = soonest }
        // Too large for every target: no retry ever fits.
        if steps.allSatisfy({ $0.code == "tokens_over_limit" }) { failure.retryable = false }
        throw failure
    }

    static func describe(_ refusal: TargetRefusal, target: String) -> String {
        switch refusal {
        case .circuitOpen(let r):
            let wait = r.retryIn.map { " for \(Self.seconds($0)) s more" } ?? ""
            return "\(target): circuit breaker \(r.state.rawValue)\(wait)\(r.reason.isEmpty ? "" : " (\(r.reason))")"
        case .rateLimited(let retryIn):
            return "\(target): rate limit has no room for \(Self.seconds(retryIn)) s, longer than its max_wait_ms"
        case .tooLarge(let tokens, let capacity):
            return "\(target): the job's estimated \(tokens) tokens are more than the rate limit's bucket of \(capacity)"
        case .limiterUnavailable:
            return "\(target): the rate limiter's Redis is unreachable and the target fails closed (on_redis_error)"
        }
    }

    static func describe(_ steps: [JobRoute.Step]) -> String {
        steps.map { "\($0.target): \($0.outcome == .failed ? ($0.code ?? "failed") : $0.outcome.rawValue)" }.joined(separator: "; ")
    }

    static func seconds(_ d: Duration) -> String {
        let (s, atto) = d.components
        return String(format: "%.1f", Double(s) + Double(atto) / 1e18)
    }
}
