import Foundation
import Testing

@testable import SwitchyardRedis

@Suite("Configuration from URLs and the environment")
struct RedisConfigurationTests {
    @Test func parsesFullTCPURL() throws {
        let c = try RedisConfiguration(url: "redis://alice:s%40cret@redis.internal:6380/3")
        #expect(c.endpoint == .tcp(host: "redis.internal", port: 6380))
        #expect(c.username == "alice")
        #expect(c.password == "s@cret")
        #expect(c.database == 3)
    }

    @Test func passwordOnlyAndDefaults() throws {
        let c = try RedisConfiguration(url: "redis://:pw@localhost")
        #expect(c.username == nil)
        #expect(c.password == "pw")
        #expect(c.endpoint == .tcp(host: "localhost", port: 6379))
        #expect(c.database == 0)
    }

    @Test func parsesIPv6AndUnixSockets() throws {
        #expect(try RedisConfiguration(url: "redis://[::1]:7000").endpoint == .tcp(host: "::1", port: 7000))
        let unix = try RedisConfiguration(url: "unix:///run/redis/redis.sock?db=2")
        #expect(unix.endpoint == .unixSocket(path: "/run/redis/redis.sock"))
        #expect(unix.database == 2)
    }

    @Test(arguments: [
        ("http://localhost:6379", "scheme 'http'"),
        ("redis://localhost:6379/x", "database 'x'"),
        ("redis://localhost:99999", "port"),
        ("rediss://localhost:6380", "TLS"),
        ("not a url", "not a URL"),
        ("redis://", "host is missing"),
    ])
    func rejectsBadURLsNamingTheProblem(url: String, fragment: String) {
        #expect {
            try RedisConfiguration(url: url)
        } throws: { error in
            guard let error = error as? RedisError else { return false }
            return error.code == .invalidConfiguration && error.message.contains(fragment) && error.message.hasPrefix("Redis URL")
        }
    }

    @Test(arguments: ["redis://u:topsecret@host:1/notadb", "redis://u:top/secret@host", "redis://u:70000/secret@h"])
    func badURLErrorNeverQuotesThePassword(url: String) {
        #expect {
            try RedisConfiguration(url: url)
        } throws: { error in
            !"\(error)".contains("secret")
        }
    }

    @Test func percentEncodedPasswordIsDecodedOnce() throws {
        // "%2541" is an encoded "%41": it must come out as "%41", not "A".
        #expect(try RedisConfiguration(url: "redis://:p%2541@h").password == "p%41")
    }

    @Test func descriptionRedactsThePassword() throws {
        let c = try RedisConfiguration(url: "redis://alice:topsecret@h:1/2")
        #expect(!c.description.contains("topsecret"))
        #expect(c.redactedURL == "redis://alice:***@h:1/2")
    }

    @Test func environmentOverridesAndPasswordFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pw-\(UUID().uuidString)")
        try "from-file\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try RedisConfiguration.fromEnvironment([
            "SWITCHYARD_REDIS_URL": "redis://h:1",
            "SWITCHYARD_REDIS_PASSWORD_FILE": file.path,
            "SWITCHYARD_REDIS_POOL_SIZE": "3",
            "SWITCHYARD_REDIS_COMMAND_TIMEOUT_MS": "250",
        ])
        #expect(c.password == "from-file")
        #expect(c.poolSize == 3)
        #expect(c.commandTimeout == .milliseconds(250))
        let defaults = try RedisConfiguration.fromEnvironment([:])
        #expect(defaults.endpoint == .tcp(host: "127.0.0.1", port: 6379))
    }

    @Test func environmentErrorsNameTheVariable() {
        #expect {
            try RedisConfiguration.fromEnvironment(["SWITCHYARD_REDIS_POOL_SIZE": "zero"])
        } throws: { error in
            "\(error)".contains("SWITCHYARD_REDIS_POOL_SIZE")
        }
    }
}
