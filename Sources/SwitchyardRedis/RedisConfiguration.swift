import Foundation

/// Where and how to connect to Redis.
///
/// Build it from a URL or from the environment:
/// - `redis://[user:password@]host:port[/db]` or `unix:///path/to.sock[?db=N]`: one server;
/// - `redis+cluster://[user:password@]host1:port,host2:port`: a Redis Cluster, found from any of
///   these seed nodes;
/// - `redis+sentinel://[user:password@]s1:26379,s2:26379/mymaster[/db]`: the master that the
///   sentinels name `mymaster`.
///
/// The password is a secret: `description` never shows it.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    /// Which form of Redis the connections talk to.
    public enum Deployment: Sendable, Hashable {
        /// One server at `endpoint`. The default.
        case standalone
        /// A Redis Cluster. `endpoint` is the first seed node; `seeds` holds all of them. Keys are
        /// sent to the node that serves their slot, following `MOVED` and `ASK` redirects.
        case cluster(seeds: [Endpoint])
        /// A master found through Sentinel; `endpoint` is the first sentinel.
        case sentinel(Sentinel)
    }

    /// How to find a master through Sentinel.
    public struct Sentinel: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
        /// The sentinels to ask, in order.
        public var sentinels: [Endpoint]
        /// The master's name in the sentinels' configuration (`sentinel monitor <name> ...`).
        public var masterName: String
        /// An ACL user for the sentinels themselves; nil for none.
        public var username: String?
        /// The sentinels' own password (`requirepass` in sentinel.conf), apart from the data nodes'.
        /// A secret: never shown.
        public var password: String?

        public init(sentinels: [Endpoint], masterName: String, username: String? = nil, password: String? = nil) {
            self.sentinels = sentinels
            self.masterName = masterName
            self.username = username
            self.password = password
        }

        /// Without the password.
        public var description: String {
            "Sentinel(\(sentinels.map(\.description).joined(separator: ",")), master: \(masterName)"
                + (username.map { ", user: \($0)" } ?? "") + (password == nil ? "" : ", password: ***") + ")"
        }

        public var debugDescription: String { description }
    }

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

    /// The server; for a cluster, the first seed node; behind Sentinel, the first sentinel.
    public var endpoint: Endpoint
    /// One server (the default), a Redis Cluster, or a master behind Sentinel.
    public var deployment: Deployment = .standalone
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
    /// before it fails with `connectionFailed`. Zero fails at once. On a cluster or behind Sentinel
    /// it is also how long a command keeps looking for the node that serves it (redirects,
    /// `TRYAGAIN`, `CLUSTERDOWN`, a failover): make it longer than a failover takes.
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

    /// Parses `redis://[user:password@]host[:port][/db]`, `unix:///path[?db=N]`,
    /// `redis+cluster://[user:password@]host:port,host:port` or
    /// `redis+sentinel://[user:password@]host:port,host:port/master[/db][?sentinel_user=u&sentinel_password=p]`.
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
        switch (deployment, endpoint) {
        case (.cluster(let seeds), _):
            return "redis+cluster://\(user)\(seeds.map(\.description).joined(separator: ","))"
        case (.sentinel(let sentinel), _):
            let hosts = sentinel.sentinels.map(\.description).joined(separator: ",")
            return "redis+sentinel://\(user)\(hosts)/\(sentinel.masterName)/\(database)"
        case (.standalone, .tcp): return "redis://\(user)\(endpoint)/\(database)"
        case (.standalone, .unixSocket(let path)): return "unix://\(user)\(path)?db=\(database)"
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
        let lowered = url.lowercased()
        if lowered.hasPrefix("redis+cluster://") || lowered.hasPrefix("redis+sentinel://") {
            try applyMultiHost(url: url, invalid: invalid)
            return
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
            throw invalid("scheme '\(scheme)' is not supported; use redis://, unix://, redis+cluster:// or redis+sentinel://")
        }
    }

    /// `redis+cluster://` and `redis+sentinel://`: several hosts, which URLComponents does not parse.
    private mutating func applyMultiHost(url: String, invalid: (String, String?) -> RedisError) throws(RedisError) {
        let schemeEnd = url.range(of: "://")!
        let cluster = url[..<schemeEnd.lowerBound].lowercased() == "redis+cluster"
        var rest = String(url[schemeEnd.upperBound...])
        var query: [URLQueryItem] = []
        if let q = rest.firstIndex(of: "?") {
            query = URLComponents(string: "x:?" + rest[rest.index(after: q)...])?.queryItems ?? []
            rest = String(rest[..<q])
        }
        // The user info ends at the last '@' before the path: a password may hold '@' or '/'
        // only percent-encoded, as in any URL.
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        var authority = rest[..<authorityEnd]
        let path = rest[authorityEnd...].split(separator: "/").map(String.init)
        if let at = authority.lastIndex(of: "@") {
            let info = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = info.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let user = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            username = user.isEmpty ? nil : user
            password = parts.count > 1 ? (String(parts[1]).removingPercentEncoding ?? String(parts[1])) : nil
        }
        let defaultPort = cluster ? 6379 : 26379
        var hosts: [Endpoint] = []
        for item in authority.split(separator: ",", omittingEmptySubsequences: false) {
            let text = String(item)
            var host = text
            var port = defaultPort
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]") else { throw invalid("host '\(text)' has no closing ']'", "a host has no closing ']'") }
                host = String(text[text.index(after: text.startIndex)..<close])
                let after = text[text.index(after: close)...]
                if after.hasPrefix(":") {
                    guard let p = Int(after.dropFirst()) else { throw invalid("port in '\(text)' is not a number", "a port is not a number") }
                    port = p
                }
            } else if let colon = text.lastIndex(of: ":") {
                host = String(text[..<colon])
                guard let p = Int(text[text.index(after: colon)...]) else {
                    throw invalid("port in '\(text)' is not a number", "a port is not a number")
                }
                port = p
            }
            guard !host.isEmpty else { throw invalid("a host is missing in the list '\(authority)'", "a host is missing in the host list") }
            guard (1...65535).contains(port) else { throw invalid("port \(port) is out of range 1-65535", "port is out of range 1-65535") }
            hosts.append(.tcp(host: host, port: port))
        }
        endpoint = hosts[0]
        if cluster {
            if let db = path.first {
                guard db == "0" else {
                    throw invalid("a Redis Cluster has only database 0; remove '/\(db)' from the URL", "a Redis Cluster has only database 0")
                }
            }
            deployment = .cluster(seeds: hosts)
            return
        }
        guard let name = path.first, !name.isEmpty else {
            throw invalid("the master's name is missing: redis+sentinel://host:26379,host:26379/<master name>", nil)
        }
        if path.count > 1 {
            guard let db = Int(path[1]), db >= 0 else {
                throw invalid("database '\(path[1])' is not a non-negative integer", "database is not a non-negative integer")
            }
            database = db
        }
        let sentinelUser = query.first(where: { $0.name == "sentinel_user" })?.value
        let sentinelPassword = query.first(where: { $0.name == "sentinel_password" })?.value
        deployment = .sentinel(
            Sentinel(
                sentinels: hosts,
                masterName: name.removingPercentEncoding ?? name,
                username: sentinelUser.flatMap { $0.isEmpty ? nil : $0 },
                password: sentinelPassword
            )
        )
    }
}

extension RedisConfiguration {
    /// Environment variables read by `fromEnvironment`.
    public enum EnvironmentKey {
        public static let url = "SWITCHYARD_REDIS_URL"
        public static let password = "SWITCHYARD_REDIS_PASSWORD"
        public static let passwordFile = "SWITCHYARD_REDIS_PASSWORD_FILE"
        public static let sentinelPassword = "SWITCHYARD_REDIS_SENTINEL_PASSWORD"
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
        if let password = environment[EnvironmentKey.sentinelPassword], !password.isEmpty,
            case .sentinel(var sentinel) = configuration.deployment
        {
            sentinel.password = password
            configuration.deployment = .sentinel(sentinel)
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
