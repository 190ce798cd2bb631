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
        let file = try load(#"{"providers": [], "http": {"max_connections_per_host": 4, "max_connections": 128, "http2": false}}"#)
        let configuration = try #require(try file.http?.clientConfiguration())
        #expect(configuration.maxConnectionsPerHost == 4 && configuration.maxConnections == 128 && configuration.http2 == false)
        #expect(configuration.connectionCacheSize >= 128)
        #expect(message(#"{"providers": [], "http": {"max_connection": 4}}"#).contains("'http.max_connection' is not a known setting"))
        let inverted = try load(#"{"providers": [], "http": {"max_connections_per_host": 32, "max_connections": 8}}"#)
        #expect(throws: ProviderError.self) { try inverted.http?.clientConfiguration() }
        let zero = try load(#"{"providers": [], "http": {"max_connections_per_host": 0}}"#)
        #expect(throws: ProviderError.self) { try zero.http?.clientConfiguration() }
        let missing = try load(#"{"providers": [], "http": {"ca_file": "/nonexistent/ca.pem"}}"#)
        #expect {
            try missing.http?.clientConfiguration()
        } throws: { error in
            (error as? ProviderError)?.message.contains("http.ca_file") == true
        }
    }

    @Test func httpSizeLimitsAreCheckedFieldByField() throws {
        let defaults = try #require(try load(#"{"providers": [], "http": {}}"#).http?.clientConfiguration())
        #expect(defaults.maxResponseBodyBytes == 64 << 20 && defaults.maxEventBytes == 1 << 20)
        let file = try load(#"{"providers": [], "http": {"max_response_bytes": 8388608, "max_event_bytes": 65536}}"#)
        let configuration = try #require(try file.http?.clientConfiguration())
        #expect(configuration.maxResponseBodyBytes == 8 << 20 && configuration.maxEventBytes == 64 << 10)
        // A small number is more likely megabytes meant than a limit: refused, by name.
        for field in ["max_response_bytes", "max_event_bytes"] {
            let tiny = try load(#"{"providers": [], "http": {"\#(field)": 64}}"#)
            #expect {
                try tiny.http?.clientConfiguration()
            } throws: { error in
                (error as? ProviderError)?.message == "field 'http.\(field)' must be at least 1024 (a number of bytes), got 64"
            }
            #expect(message(#"{"providers": [], "http": {"\#(field)": "64MB"}}"#).contains("field 'http.\(field)' has the wrong type"))
        }
        #expect(message(#"{"providers": [], "http": {"max_response_size": 1048576}}"#).contains("'http.max_response_size' is not a known setting"))
    }

    @Test func missingAndMistypedFieldsAreNamed() {
        #expect(message(#"{"providers": [{"name": "a", "kind": "openai"}]}"#).contains("field 'providers[0].base_url' is missing"))
        #expect(
            message(#"{"providers": [{"name": "a", "kind": "openai", "base_url": "http://x", "max_attempts": "four"}]}"#)
                .contains("field 'providers[0].max_attempts' has the wrong type")
        )
    }
}
