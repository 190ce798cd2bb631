import SwitchyardCore

/// What a target charges, in US dollars, for the cost estimate each result records
/// (`route.cost_usd`). In the providers file as `price` on a provider or a chain's target:
/// `{"prompt_per_mtok": 0.15, "completion_per_mtok": 0.6}`. Every field defaults to 0.
public struct TargetPrice: Sendable, Codable, Hashable {
    /// Per million prompt tokens.
    public var promptPerMTok: Double
    /// Per million completion tokens.
    public var completionPerMTok: Double
    /// Per image made.
    public var perImage: Double
    /// Per answered call.
    public var perRequest: Double

    public static let schema = FieldSchema.fields(CodingKeys.self)

    enum CodingKeys: String, CodingKey, CaseIterable {
        case promptPerMTok = "prompt_per_mtok"
        case completionPerMTok = "completion_per_mtok"
        case perImage = "per_image"
        case perRequest = "per_request"
    }

    public init(promptPerMTok: Double = 0, completionPerMTok: Double = 0, perImage: Double = 0, perRequest: Double = 0) {
        self.promptPerMTok = promptPerMTok
        self.completionPerMTok = completionPerMTok
        self.perImage = perImage
        self.perRequest = perRequest
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            promptPerMTok: try c.decodeIfPresent(Double.self, forKey: .promptPerMTok) ?? 0,
            completionPerMTok: try c.decodeIfPresent(Double.self, forKey: .completionPerMTok) ?? 0,
            perImage: try c.decodeIfPresent(Double.self, forKey: .perImage) ?? 0,
            perRequest: try c.decodeIfPresent(Double.self, forKey: .perRequest) ?? 0
        )
    }

    func validate(path: String) throws {
        for (field, value) in [
            ("prompt_per_mtok", promptPerMTok), ("completion_per_mtok", completionPerMTok), ("per_image", perImage), ("per_request", perRequest),
        ] where !(value >= 0 && value.isFinite) {
            throw ConfigurationError(field: "\(path).\(field)", problem: "must be a price of 0 or more, got \(value)")
        }
    }

    /// The estimated cost of an answer with `usage`.
    public func cost(of usage: JobUsage?) -> Double {
        let prompt = Double(usage?.promptTokens ?? 0)
        let completion = Double(usage?.completionTokens ?? max(0, (usage?.totalTokens ?? 0) - (usage?.promptTokens ?? 0)))
        return perRequest + prompt * promptPerMTok / 1e6 + completion * completionPerMTok / 1e6 + Double(usage?.images ?? 0) * perImage
    }

    /// A rough price for ordering a chain by cost: a call of 1,000 prompt and 1,000 completion tokens.
    var typicalCallCost: Double { perRequest + (promptPerMTok + completionPerMTok) / 1000 + perImage }
}
