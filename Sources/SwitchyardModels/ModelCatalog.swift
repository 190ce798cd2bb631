import Foundation
import SwitchyardCore

/// The models a worker may run locally. Jobs name a model from here and nothing else: a job can
/// never choose a file, a command or an argument.
public struct ModelCatalog: Sendable, Codable {
    public struct Entry: Sendable, Codable, Hashable {
        public enum Framework: String, Sendable, Codable, Hashable {
            /// llama.cpp's llama-server: /health answers 503 while loading, 200 when ready.
            case llamaCpp = "llama.cpp"
            /// mlx_lm.server: answers before its model is loaded, so readiness is a real /v1/models answer.
            case mlx
            /// llama-cpp-python's server: opens its port once the model is loaded.
            case llamaCppPython = "llama-cpp-python"
            /// Any OpenAI-compatible server started by `command`.
            case openAICompatible = "openai-compatible"
        }

        /// The model file (GGUF) or id the server loads.
        public var file: String
        public var framework: Framework
        /// Memory the loaded model needs, in MiB (for the memory budget).
        public var memoryMB: Int
        public var contextSize: Int
        /// Extra arguments appended to the profile's command.
        public var extraArguments: [String]
        /// A command of its own (argv template), instead of the profile's.
        public var command: [String]?
        /// How long the response cache keeps this model's answers, in seconds; nil: the worker's
        /// `--cache-ttl`.
        public var cacheTTL: Double?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case file, framework
            case memoryMB = "memory_mb"
            case contextSize = "context_size"
            case extraArguments = "extra_arguments"
            case command
            case cacheTTL = "cache_ttl"
        }

        public init(
            file: String,
            framework: Framework,
            memoryMB: Int,
            contextSize: Int = 2048,
            extraArguments: [String] = [],
            command: [String]? = nil,
            cacheTTL: Double? = nil
        ) {
            self.file = file
            self.framework = framework
            self.memoryMB = memoryMB
            self.contextSize = contextSize
            self.extraArguments = extraArguments
            self.command = command
            self.cacheTTL = cacheTTL
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                file: try c.decode(String.self, forKey: .file),
                framework: try c.decode(Framework.self, forKey: .framework),
                memoryMB: try c.decode(Int.self, forKey: .memoryMB),
                contextSize: try c.decodeIfPresent(Int.self, forKey: .contextSize) ?? 2048,
                extraArguments: try c.decodeIfPresent([String].self, forKey: .extraArguments) ?? [],
                command: try c.decodeIfPresent([String].self, forKey: .command),
                cacheTTL: try c.decodeIfPresent(Double.self, forKey: .cacheTTL)
            )
        }
    }

    public var models: [String: Entry]
    /// Models never evicted (kept warm once loaded).
    public var pinned: [String]

    public init(models: [String: Entry], pinned: [String] = []) {
        self.models = models
        self.pinned = pinned
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        models = try c.decode([String: Entry].self, forKey: .models)
        pinned = try c.decodeIfPresent([String].self, forKey: .pinned) ?? []
    }

    enum CodingKeys: String, CodingKey, CaseIterable { case models, pinned }

    static let schema = FieldSchema.fields(CodingKeys.self, except: ["models": .map(.fields(Entry.CodingKeys.self))])

    public static func load(path: String) throws -> ModelCatalog {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigurationError(field: "models file", problem: "cannot read \(path)")
        }
        let catalog = try schema.decode(
            ModelCatalog.self,
            from: data,
            unknownFieldHint: "a catalog has models and pinned; a model has \(Entry.CodingKeys.allCases.map(\.stringValue).joined(separator: ", "))"
        )
        for name in catalog.pinned where catalog.models[name] == nil {
            throw ConfigurationError(field: "pinned", problem: "'\(name)' is not in models")
        }
        for (name, entry) in catalog.models where entry.memoryMB < 1 {
            throw ConfigurationError(field: "models.\(name).memory_mb", problem: "must be at least 1")
        }
        return catalog
    }
}
