import Foundation

/// One HTTP request. Header values may hold secrets (Authorization): nothing here ever logs them.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]?
    /// Time to establish the TCP (and TLS) connection.
    public var connectTimeout: Duration
    /// Time for the whole transfer, streaming included.
    public var timeout: Duration
    /// Safe to send twice (GET, polling). Decides whether a request that may already have reached
    /// the server is retried; see `RetryPolicy`.
    public var idempotent: Bool
    /// Open a new connection for this request and close it after (benchmarks, diagnostics).
    public var freshConnection = false

    public init(
        method: String = "GET",
        url: String,
        headers: [(name: String, value: String)] = [],
        body: [UInt8]? = nil,
        connectTimeout: Duration = .seconds(10),
        timeout: Duration = .seconds(120),
        idempotent: Bool? = nil
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.connectTimeout = connectTimeout
        self.timeout = timeout
        self.idempotent = idempotent ?? ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"].contains(method)
    }

    /// The URL without query string or credentials, for logs and errors.
    public var redactedURL: String {
        guard var components = URLComponents(string: url) else { return "<url>" }
        components.user = nil
        components.password = nil
        components.query = nil
        return components.string ?? "<url>"
    }
}

/// The head of a response: status, headers, and facts about the connection it came on.
public struct HTTPResponseHead: Sendable {
    public var status: Int
    public var headers: [(name: String, value: String)]

    public init(status: Int, headers: [(name: String, value: String)] = []) {
        self.status = status
        self.headers = headers
    }

    public func header(_ name: String) -> String? {
        headers.last(where: { $0.name.caseInsensitiveCompare(name) == .orderedSame })?.value
    }
}

/// A whole response.
public struct HTTPResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: [UInt8]
    /// 10, 11, 20 or 30 for HTTP/1.0, 1.1, 2 and 3.
    public var httpVersion: Int
    /// New connections this transfer opened (0 when it reused a pooled one).
    public var newConnections: Int

    public var status: Int { head.status }
    public func header(_ name: String) -> String? { head.header(name) }
}

/// A response whose body arrives in pieces (Server-Sent Events, large downloads).
public struct HTTPStreamingResponse: Sendable {
    public var head: HTTPResponseHead
    public var body: AsyncThrowingStream<[UInt8], any Error>
    /// The request's method and URL without query string or credentials, for errors.
    var origin = ""
    /// The client's `maxEventBytes`, which `events` enforces.
    var maxEventBytes = HTTPClientConfiguration.defaultMaxEventBytes
}

/// An error from the HTTP client. Messages name the host, never headers or the query string.
public struct HTTPClientError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case connectFailed, timeout, tls, connectionLost, invalidRequest, closed, transport, responseTooLarge, eventTooLarge
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// DNS failed or the connection was refused: the request never left.
        public static var connectFailed: Self { .init(.connectFailed) }
        public static var timeout: Self { .init(.timeout) }
        public static var tls: Self { .init(.tls) }
        /// The connection broke (reset, empty reply, truncated body).
        public static var connectionLost: Self { .init(.connectionLost) }
        public static var invalidRequest: Self { .init(.invalidRequest) }
        public static var closed: Self { .init(.closed) }
        public static var transport: Self { .init(.transport) }
        /// The body passed `maxResponseBodyBytes` (after decoding); the transfer was stopped.
        public static var responseTooLarge: Self { .init(.responseTooLarge) }
        /// One Server-Sent Events line or event passed `maxEventBytes`; the transfer was stopped.
        public static var eventTooLarge: Self { .init(.eventTooLarge) }
        public var description: String { value.rawValue }
    }

    public let code: Code
    public let message: String
    /// False when the request certainly did not reach the server (it is then always safe to retry).
    public let mayHaveReachedServer: Bool
    /// libcurl's code, when the error came from libcurl.
    public let curlCode: Int?

    public init(_ code: Code, _ message: String, mayHaveReachedServer: Bool, curlCode: Int? = nil) {
        self.code = code
        self.message = message
        self.mayHaveReachedServer = mayHaveReachedServer
        self.curlCode = curlCode
    }

    public var description: String { "HTTP \(code): \(message)" }
}

/// Counters of a client's connection pool.
public struct HTTPClientStatistics: Sendable, Hashable {
    /// Connections opened since the client started.
    public var connectionsOpened = 0
    /// Transfers that reused a pooled connection (or an HTTP/2 connection's stream).
    public var reusedConnections = 0
    /// Transfers running now.
    public var inFlight = 0
    /// Transfers finished (successfully or not).
    public var completed = 0
}
