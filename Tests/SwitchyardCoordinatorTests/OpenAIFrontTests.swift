import Foundation
import Logging
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Synchronization
import Testing

@testable import SwitchyardCoordinator

/// The coordinator's OpenAI-compatible front, driven by the official `openai` Python package
/// against a real redis-server, a real worker process and a real llama.cpp server (the tiny
/// model), and the result announcements that let a waiting request answer as soon as its job is
/// finished.
@Suite("The OpenAI-compatible front and result announcements", .serialized)
struct OpenAIFrontTests {
    static let queueName = "test"
    /// 32 characters, as a real token would be; it must never show in a log.
    static let token = "sy-test-token-" + String(repeating: "k", count: 18)

    static func post(
        _ client: HTTPClient,
        _ url: String,
        _ body: JSONValue,
        token: String? = nil
    ) async throws -> (status: Int, json: JSONValue, text: String) {
        var headers: [(name: String, value: String)] = [("Content-Type", "application/json")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        let response = try await client.execute(
            HTTPRequest(method: "POST", url: url, headers: headers, body: body.jsonBytes, timeout: .seconds(60), idempotent: false)
        )
        let text = String(decoding: response.body, as: UTF8.self)
        return (response.status, (try? JSONValue.parse(response.body)) ?? .null, text)
    }

    // MARK: - The official client on the real llama.cpp path

    @Test(.timeLimit(.minutes(5)))
    func theOpenAIPackageTalksToARealLlamaServerThroughTheFront() async throws {
        let server = try await offThePool { try RedisServer() }
        // llama-cpp-python's server with embeddings on answers chat, completions and embeddings.
        let llama = try await LlamaServer(embedding: true)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("openai-front-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Not streamed from the provider: llama-cpp-python reports usage only without streaming.
        let providers = directory.appendingPathComponent("providers.json").path
        try """
        {"providers": [{"name": "local", "kind": "openai", "base_url": "\(llama.baseURL)"}],
         "models": {"tiny": {"provider": "local"}}}
        """.write(toFile: providers, atomically: true, encoding: .utf8)
        // A catalog too: /v1/models lists both files' models.
        let catalog = try LlamaServer.catalogFile(models: ["tiny-local"])
        defer { try? FileManager.default.removeItem(atPath: catalog) }
        // No response cache: every request below is real inference.
        let worker = try WorkerProcess(
            redisURL: server.url,
            id: "openai-front",
            arguments: ["--queue", Self.queueName, "--executor", "provider", "--providers", providers, "--concurrency", "2", "--no-cache"]
        )
        let front = try await CoordinatorFixture(server: server) { configuration in
            configuration.resultTimeout = .seconds(60)
            configuration.tokens = [Self.token]
            configuration.providersFile = providers
            configuration.catalogFile = catalog
        }
        defer { _ = worker.terminate() }
        #expect(await front.announcementsLive())

        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Scripts/openai_client.py").path
        let run = try await Self.python(script, arguments: [front.baseURL + "/v1", "tiny", "tiny", "tiny-local"])
        #expect(run.status == 0, "the script failed:\n\(run.stderr.suffix(4000))")
        let line = try #require(run.stdout.split(separator: "\n").last, "no summary; stderr:\n\(run.stderr.suffix(4000))")
        let summary = try JSONValue.parse(Array(line.utf8))

        #expect(summary["models"] == .array([.string("tiny"), .string("tiny-local")]))
        #expect(summary["models_object"]?.array?.allSatisfy { $0 == .string("model") } == true)
        #expect(summary["model_retrieved"] == .string("tiny"))
        #expect(summary["catalog_model_listed"] == .bool(true))

        let chat = try #require(summary["chat"])
        #expect(chat["object"] == .string("chat.completion"))
        #expect(chat["id"]?.string?.hasPrefix("chatcmpl-j") == true)
        #expect(chat["model"] == .string("tiny"))
        #expect(chat["choices"] == .number(1))
        #expect(chat["role"] == .string("assistant"))
        let content = try #require(chat["content"]?.string)
        #expect(!content.isEmpty)
        // The random model never says stop: max_tokens ends it.
        #expect(chat["finish_reason"] == .string("length"))
        let usage = try #require(chat["usage"])
        let prompt = try #require(usage["prompt_tokens"]?.integer)
        let completion = try #require(usage["completion_tokens"]?.integer)
        #expect(prompt > 0 && completion > 0)
        #expect(usage["total_tokens"]?.integer == prompt + completion)
        #expect(summary["parts_content"]?.string != nil)

        let stream = try #require(summary["stream"])
        #expect(stream["objects"] == .array([.string("chat.completion.chunk")]))
        #expect(stream["ids"]?.array?.count == 1)
        #expect(stream["ids"]?.array?.first?.string?.hasPrefix("chatcmpl-j") == true)
        #expect(stream["first_role"] == .string("assistant"))
        // Temperature 0, the same prompt, no cache: the same answer as without streaming.
        #expect(stream["content"] == .string(content))
        #expect(stream["finish_reasons"] == .array([.string("length")]))
        #expect(stream["last_has_choices"] == .bool(false))
        #expect(stream["usage_last"]?["completion_tokens"]?.integer ?? 0 > 0)

        let text = try #require(summary["completion"])
        #expect(text["object"] == .string("text_completion"))
        #expect(text["id"]?.string?.hasPrefix("cmpl-j") == true)
        #expect(text["text"]?.string?.isEmpty == false)
        #expect(text["finish_reason"] == .string("length"))
        #expect(text["usage"]?["completion_tokens"]?.integer ?? 0 > 0)
        #expect(summary["completion_stream"] == text["text"])

        let embeddings = try #require(summary["embeddings"])
        #expect(embeddings["error"] == nil, "\(embeddings)")
        #expect(embeddings["count"] == .number(2))
        #expect(embeddings["indexes"] == .array([.number(0), .number(1)]))
        // The tiny model's width.
        #expect(embeddings["dimensions"] == .array([.number(64), .number(64)]))
        #expect(embeddings["first_matches_float"] == .bool(true))

        let wrongKey = try #require(summary["wrong_key"])
        #expect(wrongKey["class"] == .string("AuthenticationError"))
        #expect(wrongKey["status"] == .number(401))
        let unknown = try #require(summary["unknown_model"])
        #expect(unknown["class"] == .string("NotFoundError"))
        #expect(unknown["code"] == .string("model_not_found"))
        #expect(unknown["param"] == .string("model"))
        let temperature = try #require(summary["bad_temperature"])
        #expect(temperature["class"] == .string("BadRequestError"))
        #expect(temperature["param"] == .string("temperature"))
        #expect(temperature["message"]?.string?.contains("temperature") == true)
        for (name, param) in [("tools", "tools"), ("two_choices", "n"), ("image_part", "messages[0].content[0].type")] {
            let refused = try #require(summary[name])
            #expect(refused["class"] == .string("BadRequestError"), "\(name): \(refused)")
            #expect(refused["param"] == .string(param), "\(name): \(refused)")
            #expect(refused["code"] == .string("unsupported_field"), "\(name): \(refused)")
        }

        // The front adds little over calling the llama.cpp server directly (the issue's benchmark
        // asks for under 2 ms at p50; measured loosely here, on a shared machine).
        let client = HTTPClient()
        defer { client.shutdown() }
        var direct: [Double] = []
        var through: [Double] = []
        for i in 0..<12 {
            let body: JSONValue = .object([
                "model": .string("tiny"), "max_tokens": .number(2), "temperature": .number(0),
                "messages": .array([.object(["role": .string("user"), "content": .string("Count \(i).")])]),
            ])
            var started = ContinuousClock.now
            let a = try await Self.post(client, llama.baseURL + "/chat/completions", body)
            direct.append(Self.milliseconds(ContinuousClock.now - started))
            started = ContinuousClock.now
            let b = try await Self.post(client, front.baseURL + "/v1/chat/completions", body, token: Self.token)
            through.append(Self.milliseconds(ContinuousClock.now - started))
            #expect(a.status == 200 && b.status == 200, "\(b.text)")
            #expect(a.json["choices"]?.array?.first?["message"]?["content"] == b.json["choices"]?.array?.first?["message"]?["content"])
        }
        let overhead = Self.median(through) - Self.median(direct)
        print("OpenAI front: p50 \(Self.median(through)) ms through the front, \(Self.median(direct)) ms direct: \(overhead) ms added")
        // Polling would add tens of ms at least; a lost announcement a second.
        #expect(overhead < 25, "p50 through the front \(Self.median(through)) ms, direct \(Self.median(direct)) ms")

        // The token never shows in the coordinator's logs (wrong keys included).
        #expect(!front.logs.text.contains(Self.token))
        #expect(!front.logs.text.contains("wrong-xxxxxxxx"))
        #expect(!worker.log.contains(Self.token))
        await front.close()
    }

    // MARK: - Failures, in OpenAI's shapes

    @Test(.timeLimit(.minutes(2)))
    func failuresAndRefusalsAreOpenAIShapedErrors() async throws {
        let server = try await offThePool { try RedisServer() }
        let worker = try WorkerProcess(
            redisURL: server.url,
            id: "openai-echo",
            arguments: ["--queue", Self.queueName, "--executor", "echo", "--concurrency", "4"]
        )
        defer { _ = worker.terminate() }
        // No providers file and no catalog: any model is let through, and the worker decides.
        let front = try await CoordinatorFixture(server: server) { $0.resultTimeout = .seconds(60) }
        let client = HTTPClient()
        defer { client.shutdown() }
        let url = front.baseURL + "/v1/chat/completions"
        func chat(_ extra: [String: JSONValue] = [:]) -> JSONValue {
            var body: [String: JSONValue] = [
                "model": .string("anything"), "messages": .array([.object(["role": .string("user"), "content": .string("hello there")])]),
            ]
            body.merge(extra) { _, b in b }
            return .object(body)
        }

        let ok = try await Self.post(client, url, chat())
        #expect(ok.status == 200, "\(ok.text)")
        #expect(ok.json["choices"]?.array?.first?["message"]?["content"] == .string("hello there"))
        // An answer the echo executor made up says so.
        #expect(ok.json["switchyard"]?["test_executor"] == .string("echo"))
        #expect(ok.json["usage"]?["total_tokens"]?.integer == 22)

        // A job that fails for good: 502, the job's code and message, OpenAI's error shape.
        let failed = try await Self.post(client, url, chat(["metadata": .object(["echo.fail": .string("fatal")])]))
        #expect(failed.status == 502, "\(failed.text)")
        #expect(failed.json["error"]?["code"] == .string("echo_fatal"))
        #expect(failed.json["error"]?["type"] == .string("server_error"))
        #expect(failed.json["error"]?["message"]?.string?.contains("failing for good on purpose") == true)

        // Bad input: 400 naming the field, before any job is pushed.
        let pushedBefore = try await front.queue.status().counters["pushed"] ?? 0
        let refusals: [(JSONValue, String)] = [
            (chat(["temperature": .number(5)]), "temperature"),
            (chat(["top_p": .string("high")]), "top_p"),
            (chat(["logprobs": .bool(true)]), "logprobs"),
            (chat(["response_formatt": .object([:])]), "response_formatt"),
            (chat(["max_tokens": .number(3), "max_completion_tokens": .number(4)]), "max_completion_tokens"),
            (.object(["model": .string("m"), "messages": .array([])]), "messages"),
            (.object(["messages": .array([.object(["role": .string("user"), "content": .string("x")])])]), "model"),
            (chat(["messages": .array([.object(["role": .string("tool"), "content": .string("x")])])]), "messages[0].role"),
        ]
        for (body, param) in refusals {
            let answer = try await Self.post(client, url, body)
            #expect(answer.status == 400, "\(param): \(answer.text)")
            #expect(answer.json["error"]?["param"] == .string(param), "\(answer.text)")
            #expect(answer.json["error"]?["message"]?.string?.contains(param) == true, "\(answer.text)")
        }
        #expect(try await front.queue.status().counters["pushed"] ?? 0 == pushedBefore)

        // Streams of a legacy completion, and the other shapes.
        let stream = try await client.execute(
            HTTPRequest(
                method: "POST",
                url: front.baseURL + "/v1/completions",
                headers: [("Content-Type", "application/json")],
                body: JSONValue.object(["model": .string("m"), "prompt": .string("once"), "stream": .bool(true)]).jsonBytes,
                timeout: .seconds(30),
                idempotent: false
            )
        )
        let events = String(decoding: stream.body, as: UTF8.self)
        #expect(stream.status == 200)
        #expect(stream.head.headers.contains { $0.name.lowercased() == "content-type" && $0.value.hasPrefix("text/event-stream") })
        #expect(events.hasSuffix("data: [DONE]\n\n"))
        #expect(events.contains(#""text":"once""#))
        // A chat stream: the role, the whole content in one chunk, the finish reason, [DONE].
        let chatStream = try await client.execute(
            HTTPRequest(
                method: "POST",
                url: url,
                headers: [("Content-Type", "application/json")],
                body: chat(["stream": .bool(true)]).jsonBytes,
                timeout: .seconds(30),
                idempotent: false
            )
        )
        let chunks = String(decoding: chatStream.body, as: UTF8.self).components(separatedBy: "\n\n").filter { !$0.isEmpty }
        #expect(chunks.last == "data: [DONE]")
        let deltas = try chunks.dropLast().map { chunk -> JSONValue in
            #expect(chunk.hasPrefix("data: "))
            let event = try JSONValue.parse(Array(chunk.dropFirst(6).utf8))
            #expect(event["object"] == .string("chat.completion.chunk"))
            return event["choices"]?.array?.first ?? .null
        }
        #expect(deltas.map { $0["delta"]?["role"] } == [.string("assistant"), nil, nil])
        #expect(deltas.map { $0["delta"]?["content"] } == [.string(""), .string("hello there"), nil])
        #expect(deltas.map { $0["finish_reason"] } == [.null, .null, .string("stop")])
        let embedding = try await Self.post(
            client,
            front.baseURL + "/v1/embeddings",
            .object(["model": .string("e"), "input": .array([.string("ab"), .string("abc")])])
        )
        #expect(embedding.status == 200, "\(embedding.text)")
        #expect(embedding.json["data"]?.array?.map { $0["embedding"] } == [.array([.number(2)]), .array([.number(3)])])
        let tokens = try await Self.post(
            client,
            front.baseURL + "/v1/embeddings",
            .object(["model": .string("e"), "input": .array([.array([.number(1), .number(2)])])])
        )
        #expect(tokens.status == 400 && tokens.json["error"]?["param"] == .string("input"), "\(tokens.text)")
        let image = try await Self.post(
            client,
            front.baseURL + "/v1/images/generations",
            .object(["model": .string("i"), "prompt": .string("a cat"), "size": .string("1x1")])
        )
        #expect(image.status == 400 && image.json["error"]?["param"] == .string("size"), "\(image.text)")
        await front.close()
    }

    // MARK: - Result announcements

    @Test(.timeLimit(.minutes(2)))
    func finishingAJobThatAsksForItPublishesItsID() async throws {
        let server = try await offThePool { try RedisServer() }
        let pool = RedisConnectionPool(configuration: server.configuration)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: Self.queueName), redis: pool)
        try await queue.ensureGroups()
        let listener = RedisConnection(configuration: server.configuration)
        defer { listener.close() }
        _ = try await listener.send(RedisCommand("SUBSCRIBE", queue.keys.done))
        #expect(queue.keys.done == "sy:{test}:done")

        let announced = Job(kind: .chat, model: "m", input: JobInput(messages: [ChatMessage(role: "user", content: "a")]), notify: true)
        let quiet = Job(kind: .chat, model: "m", input: JobInput(messages: [ChatMessage(role: "user", content: "b")]))
        // Only a job that asks carries the field: others are encoded as before.
        #expect(String(decoding: announced.encodedJSON(), as: UTF8.self).contains(#""notify":true"#))
        #expect(!String(decoding: quiet.encodedJSON(), as: UTF8.self).contains("notify"))
        #expect(try Job(json: announced.encodedJSON()).notify == true)
        #expect(try Job(json: quiet.encodedJSON()).notify == nil)
        let codable = try JSONDecoder().decode(Job.self, from: JSONEncoder().encode(announced))
        #expect(codable == announced)

        _ = try await queue.push([quiet, announced])
        let deliveries = try await queue.take(consumer: "w", count: 2)
        #expect(deliveries.count == 2)
        let completions = try deliveries.map { delivery in
            let job = try delivery.decodeJob()
            return Completion(delivery: delivery, result: JobResult(id: job.id, status: .succeeded, attempts: 1), notify: job.notify == true)
        }
        #expect(try await queue.finish(completions) == 2)
        let message = try await listener.receive(timeout: .after(.seconds(5)))
        #expect(message.array?.compactMap(\.string) == ["message", queue.keys.done, announced.id])
        // Nothing for the job that did not ask.
        await #expect(throws: RedisError.self) { try await listener.receive(timeout: .after(.milliseconds(300))) }
    }

