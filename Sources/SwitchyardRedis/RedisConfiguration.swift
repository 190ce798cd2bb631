import Foundation

/// Where and how to connect to Redis.
///
/// Build it from a URL (`redis://[user:password@]host:port[/db]` or `unix:///path/to.sock[?db=N]`)
/// or from the environment. The password is a secret: `description` never shows it.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        case tcp(host: String, port: Int)
        case unixSocket(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unixSocket(let path): return "unix:\(path)"
            }
        }
    }

    public static let defaultURL = "redis://127.0.0.1:6379"

    public var endpoint: Endpoint
    /// An ACL user name; nil authenticates as `default` (or not at all without a password).
    public var username: String?
    /// The password for AUTH. Kept out of every description, log and error.
    public var password: String?
    /// The logical database chosen with SELECT after each connect.
    public var database: Int
    /// How long one attempt to open a TCP or unix-socket connection may take.
    public var connectTimeout: Duration
    /// How long a command waits for its reply (per wait for more bytes, so a large reply that keeps
    /// arriving is not cut off). Blocking commands pass their own timeout.
    public var commandTimeout: Duration
    /// How long a command waits for a lost connection to come back, reconnecting with backoff,
    /// before it fails with `connectionFailed`. Zero fails at once.
    public var reconnectWait: Duration
    /// The most connections a `RedisConnectionPool` opens.
    public var poolSize: Int
    /// Sent with CLIENT SETNAME after each connect, so `CLIENT LIST` shows who is who.
    public var clientName: String?

    public init(
        endpoint: Endpoint = .tcp(host: "127.0.0.1", port: 6379),
        username: String? = nil,
        password: String? = nil,
        database: Int = 0,
        connectTimeout: Duration = .seconds(2),
        commandTimeout: Duration = .seconds(5),
        reconnectWait: Duration = .seconds(3),
        poolSize: Int = 8,
        clientName: String? = "switchyard"
    ) {
        self.endpoint = endpoint
        self.username = username
        self.password = password
        self.database = database
        self.connectTimeout = connectTimeout
        self.commandTimeout = commandTimeout
        self.reconnectWait = reconnectWait
        self.poolSize = poolSize
        self.clientName = clientName
    }

    /// Parses `redis://[user:password@]host[:port][/db]` or `unix:///path[?db=N]`.
    /// User and password may be percent-encoded.
    public init(url: String) throws(RedisError) {
        self.init()
        try apply(url: url)
    }

    /// The URL without its password, fit for logs and status pages.
    public var redactedURL: String {
        let user: String
        switch (username, password) {
        case (let u?, _?): user = "\(u):***@"
        case (nil, _?): user = ":***@"
        case (let u?, nil): user = "\(u)@"
        case (nil, nil): user = ""
        }
        switch endpoint {
        case .tcp: return "redis://\(user)\(endpoint)/\(database)"
        case .unixSocket(let path): return "unix://\(user)\(path)?db=\(database)"
        }
    }

    public var description: String {
        "RedisConfiguration(\(redactedURL), pool: \(poolSize), connectTimeout: \(connectTimeout), "
            + "commandTimeout: \(commandTimeout), reconnectWait: \(reconnectWait))"
    }

    private mutating func apply(url: String) throws(RedisError) {
        // The URL may hold a password, and a password with an unencoded '/' or '?' ends the
        // authority early; so with credentials present, messages never quote parsed parts.
        let quotes = !url.contains("@")
        func invalid(_ why: String, _ withoutQuote: String? = nil) -> RedisError {
            RedisError(.invalidConfiguration, "Redis URL: \(quotes ? why : (withoutQuote ?? why))")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased() else {
            throw invalid("not a URL; expected redis://[user:password@]host:port[/db] or unix:///path/to.sock")
        }
        username = components.percentEncodedUser.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding ?? $0 }
        password = components.percentEncodedPassword.map { $0.removingPercentEncoding ?? $0 }
        let dbItem = components.queryItems?.first(where: { $0.name == "db" })?.value
        switch scheme {
        case "redis":
            guard let host = components.host, !host.isEmpty else { throw invalid("host is missing") }
            let port = components.port ?? 6379
            guard (1...65535).contains(port) else { throw invalid("port \(port) is out of range 1-65535", "port is out of range 1-65535") }
            let bareHost = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            endpoint = .tcp(host: bareHost, port: port)
            let path = components.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
            if !path.isEmpty {
                guard let db = Int(path), db >= 0 else {
                    throw invalid("database '\(path)' is not a non-negative integer", "database is not a non-negative integer")
                }
                database = db
            } else if let dbItem {
                guard let db = Int(dbItem), db >= 0 else { throw invalid("db '\(dbItem)' is not a non-negative integer") }
                database = db
            }
        case "unix":
            let path = components.path
            // unix://run/x.sock reads as host "run" and path /x.sock: a slash short, not another socket.
            if let host = components.host, !host.isEmpty {
                throw invalid("unix socket path must be absolute: three slashes, unix:///\(host)\(path) (this one has two)")
            }
            guard path.hasPrefix("/") else { throw invalid("unix socket path must be absolute (unix:///path/to.sock)") }
            endpoint = .unixSocket(path: path)
            if let dbItem {
                guard let db = Int(dbItem), db >= 0 else { throw invalid("db '\(dbItem)' is not a non-negative integer") }
                database = db
            }
        case "rediss":
            throw invalid(
                "rediss:// (TLS) is not supported by this hiredis build; run a local TLS tunnel (stunnel, spiped) "
                    + "and point redis:// at it, see docs/OPERATIONS.md"
            )
        default:
            throw invalid("scheme '\(scheme)' is not supported; use redis:// or unix://")
        }
    }
}

