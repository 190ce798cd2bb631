import CCurlShim

/// libcurl's process-wide set-up, run once before the first handle is made.
let curlGlobalInit: Void = { _ = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

/// Facts about the linked libcurl.
public enum Curl {
    public static var version: String { String(cString: sy_curl_version()) }
    public static var supportsHTTP2: Bool { sy_curl_has_feature(Int32(CURL_VERSION_HTTP2)) != 0 }
    public static var supportsGzip: Bool { sy_curl_has_feature(Int32(CURL_VERSION_LIBZ)) != 0 }
    public static var supportsTLS: Bool { sy_curl_has_feature(Int32(CURL_VERSION_SSL)) != 0 }
}