    @Test(.timeLimit(.minutes(2)))
    func aWaiterIsWokenByItsAnnouncementAndPollsWithoutOne() async throws {
        let server = try await offThePool { try RedisServer() }
        let worker = try WorkerProcess(
            redisURL: server.url,
            id: "announce-echo",
            arguments: ["--queue", Self.queueName, "--executor", "echo", "--concurrency", "4"]
        )
        defer { _ = worker.terminate() }
        let front = try await CoordinatorFixture(server: server) { $0.resultTimeout = .seconds(60) }
        #expect(await front.announcementsLive())
        func job(sleepMs: Int, notify: Bool?) -> Job {
            Job(
                kind: .chat,
                model: "m",
                input: JobInput(messages: [ChatMessage(role: "user", content: "x")]),
                metadata: ["echo.sleep_ms": "\(sleepMs)"],
                notify: notify
            )
        }
        // A first job, so that the worker is up and taking.
        let warm = job(sleepMs: 0, notify: true)
        _ = try await front.queue.push(warm)
        #expect(try await front.coordinator.waitForResult(queue: front.queue, id: warm.id, timeout: .seconds(30))?.status == .succeeded)

        // Announced: answered as soon as it is finished, long before the next poll (1 s).
        for _ in 0..<3 {
            let announced = job(sleepMs: 300, notify: true)
            _ = try await front.queue.push(announced)
            let started = ContinuousClock.now
            let result = try await front.coordinator.waitForResult(queue: front.queue, id: announced.id, timeout: .seconds(10))
            let elapsed = ContinuousClock.now - started
            #expect(result?.status == .succeeded)
            #expect(elapsed >= .milliseconds(250) && elapsed < .milliseconds(800), "took \(elapsed)")
        }
        // Not announced (a worker that predates notify, a job finished by the reclaim): found by
        // the fallback poll, about a second after the wait began.
        let unannounced = job(sleepMs: 300, notify: nil)
        _ = try await front.queue.push(unannounced)
        let started = ContinuousClock.now
        let result = try await front.coordinator.waitForResult(queue: front.queue, id: unannounced.id, timeout: .seconds(10))
        let elapsed = ContinuousClock.now - started
        #expect(result?.status == .succeeded)
        #expect(elapsed >= .milliseconds(900) && elapsed < .milliseconds(3000), "took \(elapsed)")
        // A wait that runs out says so, and leaves no waiter behind.
        let slow = job(sleepMs: 5000, notify: true)
        _ = try await front.queue.push(slow)
        #expect(try await front.coordinator.waitForResult(queue: front.queue, id: slow.id, timeout: .milliseconds(300)) == nil)
        #expect(front.coordinator.resultWaiters.waiting == 0)

        // The JSON API's ?wait= is announced too; a job cancelled meanwhile ends the wait.
        let client = HTTPClient()
        defer { client.shutdown() }
        let waited = ContinuousClock.now
        let answer = try await Self.post(
            client,
            front.baseURL + "/api/v1/jobs?wait=10",
            .object(["model": .string("m"), "prompt": .string("hi"), "metadata": .object(["echo.sleep_ms": .string("300")])])
        )
        #expect(answer.status == 200 && answer.json["status"] == .string("succeeded"), "\(answer.text)")
        #expect(ContinuousClock.now - waited < .milliseconds(800))
        async let cancelled = Self.post(
            client,
            front.baseURL + "/api/v1/jobs?wait=10",
            .object([
                "id": .string("to-cancel"), "model": .string("m"), "prompt": .string("hi"),
                "metadata": .object(["echo.sleep_ms": .string("20000")]),
            ])
        )
        try await Task.sleep(for: .milliseconds(300))
        let cancel = try await Self.post(client, front.baseURL + "/api/v1/jobs/to-cancel/cancel", .object([:]))
        #expect(cancel.status == 200, "\(cancel.text)")
        let ended = try await cancelled
        #expect(ended.json["status"] == .string("cancelled"), "\(ended.text)")

        // Redis restarted under the coordinator: the subscription is lost, comes back, and
        // announcements wake waiters again.
        server.kill()
        #expect(await eventually(timeout: .seconds(10)) { !front.coordinator.resultWaiters.isLive(Self.queueName) })
        try await offThePool { try server.restart() }
        #expect(await front.announcementsLive())
        // The restarted server is empty: the lanes' group comes back with the first push.
        try await front.queue.ensureGroups()
        let again = job(sleepMs: 0, notify: true)
        _ = try await front.queue.push(again)
        #expect(try await front.coordinator.waitForResult(queue: front.queue, id: again.id, timeout: .seconds(30))?.status == .succeeded)
        let timed = job(sleepMs: 300, notify: true)
        _ = try await front.queue.push(timed)
        let restarted = ContinuousClock.now
        #expect(try await front.coordinator.waitForResult(queue: front.queue, id: timed.id, timeout: .seconds(10))?.status == .succeeded)
        #expect(ContinuousClock.now - restarted < .milliseconds(800))
        await front.close()
    }

