import Foundation
import SwitchyardCore
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Process configuration")
struct SwitchyardConfigurationTests {
    @Test func readsRedisAndQueueFromTheEnvironment() throws {
        let c = try SwitchyardConfiguration.fromEnvironment([
            "SWITCHYARD_REDIS_URL": "redis://:pw@10.0.0.5:6380/1",
            "SWITCHYARD_QUEUE": "gpu-a",
        ])
        #expect(c.queue == "gpu-a")
        #expect(c.redis.endpoint == .tcp(host: "10.0.0.5", port: 6380))
        #expect(!c.description.contains("pw"))
    }

    @Test(arguments: ["", "has space", "{brace}", String(repeating: "x", count: 65)])
    func rejectsQueueNamesThatCannotBeAHashTag(name: String) {
        #expect {
            try SwitchyardConfiguration.fromEnvironment(["SWITCHYARD_QUEUE": name])
        } throws: { error in
            (error as? ConfigurationError)?.field == "SWITCHYARD_QUEUE"
        }
    }

    @Test func harnessServerIsPrivateAndStopsByPID() throws {
        let server = try RedisServer()
        let pid = try #require(server.pid)
        #expect(kill(pid, 0) == 0)
        server.stop()
        #expect(server.pid == nil)
        #expect(kill(pid, 0) != 0)
    }
}
