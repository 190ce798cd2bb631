import Hummingbird

/// The dashboard: `GET /` and its assets under `/assets/`, all from `DashboardPage` (nothing from
/// a CDN, so it works offline). Public even when reads need a token (see
/// `AuthenticationMiddleware`): the page holds no data, and asks for a token when the API it
/// polls answers 401.
extension Coordinator {
    func addDashboardRoutes(to router: Router<BasicRequestContext>) {
        let assets: [(path: String, type: String, body: String)] = [
            ("/", "text/html; charset=utf-8", DashboardPage.html),
            ("/assets/dashboard.css", "text/css; charset=utf-8", DashboardPage.css),
            ("/assets/dashboard.js", "text/javascript; charset=utf-8", DashboardPage.script),
            ("/assets/favicon.svg", "image/svg+xml", DashboardPage.favicon),
        ]
        for asset in assets {
            let buffer = ByteBuffer(string: asset.body)
            let headers = Self.dashboardHeaders(contentType: asset.type)
            router.get(RouterPath(asset.path)) { _, _ in Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: buffer)) }
        }
    }

    /// Everything the page loads comes from this origin: scripts and styles only as files (no
    /// inline code, so injected markup could not run), fetches only to the API here, no framing.
    static let contentSecurityPolicy = [
        "default-src 'self'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "connect-src 'self'", "font-src 'none'",
        "object-src 'none'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ]
    .joined(separator: "; ")

    /// The page itself sets `<meta name="referrer" content="no-referrer">`.
    static func dashboardHeaders(contentType: String) -> HTTPFields {
        [
            .contentType: contentType,
            // Revalidated each load, so a coordinator upgrade shows its new page at once.
            .cacheControl: "no-cache",
            .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
        ]
    }
}
