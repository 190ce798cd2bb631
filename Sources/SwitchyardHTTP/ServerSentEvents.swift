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

/// An incremental Server-Sent Events parser (the WHATWG event-stream format).
///
/// Feed it bytes as they arrive, in pieces of any size; it returns the events completed so far.
/// Comment lines (`: keep-alive`) are ignored; lines may end in CRLF, LF or CR.
public struct ServerSentEventParser: Sendable {
    private var line: [UInt8] = []
    private var sawCR = false
    private var event = ""
    private var data: [String] = []
    private var hasData = false
    private var id: String?
    private var retry: Int?

    public init() {}

    public mutating func feed<C: Collection>(_ bytes: C) -> [ServerSentEvent] where C.Element == UInt8 {
        var events: [ServerSentEvent] = []
        for byte in bytes {
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
    /// The body as Server-Sent Events.
    public var events: AsyncThrowingStream<ServerSentEvent, any Error> {
        let body = self.body
        return AsyncThrowingStream { continuation in
            let task = Task {
                var parser = ServerSentEventParser()
                do {
                    for try await chunk in body {
                        for event in parser.feed(chunk) { continuation.yield(event) }
                    }
                    if let last = parser.finish() { continuation.yield(last) }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
