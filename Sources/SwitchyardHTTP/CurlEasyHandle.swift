import CCurlShim
import Foundation

/// libcurl's process-wide set-up, run once before the first handle is made.
let curlGlobalInit: Void = { _ = curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

/// An error from libcurl: its code and the text of `curl_easy_strerror` (plus the error buffer).
public struct CurlError: Error, Sendable, CustomStringConvertible {
    public let code: Int
    public let message: String
    public var description: String { "curl error \(code): \(message)" }
}

/// One libcurl easy handle, used from one thread at a time.
///
/// This is the typed layer over the C shim; the pooled client drives such handles from curl's
/// multi interface. `perform()` is synchronous and blocks its thread: never call it on Swift's
/// cooperative pool.
public final class CurlEasyHandle {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public var body: [UInt8]
        public var httpVersion: Int

        public func header(_ name: String) -> String? {
            headers.last(where: { $0.name.caseInsensitiveCompare(name) == .orderedSame })?.value
        }
    }

    private let handle: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    /// A stable allocation: curl keeps the pointer between calls.
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()
    private let sink = ResponseSink()

    public init() {
        curlGlobalInit
        guard let handle = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        self.handle = handle
        // No signals: timeouts must not raise SIGALRM in a multi-threaded process.
        sy_curl_easy_setopt_long(handle, CURLOPT_NOSIGNAL, 1)
    }

    deinit {
        curl_easy_cleanup(handle)
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    /// Performs a request and returns the whole response.
    public func perform(
        url: String,
        method: String = "GET",
        headers: [String: String] = [:],
        body: [UInt8]? = nil,
        connectTimeout: Duration = .seconds(10),
        totalTimeout: Duration = .seconds(60)
    ) throws(CurlError) -> Response {
        sink.reset()
        try check(sy_curl_easy_setopt_string(handle, CURLOPT_URL, url))
        try check(sy_curl_easy_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method == "GET" ? nil : method))
        try check(sy_curl_easy_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(connectTimeout)))
        try check(sy_curl_easy_setopt_long(handle, CURLOPT_TIMEOUT_MS, milliseconds(totalTimeout)))
        try check(sy_curl_easy_setopt_string(handle, CURLOPT_ACCEPT_ENCODING, ""))  // every encoding curl can decode
        sy_curl_easy_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer)

        if let headerList { curl_slist_free_all(headerList) }
        headerList = nil
        for (name, value) in headers.sorted(by: { $0.key < $1.key }) { headerList = curl_slist_append(headerList, "\(name): \(value)") }
        try check(sy_curl_easy_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList))

        let unmanaged = Unmanaged.passUnretained(sink).toOpaque()
        try check(sy_curl_easy_setopt_write_callback(handle, CURLOPT_WRITEFUNCTION, curlWriteBody))
        try check(sy_curl_easy_setopt_pointer(handle, CURLOPT_WRITEDATA, unmanaged))
        try check(sy_curl_easy_setopt_write_callback(handle, CURLOPT_HEADERFUNCTION, curlWriteHeader))
        try check(sy_curl_easy_setopt_pointer(handle, CURLOPT_HEADERDATA, unmanaged))

        let result: CURLcode
        if let body {
            result = body.withUnsafeBufferPointer { buffer in
                _ = sy_curl_easy_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(buffer.count))
                _ = sy_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: buffer.baseAddress))
                return curl_easy_perform(handle)
            }
            _ = sy_curl_easy_setopt_pointer(handle, CURLOPT_POSTFIELDS, nil)
        } else {
            _ = sy_curl_easy_setopt_long(handle, CURLOPT_HTTPGET, 1)
            result = curl_easy_perform(handle)
        }
        try check(result)
        var status = 0
        var version = 0
        sy_curl_easy_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        sy_curl_easy_getinfo_long(handle, CURLINFO_HTTP_VERSION, &version)
        return Response(status: status, headers: sink.headers, body: sink.body, httpVersion: version)
    }

    /// The number of new connections curl opened for the last transfer (0 when one was reused).
    public var lastConnectCount: Int {
        var count = 0
        sy_curl_easy_getinfo_long(handle, CURLINFO_NUM_CONNECTS, &count)
        return count
    }

    private func check(_ code: CURLcode) throws(CurlError) {
        guard code != CURLE_OK else { return }
        let base = String(cString: curl_easy_strerror(code))
        let detail = String(cString: errorBuffer)
        throw CurlError(code: Int(code.rawValue), message: detail.isEmpty ? base : "\(base): \(detail)")
    }

    private func milliseconds(_ d: Duration) -> Int {
        let (s, atto) = d.components
        return Int(s * 1000 + atto / 1_000_000_000_000_000)
    }
}

/// What the callbacks collect; reached from C through an unretained pointer.
final class ResponseSink {
    var body: [UInt8] = []
    var headers: [(name: String, value: String)] = []

    func reset() {
        body.removeAll(keepingCapacity: true)
        headers.removeAll(keepingCapacity: true)
    }
}

private func curlWriteBody(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let data, let context else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    sink.body.append(contentsOf: UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
}

private func curlWriteHeader(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let data, let context else { return 0 }
    let sink = Unmanaged<ResponseSink>.fromOpaque(context).takeUnretainedValue()
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: size * count), as: UTF8.self)
    if line.hasPrefix("HTTP/") {
        sink.headers.removeAll()  // a new response (after a redirect or 100 Continue) starts
    } else if let colon = line.firstIndex(of: ":") {
        let name = String(line[..<colon])
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        sink.headers.append((name, value))
    }
    return size * count
}

/// Facts about the linked libcurl.
public enum Curl {
    public static var version: String { String(cString: sy_curl_version()) }
    public static var supportsHTTP2: Bool { sy_curl_has_feature(Int32(CURL_VERSION_HTTP2)) != 0 }
    public static var supportsGzip: Bool { sy_curl_has_feature(Int32(CURL_VERSION_LIBZ)) != 0 }
    public static var supportsTLS: Bool { sy_curl_has_feature(Int32(CURL_VERSION_SSL)) != 0 }
}
