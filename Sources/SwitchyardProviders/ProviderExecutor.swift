import CoreMetrics
import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardResilience

/// Runs jobs on the configured providers, along each model's chain of targets: the job goes to
/// the first target whose breaker lets it through and whose rate limit has room; a retryable
/// failure moves it on to the next target, a request error ends it (`ProviderExecutor+Chain`).
/// Provider errors become job failures, retryable or not.
///
/// Without `resilience` (tests, tools) targets have no breakers or limits and a chain only falls
/// through on failures.
public struct ProviderExecutor: JobExecutor {
    let providers: [String: any Provider]
    let configurations: [String: ProviderConfiguration]
    let file: ProvidersFile
    let resilience: Resilience?
    /// Where target calls are measured (`TargetCall`); nil: nowhere.
    let metrics: (any MetricsFactory)?

    public init(
        file: ProvidersFile,
        client: HTTPClient,
        environment: [String: String] = ProcessInfo.processInfo.environment,
        resilience: Resilience? = nil,
        metrics: (any MetricsFactory)? = nil
    ) throws {
        var built: [String: any Provider] = [:]
        var configurations: [String: ProviderConfiguration] = [:]
        for configuration in file.providers {
            guard built[configuration.name] == nil else {
                throw ProviderError(.configuration, "provider '\(configuration.name)' is defined twice", provider: nil)
            }
            let key = try Self.apiKey(of: configuration, environment: environment)
            switch configuration.kind {
            case .openai: built[configuration.name] = OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: key)
            case .leonardo: built[configuration.name] = LeonardoProvider(configuration: configuration, client: client, apiKey: key)
            case .runware: built[configuration.name] = RunwareProvider(configuration: configuration, client: client, apiKey: key)
            }
            configurations[configuration.name] = configuration
        }
        for model in file.models.keys.sorted() {
            let route = file.models[model]!
            if let provider = route.provider, built[provider] == nil {
                throw ProviderError(.configuration, "model '\(model)' routes to unknown provider '\(provider)'", provider: nil)
            }
            for (i, target) in (route.targets ?? []).enumerated() where built[target.provider] == nil {
                throw ProviderError(
                    .configuration,
                    "field 'models.\(model).targets[\(i)].provider': provider '\(target.provider)' is not defined",
                    provider: nil
                )
            }
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
        self.configurations = configurations
        self.file = file
        self.resilience = resilience
        self.metrics = metrics
        // The board keeps local copies of every shared target it knows of, re-read after each
        // subscription; targets of worker-scoped providers are known only with a worker id.
        resilience?.breakers.register(sharedTargets)
    }

    /// Every target of the file's chains whose breaker and limits the cluster shares.
    public var sharedTargets: [ResilienceTarget] { file.sharedTargets }

    public func execute(_ job: Job, context: JobContext) async throws -> JobOutput {
        try await runChain(job, context: context)
    }
}

extension ProviderExecutor: CacheTargetReporting {
    /// The targets a job may go to and the model names they are sent, in chain order; nil
    /// when the job cannot run (it fails at once, with nothing to cache). An answer from any
    /// target of the chain answers the job.
    public func cacheTarget(for job: Job) -> String? {
        guard let chain = try? chain(for: job), !chain.isEmpty else { return nil }
        let names = chain.map { "\($0.provider)/\($0.model ?? job.model)" }
        return "provider:" + names.joined(separator: ",")
    }

    public func cacheTTL(for job: Job) -> Double? { file.models[job.model]?.cacheTTL }

    /// The provider's API key; the error names the provider (a file with several must say whose).
    static func apiKey(of configuration: ProviderConfiguration, environment: [String: String]) throws -> Secret? {
        do {
            return try Secret.load(environmentVariable: configuration.apiKeyEnv, file: configuration.apiKeyFile, environment: environment)
        } catch {
            throw ProviderError(.configuration, "provider '\(configuration.name)': \(error.message)", provider: configuration.name)
        }
    }
}
