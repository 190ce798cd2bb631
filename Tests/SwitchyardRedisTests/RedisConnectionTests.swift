import Foundation
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

@Suite("Redis layer against a real redis-server")
struct RedisConnectionTests {
    @Test func everyReplyType() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }

        #expect(try await redis.send("SET", "k", "v") == .status("OK"))
        #expect(try await redis.send("GET", "k") == .bulk(Array("v".utf8)))
        #expect(try await redis.send("GET", "missing") == .null)
        #expect(try await redis.send("INCRBY", "n", 41) == .integer(41))
        #expect(try await redis.send("SET", "e", "") == .status("OK"))
        #expect(try await redis.send("GET", "e") == .bulk([]))
        try await redis.send("RPUSH", "l", "a", "b")
        #expect(try await redis.send("LRANGE", "l", 0, -1) == .array([.bulk(Array("a".utf8)), .bulk(Array("b".utf8))]))
        #expect(try await redis.send("LRANGE", "nothing", 0, -1) == .array([]))
        // A null array: BLPOP that times out.
        #expect(try await redis.send("BLPOP", "nothing", "0.01") == .null)
        // Nested arrays with every type inside, from a script.
        let nested = try await redis.send(
            "EVAL",
            "return {1, 'two', {3, {'four'}}, redis.status_reply('FINE'), false}",
            0
        )
        #expect(
            nested
                == .array([
                    .integer(1), .bulk(Array("two".utf8)), .array([.integer(3), .array([.bulk(Array("four".utf8))])]), .status("FINE"), .null,
                ])
        )
        // An error reply is thrown by send and kept in place by pipeline.
        await #expect {
            try await redis.send("INCR", "k")
        } throws: { error in
            (error as? RedisError)?.code == .serverError && (error as? RedisError)?.serverErrorPrefix == "ERR"
        }
        let replies = try await redis.pipeline([RedisCommand("LPUSH", "k", "x"), RedisCommand("PING")])
        #expect(replies[0].errorMessage?.hasPrefix("WRONGTYPE") == true)
        #expect(replies[1] == .status("PONG"))
    }

    @Test func binarySafeKeysAndValues() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }
        let key: [UInt8] = [0x00, 0xff, 0x0d, 0x0a, 0x24, 0xc3, 0x28]  // NUL, CRLF, '$' and invalid UTF-8
        let value: [UInt8] = (0...255).map { UInt8($0) } + [0x00, 0x00, 0xfe]
        try await redis.send("SET", key, value)
        let reply = try await redis.send("GET", key)
        #expect(reply.bytes == value)
        #expect(reply.string == nil)
        #expect(try await redis.send("STRLEN", key).int == value.count)
    }

    @Test func tenMegabyteValue() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }
        var value = [UInt8](repeating: 0, count: 10 * 1024 * 1024)
        for i in stride(from: 0, to: value.count, by: 4096) { value[i] = UInt8(truncatingIfNeeded: i / 4096) }
        try await redis.send("SET", "big", value)
        let back = try await redis.send("GET", "big")
        #expect(back.bytes?.count == value.count)
        #expect(back.bytes == value)
    }

    @Test func tenThousandPipelinedCommands() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }
        let commands = (0..<10_000).map { _ in RedisCommand("INCR", "counter") }
        let replies = try await redis.pipeline(commands)
        #expect(replies.count == 10_000)
        #expect(replies.enumerated().allSatisfy { $0.element == .integer(Int64($0.offset + 1)) })
        let mixed = try await redis.pipeline((0..<10_000).map { RedisCommand("SET", "k\($0)", $0) } + [RedisCommand("DBSIZE")])
        #expect(mixed.last == .integer(10_001))
    }

    @Test func scriptsRunBySHAAndReloadAfterFlush() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }
        let script = RedisScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        // Redis computes the same digest as we do.
        #expect(try await redis.send("SCRIPT", "LOAD", script.source).string == script.sha1)
        #expect(try await redis.evaluate(script, keys: ["s"], arguments: [5]) == .integer(5))
        try await redis.send("SCRIPT", "FLUSH")
        #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(0)]))
        #expect(try await redis.evaluate(script, keys: ["s"], arguments: [2]) == .integer(7))
        #expect(try await redis.send("SCRIPT", "EXISTS", script.sha1) == .array([.integer(1)]))
        // A script error is a server error naming the script's problem.
        let broken = RedisScript("return redis.call('NOPE')")
        await #expect(throws: RedisError.self) { try await redis.evaluate(broken) }
    }

    @Test func wrongPasswordIsAClearErrorWithoutThePassword() async throws {
        let server = try RedisServer(arguments: ["--requirepass", "right-secret"])
        var configuration = server.configuration
        configuration.password = "wrong-guess-123"
        configuration.reconnectWait = .zero
        let redis = RedisConnection(configuration: configuration)
        defer { redis.close() }
        await #expect {
            try await redis.send("PING")
        } throws: { error in
            let text = "\(error)"
            return (error as? RedisError)?.code == .authenticationFailed && text.contains("WRONGPASS")
                && !text.contains("wrong-guess-123") && !text.contains("right-secret")
        }
        // No password at all against a protected server: says a password is needed.
        var none = server.configuration
        none.reconnectWait = .zero
        let anonymous = RedisConnection(configuration: none)
        defer { anonymous.close() }
        await #expect {
            try await anonymous.send("PING")
        } throws: { error in
            (error as? RedisError)?.code == .authenticationFailed && "\(error)".contains("requires a password")
        }
        configuration.password = "right-secret"
        let good = RedisConnection(configuration: configuration)
        defer { good.close() }
        #expect(try await good.send("PING") == .status("PONG"))
    }

    @Test func aclUserAndDatabaseSelection() async throws {
        let server = try RedisServer()
        let admin = RedisConnection(configuration: server.configuration)
        defer { admin.close() }
        try await admin.send("ACL", "SETUSER", "worker", "on", ">worker-pass", "~*", "+@all")
        let configuration = try RedisConfiguration(url: "redis://worker:worker-pass@127.0.0.1:\(server.port)/4")
        let redis = RedisConnection(configuration: configuration)
        defer { redis.close() }
        #expect(try await redis.send("ACL", "WHOAMI").string == "worker")
        try await redis.send("SET", "where", "db4")
        #expect(try await admin.send("GET", "where") == .null)
        try await admin.send("SELECT", 4)
        #expect(try await admin.send("GET", "where").string == "db4")
        let name = try await redis.send("CLIENT", "GETNAME").string
        #expect(name == "switchyard")
    }

    @Test func unixSocket() async throws {
        let socketPath = FileManager.default.temporaryDirectory.appendingPathComponent("sy-\(UUID().uuidString.prefix(8)).sock").path
        let server = try RedisServer(arguments: ["--unixsocket", socketPath, "--unixsocketperm", "700"])
        _ = server
        let redis = RedisConnection(configuration: try RedisConfiguration(url: "unix://\(socketPath)"))
        defer { redis.close() }
        #expect(try await redis.send("PING") == .status("PONG"))
    }

    @Test func reconnectsAfterTheServerIsKilledAndRestarted() async throws {
        let server = try RedisServer()
        var configuration = server.configuration
        configuration.reconnectWait = .seconds(10)
        let redis = RedisConnection(configuration: configuration)
        let pool = RedisConnectionPool(configuration: configuration)
        defer {
            redis.close()
            pool.shutDown()
        }
        try await redis.send("SET", "before", 1)
        try await pool.send("PING")
        server.kill()
        // Restart on the same port while a command is already waiting for the server.
        let restarter = Task.detached {
            try await Task.sleep(for: .milliseconds(300))
            try server.restart()
        }
        #expect(try await redis.send("PING") == .status("PONG"))
        try await restarter.value
        #expect(try await redis.send("GET", "before") == .null)  // no persistence: a fresh server
        #expect(try await pool.send("PING") == .status("PONG"))
        // Same objects, new sockets: still usable for more work.
        #expect(try await redis.pipeline([RedisCommand("INCR", "after"), RedisCommand("INCR", "after")]).last == .integer(2))
    }

    @Test func failsFastWhenNothingListens() async throws {
        var configuration = try RedisConfiguration(url: "redis://127.0.0.1:\(try RedisServer.freePort())")
        configuration.reconnectWait = .milliseconds(200)
        let redis = RedisConnection(configuration: configuration)
        defer { redis.close() }
        await #expect {
            try await redis.send("PING")
        } throws: { error in
            (error as? RedisError)?.code == .connectionFailed && "\(error)".contains("Connection refused")
        }
    }

    @Test func commandTimeoutThenRecovery() async throws {
        let server = try RedisServer(arguments: ["--enable-debug-command", "yes"])
        var configuration = server.configuration
        configuration.commandTimeout = .milliseconds(200)
        let redis = RedisConnection(configuration: configuration)
        defer { redis.close() }
        await #expect {
            try await redis.send("DEBUG", "SLEEP", "1")
        } throws: { error in
            (error as? RedisError)?.code == .timeout && "\(error)".contains("DEBUG")
        }
        // The late reply is not mistaken for the next command's: the connection was replaced.
        try await Task.sleep(for: .seconds(1))
        #expect(try await redis.send("ECHO", "fresh").string == "fresh")
    }

    @Test func sixtyFourTasksShareAPoolOfEight() async throws {
        let server = try RedisServer()
        var configuration = server.configuration
        configuration.poolSize = 8
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        let results = try await withThrowingTaskGroup(of: Bool.self) { group in
            for task in 0..<64 {
                group.addTask {
                    var ok = true
                    for round in 0..<50 {
                        let key = "task:\(task)"
                        let value = "\(task)-\(round)-\(UUID().uuidString)"
                        let replies = try await pool.pipeline([RedisCommand("SET", key, value), RedisCommand("GET", key)])
                        ok = ok && replies[1].string == value
                        let echoed = try await pool.send("ECHO", value).string
                        ok = ok && echoed == value
                    }
                    return ok
                }
            }
            return try await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.count == 64 && results.allSatisfy { $0 })
        #expect(pool.statistics.open <= 8)
        #expect(pool.statistics.leased == 0)
        // The server saw at most 8 clients of ours.
        let clients = try await pool.send("CLIENT", "LIST").string ?? ""
        let ours = clients.split(whereSeparator: \.isNewline).filter { $0.contains("name=switchyard") }
        #expect(ours.count <= 8 && ours.count >= 2)
    }

    @Test func blockingReadIsCancelledPromptly() async throws {
        let server = try RedisServer()
        let redis = RedisConnection(configuration: server.configuration)
        defer { redis.close() }
        try await redis.send("XGROUP", "CREATE", "jobs", "g", "$", "MKSTREAM")
        let reader = Task {
            try await redis.send(
                RedisCommand("XREADGROUP", "GROUP", "g", "c1", "COUNT", 1, "BLOCK", 0, "STREAMS", "jobs", ">"),
                timeout: .never
            )
        }
        // Wait until the server reports the client as blocked, then cancel.
        let blocked = RedisConnection(configuration: server.configuration)
        defer { blocked.close() }
        for _ in 0..<500 {
            let info = try await blocked.send("INFO", "clients").string ?? ""
            if info.contains("blocked_clients:1") { break }
            try await Task.sleep(for: .milliseconds(10))
        }
        reader.cancel()
        // BLOCK 0 never returns by itself, so reaching the next line at all shows the cancellation.
        let outcome = await reader.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        // The connection is usable again afterwards.
        #expect(try await redis.send("PING") == .status("PONG"))
    }

    @Test func cancelledWaiterForAPooledConnection() async throws {
        let server = try RedisServer()
        var configuration = server.configuration
        configuration.poolSize = 1
        let pool = RedisConnectionPool(configuration: configuration)
        defer { pool.shutDown() }
        let holder = Task {
            try await pool.withConnection { connection in
                try await connection.send(RedisCommand("BLPOP", "never", 0), timeout: .never)
            }
        }
        while pool.statistics.leased == 0 { try await Task.sleep(for: .milliseconds(5)) }
        let waiter = Task { try await pool.send("PING") }
        while pool.statistics.waiting == 0 { try await Task.sleep(for: .milliseconds(5)) }
        waiter.cancel()
        let outcome = await waiter.result
        #expect(throws: CancellationError.self) { try outcome.get() }
        #expect(pool.statistics.waiting == 0)
        holder.cancel()
        _ = await holder.result
        #expect(try await pool.send("PING") == .status("PONG"))
    }
}
