import Foundation
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardProviders
import SwitchyardTestSupport
import Testing

@Suite("Which providers a job's route may name")
struct RouteAllowListTests {
    static let key = "sk-or-v1-0123456789abcdef"

    func load(_ text: String) throws -> ProvidersFile {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try ProvidersFile.load(path: path)
    }

    /// Three providers on one stand-in, and two models: "qwen" (served by "home", where it is
    /// called standin-chat) and "free" (by "home" too, with no routes list of its own).
    /// `extra` is spliced into the file's top level and `qwenRoutes` into qwen's entry.
    func file(_ server: StandinServer, qwenRoutes: String = "", extra: String = "") throws -> ProvidersFile {
        let base = server.baseURL + "/v1"
        return try load(
            """
            {"providers": [{"name": "home", "kind": "openai", "base_url": "\(base)", "api_key_env": "K"},
                           {"name": "openrouter", "kind": "openai", "base_url": "\(base)", "api_key_env": "K"},
                           {"name": "local", "kind": "openai", "base_url": "\(base)", "api_key_env": "K"}],
             "models": {"qwen": {"provider": "home", "model": "standin-chat"\(qwenRoutes)}, "free": {"provider": "home"}}\(extra)}
            """
        )
    }

    func job(_ model: String, route: String?) -> Job {
        Job(kind: .chat, model: model, route: route, input: JobInput(messages: [ChatMessage(role: "user", content: "hi")]))
    }

    /// The model name the provider answered for (the stand-in echoes it): "standin-chat" when the
    /// job went to its own provider, the job's model name when a route sent it elsewhere; or the
    /// failure.
    func run(_ executor: ProviderExecutor, _ model: String, route: String?) async -> Result<String, JobFailure> {
        do {
            let output = try await executor.execute(job(model, route: route), context: JobContext(attempt: 1, workerID: "w"))
            return .success(output.output["model"]?.string ?? "?")
        } catch let failure as JobFailure {
            return .failure(failure)
        } catch {
            return .failure(JobFailure(code: "unexpected", message: "\(error)"))
        }
    }

    func refusal(_ result: Result<String, JobFailure>) -> JobFailure? {
        if case .failure(let failure) = result, failure.code == "route_not_allowed" { return failure }
        return nil
    }

    @Test func aRouteIsRefusedUnlessTheFileAllowsIt() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let executor = try ProviderExecutor(file: try file(server), client: client, environment: ["K": Self.key])
        let before = try await server.stats()["requests"] as? Int ?? 0
        let refused = try #require(refusal(await run(executor, "qwen", route: "openrouter")))
        #expect(!refused.retryable)
        #expect(refused.message.contains("route 'openrouter'") && refused.message.contains("model 'qwen'"))
        // Refused before any request; an unknown name is refused the same way.
        #expect(refusal(await run(executor, "free", route: "nowhere")) != nil)
        #expect(try await server.stats()["requests"] as? Int == before + 1)  // the stats call itself
        // No route, or a route to the provider the job goes to anyway, runs as before.
        #expect(try await run(executor, "qwen", route: nil).get() == "standin-chat")
        #expect(try await run(executor, "qwen", route: "home").get() == "standin-chat")
    }

    @Test func aModelsRoutesListDecidesForItsJobs() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let listed = try file(server, qwenRoutes: #", "routes": ["openrouter"]"#, extra: #", "allow_routes": true"#)
        #expect(listed.models["qwen"]?.routes == ["openrouter"] && listed.allowRoutes == .any)
        let executor = try ProviderExecutor(file: listed, client: client, environment: ["K": Self.key])
        #expect(try await run(executor, "qwen", route: "openrouter").get() == "qwen")
        // The model's own list wins over allow_routes: true.
        let refused = try #require(refusal(await run(executor, "qwen", route: "local")))
        #expect(refused.message.contains("models.qwen.routes allows only openrouter"))
        // A model without a list falls back on allow_routes.
        #expect(try await run(executor, "free", route: "local").get() == "free")
    }

    @Test func allowRoutesNamesTheProvidersForModelsWithoutAList() async throws {
        let server = try StandinServer(apiKey: Self.key)
        let client = HTTPClient()
        defer { client.shutdown() }
        let listed = try file(server, extra: #", "allow_routes": ["local"]"#)
        let executor = try ProviderExecutor(file: listed, client: client, environment: ["K": Self.key])
        #expect(try await run(executor, "free", route: "local").get() == "free")
        let refused = try #require(refusal(await run(executor, "free", route: "openrouter")))
        #expect(refused.message.contains("allow_routes allows only local"))
        // false is the default, said out loud.
        let off = try ProviderExecutor(file: try file(server, extra: #", "allow_routes": false"#), client: client, environment: ["K": Self.key])
        #expect(refusal(await run(off, "free", route: "local")) != nil)
    }

    @Test func unknownNamesAndBadShapesAreConfigurationErrorsWithTheirPath() throws {
        let server = try StandinServer()
        let client = HTTPClient()
        defer { client.shutdown() }
        func problem(qwenRoutes: String = "", extra: String = "") -> String {
            do {
                _ = try ProviderExecutor(file: try file(server, qwenRoutes: qwenRoutes, extra: extra), client: client, environment: ["K": "k"])
                return "accepted"
            } catch let error as ProviderError {
                return error.message
            } catch {
                return "\(error)"
            }
        }
        #expect(
            problem(qwenRoutes: #", "routes": ["local", "openrouterr"]"#) == "field 'models.qwen.routes[1]': provider 'openrouterr' is not defined"
        )
        #expect(problem(extra: #", "allow_routes": ["home", "lokal"]"#) == "field 'allow_routes[1]': provider 'lokal' is not defined")
        #expect(problem(extra: #", "allow_routes": "yes""#).contains("field 'allow_routes' must be "))
        #expect(problem(qwenRoutes: #", "routes": "local""#).contains("field 'models.qwen.routes' must be "))
        #expect(problem(qwenRoutes: #", "route": ["local"]"#).contains("'models.qwen.route' is not a known setting"))
        #expect(problem(qwenRoutes: #", "routes": []"#, extra: #", "allow_routes": true"#) == "accepted")
    }
}
