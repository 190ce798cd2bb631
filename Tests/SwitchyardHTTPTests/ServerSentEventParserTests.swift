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

    @Test func parsesAWholeStream() throws {
        var parser = ServerSentEventParser()
        #expect(try parser.feed(Self.stream) == Self.expected)
        #expect(parser.finish() == nil)
    }

    @Test func sameEventsWhateverTheChunking() throws {
        for size in [1, 2, 3, 5, 7, 13, 64] {
            var parser = ServerSentEventParser()
            var events: [ServerSentEvent] = []
            var i = 0
            while i < Self.stream.count {
                events += try parser.feed(Self.stream[i..<min(i + size, Self.stream.count)])
                i += size
            }
            #expect(events == Self.expected, "chunks of \(size) bytes")
        }
    }

    @Test func commentsAloneDispatchNothingAndAnOpenEventIsFlushedAtTheEnd() throws {
        var parser = ServerSentEventParser()
        #expect(try parser.feed(Array(": ping\n\n: ping\n\n".utf8)).isEmpty)
        #expect(try parser.feed(Array("data: [DONE]".utf8)).isEmpty)
        #expect(parser.finish() == ServerSentEvent(data: "[DONE]"))
    }

    @Test func aLineOrAnEventOverTheLimitThrowsAsSoonAsItPassesIt() throws {
        // A line of exactly the limit is fine; one byte more throws before the line ends.
        var parser = ServerSentEventParser(maxEventBytes: 16)
        #expect(try parser.feed(Array("data: 0123456789\n\n".utf8)) == [ServerSentEvent(data: "0123456789")])
        #expect(throws: ServerSentEventParser.TooLarge(limit: 16)) { try parser.feed(Array("data: 0123456789A".utf8)) }
        // So is a comment line: it is never kept, but its length is bounded all the same.
        var comments = ServerSentEventParser(maxEventBytes: 16)
        #expect(throws: ServerSentEventParser.TooLarge.self) { try comments.feed(Array(": 01234567890123456789".utf8)) }
        // Short lines that add up past the limit within one event; comment lines do not count.
        var many = ServerSentEventParser(maxEventBytes: 32)
        #expect(try many.feed(Array("data: 12345678\n: ping\n: ping\ndata: 1234567\n".utf8)).isEmpty)  // 14 + 13 = 27
        #expect(try many.feed(Array("id: 1".utf8)).isEmpty)  // 32
        #expect(throws: ServerSentEventParser.TooLarge.self) { try many.feed(Array("2".utf8)) }
        // The count starts again with each event.
        var again = ServerSentEventParser(maxEventBytes: 32)
        for _ in 0..<100 { #expect(try again.feed(Array("data: 12345678\ndata: 1234567\n\n".utf8)).count == 1) }
    }
}
