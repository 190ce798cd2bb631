import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardResilience

/// The providers file: which providers exist and which serve each model, in what order.
///
/// ```json
/// {"providers": [{"name": "openrouter", "kind": "openai", "base_url": "https://openrouter.ai/api/v1",
///                 "api_key_env": "OPENROUTER_API_KEY", "rate_limit": {"requests": 500}}],
///  "models": {"qwen3-30b": {"provider": "openrouter", "model": "qwen/qwen3-30b-a3b", "routes": ["local"]},
///             "chat": {"targets": [{"provider": "local", "model": "tiny"},
///                                  {"provider": "openrouter", "model": "qwen/qwen3-30b-a3b"}]}},
///  "default_provider": "openrouter", "allow_routes": false, "breaker": {"wait_ms": 10000}}
/// ```
public struct ProvidersFile: Sendable, Codable {
    /// One target of a model's chain: a provider and its name for the model, with settings of
    /// its own that replace the provider's.
    public struct ChainTarget: Sendable, Codable, Hashable {
        public var provider: String
        /// The provider's own name for the model; the job's model name when absent.
        public var model: String?
        public var breaker: BreakerSettings?
        public var rateLimit: RateLimitSettings?
        public var price: TargetPrice?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case provider, model, breaker
            case rateLimit = "rate_limit"
            case price
        }

