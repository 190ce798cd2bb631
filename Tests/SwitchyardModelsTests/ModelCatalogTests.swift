import Foundation
import SwitchyardCore
import SwitchyardModels
import Testing

@Suite("The model catalog file")
struct ModelCatalogTests {
    func load(_ text: String) throws -> ModelCatalog {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("models-\(UUID().uuidString).json").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try ModelCatalog.load(path: path)
    }

    func refusal(_ text: String) -> ConfigurationError? {
        do {
            _ = try load(text)
            return nil
        } catch {
            return error as? ConfigurationError
        }
    }

    @Test func aCatalogLoadsWithDefaults() throws {
        let catalog = try load(#"{"models": {"qwen": {"file": "/m/q.gguf", "framework": "llama.cpp", "memory_mb": 5000}}, "pinned": ["qwen"]}"#)
        #expect(catalog.models["qwen"]?.contextSize == 2048 && catalog.models["qwen"]?.framework == .llamaCpp)
        #expect(catalog.pinned == ["qwen"])
    }

    @Test func badCatalogsAreRefusedNamingTheField() {
        #expect(refusal(#"{"models": {"q": {"file": "f", "framework": "mlx", "memory_mb": 1, "ctx_size": 4096}}}"#)?.field == "models.q.ctx_size")
        #expect(refusal(#"{"models": {}, "pin": ["q"]}"#)?.field == "pin")
        #expect(refusal(#"{"models": {"q": {"file": "f", "framework": "mlx"}}}"#)?.field == "models.q.memory_mb")
        #expect(refusal(#"{"models": {"q": {"file": "f", "framework": "mlx", "memory_mb": 0}}}"#)?.field == "models.q.memory_mb")
        #expect(refusal(#"{"models": {}, "pinned": ["q"]}"#)?.field == "pinned")
    }
}
