import SwitchyardHTTP
import Testing

@Suite("Server-Sent Events parser")
struct ServerSentEventParserTests {
    static let stream = Array(
        ": OPENROUTER PROCESSING\r\n\r\nevent: update\r\ndata: first\r\ndata: second\r\nid: 7\r\n\r\ndata: {\"a\":1}\n\n: keep-alive\n\ndata:no-space\rretry: 3000\r\r"
            .utf8
    )

    static let expected = [
        ServerSentEvent(event: "update", data: "first\nsecond", id: "7"),
        ServerSentEvent(data: #"{"a":1}"#, id: "7"),
        ServerSentEvent(data: "no-space", id: "7", retry: 3000),
    ]

    @Test func parsesAWholeStream() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(Self.stream) == Self.expected)
        #expect(parser.finish() == nil)
    }

    @Test func sameEventsWhateverTheChunking() {
        for size in [1, 2, 3, 5, 7, 13, 64] {
            var parser = ServerSentEventParser()
            var events: [ServerSentEvent] = []
            var i = 0
            while i < Self.stream.count {
                events += parser.feed(Self.stream[i..<min(i + size, Self.stream.count)])
                i += size
            }
            #expect(events == Self.expected, "chunks of \(size) bytes")
        }
    }

    @Test func commentsAloneDispatchNothingAndAnOpenEventIsFlushedAtTheEnd() {
        var parser = ServerSentEventParser()
        #expect(parser.feed(Array(": ping\n\n: ping\n\n".utf8)).isEmpty)
        #expect(parser.feed(Array("data: [DONE]".utf8)).isEmpty)
        #expect(parser.finish() == ServerSentEvent(data: "[DONE]"))
    }
}
