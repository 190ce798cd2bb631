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

    public init(
        maxConnectionsPerHost: Int = 16,
        maxConnections: Int = 64,
        connectionCacheSize: Int = 64,
        http2: Bool = true,
        caFile: String? = nil,
        verifyTLS: Bool = true,
        userAgent: String = "switchyard"
    ) {
        self.maxConnectionsPerHost = maxConnectionsPerHost
        self.maxConnections = maxConnections
        self.connectionCacheSize = connectionCacheSize
        self.http2 = http2
        self.caFile = caFile
        self.verifyTLS = verifyTLS
        self.userAgent = userAgent
    }
}
