import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders

/// Runs jobs on local model servers: the manager lends a warm server for the job's model and the
/// OpenAI-compatible protocol does the rest (llama-server, llama-cpp-python, mlx_lm.server all speak it).
public struct LocalModelExecutor: JobExecutor, WarmModelReporting, CacheTargetReporting {
    public let manager: ModelServerManager
    private let client: HTTPClient

    public init(manager: ModelServerManager, client: HTTPClient) {
        self.manager = manager
        self.client = client
    }

    public func warmModels() async -> [String] { await manager.warmModels }

    public var modelCacheSize: Int { manager.profile.modelCacheSize }

    public var slotsPerServer: Int { manager.profile.parallel }

    /// The catalog model and its file's identity (path, size, modification time), so a new
    /// model file is a new cache key; nil for a model not in the catalog.
    public func cacheTTL(for job: Job) -> Double? { manager.catalog.models[job.model]?.cacheTTL }

    public func cacheTarget(for job: Job) -> String? {
        guard let entry = manager.catalog.models[job.model] else { return nil }
        let attributes = try? FileManager.default.attributesOfItem(atPath: entry.file)
        let size = (attributes?[.size] as? NSNumber)?.int64Value ?? -1
        let modified = (attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        // Everything the server is started with can change its answers.
        let command = (entry.command ?? manager.profile.serverCommand) + entry.extraArguments
        let settings =
            "ctx=\(entry.contextSize) gpu=\(manager.profile.gpuLayers) batch=\(manager.profile.batchSize) parallel=\(manager.profile.parallel) cmd=\(command.joined(separator: " "))"
        return "local:\(job.model)@\(entry.file) \(size) \(Int64(modified * 1000)) \(settings)"
    }

    public func execute(_ job: Job, context: JobContext) async throws -> JobOutput {
        do {
            return try await manager.withServer(job.model) { lease in
                let configuration = ProviderConfiguration(name: "local:\(job.model)", kind: .openai, baseURL: lease.baseURL, maxAttempts: 2)
                return try await OpenAICompatibleProvider(configuration: configuration, client: client, apiKey: nil).run(job, model: job.model)
            }
        } catch let error as ModelServerError {
            throw JobFailure(code: error.cannotFit ? "model_cannot_fit" : "model_server", message: error.description, retryable: error.retryable)
        } catch let error as ProviderError {
            // A server that crashed mid-request shows up here; it is restarted on next use.
            throw error.jobFailure
        }
    }
}
