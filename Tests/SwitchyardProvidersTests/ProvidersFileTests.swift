import Foundation
import SwitchyardCore
import SwitchyardProviders
import Testing

@Suite("The providers file")
struct ProvidersFileTests {
    func load(_ text: String) throws -> ProvidersFile {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("providers-\(UUID().uuidString).json").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try ProvidersFile.load(path: path)
    }

    func message(_ text: String) -> String {
        do {
            _ = try load(text)
            return "loaded"
        } catch let error as ProviderError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    @Test func aCompleteFileLoads() throws {
        let file = try load(
            """
            {"providers": [{"name": "or", "kind": "openai", "base_url": "https://openrouter.ai/api/v1", "api_key_env": "OR_KEY",
              "timeout_ms": 5000, "headers": {"X-Title": "switchyard"}}],
             "models": {"gpt": {"provider": "or", "model": "openai/gpt-4o"}}, "default_provider": "or"}
            """
        )
        #expect(file.providers.first?.timeoutMs == 5000 && file.providers.first?.headers["X-Title"] == "switchyard")
        #expect(file.models["gpt"] == .init(provider: "or", model: "openai/gpt-4o"))
    }

    @Test func aMisspeltSettingIsRefusedWithItsPath() {
        // Ignored, a misspelt timeout would silently leave the default in force.
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "timeout": 5}]}"#).contains(
                "'providers[0].timeout' is not a known setting"
            )
        )
        #expect(message(#"{"providers": [], "models": {"m": {"provider": "a", "modle": "x"}}}"#).contains("'models.m.modle'"))
        #expect(message(#"{"providers": [], "defaults": {}}"#).contains("'defaults'"))
        // Header names and model names are names, not settings.
        #expect(message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "headers": {"Any-Name": "v"}}]}"#) == "loaded")
    }

    @Test func httpSettingsConfigureTheClient() throws {
        let file = try load(
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_connections_per_host": 4, "max_connections": 128, "http2": false}}"#
        )
        let configuration = try #require(try file.http?.clientConfiguration())
        #expect(configuration.maxConnectionsPerHost == 4 && configuration.maxConnections == 128 && configuration.http2 == false)
        #expect(configuration.connectionCacheSize >= 128)
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_connection": 4}}"#).contains(
                "'http.max_connection' is not a known setting"
            )
        )
        let inverted = try load(
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_connections_per_host": 32, "max_connections": 8}}"#
        )
        #expect(throws: ProviderError.self) { try inverted.http?.clientConfiguration() }
        let zero = try load(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_connections_per_host": 0}}"#)
        #expect(throws: ProviderError.self) { try zero.http?.clientConfiguration() }
        let missing = try load(
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"ca_file": "/nonexistent/ca.pem"}}"#
        )
        #expect {
            try missing.http?.clientConfiguration()
        } throws: { error in
            (error as? ProviderError)?.message.contains("http.ca_file") == true
        }
    }

    @Test func httpSizeLimitsAreCheckedFieldByField() throws {
        let defaults = try #require(
            try load(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {}}"#).http?.clientConfiguration()
        )
        #expect(defaults.maxResponseBodyBytes == 64 << 20 && defaults.maxEventBytes == 1 << 20)
        let file = try load(
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_response_bytes": 8388608, "max_event_bytes": 65536}}"#
        )
        let configuration = try #require(try file.http?.clientConfiguration())
        #expect(configuration.maxResponseBodyBytes == 8 << 20 && configuration.maxEventBytes == 64 << 10)
        // A small number is more likely megabytes meant than a limit: refused, by name.
        for field in ["max_response_bytes", "max_event_bytes"] {
            let tiny = try load(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"\#(field)": 64}}"#)
            #expect {
                try tiny.http?.clientConfiguration()
            } throws: { error in
                (error as? ProviderError)?.message == "field 'http.\(field)' must be at least 1024 (a number of bytes), got 64"
            }
            #expect(
                message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"\#(field)": "64MB"}}"#).contains(
                    "field 'http.\(field)' must be "
                )
            )
        }
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}], "http": {"max_response_size": 1048576}}"#).contains(
                "'http.max_response_size' is not a known setting"
            )
        )
    }

    /// Checked at load, before any worker starts: what would otherwise fail at the first job.
    @Test func providersAreCheckedFieldByField() {
        #expect(message(#"{"providers": []}"#).contains("field 'providers' is empty: name at least one provider"))
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "ftp://user:hunter2@x"}]}"#)
                .hasSuffix(": field 'providers[0].base_url' must be an http:// or https:// URL, not ftp://…")
        )
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "localhost:8080"}]}"#).contains("must be an http:// or https:// URL")
        )
        let twice =
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x"}, {"name": "a", "kind": "openai", "base_url": "http://y"}]}"#
        #expect(message(twice).contains("field 'providers[1].name' 'a' is already the name of providers[0]"))
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "timeout_ms": 0}]}"#)
                .contains("field 'providers[0].timeout_ms' must be at least 1 ms, got 0")
        )
    }

    /// A header's or key's value is never echoed in a type error: only its type.
    @Test func typeErrorsNeverEchoAHeaderValue() {
        let text = message(
            #"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "headers": "Authorization: Bearer sk-or-v1-0123456789"}]}"#
        )
        #expect(text.contains("field 'providers[0].headers' must be an object, got a string") && !text.contains("sk-or"), "\(text)")
    }

    @Test func missingAndMistypedFieldsAreNamed() {
        #expect(message(#"{"providers": [{"name": "a", "kind": "openai"}]}"#).contains("field 'providers[0].base_url' is missing"))
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "max_attempts": "four"}]}"#)
                .contains("field 'providers[0].max_attempts' must be a whole number, got a string \"four\"")
        )
    }

    static let provider = #"{"name": "a", "kind": "openai", "base_url": "http://x"}"#

    @Test func chainsBreakersLimitsAndPricesLoad() throws {
        let file = try load(
            """
            {"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "breaker": {"window": "time", "window_size": 30},
                            "rate_limit": {"requests": 60, "tokens": 1000, "on_redis_error": "closed"},
                            "price": {"prompt_per_mtok": 0.5}, "scope": "worker"},
                           {"name": "b", "kind": "openai", "base_url": "http://y"}],
             "models": {"chat": {"targets": [{"provider": "a", "model": "x1"}, {"provider": "b", "model": "y1", "breaker": {"wait_ms": 500}}],
                                 "order": "cost"}},
             "breaker": {"minimum_calls": 5}}
            """
        )
        let a = try #require(file.providers.first)
        #expect(a.breaker?.window == .time && a.breaker?.windowSize == 30 && a.scope == .worker)
        #expect(a.rateLimit?.requests == 60 && a.rateLimit?.onRedisError == .closed && a.price?.promptPerMTok == 0.5)
        #expect(file.models["chat"]?.order == .cost)
        // The most specific settings win as a whole: the chain entry's, the provider's, the file's.
        let entry = try #require(file.models["chat"]?.targets?[1])
        let b = try #require(file.resolve(entry, jobModel: "chat", workerID: nil))
        #expect(b.id == "b/y1" && b.resilience.breaker.waitMs == 500 && b.resilience.breaker.minimumCalls == 10)
        let plain = try #require(file.resolve(.init(provider: "b"), jobModel: "chat", workerID: nil))
        #expect(plain.resilience.breaker.minimumCalls == 5)
        // A worker-scoped provider's targets are each worker's own.
        #expect(file.resolve(.init(provider: "a"), jobModel: "chat", workerID: "w1")?.id == "a/chat@w1")
        #expect(file.sharedTargets.map(\.id) == ["b/y1"])
    }

    @Test func badResilienceSettingsAreNamedFieldByField() {
        let p = Self.provider
        #expect(message(#"{"providers": [\#(p)], "breaker": {"minimum_calls": 0}}"#).contains("field 'breaker.minimum_calls' must be at least 1"))
        #expect(message(#"{"providers": [\#(p)], "breaker": {"window_size": 5, "minimum_calls": 10}}"#).contains("'breaker.minimum_calls'"))
        #expect(message(#"{"providers": [\#(p)], "breaker": {"failure_rate_threshold": 150}}"#).contains("'breaker.failure_rate_threshold'"))
        #expect(message(#"{"providers": [\#(p)], "breaker": {"wait_ms": 1000, "max_wait_ms": 10}}"#).contains("'breaker.max_wait_ms'"))
        #expect(message(#"{"providers": [\#(p)], "breaker": {"failures": ["5xx", "4xx"]}}"#).contains("breaker.failures"))
        #expect(message(#"{"providers": [\#(p)], "breaker": {"wiat_ms": 5}}"#).contains("'breaker.wiat_ms' is not a known setting"))
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "rate_limit": {}}]}"#)
                .contains("field 'providers[0].rate_limit.requests' is missing")
        )
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "rate_limit": {"requests": 10, "rpm": 5}}]}"#)
                .contains("'providers[0].rate_limit.rpm' is not a known setting")
        )
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "price": {"per_image": -1}}]}"#)
                .contains("'providers[0].price.per_image'")
        )
        #expect(message(#"{"providers": [\#(p)], "models": {"m": {"model": "x"}}}"#).contains("'models.m' needs provider or targets"))
        #expect(message(#"{"providers": [\#(p)], "models": {"m": {"provider": "a", "targets": [{"provider": "a"}]}}}"#).contains("both"))
        #expect(message(#"{"providers": [\#(p)], "models": {"m": {"targets": []}}}"#).contains("'models.m.targets' is empty"))
        #expect(
            message(#"{"providers": [\#(p)], "models": {"m": {"targets": [{"provider": "a"}, {"provider": "a", "model": "m"}]}}}"#)
                .contains("'models.m.targets[1]'")
        )
        #expect(
            message(#"{"providers": [\#(p)], "models": {"m": {"targets": [{"provider": "a", "rate_limit": {"tokens": 0}}]}}}"#)
                .contains("'models.m.targets[0].rate_limit.tokens' must be at least 1")
        )
        #expect(
            message(#"{"providers": [\#(p)], "models": {"m": {"targets": [{"provider": "a", "cost": 1}]}}}"#).contains("'models.m.targets[0].cost'")
        )
    }
}
