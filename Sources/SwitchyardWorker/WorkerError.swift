/// Why a worker refused to start or stopped with an error.
///
/// Compare by code (`error.code == .duplicateID`); `message` says what happened and what to do.
public struct WorkerError: Error, Sendable, CustomStringConvertible {
    public struct ErrorCode: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case duplicateID
            case displaced
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        /// A live worker (one whose registry entry has not expired) already uses this worker's id.
        public static var duplicateID: Self { .init(.duplicateID) }
        /// Another process registered this worker's id while this worker could not reach Redis
        /// (its registry entry had expired); this one stopped.
        public static var displaced: Self { .init(.displaced) }

        public var description: String { value.rawValue }
    }

    public let code: ErrorCode
    public let message: String
    public let file: String
    public let line: Int

    public init(_ code: ErrorCode, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public var description: String { message }
}