    // MARK: - Helpers

    static func python(_ script: String, arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await offThePool {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: LlamaServer.python)
            process.arguments = [script] + arguments
            var environment = ProcessInfo.processInfo.environment
            environment["SWITCHYARD_TEST_TOKEN"] = OpenAIFrontTests.token
            // Never a proxy between the client and the loopback coordinator.
            environment["NO_PROXY"] = "127.0.0.1,localhost"
            process.environment = environment
            let out = Pipe()
            let err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            // Read both to their ends before waiting: a full pipe would stall the script.
            let errorData = Mutex(Data())
            let reader = Thread { errorData.withLock { $0 = err.fileHandleForReading.readDataToEndOfFile() } }
            reader.start()
            let output = out.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            while reader.isExecuting || !reader.isFinished { Thread.sleep(forTimeInterval: 0.01) }
            return (
                process.terminationStatus, String(decoding: output, as: UTF8.self),
                String(decoding: errorData.withLock { $0 }, as: UTF8.self)
            )
        }
    }

    static func milliseconds(_ d: Duration) -> Double {
        let (s, atto) = d.components
        return Double(s) * 1000 + Double(atto) / 1e15
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
    }
}

extension CoordinatorFixture {
    /// Waits until the queue's subscription to result announcements is live.
    func announcementsLive() async -> Bool {
        await eventually(timeout: .seconds(10)) { self.coordinator.resultWaiters.isLive(Self.queueName) }
    }
}
