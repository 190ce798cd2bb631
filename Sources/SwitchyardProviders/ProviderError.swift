import SwitchyardCore
import SwitchyardHTTP

/// Every provider failure in one shape: which provider, the HTTP status if there was one, the
/// provider's own message and code, and whether trying again can help.
public struct ProviderError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case configuration, authentication, badRequest, rateLimited, unavailable, transport, invalidResponse, failed, timeout
            case responseTooLarge, eventTooLarge, unsupportedParameter
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        public static var configuration: Self { .init(.configuration) }
        /// 401/403: the key is wrong or lacks access.
        public static var authentication: Self { .init(.authentication) }
        /// 400/404/422: the request itself is wrong; retrying cannot help.
        public static var badRequest: Self { .init(.badRequest) }
        /// 429 after the retry policy gave up.
        public static var rateLimited: Self { .init(.rateLimited) }
        /// 5xx after the retry policy gave up.
        public static var unavailable: Self { .init(.unavailable) }
        /// The connection failed.
        public static var transport: Self { .init(.transport) }
        /// The provider answered with something that is not its documented shape.
        public static var invalidResponse: Self { .init(.invalidResponse) }
        /// The provider reported the work itself failed (a FAILED generation, an error event mid-stream).
        public static var failed: Self { .init(.failed) }
        /// Polling ran out of time.
        public static var timeout: Self { .init(.timeout) }
        /// The answer's body passed the HTTP client's `maxResponseBodyBytes`; the same request
        /// would get the same answer, so it is not retried.
        public static var responseTooLarge: Self { .init(.responseTooLarge) }
        /// One Server-Sent Events line or event passed the client's `maxEventBytes`; not retried.
        public static var eventTooLarge: Self { .init(.eventTooLarge) }
        /// The job's `parameters` hold a key the adapter does not send (or sets itself); found
        /// before any request, not retried. Its job code is `unsupported_parameter`.
        public static var unsupportedParameter: Self { .init(.unsupportedParameter) }

        public var description: String { value.rawValue }

        /// The code in snake_case, as job results show it (`provider_rate_limited`).
        public var snakeCase: String {
            value.rawValue.reduce(into: "") { out, c in
                if c.isUppercase {
                    out += "_" + c.lowercased()
                } else {
                    out.append(c)
                }
            }
        }
    }

    public let code: Code
    public let message: String
    public let provider: String?
    public let status: Int?
    /// The provider's own error code (`invalid_api_key`, `invalidApiKey`, ...).
    public let providerCode: String?
    /// How long a 429 or 503 asked to be left alone (`retry-after-ms` or `Retry-After`), when
    /// the HTTP layer's retries gave up before that: the queue schedules the job's next attempt
    /// no earlier. Nil when the answer asked nothing.
    public var retryAfter: Duration?

    public init(_ code: Code, _ message: String, provider: String?, status: Int? = nil, providerCode: String? = nil) {
        self.code = code
        self.message = message
        self.provider = provider
        self.status = status
        self.providerCode = providerCode
    }

    public var retryable: Bool {
        [Code.rateLimited, .unavailable, .transport, .invalidResponse, .timeout, .failed].contains(code)
    }

    public var description: String {
        var parts = ["\(provider ?? "provider") \(code)"]
        if let status { parts.append("HTTP \(status)") }
        if let providerCode { parts.append(providerCode) }
        return parts.joined(separator: ", ") + ": " + message
    }

    /// The job-level failure for this error.
    public var jobFailure: JobFailure {
        // A refused parameter is the job's fault, not the provider's: its code says so.
        let jobCode = code == .unsupportedParameter ? "unsupported_parameter" : "provider_\(code.snakeCase)"
        return JobFailure(code: jobCode, message: description, retryable: retryable, retryAfter: retryable ? retryAfter : nil)
    }

    /// Classifies an HTTP error status, with the provider's message.
    static func from(status: Int, message: String, providerCode: String?, provider: String) -> ProviderError {
        let code: Code
        switch status {
        case 401, 403: code = .authentication
        case 408: code = .timeout
        case 429: code = .rateLimited
        case 501: code = .badRequest  // not implemented here: retrying cannot help
        case 500...599: code = .unavailable
        default: code = .badRequest
        }
        return ProviderError(code, message, provider: provider, status: status, providerCode: providerCode)
    }

    static func from(_ error: HTTPClientError, provider: String) -> ProviderError {
        switch error.code {
        case .timeout:
            return ProviderError(.timeout, error.message, provider: provider)
        case .responseTooLarge:
            return ProviderError(
                .responseTooLarge,
                error.message + " (the providers file's http.max_response_bytes sets the limit)",
                provider: provider
            )
        case .eventTooLarge:
            return ProviderError(.eventTooLarge, error.message + " (the providers file's http.max_event_bytes sets the limit)", provider: provider)
        default:
            return ProviderError(.transport, error.message, provider: provider)
        }
    }
}
