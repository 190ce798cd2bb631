/// How a pooled client connects.
public struct HTTPClientConfiguration: Sendable {
    /// Connections open at once to one host; more requests wait in the pool.
    public var maxConnectionsPerHost: Int
    /// Connections open at once in total.
    public var maxConnections: Int
    /// Idle connections kept for reuse.
    public var connectionCacheSize: Int
    /// Multiplex requests over one HTTP/2 connection when the server offers it.
    public var http2: Bool
    /// A CA bundle to trust instead of the system's (PEM file path).
    public var caFile: String?
    /// Verify TLS certificates (turn off only for a local test server).
    public var verifyTLS: Bool
    /// Sent as User-Agent.
    public var userAgent: String
    /// The most bytes one response body may have, counted after content decoding (gzip,
    /// deflate, ...), as libcurl hands them over, for buffered and streamed responses alike. A
    /// transfer that passes it is stopped at once and fails with `responseTooLarge`, so a huge or
    /// endless answer, or a small compressed one that expands without bound, cannot exhaust
    /// memory. Default: 64 MiB (67,108,864 bytes).
    public var maxResponseBodyBytes: Int
    /// The most bytes of one Server-Sent Events line, and of the data of one event, when a
    /// streamed body is read as `events`. A stream that passes it is stopped at once and fails
    /// with `eventTooLarge`. Default: 1 MiB (1,048,576 bytes).
    public var maxEventBytes: Int

    /// The default `maxResponseBodyBytes`: 64 MiB.
    public static let defaultMaxResponseBodyBytes = 64 << 20
    /// The default `maxEventBytes`: 1 MiB.
    public static let defaultMaxEventBytes = 1 << 20

    public init(
        maxConnectionsPerHost: Int = 16,
        maxConnections: Int = 64,
        connectionCacheSize: Int = 64,
        http2: Bool = true,
        caFile: String? = nil,
        verifyTLS: Bool = true,
        userAgent: String = "switchyard",
        maxResponseBodyBytes: Int = HTTPClientConfiguration.defaultMaxResponseBodyBytes,
        maxEventBytes: Int = HTTPClientConfiguration.defaultMaxEventBytes
    ) {
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxConnections = maxConnections
        self.connectionCacheSize = connectionCacheSize
        self.http2 = http2
        self.caFile = caFile
        self.verifyTLS = verifyTLS
        self.userAgent = userAgent
        self.maxResponseBodyBytes = maxResponseBodyBytes
        self.maxEventBytes = maxEventBytes
    }
}
