/// A value that can be an argument of a Redis command. Arguments are bytes on the wire.
public protocol RedisArgument: Sendable {
    func appendRedisArgument(to buffer: inout [UInt8])
}

/// One command, encoded to RESP once when it is made, so that sending it (alone or in a
/// pipeline of thousands) is a buffer append.
public struct RedisCommand: Sendable, CustomStringConvertible {
    /// The command's name in upper case (`GET`, `XREADGROUP`), for logs and errors. Arguments are
    /// never shown anywhere: they may hold secrets.
    public let name: String
    /// The RESP encoding: `*N\r\n` then `$len\r\n<bytes>\r\n` for each argument.
    public let encoded: [UInt8]

    public init(_ name: String, _ arguments: any RedisArgument...) {
        self.init(name, arguments: arguments)
    }

    public init(_ name: String, arguments: [any RedisArgument]) {
        self.name = name.uppercased()
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 + name.utf8.count + arguments.count * 24)
        buffer.append(UInt8(ascii: "*"))
        appendDecimal(arguments.count + 1, to: &buffer)
        buffer.append(contentsOf: [13, 10])
        name.appendRedisArgument(to: &buffer)
        for argument in arguments { argument.appendRedisArgument(to: &buffer) }
        self.encoded = buffer
    }

    public var description: String { name }
}

@inline(__always)
func appendDecimal(_ value: Int, to buffer: inout [UInt8]) {
    if value >= 0 && value < 10 {
        buffer.append(UInt8(48 + value))
    } else {
        buffer.append(contentsOf: String(value).utf8)
    }
}

/// Appends one bulk string (`$len\r\n<bytes>\r\n`).
@inline(__always)
func appendBulk<C: Collection>(_ bytes: C, to buffer: inout [UInt8]) where C.Element == UInt8 {
    buffer.append(UInt8(ascii: "$"))
    appendDecimal(bytes.count, to: &buffer)
    buffer.append(contentsOf: [13, 10])
    buffer.append(contentsOf: bytes)
    buffer.append(contentsOf: [13, 10])
}

extension String: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(self.utf8, to: &buffer) }
}

extension Substring: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(self.utf8, to: &buffer) }
}

extension Array: RedisArgument where Element == UInt8 {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(self, to: &buffer) }
}

extension ArraySlice: RedisArgument where Element == UInt8 {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(self, to: &buffer) }
}

extension Int: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(String(self).utf8, to: &buffer) }
}

extension Int64: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(String(self).utf8, to: &buffer) }
}

extension UInt64: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(String(self).utf8, to: &buffer) }
}

extension Double: RedisArgument {
    public func appendRedisArgument(to buffer: inout [UInt8]) { appendBulk(String(self).utf8, to: &buffer) }
}
