import Foundation
import SwitchyardCore
import SwitchyardHTTP

/// The providers file: which providers exist and which one serves each model.
///
/// ```json
/// {"providers": [{"name": "openrouter", "kind": "openai", "base_url": "https://openrouter.ai/api/v1",
///                 "api_key_env": "OPENROUTER_API_KEY"}],
///  "models": {"qwen3-30b": {"provider": "openrouter", "model": "qwen/qwen3-30b-a3b", "routes": ["local"]}},
///  "default_provider": "openrouter", "allow_routes": false}
/// ```
public struct ProvidersFile: Sendable, Codable {
    public struct ModelRoute: Sendable, Codable, Hashable {
        public var provider: String
        /// The provider's own name for the model; the job's model name when absent.
        public var model: String?
        /// The providers a job for this model may name in its `route`; when absent, the file's
        /// `allow_routes` decides.
        public var routes: [String]?
        /// How long the response cache keeps this model's answers, in seconds; absent: the
        /// worker's `--cache-ttl`.
        public var cacheTTL: Double?

        enum CodingKeys: String, CodingKey {
            case provider, model, routes
            case cacheTTL = "cache_ttl"
        }

        public init(provider: String, model: String? = nil, routes: [String]? = nil, cacheTTL: Double? = nil) {
            self.provider = provider
            self.model = model
            self.routes = routes
            self.cacheTTL = cacheTTL
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

    enum CodingKeys: String, CodingKey, CaseIterable {
        case providers, models
        case defaultProvider = "default_provider"
        case http
        case allowRoutes = "allow_routes"
    }

    static let schema = FieldSchema.object([
        "providers": .array(.fields(ProviderConfiguration.CodingKeys.self, except: ["headers": .map(.any)])),
        "models": .map(.object(["provider": .any, "model": .any, "routes": .any, "cache_ttl": .any])),
        "default_provider": .any,
        "http": .fields(HTTPSettings.CodingKeys.self),
        "allow_routes": .any,
    ])

    public init(
        providers: [ProviderConfiguration],
        models: [String: ModelRoute] = [:],
        defaultProvider: String? = nil,
        http: HTTPSettings? = nil,
        allowRoutes: AllowRoutes = .never
    ) {
        self.providers = providers
        self.models = models
        self.defaultProvider = defaultProvider
        self.http = http
        self.allowRoutes = allowRoutes
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        providers = try c.decode([ProviderConfiguration].self, forKey: .providers)
        models = try c.decodeIfPresent([String: ModelRoute].self, forKey: .models) ?? [:]
        defaultProvider = try c.decodeIfPresent(String.self, forKey: .defaultProvider)
        http = try c.decodeIfPresent(HTTPSettings.self, forKey: .http)
        allowRoutes = try c.decodeIfPresent(AllowRoutes.self, forKey: .allowRoutes) ?? .never
    }

    /// The provider a job for `model` goes to when it names no route.
    public func provider(forModel model: String) -> String? {
        models[model]?.provider ?? defaultProvider
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
            return try schema.decode(ProvidersFile.self, from: data)
        } catch let error as ConfigurationError {
            let field = error.field.isEmpty ? "" : "field '\(error.field)' "
            throw ProviderError(.configuration, "\(path): \(field)\(error.problem)", provider: nil)
        }
    }
}

/// Runs jobs on the configured providers: picks the provider for the job's route or model,
/// and turns provider errors into job failures (retryable or not).
public struct ProviderExecutor: JobExecutor {
    private let providers: [String: any Provider]
    private let file: ProvidersFile

    public init(file: ProvidersFile, client: HTTPClient, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        var built: [String: any Provider] = [:]
        for configuration in file.providers {
            guard built[configuration.name] == nil else {
                throw ProviderError(.configuration, "provider '\(configuration.name)' is defined twice", provider: nil)
            }
            let key = try Secret.load(environmentVariable: configuration.apiKeyEnv, file: configuration.apiKeyFile, environment: environment)
            switch configuration.kind {
            case .openai: built[configuration.name] = OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: key)
            case .leonardo: built[configuration.name] = LeonardoProvider(configuration: configuration, client: client, apiKey: key)
            case .runware: built[configuration.name] = RunwareProvider(configuration: configuration, client: client, apiKey: key)
            }
        }
        for (model, route) in file.models where built[route.provider] == nil {
            throw ProviderError(.configuration, "model '\(model)' routes to unknown provider '\(route.provider)'", provider: nil)
        }
        if let name = file.defaultProvider, built[name] == nil {
            throw ProviderError(.configuration, "default_provider '\(name)' is not defined", provider: nil)
        }
        for model in file.models.keys.sorted() {
            for (i, name) in (file.models[model]?.routes ?? []).enumerated() where built[name] == nil {
                throw ProviderError(.configuration, "field 'models.\(model).routes[\(i)]': provider '\(name)' is not defined", provider: nil)
            }
        }
        if case .only(let names) = file.allowRoutes {
            for (i, name) in names.enumerated() where built[name] == nil {
                throw ProviderError(.configuration, "field 'allow_routes[\(i)]': provider '\(name)' is not defined", provider: nil)
            }
        }
        self.providers = built
        self.file = file
    }

    public func execute(_ job: Job, context: JobContext) async throws -> JobOutput {
        if let requested = job.route, let refusal = file.routeRefusal(requested, model: job.model) {
            throw JobFailure(
                code: "route_not_allowed",
                message: "route '\(requested)' is not allowed for model '\(job.model)': \(refusal)",
                retryable: false
            )
        }
        let route = file.models[job.model]
        let providerName = job.route ?? route?.provider ?? file.defaultProvider
        guard let providerName, let provider = providers[providerName] else {
            throw JobFailure(
                code: "no_provider",
                message: "no provider serves model '\(job.model)'\(job.route.map { " (route '\($0)' is not configured)" } ?? "")",
                retryable: false
            )
        }
        do {
            // The catalog's provider-side name applies only when the job goes to that provider.
            let providerModel = route?.provider == providerName ? (route?.model ?? job.model) : job.model
            return try await provider.run(job, model: providerModel)
        } catch let error as ProviderError {
            throw error.jobFailure
        }
    }
}

extension ProviderExecutor: CacheTargetReporting {
    /// The provider a job goes to and the model name it is sent, as `execute` picks them; nil
    /// when the job cannot run (it fails at once, with nothing to cache).
    public func cacheTarget(for job: Job) -> String? {
        if let requested = job.route, file.routeRefusal(requested, model: job.model) != nil { return nil }
        let route = file.models[job.model]
        guard let providerName = job.route ?? route?.provider ?? file.defaultProvider, providers[providerName] != nil else { return nil }
        let providerModel = route?.provider == providerName ? (route?.model ?? job.model) : job.model
        return "provider:\(providerName)/\(providerModel)"
    }

    public func cacheTTL(for job: Job) -> Double? { file.models[job.model]?.cacheTTL }
}
