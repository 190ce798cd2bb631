/// A reply from Redis, one case per RESP2 type.
///
/// Bulk strings are raw bytes: Redis values are binary-safe and need not be UTF-8.
public enum RESPValue: Sendable, Hashable {
    /// A simple string (`+OK`).
    case status(String)
    /// An error reply (`-ERR ...`), kept as a value so a pipeline can return it beside other replies.
    case error(String)
    case integer(Int64)
    /// A bulk string, as bytes.
    case bulk([UInt8])
    /// A nil bulk string or nil array (`$-1`, `*-1`).
    case null
    /// An array, possibly nested and possibly holding nulls.
    case array([RESPValue])
}

extension RESPValue {
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// The text of a status or bulk reply, nil for other types or bytes that are not UTF-8.
    public var string: String? {
        switch self {
        case .status(let s): return s
        case .bulk(let b): return String(validating: b, as: UTF8.self)
        default: return nil
        }
    }

    /// The bytes of a bulk or status reply.
    public var bytes: [UInt8]? {
        switch self {
        case .bulk(let b): return b
        case .status(let s): return Array(s.utf8)
        default: return nil
        }
    }

    /// An integer reply, or a bulk string that holds a decimal integer (as `GET` of a counter does).
    public var int: Int? {
        switch self {
        case .integer(let i): return Int(exactly: i)
        case .bulk(let b): return String(validating: b, as: UTF8.self).flatMap { Int($0) }
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .integer(let i): return Double(i)
        case .bulk(let b): return String(validating: b, as: UTF8.self).flatMap { Double($0) }
        default: return nil
        }
    }

    public var array: [RESPValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The server's message for an error reply.
    public var errorMessage: String? {
        if case .error(let e) = self { return e }
        return nil
    }

    /// Turns an error reply into a thrown `RedisError`; returns other replies unchanged.
    @discardableResult
    public func throwingServerError() throws(RedisError) -> RESPValue {
        if case .error(let message) = self { throw RedisError(.serverError, message) }
        return self
    }

    /// A flat array of key/value pairs (as HGETALL and stream entries return) as a dictionary
    /// of strings; nil when the shape does not fit.
    public var stringPairs: [String: String]? {
        guard let items = array, items.count % 2 == 0 else { return nil }
        var result: [String: String] = [:]
        result.reserveCapacity(items.count / 2)
        var i = 0
        while i < items.count {
            guard let k = items[i].string, let v = items[i + 1].string else { return nil }
            result[k] = v
            i += 2
        }
        return result
    }
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .status(let s): return "+\(s)"
        case .error(let e): return "-\(e)"
        case .integer(let i): return ":\(i)"
        case .bulk(let b): return String(validating: b, as: UTF8.self).map { "\"\($0)\"" } ?? "<\(b.count) bytes>"
        case .null: return "(nil)"
        case .array(let a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}