extension RedisConfiguration {
    /// Environment variables read by `fromEnvironment`.
    public enum EnvironmentKey {
        public static let url = "SWITCHYARD_REDIS_URL"
        public static let password = "SWITCHYARD_REDIS_PASSWORD"
        public static let passwordFile = "SWITCHYARD_REDIS_PASSWORD_FILE"
        public static let poolSize = "SWITCHYARD_REDIS_POOL_SIZE"
        public static let connectTimeout = "SWITCHYARD_REDIS_CONNECT_TIMEOUT_MS"
        public static let commandTimeout = "SWITCHYARD_REDIS_COMMAND_TIMEOUT_MS"
        public static let reconnectWait = "SWITCHYARD_REDIS_RECONNECT_WAIT_MS"
    }

    /// Reads `SWITCHYARD_REDIS_URL` (default `redis://127.0.0.1:6379`) and the optional overrides.
    /// A password in `SWITCHYARD_REDIS_PASSWORD` or in the file named by
    /// `SWITCHYARD_REDIS_PASSWORD_FILE` replaces one in the URL, so the URL can stay secret-free.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(RedisError) -> RedisConfiguration {
        var configuration = try RedisConfiguration(url: environment[EnvironmentKey.url] ?? defaultURL)
        if let path = environment[EnvironmentKey.passwordFile], !path.isEmpty {
            guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
                throw RedisError(.invalidConfiguration, "\(EnvironmentKey.passwordFile): cannot read the file \(path)")
            }
            configuration.password = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if let password = environment[EnvironmentKey.password], !password.isEmpty {
            configuration.password = password
        }
        func milliseconds(_ key: String, minimum: Int) throws(RedisError) -> Duration? {
            guard let text = environment[key] else { return nil }
            guard let ms = Int(text), ms >= minimum else {
                throw RedisError(.invalidConfiguration, "\(key): '\(text)' is not a whole number of milliseconds of at least \(minimum)")
            }
            return .milliseconds(ms)
        }
        if let text = environment[EnvironmentKey.poolSize] {
            guard let size = Int(text), size >= 1 else {
                throw RedisError(.invalidConfiguration, "\(EnvironmentKey.poolSize): '\(text)' is not a whole number of at least 1")
            }
            configuration.poolSize = size
        }
        if let d = try milliseconds(EnvironmentKey.connectTimeout, minimum: 1) { configuration.connectTimeout = d }
        if let d = try milliseconds(EnvironmentKey.commandTimeout, minimum: 1) { configuration.commandTimeout = d }
        if let d = try milliseconds(EnvironmentKey.reconnectWait, minimum: 0) { configuration.reconnectWait = d }
        return configuration
    }
}

extension Duration {
    /// Whole milliseconds, rounded up so that a short positive timeout never becomes zero.
    var roundedUpMilliseconds: Int {
        let (seconds, attoseconds) = components
        let ms = seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int(clamping: ms)
    }
}
