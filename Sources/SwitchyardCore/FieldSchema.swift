import Foundation

/// The field names a JSON configuration file may use, so a misspelt setting is refused with its
/// path instead of being silently ignored (and its default silently used).
public indirect enum FieldSchema: Sendable {
    /// An object with these fields, each with its own schema.
    case object([String: FieldSchema])
    /// An object whose keys are names (models, headers), every value with this schema.
    case map(FieldSchema)
    case array(FieldSchema)
    /// Anything: a scalar, or a value whose shape the decoder checks.
    case any

    /// The path of the first field the schema does not know, such as `providers[0].base_ur`;
    /// nil when every field is known. Values of the wrong shape are left to the decoder.
    public func firstUnknownField(in value: Any, path: String = "") -> String? {
        switch self {
        case .any:
            return nil
        case .object(let fields):
            guard let object = value as? [String: Any] else { return nil }
            for key in object.keys.sorted() {
                let here = path.isEmpty ? key : path + "." + key
                guard let schema = fields[key] else { return here }
                if let found = schema.firstUnknownField(in: object[key]!, path: here) { return found }
            }
            return nil
        case .map(let schema):
            guard let object = value as? [String: Any] else { return nil }
            for key in object.keys.sorted() {
                if let found = schema.firstUnknownField(in: object[key]!, path: path.isEmpty ? key : path + "." + key) { return found }
            }
            return nil
        case .array(let schema):
            guard let array = value as? [Any] else { return nil }
            for (i, element) in array.enumerated() {
                if let found = schema.firstUnknownField(in: element, path: path + "[\(i)]") { return found }
            }
            return nil
        }
    }

    /// An object whose fields are the raw values of a coding-key enum, all scalars.
    public static func fields<K: CodingKey & CaseIterable>(_ keys: K.Type, except nested: [String: FieldSchema] = [:]) -> FieldSchema {
        var fields: [String: FieldSchema] = [:]
        for key in K.allCases { fields[key.stringValue] = nested[key.stringValue] ?? .any }
        return .object(fields)
    }
}
