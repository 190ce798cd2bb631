/// One Server-Sent Event.
public struct ServerSentEvent: Sendable, Hashable {
    /// The `event:` field; "message" when absent.
    public var event: String
    /// The `data:` lines joined with newlines.
    public var data: String
    public var id: String?
    /// The `retry:` field in milliseconds.
    public var retry: Int?

    public init(event: String = "message", data: String, id: String? = nil, retry: Int? = nil) {
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry
    }
}

/// The sizes `maxEventBytes` bounds in an event stream, counted byte by byte as they arrive:
/// the open line, and the open event, that is its lines from the first to the blank line that
/// ends it, without their line ends. Comment lines (`: keep-alive`) count toward the line bound
/// only, since nothing keeps them. The HTTP client's write callback and
/// `ServerSentEventParser` count the same way.
struct EventSizeCounter: Sendable {
    let limit: Int
    private var line = 0
    private var comment = false
    private var event = 0
    private var sawCR = false

    init(limit: Int) { self.limit = limit }

    /// False once a line or an event has passed the limit.
    mutating func add(_ byte: UInt8) -> Bool {
        if sawCR {
            sawCR = false
            if byte == 10 { return true }  // the LF of a CRLF
        }
        if byte == 13 || byte == 10 {
            sawCR = byte == 13
            if line == 0 { event = 0 }  // a blank line ends the event
            line = 0
            comment = false
            return true
        }
        if line == 0 { comment = byte == UInt8(ascii: ":") }
        line += 1
        if !comment { event += 1 }
        return line <= limit && event <= limit
    }

    mutating func add(_ bytes: UnsafeRawBufferPointer) -> Bool {
        for byte in bytes where !add(byte) { return false }
        return true
    }
}

/// An incremental Server-Sent Events parser (the WHATWG event-stream format).
///
/// Feed it bytes as they arrive, in pieces of any size; it returns the events completed so far.
/// Comment lines (`: keep-alive`) are ignored; lines may end in CRLF, LF or CR.
///
/// What it keeps is bounded by `maxEventBytes`: a line longer than that, or an event longer than
/// that (the bytes of its lines up to the blank line that ends it, without line ends and
/// comment lines), throws `TooLarge` at the byte that passes the limit.
public struct ServerSentEventParser: Sendable {
    /// A line or an event passed `maxEventBytes`.
    public struct TooLarge: Error, Sendable, Equatable {
        public var limit: Int
        public init(limit: Int) { self.limit = limit }
    }

    /// The longest line, and the longest event, in bytes.
    public let maxEventBytes: Int
    private var sizes: EventSizeCounter
    private var line: [UInt8] = []
    private var sawCR = false
    private var event = ""
    private var data: [String] = []
    private var hasData = false
    private var id: String?
    private var retry: Int?

    public init(maxEventBytes: Int = .max) {
        self.maxEventBytes = maxEventBytes
        self.sizes = EventSizeCounter(limit: maxEventBytes)
    }

    public mutating func feed<C: Collection>(_ bytes: C) throws(TooLarge) -> [ServerSentEvent] where C.Element == UInt8 {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            guard sizes.add(byte) else { throw TooLarge(limit: maxEventBytes) }
            if sawCR {
                sawCR = false
                if byte == 10 { continue }  // the LF of a CRLF
            }
            if byte == 13 {
                sawCR = true
                if let e = endLine() { events.append(e) }
            } else if byte == 10 {
                if let e = endLine() { events.append(e) }
            } else {
                line.append(byte)
            }
        }
        return events
    }

    /// The event still open when the stream ends without a blank line, if any.
    public mutating func finish() -> ServerSentEvent? {
        if !line.isEmpty { _ = endLine() }
        return dispatch()
    }

    private mutating func endLine() -> ServerSentEvent? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty { return dispatch() }
        if line.first == UInt8(ascii: ":") { return nil }
        let text = String(decoding: line, as: UTF8.self)
        let field: Substring
        var value: Substring
        if let colon = text.firstIndex(of: ":") {
            field = text[..<colon]
            value = text[text.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = text[...]
            value = ""
        }
        switch field {
        case "event": event = String(value)
        case "data":
            data.append(String(value))
            hasData = true
        case "id": if !value.contains("\0") { id = String(value) }
        case "retry": if let ms = Int(value) { retry = ms }
        default: break
        }
        return nil
    }

    private mutating func dispatch() -> ServerSentEvent? {
        defer {
            event = ""
            data.removeAll()
            hasData = false
            retry = nil
        }
        guard hasData else { return nil }
        return ServerSentEvent(event: event.isEmpty ? "message" : event, data: data.joined(separator: "\n"), id: id, retry: retry)
    }
}

extension HTTPStreamingResponse {
    /// The body as Server-Sent Events. A line or event over the client's `maxEventBytes` ends
    /// the stream with `eventTooLarge`. For a `text/event-stream` response the client's loop
    /// thread has already stopped the transfer at that byte; for any other, leaving the body's
    /// iteration cancels it.
    public var events: AsyncThrowingStream<ServerSentEvent, any Error> {
        let body = self.body
        let origin = self.origin
        let limit = maxEventBytes
        return AsyncThrowingStream { continuation in
            let task = Task {
                var parser = ServerSentEventParser(maxEventBytes: limit)
                do {
                    for try await chunk in body {
                        for event in try parser.feed(chunk) { continuation.yield(event) }
                    }
                    if let last = parser.finish() { continuation.yield(last) }
                    continuation.finish()
                } catch let error as ServerSentEventParser.TooLarge {
                    continuation.finish(throwing: HTTPClientError.eventTooLarge(origin: origin, limit: error.limit))
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension HTTPClientError {
    static func eventTooLarge(origin: String, limit: Int) -> HTTPClientError {
        HTTPClientError(
            .eventTooLarge,
            "a Server-Sent Events line or event from \(origin) passed the limit of \(byteCount(limit)) (maxEventBytes); the stream was stopped",
            mayHaveReachedServer: true
        )
    }
}
