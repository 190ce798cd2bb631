import CCurlShim
import Foundation
import Logging
import Synchronization

/// A pooled HTTP client on libcurl's multi interface, driven by a thread of its own.
///
/// Every request becomes an easy handle added to one multi handle, whose connection cache keeps
/// connections alive between requests (keep-alive per host, HTTP/2 multiplexing where the server
/// offers it). Blocking never happens on Swift's cooperative pool: the thread waits in epoll
/// (kqueue on macOS) for the sockets and the timer libcurl asks for and runs
/// `curl_multi_socket_action` on whatever is ready. A caller that finds curl free starts its
/// transfer itself, without waking the thread; callers are resumed through continuations.
/// Cancelling the calling task removes its transfer at once.
public final class HTTPClient: @unchecked Sendable {
    public let configuration: HTTPClientConfiguration
    private let logger: Logger
    /// Touched only by whoever holds `driver`.
    private let multi: UnsafeMutableRawPointer
    /// The poller around `multi` (loop.c in CCurlShim). Touched only by whoever holds `driver`,
    /// except `sy_curl_loop_poll` (the loop thread's wait) and `sy_curl_loop_wake` (any thread).
    private let loop: OpaquePointer
    /// Held by whoever drives curl: the loop thread, except while it waits in the poller, or a
    /// caller that found it free (`withLockIfAvailable`, never a wait on the cooperative pool).
    private let driver = Mutex(Driver())
    /// Work for the loop thread from callers that found `driver` taken.
    private let shared = Mutex(Shared())
    private let stats = Mutex(HTTPClientStatistics())
    /// Set by `shutdown`; requests after it are refused before they start.
    private let stopping = Atomic<Bool>(false)

    /// The longest the loop thread waits without an event. It bounds how far ahead of a waiting
    /// loop a caller can set curl's timer without waking it: a transfer's own timeout (120 s by
    /// default) lies beyond it, so starting a request never costs a wake-up.
    private static let maxWaitMilliseconds: Int32 = 1000

    private struct Driver: ~Copyable {
        var active: [UInt64: Transfer] = [:]
        /// Cancellations that arrived before their transfer reached curl.
        var cancelledEarly: Set<UInt64> = []
        /// The multi handle is gone: the loop thread has ended.
        var closed = false
    }

    private struct Shared: Sendable {
        var toAdd: [Transfer] = []
        var toCancel: [UInt64] = []
        var stopping = false
        /// The loop thread is (about to be) asleep in its poller: new work must wake it.
        /// While it is awake it picks new work up by itself, so callers skip the wake-up syscall.
        var polling = false
    }

