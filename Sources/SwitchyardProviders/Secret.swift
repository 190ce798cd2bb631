import Foundation

/// A secret (an API key) that never shows itself: printing, interpolating or dumping it gives
/// `<redacted>`. Read it from the environment or a file named in the configuration.
public struct Secret: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private let value: String

    public init(_ value: String) { self.value = value }

    /// The value, for the one place that must send it (an Authorization header).
    public func reveal() -> String { value }

    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: []) }

    /// From `environmentVariable`, else from the file at `file` (trimmed). Errors name the source,
    /// never the value.
    public static func load(
        environmentVariable: String?,
        file: String?,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ProviderError) -> Secret? {
        if let name = environmentVariable {
            if let value = environment[name], !value.isEmpty { return Secret(value) }
            if file == nil { throw ProviderError(.configuration, "the environment variable \(name) is not set", provider: nil) }
        }
        if let file {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ProviderError(.configuration, "cannot read the API key file \(file)", provider: nil)
            }
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty else { throw ProviderError(.configuration, "the API key file \(file) is empty", provider: nil) }
            return Secret(trimmed)
        }
        return nil
    }
}
