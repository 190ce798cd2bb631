import Foundation
import SwitchyardCore

/// How a coordinator listens, whom it serves and what it does besides serving.
///
/// Every property's default is the one `switchyard coordinator` uses when its option is not given.
public struct CoordinatorConfiguration: Sendable {
    /// Who may read (GET) without a token.
    public enum ReadAccess: String, Sendable, CaseIterable {
        /// Anyone who can reach the port may read; writes still need a token.
        case open
        /// Reads need a token too (the dashboard then asks for one).
        case token
    }

    /// The address to listen on. Default `127.0.0.1`. Without tokens the coordinator listens on
    /// loopback whatever this says (and logs that it does).
    public var host: String
    /// The port; 0 picks a free one (see `Coordinator.port()`). Default 8377.
    public var port: Int
    /// The queues this coordinator shows and serves, the first being the default of every
    /// request that names none. Default `["default"]`.
    public var queues: [String]
    /// Bearer tokens that allow writes (and reads under `.token`). Default none: every request is
    /// allowed, and only from loopback.
    public var tokens: [String]
    /// Default `.open`.
    public var reads: ReadAccess
    /// How often the coordinator reclaims entries whose lease ran out and promotes due delayed
    /// jobs, so lost jobs come back even while every worker is busy. Default 5 s; nil: never.
    public var reclaimInterval: Duration?
    /// The lease the queue's workers use (a reclaimed entry is one idle this long). Default 30 s,
    /// the worker's default (`switchyard worker --lease`).
    public var lease: Duration
    /// Whether pushes wait for a replica (`--durability`). Default `.acknowledged`.
    public var durability: Durability = .acknowledged
    /// How long a request of the OpenAI-compatible front waits for its job's result before
    /// answering 504 (the job keeps running); also the longest `?wait=` a push may ask for (it
    /// then answers 201 with the job queued). Default 300 s.
    public var resultTimeout: Duration
    /// The largest request body accepted, in bytes. Default 16 MiB.
    public var maxBodyBytes: Int
    /// The providers file, for the models `GET /v1/models` lists and the breakers it shows.
    /// Default none.
    public var providersFile: String?
    /// The model catalog, for the local models `GET /v1/models` lists. Default none.
    public var catalogFile: String?

    public init(
        host: String = "127.0.0.1",
        port: Int = 8377,
        queues: [String] = ["default"],
        tokens: [String] = [],
        reads: ReadAccess = .open,
        reclaimInterval: Duration? = .seconds(5),
        lease: Duration = .seconds(30),
        resultTimeout: Duration = .seconds(300),
        maxBodyBytes: Int = 16 << 20,
        providersFile: String? = nil,
        catalogFile: String? = nil
    ) {
        self.host = host
        self.port = port
        self.queues = queues
        self.tokens = tokens
        self.reads = reads
        self.reclaimInterval = reclaimInterval
        self.lease = lease
        self.resultTimeout = resultTimeout
        self.maxBodyBytes = maxBodyBytes
        self.providersFile = providersFile
        self.catalogFile = catalogFile
    }

    /// Whether the coordinator may listen on `host`: anything with tokens, loopback without.
    var listensOnLoopbackOnly: Bool { tokens.isEmpty }

    /// The address actually bound.
    var boundHost: String {
        if !listensOnLoopbackOnly { return host }
        return ["127.0.0.1", "::1", "localhost"].contains(host) ? host : "127.0.0.1"
    }

    /// Reads tokens from a file: one per line; blank lines and lines starting with '#' skipped.
    public static func tokens(fromFile path: String) throws -> [String] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw CoordinatorConfigurationError(field: "token file", problem: "cannot read \(path)")
        }
        return text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("#") }
    }
}

/// A coordinator setting that cannot be used, naming the setting.
public struct CoordinatorConfigurationError: Error, Sendable, CustomStringConvertible {
    public var field: String
    public var problem: String
    public var description: String { "\(field): \(problem)" }
}
