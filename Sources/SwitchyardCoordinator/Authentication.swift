import Hummingbird

/// The bearer tokens a coordinator accepts, compared in constant time: a wrong token takes as
/// long to refuse whatever it shares with a right one, and every token is compared each time.
struct TokenSet: Sendable {
    private let tokens: [[UInt8]]

    init(_ tokens: [String]) { self.tokens = tokens.map { Array($0.utf8) } }

    var isEmpty: Bool { tokens.isEmpty }

    func accepts(_ candidate: some StringProtocol) -> Bool {
        let given = Array(candidate.utf8)
        var matched: UInt8 = 0
        for token in tokens {
            var difference: UInt8 = given.count == token.count ? 0 : 1
            let length = max(given.count, token.count, 1)
            for i in 0..<length {
                let a = given.isEmpty ? 0 : given[i % given.count]
                let b = token.isEmpty ? 1 : token[i % token.count]
                difference |= a ^ b
            }
            matched |= difference == 0 ? 1 : 0
        }
        return matched == 1
    }
}

/// Lets a request through when it may: writes need a token whenever tokens are configured, reads
/// too under `ReadAccess.token`; `/healthz` and `/readyz` are always open. A refusal is a 401 in OpenAI's error
/// shape. The token itself is never logged.
struct AuthenticationMiddleware<Context: RequestContext>: RouterMiddleware {
    let tokens: TokenSet
    let reads: CoordinatorConfiguration.ReadAccess

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let isRead = request.method == .get || request.method == .head
        // A page on another site may make a browser send a write here (it cannot read the
        // answer, but the job runs): a write that says it comes from another origin is refused.
        if !isRead, let origin = request.headers[.origin],
            !Self.sameOrigin(origin, host: request.head.authority ?? "")
        {
            return APIError(.forbidden, "a request from another origin (\(origin.prefix(100))) may not write", code: "cross_origin").response()
        }
        if tokens.isEmpty {
            // Without tokens everything is allowed to local clients; a name that is not loopback
            // in Host means a browser was pointed here by another name (DNS rebinding).
            guard Self.isLoopback(host: request.head.authority ?? "127.0.0.1") else {
                return APIError(.forbidden, "this coordinator has no tokens and answers only to a loopback Host", code: "forbidden_host")
                    .response()
            }
            return try await next(request, context)
        }
        if request.uri.path == "/healthz" || request.uri.path == "/readyz" { return try await next(request, context) }
        // The dashboard's page and assets are public: the data it fetches is what needs a token.
        let isPage = request.uri.path == "/" || request.uri.path.hasPrefix("/assets/")
        if isRead && (reads == .open || isPage) { return try await next(request, context) }
        guard let header = request.headers[.authorization] else {
            return APIError(
                .unauthorized,
                "a bearer token is required (Authorization: Bearer <token>)",
                type: "authentication_error",
                code: "missing_token"
            )
            .response(challenge: true)
        }
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer", tokens.accepts(parts[1].trimmingCharacters(in: .whitespaces)) else {
            return APIError(
                .unauthorized,
                "the bearer token is not one this coordinator accepts",
                type: "authentication_error",
                code: "invalid_token"
            )
            .response(challenge: true)
        }
        return try await next(request, context)
    }

    /// Whether an `Origin` (`http://host:port`) names the host the request was sent to.
    static func sameOrigin(_ origin: String, host: String) -> Bool {
        guard let scheme = origin.range(of: "://") else { return false }
        return origin[scheme.upperBound...].lowercased() == host.lowercased()
    }

    /// Whether a `Host` header names this machine's loopback: `127.0.0.1`, `localhost` or `[::1]`,
    /// with any port.
    static func isLoopback(host: String) -> Bool {
        var name = host.lowercased()
        if name.hasPrefix("[") {
            name = String(name.dropFirst().prefix { $0 != "]" })
        } else if let colon = name.lastIndex(of: ":") {
            name = String(name[..<colon])
        }
        return name == "127.0.0.1" || name == "localhost" || name == "::1"
    }
}