    public init(configuration: HTTPClientConfiguration = HTTPClientConfiguration(), logger: Logger = Logger(label: "switchyard.http")) {
        curlGlobalInit
        self.configuration = configuration
        self.logger = logger
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed: out of memory") }
        self.multi = multi
        sy_curl_multi_setopt_long(multi, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConnectionsPerHost)
        sy_curl_multi_setopt_long(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, configuration.maxConnections)
        sy_curl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, configuration.connectionCacheSize)
        sy_curl_multi_setopt_long(multi, CURLMOPT_PIPELINING, configuration.http2 ? 2 : 0)  // CURLPIPE_MULTIPLEX
        guard let loop = sy_curl_loop_create(multi) else {
            fatalError("cannot make the HTTP client's poller: \(String(cString: strerror(errno)))")
        }
        self.loop = loop
        let thread = Thread { [self] in self.runLoop() }
        thread.name = "switchyard http"
        thread.start()
    }

    /// Runs once the loop thread has ended (it holds the client until then), so no wake-up can
    /// reach a closed poller.
    deinit {
        sy_curl_loop_destroy(loop)
    }

    public var statistics: HTTPClientStatistics { stats.withLock { $0 } }

    /// Sends a request and returns the whole response. A status of 4xx or 5xx is a response, not
    /// an error; transport failures throw `HTTPClientError`.
    public func execute(_ request: HTTPRequest) async throws -> HTTPResponse {
        let transfer = try Transfer(request: request, configuration: configuration)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponse, any Error>) in
                transfer.mode = .buffered(continuation)
                submit(transfer)
            }
        } onCancel: {
            cancel(transfer.id)
        }
    }

    /// Sends a request and returns as soon as the response head has arrived; the body streams.
    /// Stopping the iteration of the body (or cancelling its task) ends the transfer.
    public func stream(_ request: HTTPRequest) async throws -> HTTPStreamingResponse {
        let transfer = try Transfer(request: request, configuration: configuration)
        let (body, bodyContinuation) = AsyncThrowingStream.makeStream(of: [UInt8].self)
        let id = transfer.id
        bodyContinuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.cancel(id) }
        }
        let head = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<HTTPResponseHead, any Error>) in
                transfer.mode = .streaming(head: continuation, body: bodyContinuation)
                submit(transfer)
            }
        } onCancel: {
            cancel(transfer.id)
        }
        var response = HTTPStreamingResponse(head: head, body: body)
        response.origin = "\(request.method) \(request.redactedURL)"
        response.maxEventBytes = configuration.maxEventBytes
        return response
    }

    /// Fails transfers in flight with `closed` and stops the thread.
    public func shutdown() {
        stopping.store(true, ordering: .releasing)
        let wake = shared.withLock { s -> Bool in
            s.stopping = true
            return s.polling
        }
        if wake { sy_curl_loop_wake(loop) }
    }

    /// Starts the transfer on this thread when curl is free: its request goes out at once and
    /// the loop thread, asleep in the poller, is not woken (it wakes when the answer arrives).
    /// When curl is busy, the transfer waits in `shared` for the loop thread, which is either
    /// awake and takes it before it next waits, or asleep and woken.
    private func submit(_ transfer: Transfer) {
        if stopping.load(ordering: .acquiring) {
            transfer.fail(HTTPClientError(.closed, "the HTTP client is shut down", mayHaveReachedServer: false))
            return
        }
        let started = driver.withLockIfAvailable { d -> Bool in
            guard !d.closed else { return false }
            start([transfer], cancelled: [], in: &d)
            drive(&d)
            if sy_curl_loop_needs_wake(loop) != 0 { sy_curl_loop_wake(loop) }
            return true
        }
        if started == true { return }
        let (accepted, wake) = shared.withLock { s -> (Bool, Bool) in
            if s.stopping { return (false, false) }
            s.toAdd.append(transfer)
            return (true, s.polling)
        }
        if accepted {
            if wake { sy_curl_loop_wake(loop) }
        } else {
            transfer.fail(HTTPClientError(.closed, "the HTTP client is shut down", mayHaveReachedServer: false))
        }
    }

    private func cancel(_ id: UInt64) {
        let done = driver.withLockIfAvailable { d -> Bool in
            guard !d.closed else { return true }
            start([], cancelled: [id], in: &d)
            drive(&d)
            // Removing a handle can let a transfer waiting for a connection start, with curl's
            // timer due at once: the sleeping loop must not wait out its own deadline first.
            if sy_curl_loop_needs_wake(loop) != 0 { sy_curl_loop_wake(loop) }
            return true
        }
        if done == true { return }
        let wake = shared.withLock { s -> Bool in
            s.toCancel.append(id)
            return s.polling
        }
        if wake { sy_curl_loop_wake(loop) }
    }

    // MARK: - Driving curl (with `driver` held)

    /// Adds new transfers' handles and removes cancelled ones'.
    private func start(_ adds: [Transfer], cancelled cancels: [UInt64], in d: inout Driver) {
        var cancelled: [Transfer] = []
        for id in cancels {
            if let transfer = d.active.removeValue(forKey: id) {
                curl_multi_remove_handle(multi, transfer.easy)
                cancelled.append(transfer)
            } else {
                d.cancelledEarly.insert(id)
            }
        }
        for transfer in adds {
            if d.cancelledEarly.remove(transfer.id) != nil {
                cancelled.append(transfer)
                continue
            }
            d.active[transfer.id] = transfer
            curl_multi_add_handle(multi, transfer.easy)
        }
        // Ids cancelled after they finished are never claimed; keep the set small.
        if d.cancelledEarly.count > 10_000 { d.cancelledEarly.removeAll() }
        // The statistics change before a cancelled caller resumes, so it never sees its own
        // transfer still in flight.
        let inFlight = d.active.count
        stats.withLock { $0.inFlight = inFlight }
        for transfer in cancelled { transfer.fail(CancellationError()) }
    }

    /// Runs curl's timer when it is due (adding a handle makes it due at once, so this is what
    /// sends a new request on an idle connection), then hands finished transfers their outcome.
    private func drive(_ d: inout Driver) {
        sy_curl_loop_timers(loop)
        finishTransfers(&d)
    }

    /// Hands every finished transfer its outcome. Each resumes its caller's continuation, which
    /// schedules the caller on its executor; curl's driver goes on without waiting for it.
    private func finishTransfers(_ d: inout Driver) {
        var left: Int32 = 0
        while let message = curl_multi_info_read(multi, &left) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            let result = message.pointee.data.result
            var raw: UnsafeMutableRawPointer?
            sy_curl_easy_getinfo_pointer(easy, CURLINFO_PRIVATE, &raw)
            curl_multi_remove_handle(multi, easy)
            guard let raw else { continue }
            let id = Unmanaged<Transfer>.fromOpaque(raw).takeUnretainedValue().id
            guard let transfer = d.active.removeValue(forKey: id) else { continue }
            let opened = transfer.connectCount
            let inFlight = d.active.count
            stats.withLock { s in
                s.connectionsOpened += opened
                if opened == 0 { s.reusedConnections += 1 }
                s.completed += 1
                s.inFlight = inFlight
            }
            transfer.finish(result)
        }
    }

    // MARK: - The loop thread

    /// Takes queued work, drives curl, then waits in the poller without holding `driver`, so
    /// callers can start transfers meanwhile; runs the ready sockets' actions when it wakes.
    private func runLoop() {
        while true {
            let (adds, cancels, stopping) = shared.withLock { s -> ([Transfer], [UInt64], Bool) in
                defer {
                    s.toAdd.removeAll()
                    s.toCancel.removeAll()
                }
                return (s.toAdd, s.toCancel, s.stopping)
            }
            let wait = driver.withLock { d -> (sleep: Bool, milliseconds: Int32)? in
                if stopping {
                    // Queued requests never started: they certainly did not reach the server.
                    start([], cancelled: cancels, in: &d)
                    for transfer in adds {
                        transfer.fail(HTTPClientError(.closed, "the HTTP client was shut down", mayHaveReachedServer: false))
                    }
                    for transfer in d.active.values {
                        curl_multi_remove_handle(multi, transfer.easy)
                        transfer.fail(HTTPClientError(.closed, "the HTTP client was shut down", mayHaveReachedServer: true))
                    }
                    d.active.removeAll()
                    stats.withLock { $0.inFlight = 0 }
                    d.closed = true
                    // The poller stays until deinit: a caller may still wake it after this.
                    curl_multi_cleanup(multi)
                    return nil
                }
                if !adds.isEmpty || !cancels.isEmpty { start(adds, cancelled: cancels, in: &d) }
                drive(&d)
                // Sleep only if nothing arrived meanwhile; from here on, callers must wake us.
                let sleep = shared.withLock { s -> Bool in
                    guard s.toAdd.isEmpty, s.toCancel.isEmpty, !s.stopping else { return false }
                    s.polling = true
                    return true
                }
                return (sleep, sy_curl_loop_prepare_wait(loop, sleep ? 1 : 0, Self.maxWaitMilliseconds))
            }
            guard let wait else {
                // Requests that queued up behind the last pass.
                let late = shared.withLock { s -> [Transfer] in
                    defer { s.toAdd.removeAll() }
                    return s.toAdd
                }
                for transfer in late {
                    transfer.fail(HTTPClientError(.closed, "the HTTP client was shut down", mayHaveReachedServer: false))
                }
                return
            }
            if sy_curl_loop_poll(loop, wait.milliseconds) < 0 {
                // Only a broken poller gets here (EBADF, ENOMEM); do not spin on it.
                logger.error("the HTTP client's poller failed: \(String(cString: strerror(errno)))")
                usleep(10_000)
            }
            if wait.sleep { shared.withLock { $0.polling = false } }
            driver.withLock { d in
                sy_curl_loop_dispatch(loop)
                finishTransfers(&d)
            }
        }
    }
}

