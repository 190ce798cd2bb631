/// An error from the Redis layer.
///
/// Compare by code (`error.code == .timeout`); `message` says what happened in words. No message
/// ever contains a password or a command's arguments.
public struct RedisError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case invalidConfiguration
            case connectionFailed
            case connectionLost
            case authenticationFailed
            case timeout
            case protocolError
            case serverError
            case unexpectedReply
            case closed
            case crossSlot
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A URL or option is malformed; the message names the field.
        public static var invalidConfiguration: Self { .init(.invalidConfiguration) }
        /// The server could not be reached (refused, unresolvable, connect timed out) within the
        /// configured reconnect wait.
        public static var connectionFailed: Self { .init(.connectionFailed) }
        /// The connection broke while a command was in flight: the server may or may not have run it.
        public static var connectionLost: Self { .init(.connectionLost) }
        /// AUTH was refused (wrong password, unknown or disabled ACL user).
        public static var authenticationFailed: Self { .init(.authenticationFailed) }
        /// No reply arrived within the command timeout.
        public static var timeout: Self { .init(.timeout) }
        /// The bytes from the server were not valid RESP.
        public static var protocolError: Self { .init(.protocolError) }
        /// The server answered with an error reply; `message` is the server's text.
        public static var serverError: Self { .init(.serverError) }
        /// A reply had another type or shape than the caller expected.
        public static var unexpectedReply: Self { .init(.unexpectedReply) }
        /// The connection or pool was closed by its owner.
        public static var closed: Self { .init(.closed) }
        /// A command or script for a Redis Cluster names keys in different slots; refused before
        /// it is sent. The message names two of the keys.
        public static var crossSlot: Self { .init(.crossSlot) }

        public var description: String { value.rawValue }
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// For a server error, its first word: `WRONGTYPE`, `NOSCRIPT`, `BUSYGROUP`, `ERR`, ...
    public var serverErrorPrefix: String? {
        guard code == .serverError else { return nil }
        return message.split(separator: " ", maxSplits: 1).first.map(String.init)
    }

    public var description: String { "Redis \(code): \(message)" }
}
