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

    /// Decodes a configuration file's JSON. A field the schema does not know, a missing one, one
    /// of the wrong type or a bad value is a `ConfigurationError` naming its path; `hint` follows
    /// the problem of an unknown field (the settings that are known, say).
    public func decode<T: Decodable>(_ type: T.Type, from data: Data, unknownFieldHint hint: String = "") throws -> T {
        if let json = try? JSONSerialization.jsonObject(with: data), let unknown = firstUnknownField(in: json) {
            throw ConfigurationError(field: unknown, problem: "is not a known setting" + (hint.isEmpty ? "" : " (\(hint))"))
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            throw ConfigurationError(field: Self.path(context.codingPath + [key]), problem: "is missing")
        } catch let DecodingError.typeMismatch(type, context), let DecodingError.valueNotFound(type, context) {
            // "expected a whole number, got a string "3"": what was wanted, and what is there.
            let found = (try? JSONValue.parse(Array(data))).flatMap { Self.value(at: context.codingPath, in: $0) }
            let path = Self.path(context.codingPath)
            // A header or a key may hold a secret: its type only, never its value.
            let secretive = ["header", "key", "token", "secret", "password", "auth"].contains { path.lowercased().contains($0) }
            let got = found.map { ", got \(secretive ? $0.typeName : $0.brief)" } ?? ""
            // A decoder of its own may say what it expected ("expected true, false or ...").
            let expected =
                context.debugDescription.hasPrefix("expected ") ? String(context.debugDescription.dropFirst(9)) : Self.describe(type)
            throw ConfigurationError(field: Self.path(context.codingPath), problem: "must be \(expected)\(got)")
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigurationError(field: Self.path(context.codingPath), problem: context.debugDescription)
        }
    }

    /// What a message calls a Swift type a field decodes to.
    static func describe(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt.Type, is Int?.Type: return "a whole number"
        case is Double.Type, is Float.Type, is Double?.Type: return "a number"
        case is String.Type, is String?.Type: return "a string"
        case is Bool.Type, is Bool?.Type: return "true or false"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") || name.hasPrefix("[") { return "an array" }
            return "an object"
        }
    }

    /// The value at a decoder's coding path, if there is one.
    static func value(at codingPath: [any CodingKey], in root: JSONValue) -> JSONValue? {
        var current = root
        for key in codingPath {
            if let index = key.intValue {
                guard let items = current.array, items.indices.contains(index) else { return nil }
                current = items[index]
            } else {
                guard let next = current[key.stringValue] else { return nil }
                current = next
            }
        }
        return current
    }

    /// `providers[0].base_url`, from a decoder's coding path.
    public static func path(_ codingPath: [any CodingKey]) -> String {
        codingPath.reduce(into: "") { out, key in
            if let index = key.intValue {
                out += "[\(index)]"
            } else {
                out += (out.isEmpty ? "" : ".") + key.stringValue
            }
        }
    }
}

/// A setting that is one of a few names (`kind`, `scope`): decoding an unknown name fails with
/// the names it may be (`must be one of openai, leonardo, runware, got "grpc"`).
public protocol ConfigurationChoice: RawRepresentable, CaseIterable, Decodable where RawValue == String {}

extension ConfigurationChoice {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        guard let value = Self(rawValue: raw) else {
            var quoted: [UInt8] = []
            JSONValue.string(raw).write(to: &quoted)
            throw DecodingError.dataCorruptedError(
                in: container,
                debugDescription:
                    "must be one of \(Self.allCases.map(\.rawValue).joined(separator: ", ")), got \(String(decoding: quoted, as: UTF8.self))"
            )
        }
        self = value
    }
}
