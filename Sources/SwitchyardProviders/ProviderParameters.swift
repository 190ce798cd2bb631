import SwitchyardCore

/// Which keys of a job's `parameters` each adapter sends on, checked before any request.
///
/// A job's parameters go into the provider's request body. Unchecked, a job could change what the
/// adapter itself controls (`"stream": true` on a call that reads one JSON answer, another
/// `model`, `n: 50` completions billed for one read), or slip undocumented fields into a paid API's
/// request. A refused key fails the job at once with `unsupported_parameter`, not retried.
enum ProviderParameters {
    /// OpenAI-compatible chat: the documented chat-completions sampling and format parameters,
    /// plus llama.cpp's extras (`top_k`, `min_p`, `repeat_penalty`, `typical_p`, `mirostat*`,
    /// `grammar`, `json_schema`).
    static let openAIChat: Set<String> = [
        "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed", "presence_penalty", "frequency_penalty",
        "logit_bias", "logprobs", "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "user", "n",
        "top_k", "min_p", "repeat_penalty", "typical_p", "grammar", "json_schema",
    ]
    /// llama.cpp's mirostat settings: `mirostat`, `mirostat_mode`, `mirostat_tau`, `mirostat_eta`.
    static let openAIChatPrefix = "mirostat"
    /// What the chat adapter sets itself.
    static let openAIChatOwn: Set<String> = ["model", "messages", "stream", "stream_options"]
    /// Completions per chat request: the adapter reads only the first, so more is cost for nothing
    /// beyond a small number.
    static let openAIChatN = 1...8

    /// OpenAI-compatible image generation: the documented images parameters.
    static let openAIImages: Set<String> = [
        "quality", "style", "response_format", "background", "output_format", "output_compression", "moderation", "user",
    ]
    static let openAIImagesOwn: Set<String> = ["model", "prompt", "n", "size"]

    /// OpenAI-compatible embeddings: the documented embeddings parameters.
    static let openAIEmbeddings: Set<String> = ["dimensions", "encoding_format", "user"]
    static let openAIEmbeddingsOwn: Set<String> = ["model", "input"]

    /// Refuses the first key (in name order) that is the adapter's own or not in `allowed`.
    static func check(
        _ parameters: [String: JSONValue],
        allowed: Set<String>,
        own: Set<String>,
        prefix: String? = nil,
        kind: ProviderConfiguration.Kind,
        jobKind: JobKind,
        provider: String
    ) throws(ProviderError) {
        for key in parameters.keys.sorted() {
            if own.contains(key) {
                throw ProviderError(
                    .unsupportedParameter,
                    "parameter '\(key)' is set by the \(kind.rawValue) adapter itself for \(jobKind.rawValue) jobs and cannot come from parameters",
                    provider: provider
                )
            }
            guard allowed.contains(key) || prefix.map({ key.hasPrefix($0) }) == true else {
                let supported = (allowed.sorted() + (prefix.map { ["\($0)*"] } ?? [])).joined(separator: ", ")
                throw ProviderError(
                    .unsupportedParameter,
                    "parameter '\(key)' is not supported by the \(kind.rawValue) adapter for \(jobKind.rawValue) jobs (supported: \(supported))",
                    provider: provider
                )
            }
        }
    }

    /// The OpenAI-compatible chat check, `n` bounded too.
    static func checkOpenAIChat(_ parameters: [String: JSONValue], provider: String) throws(ProviderError) {
        try check(parameters, allowed: openAIChat, own: openAIChatOwn, prefix: openAIChatPrefix, kind: .openai, jobKind: .chat, provider: provider)
        if let n = parameters["n"], n != .null {
            guard let count = n.integer, openAIChatN.contains(count) else {
                throw ProviderError(
                    .unsupportedParameter,
                    "parameter 'n' must be a whole number from \(openAIChatN.lowerBound) to \(openAIChatN.upperBound) "
                        + "for chat jobs on the openai adapter, got \(n)",
                    provider: provider
                )
            }
        }
    }

    /// Leonardo and Runware pass any other parameter on, but none may replace a field the
    /// adapter set from the job (`own`, the keys of its body).
    static func checkNoOverride(
        _ parameters: [String: JSONValue],
        own: some Collection<String>,
        kind: ProviderConfiguration.Kind,
        provider: String
    ) throws(ProviderError) {
        let own = Set(own)
        if let key = parameters.keys.sorted().first(where: { own.contains($0) }) {
            throw ProviderError(
                .unsupportedParameter,
                "parameter '\(key)' would replace a field the \(kind.rawValue) adapter sets from the job "
                    + "(\(own.sorted().joined(separator: ", "))); set it through the job's own fields",
                provider: provider
            )
        }
    }
}
