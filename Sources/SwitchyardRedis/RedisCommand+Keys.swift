/// Which keys a command names, and so which Redis Cluster slot it belongs to.
///
/// Only a connection to a Redis Cluster asks: it decodes the command's arguments from their RESP
/// encoding, so building a command stays a buffer append everywhere else.
extension RedisCommand {
    /// The command's arguments after its name, as bytes: the first `limit` of them, or all.
    func arguments(limit: Int = .max) -> [ArraySlice<UInt8>] {
        encoded.withUnsafeBufferPointer { bytes in
            var i = 0
            // "*N\r\n" and "$len\r\n": a decimal, then CR LF.
            func number() -> Int {
                var n = 0
                while i < bytes.count, bytes[i] != 13 {
                    n = n &* 10 &+ Int(bytes[i] &- 48)
                    i += 1
                }
                i += 2
                return n
            }
            i += 1
            let count = number() - 1
            var out: [ArraySlice<UInt8>] = []
            out.reserveCapacity(min(count, limit))
            // Skip the name.
            i += 1
            i += number() + 2
            for _ in 0..<max(0, min(count, limit)) {
                i += 1  // "$"
                let length = number()
                out.append(encoded[i..<i + length])
                i += length + 2
            }
            return out
        }
    }

    /// The keys the command touches, by Redis's own rules for where keys sit in each command;
    /// empty for commands without keys (PING, INFO, SCRIPT, PUBLISH, ...).
    var keys: [ArraySlice<UInt8>] {
        if Self.keyless.contains(name) { return [] }
        switch name {
        case "EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO":
            let head = arguments(limit: 2)
            guard head.count == 2, let n = Int(String(decoding: head[1], as: UTF8.self)), (0...1_000_000).contains(n) else { return [] }
            let args = arguments(limit: 2 + n)
            guard args.count == 2 + n else { return [] }
            return Array(args[2...])
        default: break
        }
        let args = name.hasPrefix("X") || name.hasPrefix("M") || Self.multiKey.contains(name) ? arguments() : arguments(limit: 1)
        switch name {
        case "XREAD", "XREADGROUP":
            // After GROUP <group> <consumer>, so a group or consumer named "streams" is not taken
            // for the keyword.
            let options = name == "XREADGROUP" ? 3 : 0
            guard args.count > options,
                let streams = args[options...].firstIndex(where: { String(decoding: $0, as: UTF8.self).uppercased() == "STREAMS" })
            else {
                return []
            }
            let rest = args[(streams + 1)...]
            return Array(rest.prefix(rest.count / 2))
        case "XGROUP", "XINFO", "OBJECT", "MEMORY":
            return args.count >= 2 ? [args[1]] : []
        case "MGET", "DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH":
            return args
        case "MSET", "MSETNX":
            return stride(from: 0, to: args.count, by: 2).map { args[$0] }
        case "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX":
            return Array(args.dropLast())
        default:
            return args.isEmpty ? [] : [args[0]]
        }
    }

    /// The slot of the command's keys; nil when it has none. Throws `crossSlot` when its keys
    /// lie in different slots, before anything is sent: Redis Cluster would refuse it.
    func slot() throws(RedisError) -> Int? {
        let keys = self.keys
        guard let first = keys.first else { return nil }
        let slot = RedisClusterSlot.of(first)
        for key in keys.dropFirst() where RedisClusterSlot.of(key) != slot {
            throw RedisError(
                .crossSlot,
                "\(name) names keys in different cluster slots (\(String(decoding: first, as: UTF8.self)) in \(slot), "
                    + "\(String(decoding: key, as: UTF8.self)) in \(RedisClusterSlot.of(key))); give them one hash tag"
            )
        }
        return slot
    }

    /// Commands whose keys are not just the first argument (besides the X… and M… ones).
    static let multiKey: Set<String> = ["DEL", "UNLINK", "EXISTS", "TOUCH", "WATCH", "BLPOP", "BRPOP", "BZPOPMIN", "BZPOPMAX", "OBJECT"]

    /// Commands that name no key, so any node can answer them.
    static let keyless: Set<String> = [
        "PING", "ECHO", "INFO", "TIME", "SCRIPT", "CLIENT", "CONFIG", "SCAN", "PUBLISH", "SUBSCRIBE",
        "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "CLUSTER", "WAIT", "DBSIZE", "FLUSHALL", "FLUSHDB",
        "AUTH", "SELECT", "HELLO", "ACL", "DEBUG", "ROLE", "SENTINEL", "ASKING", "READONLY", "READWRITE",
        "MULTI", "EXEC", "DISCARD", "COMMAND", "PUBSUB", "KEYS", "LASTSAVE", "SAVE", "BGSAVE", "BGREWRITEAOF",
        "MONITOR", "SLOWLOG", "LATENCY", "FUNCTION", "QUIT", "RESET", "RANDOMKEY", "SHUTDOWN", "SWAPDB",
    ]
}

/// Redis Cluster's key-to-slot mapping: CRC16 (XMODEM) of the key, or of its hash tag, mod 16384.
public enum RedisClusterSlot {
    public static let count = 16384

    /// The slot of `key`. A hash tag (the part between the first `{` and the next `}`, when not
    /// empty) is hashed instead of the whole key, so `sy:{q}:lane:high` and `sy:{q}:stats` share one.
    public static func of<C: Collection>(_ key: C) -> Int where C.Element == UInt8 {
        if let slot = key.withContiguousStorageIfAvailable(slot(of:)) { return slot }
        return Array(key).withUnsafeBufferPointer(slot(of:))
    }

    private static func slot(of bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var start = 0
        var end = bytes.count
        if let open = bytes.firstIndex(of: UInt8(ascii: "{")),
            let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            start = open + 1
            end = close
        }
        return table.withUnsafeBufferPointer { table in
            var crc: UInt16 = 0
            for i in start..<end { crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ bytes[i])] }
            return Int(crc) & (count - 1)
        }
    }

    public static func of(_ key: String) -> Int { of(Array(key.utf8)) }

    private static let table: [UInt16] = (0..<256).map { n in
        var crc = UInt16(n) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
