import Testing

@testable import SwitchyardRedis

@Suite("Command encoding and scripts, without a server")
struct RedisCommandTests {
    @Test func encodesArgumentsAsBulkStrings() {
        let command = RedisCommand("set", "k", [0, 13, 10, 255] as [UInt8], 42)
        #expect(command.name == "SET")
        let expected = Array("*4\r\n$3\r\nset\r\n$1\r\nk\r\n$4\r\n".utf8) + [0, 13, 10, 255] + Array("\r\n$2\r\n42\r\n".utf8)
        #expect(command.encoded == expected)
    }

    @Test func describesCommandsWithoutArguments() {
        let command = RedisCommand("AUTH", "alice", "hunter2")
        #expect(command.description == "AUTH")
        #expect(!"\(command)".contains("hunter2"))
    }

    @Test func scriptDigestMatchesKnownSHA1() {
        // Known answers: SHA-1 of "" and of "abc".
        #expect(SHA1.hexDigest([]) == "da39a3ee5e6b4b0d3255bfef95601890afd80709")
        #expect(SHA1.hexDigest(Array("abc".utf8)) == "a9993e364706816aba3e25717850c26c9cd0d89d")
        let long = [UInt8](repeating: 0x61, count: 1000)  // spans several 64-byte blocks
        #expect(SHA1.hexDigest(long) == "291e9a6c66994949b57ba5e650361e98fc36b1ba")
    }

    @Test func backoffGrowsAndIsCapped() {
        let backoff = Backoff(base: .milliseconds(10), cap: .milliseconds(100))
        #expect(backoff.delay(attempt: 1, random: 0) == .milliseconds(5))
        #expect(backoff.delay(attempt: 1, random: 1) == .milliseconds(10))
        #expect(backoff.delay(attempt: 3, random: 1) == .milliseconds(40))
        #expect(backoff.delay(attempt: 30, random: 1) == .milliseconds(100))
        #expect(backoff.delay(attempt: 30, random: 0) == .milliseconds(50))
    }

    @Test func replyAccessors() {
        let pairs = RESPValue.array([.bulk(Array("a".utf8)), .bulk(Array("1".utf8)), .bulk(Array("b".utf8)), .bulk(Array("2".utf8))])
        #expect(pairs.stringPairs == ["a": "1", "b": "2"])
        #expect(RESPValue.bulk(Array("17".utf8)).int == 17)
        #expect(RESPValue.bulk([0xff, 0xfe]).string == nil)
        #expect(RESPValue.bulk([0xff, 0xfe]).bytes == [0xff, 0xfe])
        #expect(RESPValue.null.isNull)
        #expect(throws: RedisError.self) { try RESPValue.error("WRONGTYPE x").throwingServerError() }
    }
}