/// One request in flight. After it is submitted, touched only by whoever drives curl (holds the
/// client's driver lock): the loop thread, or a caller that found the lock free.
final class Transfer: @unchecked Sendable {
    enum Mode {
        case none
        case buffered(CheckedContinuation<HTTPResponse, any Error>)
        case streaming(head: CheckedContinuation<HTTPResponseHead, any Error>?, body: AsyncThrowingStream<[UInt8], any Error>.Continuation)
    }

    private static let ids = Atomic<UInt64>(0)

    let id: UInt64
    let easy: UnsafeMutableRawPointer
    let request: HTTPRequest
    var mode: Mode = .none
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var requestBody: [UInt8]
    /// A stable allocation: curl keeps the pointer for the whole transfer.
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        return buffer
    }()
    private var status = 0
    private var headers: [(name: String, value: String)] = []
    private var body: [UInt8] = []
    private var headDelivered = false
    /// Body bytes received so far (after decoding), and the most that may come.
    private var received = 0
    private let maxBodyBytes: Int
    private let maxEventBytes: Int
    /// Counts lines and events of a streamed `text/event-stream` body as they arrive.
    private var eventSizes: EventSizeCounter?
    /// Set when the body passed `maxBodyBytes`: the write callback refused it and the transfer
    /// ends with this instead of libcurl's write error.
    private var limitError: HTTPClientError?

    init(request: HTTPRequest, configuration: HTTPClientConfiguration) throws {
        guard request.url.hasPrefix("http://") || request.url.hasPrefix("https://") else {
            throw HTTPClientError(.invalidRequest, "only http and https URLs are supported", mayHaveReachedServer: false)
        }
        guard let easy = curl_easy_init() else { fatalError("curl_easy_init failed: out of memory") }
        self.id = Self.ids.wrappingAdd(1, ordering: .relaxed).newValue
        self.easy = easy
        self.request = request
        self.requestBody = request.body ?? []
        self.maxBodyBytes = max(0, configuration.maxResponseBodyBytes)
        self.maxEventBytes = max(0, configuration.maxEventBytes)
        let me = Unmanaged.passUnretained(self).toOpaque()
        sy_curl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, me)
        sy_curl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        sy_curl_easy_setopt_string(easy, CURLOPT_URL, request.url)
        sy_curl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connectTimeout.wholeMilliseconds)
        sy_curl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, request.timeout.wholeMilliseconds)
        sy_curl_easy_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, "")
        sy_curl_easy_setopt_string(easy, CURLOPT_USERAGENT, configuration.userAgent)
        sy_curl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, configuration.http2 ? 4 : 2)  // 2TLS : 1.1
        sy_curl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        sy_curl_easy_setopt_long(easy, CURLOPT_TCP_KEEPALIVE, 1)
        if request.freshConnection {
            sy_curl_easy_setopt_long(easy, CURLOPT_FRESH_CONNECT, 1)
            sy_curl_easy_setopt_long(easy, CURLOPT_FORBID_REUSE, 1)
        }
        if let caFile = configuration.caFile { sy_curl_easy_setopt_string(easy, CURLOPT_CAINFO, caFile) }
        if !configuration.verifyTLS {
            sy_curl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 0)
            sy_curl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 0)
        }
        sy_curl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer)
        // No "Expect: 100-continue" round trip before large bodies.
        headerList = curl_slist_append(headerList, "Expect:")
        for (name, value) in request.headers { headerList = curl_slist_append(headerList, "\(name): \(value)") }
        sy_curl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList)
        switch request.method {
        case "GET": sy_curl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case "HEAD": sy_curl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        default: sy_curl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        }
        if request.body != nil {
            // COPYPOSTFIELDS: curl keeps its own copy, so no pointer into a Swift array outlives its scope.
            sy_curl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(requestBody.count))
            requestBody.withUnsafeMutableBufferPointer { buffer in
                _ = sy_curl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(buffer.baseAddress))
            }
        }
        sy_curl_easy_setopt_write_callback(easy, CURLOPT_WRITEFUNCTION, transferWriteBody)
        sy_curl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, me)
        sy_curl_easy_setopt_write_callback(easy, CURLOPT_HEADERFUNCTION, transferWriteHeader)
        sy_curl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, me)
    }

    deinit {
        curl_easy_cleanup(easy)
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    var connectCount: Int {
        var n = 0
        sy_curl_easy_getinfo_long(easy, CURLINFO_NUM_CONNECTS, &n)
        return n
    }

    private var httpVersion: Int {
        var v = 0
        sy_curl_easy_getinfo_long(easy, CURLINFO_HTTP_VERSION, &v)
        switch v {
        case 1: return 10
        case 2: return 11
        case 3: return 20
        case 4: return 30
        default: return 0
        }
    }

    /// Takes one header line as libcurl delivers it (with its CR LF), as bytes: no String is
    /// made for the status line or the blank line, and a header's name and value are cut out
    /// before they are decoded.
    fileprivate func receiveHeader(_ bytes: UnsafeRawBufferPointer) {
        if bytes.starts(with: [0x48, 0x54, 0x54, 0x50, 0x2F]) {  // "HTTP/"
            // A new response starts (after 100 Continue, say): forget the last one's headers.
            // "HTTP/1.1 200 OK", "HTTP/2 200": the status is the digits after the first space.
            status = 0
            if let space = bytes.firstIndex(of: 0x20) {
                for byte in bytes[(space + 1)...] {
                    guard byte >= 0x30 && byte <= 0x39 else { break }
                    status = status &* 10 &+ Int(byte - 0x30)
                }
            }
            headers.removeAll()
        } else if let colon = bytes.firstIndex(of: 0x3A) {  // ":"
            // Optional whitespace around the value, and the line's CR LF, are not part of it.
            func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
            var start = colon + 1
            var end = bytes.endIndex
            while start < end && isSpace(bytes[start]) { start += 1 }
            while end > start && isSpace(bytes[end - 1]) { end -= 1 }
            let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[..<colon]), as: UTF8.self)
            let value = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
            headers.append((name, value))
        } else if bytes.allSatisfy({ $0 == 0x0D || $0 == 0x0A }), !bytes.isEmpty, status >= 200 {
            deliverHead()
        }
    }

    /// Takes a piece of the body as libcurl delivers it (decoded). False when it would pass the
    /// size limit: the write callback then refuses it, which makes libcurl stop the transfer.
    fileprivate func receiveBody(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count <= maxBodyBytes - received else {
            limitError = HTTPClientError(
                .responseTooLarge,
                "the response body of \(request.method) \(request.redactedURL) passed the limit of \(byteCount(maxBodyBytes)) "
                    + "(maxResponseBodyBytes, counted after decoding); the transfer was stopped",
                mayHaveReachedServer: true
            )
            return false
        }
        received += bytes.count
        switch mode {
        case .streaming(_, let bodyContinuation):
            deliverHead()
            if eventSizes?.add(bytes) == false {
                limitError = .eventTooLarge(origin: "\(request.method) \(request.redactedURL)", limit: maxEventBytes)
                return false
            }
            bodyContinuation.yield(Array(bytes))
        default:
            body.append(contentsOf: bytes)
        }
        return true
    }

    private func deliverHead() {
        guard !headDelivered, case .streaming(let head?, let bodyContinuation) = mode else { return }
        headDelivered = true
        mode = .streaming(head: nil, body: bodyContinuation)
        let responseHead = HTTPResponseHead(status: status, headers: headers)
        // An event stream is held to maxEventBytes here, as curl delivers it, so that a huge line
        // stops the transfer at once instead of piling up in the body's buffer ahead of a slower
        // reader. Other streamed bodies may have lines of any length.
        if responseHead.header("content-type")?.lowercased().hasPrefix("text/event-stream") == true {
            eventSizes = EventSizeCounter(limit: maxEventBytes)
        }
        head.resume(returning: responseHead)
    }

    /// The transfer ended; `result` is libcurl's code.
    func finish(_ result: CURLcode) {
        if let limitError {
            fail(limitError)
        } else if result == CURLE_OK {
            switch mode {
            case .buffered(let continuation):
                let head = HTTPResponseHead(status: status, headers: headers)
                continuation.resume(returning: HTTPResponse(head: head, body: body, httpVersion: httpVersion, newConnections: connectCount))
            case .streaming(_, let bodyContinuation):
                deliverHead()
                bodyContinuation.finish()
            case .none:
                break
            }
            mode = .none
        } else {
            fail(error(for: result))
        }
    }

    func fail(_ error: any Error) {
        switch mode {
        case .buffered(let continuation): continuation.resume(throwing: error)
        case .streaming(let head, let bodyContinuation):
            head?.resume(throwing: error)
            bodyContinuation.finish(throwing: error)
        case .none: break
        }
        mode = .none
    }

    private func error(for code: CURLcode) -> HTTPClientError {
        let detail = String(cString: errorBuffer)
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        var sent = 0
        sy_curl_easy_getinfo_long(easy, CURLINFO_REQUEST_SIZE, &sent)
        let reached = sent > 0
        let host = URLComponents(string: request.url)?.host ?? "the server"
        let raw = Int(code.rawValue)
        switch raw {
        case 6, 7:  // couldn't resolve, couldn't connect
            return HTTPClientError(.connectFailed, "cannot connect to \(host): \(text)", mayHaveReachedServer: false, curlCode: raw)
        case 28:
            return HTTPClientError(
                .timeout,
                "\(request.method) \(request.redactedURL) timed out: \(text)",
                mayHaveReachedServer: reached,
                curlCode: raw
            )
        case 35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91:
            return HTTPClientError(.tls, "TLS with \(host) failed: \(text)", mayHaveReachedServer: false, curlCode: raw)
        case 18, 52, 55, 56, 92:  // partial body, empty reply, send/recv failure, HTTP/2 stream error
            return HTTPClientError(
                .connectionLost,
                "connection to \(host) broke during \(request.method) \(request.redactedURL): \(text)",
                mayHaveReachedServer: reached,
                curlCode: raw
            )
        case 3:
            return HTTPClientError(.invalidRequest, "malformed URL", mayHaveReachedServer: false, curlCode: raw)
        default:
            return HTTPClientError(
                .transport,
                "\(request.method) \(request.redactedURL) failed: \(text)",
                mayHaveReachedServer: reached,
                curlCode: raw
            )
        }
    }
}

private func transferWriteBody(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let data, let context else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue()
    // Any count other than the one offered makes libcurl abort the transfer.
    return transfer.receiveBody(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
}

private func transferWriteHeader(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ context: UnsafeMutableRawPointer?) -> Int {
    guard let data, let context else { return 0 }
    Unmanaged<Transfer>.fromOpaque(context).takeUnretainedValue().receiveHeader(UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
}

/// "1 MiB (1048576 bytes)", "300 KiB (307200 bytes)", "1000 bytes": a limit as errors state it.
func byteCount(_ n: Int) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 { return "\(n >> 20) MiB (\(n) bytes)" }
    if n >= 1 << 10 && n % (1 << 10) == 0 { return "\(n >> 10) KiB (\(n) bytes)" }
    return "\(n) bytes"
}

extension Duration {
    var wholeMilliseconds: Int {
        let (s, atto) = components
        return Int(s * 1000 + atto / 1_000_000_000_000_000)
    }
}
