import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardResilience

/// A remote or local inference API. Adapters turn a job into the provider's calls and its answer
/// into a `JobOutput`; every failure is a `ProviderError`.
public protocol Provider: Sendable {
    var name: String { get }
    /// Runs a job with `model` (the provider's own name for it).
    func run(_ job: Job, model: String) async throws -> JobOutput
}

/// How to reach one provider. Read from the providers file (JSON); see docs/CONFIGURATION.md.
public struct ProviderConfiguration: Sendable, Codable, Hashable {
    public enum Kind: String, Sendable, Codable, Hashable, ConfigurationChoice {
        /// OpenAI-compatible: OpenRouter, llama.cpp's llama-server, mlx_lm.server, vLLM, Ollama's /v1.
        case openai
        case leonardo
        case runware
    }

    public var name: String
    public var kind: Kind
    /// For example https://openrouter.ai/api/v1, http://127.0.0.1:8080/v1,
    /// https://cloud.leonardo.ai/api/rest/v1, https://api.runware.ai/v1.
    public var baseURL: String
    /// The environment variable that holds the API key.
    public var apiKeyEnv: String?
    /// A file that holds the API key (used when the variable is unset).
    public var apiKeyFile: String?
    public var connectTimeoutMs: Int
    public var timeoutMs: Int
    public var maxAttempts: Int
    /// Use Server-Sent Events for chat (tokens arrive as they are made; the job still gets the whole answer).
    public var stream: Bool
    /// Leonardo: time between polls of a generation, and how long to poll at most.
    public var pollIntervalMs: Int
    public var pollTimeoutMs: Int
    /// Extra headers for every request (OpenRouter's HTTP-Referer and X-Title, say).
    public var headers: [String: String]
    /// The circuit breaker of each of this provider's targets; nil: the file's `breaker`, else
    /// the defaults. Default nil.
    public var breaker: BreakerSettings?
    /// The rate limits of each of this provider's targets (each upstream model its own); nil:
    /// none. Default nil.
    public var rateLimit: RateLimitSettings?
    /// What calls cost, for the estimate each result records; nil: unknown. Default nil.
    public var price: TargetPrice?
    /// `cluster` (the default): the provider is one service that every worker calls, so its
    /// breakers and limits are shared. `worker`: each worker calls its own (a llama.cpp server on
    /// localhost, say), so each worker keeps its own breaker and limits for it.
    public var scope: Scope

    public enum Scope: String, Sendable, Codable, Hashable, ConfigurationChoice {
        case cluster, worker
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, kind
        case baseURL = "base_url"
        case apiKeyEnv = "api_key_env"
        case apiKeyFile = "api_key_file"
        case connectTimeoutMs = "connect_timeout_ms"
        case timeoutMs = "timeout_ms"
        case maxAttempts = "max_attempts"
        case stream
        case pollIntervalMs = "poll_interval_ms"
        case pollTimeoutMs = "poll_timeout_ms"
        case headers, breaker
        case rateLimit = "rate_limit"
        case price, scope
    }

    public init(
        name: String,
        kind: Kind,
        baseURL: String,
        apiKeyEnv: String? = nil,
        apiKeyFile: String? = nil,
        connectTimeoutMs: Int = 10_000,
        timeoutMs: Int = 120_000,
        maxAttempts: Int = 4,
        stream: Bool = false,
        pollIntervalMs: Int = 1_000,
        pollTimeoutMs: Int = 300_000,
        headers: [String: String] = [:],
        breaker: BreakerSettings? = nil,
        rateLimit: RateLimitSettings? = nil,
        price: TargetPrice? = nil,
        scope: Scope = .cluster
    ) {
        self.name = name
        self.kind = kind
        self.baseURL = baseURL
        self.apiKeyEnv = apiKeyEnv
        self.apiKeyFile = apiKeyFile
        self.connectTimeoutMs = connectTimeoutMs
        self.timeoutMs = timeoutMs
        self.maxAttempts = maxAttempts
        self.stream = stream
        self.pollIntervalMs = pollIntervalMs
        self.pollTimeoutMs = pollTimeoutMs
        self.headers = headers
        self.breaker = breaker
        self.rateLimit = rateLimit
        self.price = price
        self.scope = scope
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name),
            kind: try c.decode(Kind.self, forKey: .kind),
            baseURL: try c.decode(String.self, forKey: .baseURL),
            apiKeyEnv: try c.decodeIfPresent(String.self, forKey: .apiKeyEnv),
            apiKeyFile: try c.decodeIfPresent(String.self, forKey: .apiKeyFile),
            connectTimeoutMs: try c.decodeIfPresent(Int.self, forKey: .connectTimeoutMs) ?? 10_000,
            timeoutMs: try c.decodeIfPresent(Int.self, forKey: .timeoutMs) ?? 120_000,
            maxAttempts: try c.decodeIfPresent(Int.self, forKey: .maxAttempts) ?? 4,
            stream: try c.decodeIfPresent(Bool.self, forKey: .stream) ?? false,
            pollIntervalMs: try c.decodeIfPresent(Int.self, forKey: .pollIntervalMs) ?? 1_000,
            pollTimeoutMs: try c.decodeIfPresent(Int.self, forKey: .pollTimeoutMs) ?? 300_000,
            headers: try c.decodeIfPresent([String: String].self, forKey: .headers) ?? [:],
            breaker: try c.decodeIfPresent(BreakerSettings.self, forKey: .breaker),
            rateLimit: try c.decodeIfPresent(RateLimitSettings.self, forKey: .rateLimit),
            price: try c.decodeIfPresent(TargetPrice.self, forKey: .price),
            scope: try c.decodeIfPresent(Scope.self, forKey: .scope) ?? .cluster
        )
    }

    var retryPolicy: RetryPolicy { RetryPolicy(maxAttempts: max(1, maxAttempts)) }
}

