import Foundation

/// When and how long to wait before sending a failed request again.
///
/// Retried: connection failures, 408, 409 (lock conflict), 429 and 5xx, with exponential backoff
/// and full jitter, capped; a `Retry-After` (seconds or an HTTP date) or `retry-after-ms` header
/// sets the wait instead, unless it is longer than `maxRetryAfter`, in which case the policy
/// gives up and says so.
///
/// Requests that may already have reached the provider: a response with one of the statuses
/// above is the provider saying the work was not done, so it is retried for every request (as the
/// official OpenAI clients do). A transport failure after the request was sent (a timeout waiting
/// for the answer, a connection reset mid-response) is retried only for idempotent requests;
/// for the rest the error goes up to the job, whose own attempt limit decides.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var base: Duration
    public var cap: Duration
    /// The longest server-requested wait that is honoured.
    public var maxRetryAfter: Duration

    public init(maxAttempts: Int = 4, base: Duration = .milliseconds(500), cap: Duration = .seconds(20), maxRetryAfter: Duration = .seconds(60)) {
        self.maxAttempts = maxAttempts
        self.base = base
        self.cap = cap
        self.maxRetryAfter = maxRetryAfter
    }

    public enum Decision: Sendable, Equatable {
        case retry(after: Duration)
        case giveUp(reason: String)
        /// The outcome is final (a success, or an error that retrying cannot fix).
        case done
    }

    public static let retriedStatuses: Set<Int> = [408, 409, 429, 500, 502, 503, 504]

    /// The decision after attempt `attempt` (1-based) ended with `response` or `error`.
    public func decide(
        attempt: Int,
        request: HTTPRequest,
        response: HTTPResponseHead?,
        error: HTTPClientError?,
        now: Date = Date(),
        random: Double = Double.random(in: 0...1)
    ) -> Decision {
        let retryable: Bool
        if let response {
            retryable = Self.retriedStatuses.contains(response.status) || (response.status >= 500 && response.status != 501)
        } else if let error {
            switch error.code {
            case .connectFailed: retryable = true
            case .timeout, .connectionLost, .transport: retryable = !error.mayHaveReachedServer || request.idempotent
            default: retryable = false
            }
        } else {
            retryable = false
        }
        guard retryable else { return .done }
        guard attempt < maxAttempts else { return .giveUp(reason: "gave up after \(attempt) attempt\(attempt == 1 ? "" : "s")") }
        let backoff = backoffDelay(attempt: attempt, random: random)
        if let response, let asked = Self.retryAfter(response, now: now) {
            if asked > maxRetryAfter {
                return .giveUp(reason: "the server asked to wait \(Self.seconds(asked)) s, more than the \(Self.seconds(maxRetryAfter)) s ceiling")
            }
            return .retry(after: max(asked, .zero))
        }
        return .retry(after: backoff)
    }

    /// Full jitter: a uniform draw between zero and the exponential ceiling.
    public func backoffDelay(attempt: Int, random: Double) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let raw = base * (1 << exponent)
        let ceiling = raw > cap ? cap : raw
        return ceiling * random
    }

    /// The wait a response asks for: `retry-after-ms`, else `Retry-After` in seconds or as an HTTP date.
    public static func retryAfter(_ head: HTTPResponseHead, now: Date = Date()) -> Duration? {
        // A year at most: a hostile or broken header (inf, 1e20) must not trap the conversion.
        let longest = 365.0 * 86_400_000
        if let ms = head.header("retry-after-ms").flatMap(Double.init), ms >= 0, !ms.isNaN {
            return .milliseconds(Int64(min(ms, longest)))
        }
        guard let value = head.header("retry-after")?.trimmingCharacters(in: .whitespaces) else { return nil }
        if let seconds = Double(value), seconds >= 0, !seconds.isNaN { return .milliseconds(Int64(min(seconds * 1000, longest))) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: value) else { return nil }
        return .milliseconds(Int64(max(0, date.timeIntervalSince(now)) * 1000))
    }

    private static func seconds(_ d: Duration) -> String {
        let (s, atto) = d.components
        return String(format: "%.1f", Double(s) + Double(atto) / 1e18)
    }
}

extension HTTPClient {
    /// Executes a request under a retry policy. Returns the last response (which may be an error
    /// status after the policy gave up) or throws the last transport error.
    public func execute(_ request: HTTPRequest, retry policy: RetryPolicy) async throws -> HTTPResponse {
        var attempt = 1
        while true {
            var response: HTTPResponse?
            var failure: HTTPClientError?
            do {
                response = try await execute(request)
            } catch let error as HTTPClientError {
                failure = error
            }
            switch policy.decide(attempt: attempt, request: request, response: response?.head, error: failure) {
            case .done:
                if let response { return response }
                throw failure!
            case .giveUp(let reason):
                if let response { return response.withGiveUpReason(reason) }
                throw HTTPClientError(
                    failure!.code,
                    "\(failure!.message) (\(reason))",
                    mayHaveReachedServer: failure!.mayHaveReachedServer,
                    curlCode: failure!.curlCode
                )
            case .retry(let delay):
                try await Task.sleep(for: delay)
                attempt += 1
            }
        }
    }
}

extension HTTPResponse {
    /// Why the retry policy stopped, when it returned an error response it would otherwise have retried.
    public var giveUpReason: String? { header("x-switchyard-give-up") }

    public func withGiveUpReason(_ reason: String) -> HTTPResponse {
        var copy = self
        copy.head.headers.append(("x-switchyard-give-up", reason))
        return copy
    }
}