        public init(
            provider: String,
            model: String? = nil,
            breaker: BreakerSettings? = nil,
            rateLimit: RateLimitSettings? = nil,
            price: TargetPrice? = nil
        ) {
            self.provider = provider
            self.model = model
            self.breaker = breaker
            self.rateLimit = rateLimit
            self.price = price
        }
    }

    /// How a chain's targets are tried.
    public enum ChainOrder: String, Sendable, Codable, Hashable {
        /// As listed (the default); targets whose breaker is open are passed over.
        case listed
        /// Healthiest first: closed breakers before half-open ones before open ones, then as listed.
        case health
        /// Cheapest first by `price` (targets without one last), then as listed.
        case cost
    }

    public struct ModelRoute: Sendable, Codable, Hashable {
        /// The one provider that serves the model (or give `targets`).
        public var provider: String?
        /// The provider's own name for the model; the job's model name when absent.
        public var model: String?
        /// The model's chain: targets tried in `order` until one answers. An open breaker, an
        /// exhausted rate limit or a retryable failure moves on to the next; a request error does not.
        public var targets: [ChainTarget]?
        /// Default `listed`.
        public var order: ChainOrder?
        /// The providers a job for this model may name in its `route`; when absent, the file's
        /// `allow_routes` decides.
        public var routes: [String]?
        /// How long the response cache keeps this model's answers, in seconds; absent: the
        /// worker's `--cache-ttl`.
        public var cacheTTL: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case provider, model, routes, targets, order
            case cacheTTL = "cache_ttl"
        }

        public init(
            provider: String? = nil,
            model: String? = nil,
            routes: [String]? = nil,
            cacheTTL: Double? = nil,
            targets: [ChainTarget]? = nil,
            order: ChainOrder? = nil
        ) {
            self.provider = provider
            self.model = model
            self.routes = routes
            self.cacheTTL = cacheTTL
            self.targets = targets
            self.order = order
        }

        /// The chain: `targets`, or the one `provider`.
        public var chain: [ChainTarget] {
            if let targets { return targets }
            return provider.map { [ChainTarget(provider: $0, model: model)] } ?? []
        }
    }

    /// Which providers a job's `route` may name, for models without a `routes` list of their own:
    /// `false` (the default) none, `true` any configured provider, or a list of names.
    public enum AllowRoutes: Sendable, Codable, Hashable {
        case never
        case any
        case only([String])

        public init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let allowed = try? c.decode(Bool.self) {
                self = allowed ? .any : .never
            } else if let names = try? c.decode([String].self) {
                self = .only(names)
            } else {
                throw DecodingError.typeMismatch(
                    AllowRoutes.self,
                    .init(codingPath: decoder.codingPath, debugDescription: "expected true, false or an array of provider names")
                )
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .never: try c.encode(false)
            case .any: try c.encode(true)
            case .only(let names): try c.encode(names)
            }
        }
    }

    /// How the worker's pooled HTTP client connects to every provider.
    public struct HTTPSettings: Sendable, Codable, Hashable {
        public var maxConnectionsPerHost: Int?
        public var maxConnections: Int?
        public var http2: Bool?
        /// A PEM bundle to trust instead of the system's (a corporate proxy's CA, say).
        public var caFile: String?
        /// The most bytes of one response body, after decoding (`maxResponseBodyBytes`, 64 MiB by default).
        public var maxResponseBytes: Int?
        /// The most bytes of one Server-Sent Events line or event (`maxEventBytes`, 1 MiB by default).
        public var maxEventBytes: Int?

        /// The smallest byte limit accepted: below it, a value is more likely a mistaken unit
        /// (kilobytes, megabytes) than a real limit.
        public static let smallestByteLimit = 1024

        enum CodingKeys: String, CodingKey, CaseIterable {
            case maxConnectionsPerHost = "max_connections_per_host"
            case maxConnections = "max_connections"
            case http2
            case caFile = "ca_file"
            case maxResponseBytes = "max_response_bytes"
            case maxEventBytes = "max_event_bytes"
        }

        public init(
            maxConnectionsPerHost: Int? = nil,
            maxConnections: Int? = nil,
            http2: Bool? = nil,
            caFile: String? = nil,
            maxResponseBytes: Int? = nil,
            maxEventBytes: Int? = nil
        ) {
            self.maxConnectionsPerHost = maxConnectionsPerHost
            self.maxConnections = maxConnections
            self.http2 = http2
            self.caFile = caFile
            self.maxResponseBytes = maxResponseBytes
            self.maxEventBytes = maxEventBytes
        }

        /// The client configuration these settings give; a value out of range is an error naming it.
        public func clientConfiguration() throws -> HTTPClientConfiguration {
            var configuration = HTTPClientConfiguration()
            if let n = maxConnectionsPerHost {
                guard n >= 1 else { throw ProviderError(.configuration, "field 'http.max_connections_per_host' must be at least 1", provider: nil) }
                configuration.maxConnectionsPerHost = n
            }
            if let n = maxConnections {
                guard n >= 1 else { throw ProviderError(.configuration, "field 'http.max_connections' must be at least 1", provider: nil) }
                configuration.maxConnections = n
                configuration.connectionCacheSize = max(configuration.connectionCacheSize, n)
            }
            if configuration.maxConnectionsPerHost > configuration.maxConnections {
                throw ProviderError(
                    .configuration,
                    "field 'http.max_connections_per_host' (\(configuration.maxConnectionsPerHost)) is more than http.max_connections (\(configuration.maxConnections))",
                    provider: nil
                )
            }
            if let http2 { configuration.http2 = http2 }
            if let caFile {
                guard FileManager.default.isReadableFile(atPath: caFile) else {
                    throw ProviderError(.configuration, "field 'http.ca_file': cannot read \(caFile)", provider: nil)
                }
                configuration.caFile = caFile
            }
            for (field, value) in [("max_response_bytes", maxResponseBytes), ("max_event_bytes", maxEventBytes)] {
                guard let value else { continue }
                guard value >= Self.smallestByteLimit else {
                    throw ProviderError(
                        .configuration,
                        "field 'http.\(field)' must be at least \(Self.smallestByteLimit) (a number of bytes), got \(value)",
                        provider: nil
                    )
                }
            }
            if let maxResponseBytes { configuration.maxResponseBodyBytes = maxResponseBytes }
            if let maxEventBytes { configuration.maxEventBytes = maxEventBytes }
            return configuration
        }
    }

    public var providers: [ProviderConfiguration]
    public var models: [String: ModelRoute]
    public var defaultProvider: String?
    public var http: HTTPSettings?
    /// Which providers a job's `route` may name when its model has no `routes` list. A job's
    /// route is refused unless the file allows it.
    public var allowRoutes: AllowRoutes
    /// The circuit breaker of every target whose provider and chain entry set none; nil: the
    /// defaults (`BreakerSettings()`). Default nil.
    public var breaker: BreakerSettings?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case providers, models
        case defaultProvider = "default_provider"
        case http
        case allowRoutes = "allow_routes"
        case breaker
    }

    static let schema = FieldSchema.object([
        "providers": .array(
            .fields(
                ProviderConfiguration.CodingKeys.self,
                except: [
                    "headers": .map(.any), "breaker": BreakerSettings.schema, "rate_limit": RateLimitSettings.schema, "price": TargetPrice.schema,
                ]
            )
        ),
        "models": .map(
            .fields(
                ModelRoute.CodingKeys.self,
                except: [
                    "targets": .array(
                        .fields(
                            ChainTarget.CodingKeys.self,
                            except: ["breaker": BreakerSettings.schema, "rate_limit": RateLimitSettings.schema, "price": TargetPrice.schema]
                        )
                    )
                ]
            )
        ),
        "default_provider": .any,
        "http": .fields(HTTPSettings.CodingKeys.self),
        "allow_routes": .any,
        "breaker": BreakerSettings.schema,
    ])

    public init(
        providers: [ProviderConfiguration],
        models: [String: ModelRoute] = [:],
        defaultProvider: String? = nil,
        http: HTTPSettings? = nil,
        allowRoutes: AllowRoutes = .never,
        breaker: BreakerSettings? = nil
    ) {
        self.providers = providers
        self.models = models
        self.defaultProvider = defaultProvider
        self.http = http
        self.allowRoutes = allowRoutes
        self.breaker = breaker
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        providers = try c.decode([ProviderConfiguration].self, forKey: .providers)
        models = try c.decodeIfPresent([String: ModelRoute].self, forKey: .models) ?? [:]
        defaultProvider = try c.decodeIfPresent(String.self, forKey: .defaultProvider)
        http = try c.decodeIfPresent(HTTPSettings.self, forKey: .http)
        allowRoutes = try c.decodeIfPresent(AllowRoutes.self, forKey: .allowRoutes) ?? .never
        breaker = try c.decodeIfPresent(BreakerSettings.self, forKey: .breaker)
    }

    /// The provider a job for `model` goes to first when it names no route.
    public func provider(forModel model: String) -> String? {
        models[model]?.chain.first?.provider ?? defaultProvider
    }

    /// Checks what the decoder cannot: every model has a provider or targets (not both), and
    /// every breaker, rate limit and price is in range. The error names the field.
    public func validate() throws {
        try breaker?.validate(path: "breaker")
        if providers.isEmpty { throw ConfigurationError(field: "providers", problem: "is empty: name at least one provider") }
        var names: [String: Int] = [:]
        for (i, provider) in providers.enumerated() {
            let path = "providers[\(i)]"
            if let first = names[provider.name] {
                throw ConfigurationError(field: path + ".name", problem: "'\(provider.name)' is already the name of providers[\(first)]")
            }
            names[provider.name] = i
            let scheme = provider.baseURL.split(separator: ":", maxSplits: 1).first.map { $0.lowercased() } ?? ""
            guard scheme == "http" || scheme == "https", provider.baseURL.contains("://"), provider.baseURL.count > scheme.count + 3 else {
                throw ConfigurationError(
                    field: path + ".base_url",
                    // Only the scheme: a URL can carry a password.
                    problem: provider.baseURL.contains("://")
                        ? "must be an http:// or https:// URL, not \(scheme)://…" : "must be an http:// or https:// URL"
                )
            }
            guard (1...20).contains(provider.maxAttempts) else {
                throw ConfigurationError(field: path + ".max_attempts", problem: "must be 1 to 20, got \(provider.maxAttempts)")
            }
            for (field, value) in [
                ("connect_timeout_ms", provider.connectTimeoutMs), ("timeout_ms", provider.timeoutMs), ("poll_interval_ms", provider.pollIntervalMs),
                ("poll_timeout_ms", provider.pollTimeoutMs),
            ] where value < 1 {
                throw ConfigurationError(field: path + "." + field, problem: "must be at least 1 ms, got \(value)")
            }
            try provider.breaker?.validate(path: "providers[\(i)].breaker")
            try provider.rateLimit?.validate(path: "providers[\(i)].rate_limit")
            try provider.price?.validate(path: "providers[\(i)].price")
        }
        for name in models.keys.sorted() {
            let route = models[name]!
            switch (route.provider, route.targets) {
            case (nil, nil):
                throw ConfigurationError(field: "models.\(name)", problem: "needs provider or targets")
            case (.some, .some):
                throw ConfigurationError(field: "models.\(name)", problem: "has both provider and targets: give one")
            case (nil, .some(let targets)):
                if targets.isEmpty { throw ConfigurationError(field: "models.\(name).targets", problem: "is empty") }
                if route.model != nil {
                    throw ConfigurationError(field: "models.\(name).model", problem: "goes on each of targets, not beside them")
                }
                var seen: Set<String> = []
                for (i, target) in targets.enumerated() {
                    let path = "models.\(name).targets[\(i)]"
                    let key = target.provider + "/" + (target.model ?? name)
                    guard seen.insert(key).inserted else { throw ConfigurationError(field: path, problem: "\(key) is in the chain twice") }
                    try target.breaker?.validate(path: path + ".breaker")
                    try target.rateLimit?.validate(path: path + ".rate_limit")
                    try target.price?.validate(path: path + ".price")
                }
            case (.some, nil):
                break
            }
        }
    }

    /// Why a job for `model` may not name `route`, or nil when it may: the model's `routes`
    /// list, else `allow_routes`, must name it. A route to the provider the job would go to
    /// anyway changes nothing and is always allowed.
    public func routeRefusal(_ route: String, model: String) -> String? {
        if route == provider(forModel: model) { return nil }
        if let list = models[model]?.routes {
            if list.contains(route) { return nil }
            return list.isEmpty
                ? "models.\(model).routes allows none" : "models.\(model).routes allows only \(list.joined(separator: ", "))"
        }
        switch allowRoutes {
        case .any: return nil
        case .only(let names):
            if names.contains(route) { return nil }
            return names.isEmpty ? "allow_routes allows none" : "allow_routes allows only \(names.joined(separator: ", "))"
        case .never:
            return "the providers file allows no routes for it (see models.<model>.routes and allow_routes)"
        }
    }

    public static func load(path: String) throws -> ProvidersFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ProviderError(.configuration, "cannot read the providers file \(path)", provider: nil)
        }
        do {
            let file = try schema.decode(ProvidersFile.self, from: data)
            try file.validate()
            return file
        } catch let error as ConfigurationError {
            let field = error.field.isEmpty ? "" : "field '\(error.field)' "
            throw ProviderError(.configuration, "\(path): \(field)\(error.problem)", provider: nil)
        }
    }
}
