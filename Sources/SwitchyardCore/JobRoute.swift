/// Which target answered a job and every step of the way there: the targets of its model's
/// chain that were tried or passed over, in order. Stored in the result as `route`.
public struct JobRoute: Sendable, Hashable, Codable {
    /// One target on the way.
    public struct Step: Sendable, Hashable {
        /// What happened at a target.
        public enum Outcome: String, Sendable, Hashable, CaseIterable {
            /// It answered the job.
            case answered
            /// Its breaker was open: not called.
            case circuitOpen = "circuit_open"
            /// Its rate limit had no room within the wait allowed: not called.
            case rateLimited = "rate_limited"
            /// It was called and failed in a way another target may not (the error's code says how).
            case failed
        }

        /// The target: provider and upstream model (`openrouter/qwen/qwen3-30b-a3b`).
        public var target: String
        public var outcome: Outcome
        /// The failure's code, for `failed` (and why a step was passed over).
        public var code: String?
        /// Time spent at this target, in ms.
        public var ms: Double

        public init(target: String, outcome: Outcome, code: String? = nil, ms: Double) {
            self.target = target
            self.outcome = outcome
            self.code = code
            self.ms = ms
        }
    }

    /// The target that answered.
    public var target: String
    public var steps: [Step]
    /// The answer's estimated cost in US dollars, from the target's `price` and the usage; nil
    /// when the target has no price.
    public var costUSD: Double?

    public init(target: String, steps: [Step], costUSD: Double? = nil) {
        self.target = target
        self.steps = steps
        self.costUSD = costUSD
    }

    public var json: JSONValue {
        var object: [String: JSONValue] = [
            "target": .string(target),
            "steps": .array(
                steps.map { step in
                    var s: [String: JSONValue] = ["target": .string(step.target), "outcome": .string(step.outcome.rawValue), "ms": .number(step.ms)]
                    if let code = step.code { s["code"] = .string(code) }
                    return .object(s)
                }
            ),
        ]
        if let costUSD { object["cost_usd"] = .number(costUSD) }
        return .object(object)
    }

    public init(from decoder: any Decoder) throws {
        let json = try JSONValue(from: decoder)
        guard let route = JobRoute(json: json) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "expected an object with target and steps"))
        }
        self = route
    }

    public func encode(to encoder: any Encoder) throws { try json.encode(to: encoder) }

    /// Reads `json` back; nil for anything that is not a route.
    public init?(json: JSONValue) {
        guard let target = json["target"]?.string, let steps = json["steps"]?.array else { return nil }
        self.target = target
        self.steps = steps.compactMap { s in
            guard let t = s["target"]?.string, let o = s["outcome"]?.string.flatMap(Step.Outcome.init(rawValue:)) else { return nil }
            return Step(target: t, outcome: o, code: s["code"]?.string, ms: s["ms"]?.number ?? 0)
        }
        self.costUSD = json["cost_usd"]?.number
    }
}
