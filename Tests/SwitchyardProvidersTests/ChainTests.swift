import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

/// Which failures move a job along its model's chain and which end it, against two stand-ins
/// (no breakers or limits: the executor without Redis).
@Suite("Fallback chains")
struct ChainTests {
    let first: StandinServer
    let second: StandinServer
    let client = HTTPClient()
    let executor: ProviderExecutor

    init() async throws {
        first = try await offThePool { try StandinServer() }
        second = try await offThePool { try StandinServer() }
        let file = ProvidersFile(
            providers: [
                ProviderConfiguration(name: "first", kind: .openai, baseURL: first.baseURL + "/v1", maxAttempts: 1),
                ProviderConfiguration(name: "second", kind: .openai, baseURL: second.baseURL + "/v1", maxAttempts: 1),
            ],
            models: ["chat": .init(targets: [.init(provider: "first", model: "m1"), .init(provider: "second", model: "m2")])]
        )
        executor = try ProviderExecutor(file: file, client: client)
    }

    func run() async throws -> JobOutput {
        let job = Job(kind: .chat, model: "chat", input: JobInput(messages: [ChatMessage(role: "user", content: "hi")]))
        return try await executor.execute(job, context: JobContext(attempt: 1, workerID: "w"))
    }

    static func chatCalls(_ server: StandinServer) async throws -> Int {
        ((try await server.stats()["by_path"] as? [String: Any])?["/v1/chat/completions"] as? Int) ?? 0
    }

    func fail(_ status: Int) async throws {
        try await first.setFaults([["path": "/v1/chat/completions", "status": status, "times": 1]])
    }

    @Test("a 5xx, a 404 (each target has its own model name), a 501 and a refused key move on to the next target")
    func targetsOwnFailuresMoveOn() async throws {
        for status in [503, 404, 501, 401] {
            try await fail(status)
            let output = try await run()
            #expect(output.route?.target == "second/m2", "after a \(status)")
            #expect(output.route?.steps.first?.outcome == .failed && output.route?.steps.first?.target == "first/m1")
        }
    }

    @Test("a request error ends the job at the first target, naming the path")
    func aRequestErrorEndsTheChain() async throws {
        try await fail(400)
        let before = try await Self.chatCalls(second)
        await #expect {
            try await run()
        } throws: { error in
            guard let failure = error as? JobFailure else { return false }
            return failure.code == "provider_bad_request" && !failure.retryable && failure.message.contains("(at first/m1; path: first/m1:")
        }
        #expect(try await Self.chatCalls(second) == before)
    }

    @Test("every target failing: the last failure, retryable, with the whole path")
    func everyTargetFailing() async throws {
        try await first.setFaults([["path": "/v1/chat/completions", "status": 503, "times": 1]])
        try await second.setFaults([["path": "/v1/chat/completions", "status": 502, "times": 1]])
        await #expect {
            try await run()
        } throws: { error in
            guard let failure = error as? JobFailure else { return false }
            return failure.retryable && failure.code == "provider_unavailable"
                && failure.message.hasPrefix("no target answered (first/m1: provider_unavailable; second/m2: provider_unavailable)")
        }
    }
}