/// What adapters share: the pooled client, the key, and JSON over HTTP with errors mapped.
struct ProviderTransport: Sendable {
    let name: String
    let configuration: ProviderConfiguration
    let client: HTTPClient
    let apiKey: Secret?

    func url(_ path: String) -> String {
        configuration.baseURL.hasSuffix("/") ? configuration.baseURL + path.drop(while: { $0 == "/" }) : configuration.baseURL + path
    }

    func request(_ method: String, _ path: String, body: JSONValue? = nil, idempotent: Bool? = nil) -> HTTPRequest {
        var headers: [(name: String, value: String)] = [("Accept", "application/json")]
        if body != nil { headers.append(("Content-Type", "application/json")) }
        if let apiKey { headers.append(("Authorization", "Bearer \(apiKey.reveal())")) }
        for (k, v) in configuration.headers.sorted(by: { $0.key < $1.key }) { headers.append((k, v)) }
        return HTTPRequest(
            method: method,
            url: url(path),
            headers: headers,
            body: body?.jsonBytes,
            connectTimeout: .milliseconds(configuration.connectTimeoutMs),
            timeout: .milliseconds(configuration.timeoutMs),
            idempotent: idempotent
        )
    }

    /// Sends with retries and returns the JSON body of a 2xx answer; anything else is a ProviderError.
    /// Inside a chain (`TargetCall.current`), every attempt is admitted by the target's breaker
    /// and rate limit first, and its outcome recorded.
    func json(_ request: HTTPRequest) async throws -> JSONValue {
        let response: HTTPResponse
        let call = TargetCall.current
        var ticket: TargetCall.Ticket?
        do {
            if let call {
                (response, ticket) = try await call.execute(request, client: client, policy: configuration.retryPolicy)
            } else {
                response = try await client.execute(request, retry: configuration.retryPolicy)
            }
        } catch let error as HTTPClientError {
            throw ProviderError.from(error, provider: name)
        }
        let parsed = try? JSONValue.parse(response.body)
        if let call, let ticket {
            await call.end(ticket, call.outcome(head: response.head, error: nil, invalidResponse: parsed == nil))
        }
        guard (200..<300).contains(response.status) else {
            throw errorFrom(status: response.status, body: parsed, raw: response.body, note: response.giveUpReason, head: response.head)
        }
        guard let parsed else {
            throw ProviderError(
                .invalidResponse,
                "the answer to \(request.method) \(request.redactedURL) is not JSON",
                provider: name,
                status: response.status
            )
        }
        return parsed
    }

    /// The provider's message from an error body, in any of the documented shapes:
    /// {"error": {"message", "code"}}, {"error": "text", "code"}, {"errors": [{"message", "code"}]}.
    /// `head` gives a 429's or 503's `Retry-After` to the error (`ProviderError.retryAfter`).
    func errorFrom(status: Int, body: JSONValue?, raw: [UInt8], note: String? = nil, head: HTTPResponseHead? = nil) -> ProviderError {
        var message: String?
        var code: String?
        if let error = body?["error"] {
            if let text = error.string {
                message = text
                code = body?["code"]?.string
            } else {
                message = error["message"]?.string
                code = error["code"]?.string ?? error["code"]?.integer.map(String.init) ?? error["type"]?.string
            }
        } else if let first = body?["errors"]?.array?.first {
            message = first["message"]?.string
            code = first["code"]?.string
        }
        var text = message ?? String(decoding: raw.prefix(200), as: UTF8.self)
        if let note { text += " (\(note))" }
        var error = ProviderError.from(status: status, message: scrub(text), providerCode: code, provider: name)
        if let head, status == 429 || status == 503 { error.retryAfter = RetryPolicy.retryAfter(head) }
        return error
    }

    /// Providers sometimes echo part of a key in their errors; never pass it on.
    func scrub(_ text: String) -> String {
        guard let key = apiKey?.reveal(), key.count >= 8 else { return text }
        var out = text.replacingOccurrences(of: key, with: "<redacted>")
        for length in stride(from: key.count - 1, through: 8, by: -1) {
            out = out.replacingOccurrences(of: String(key.prefix(length)), with: "<redacted>")
            out = out.replacingOccurrences(of: String(key.suffix(length)), with: "<redacted>")
        }
        return out
    }
}
