import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Free TCP ports on 127.0.0.1, for servers this process starts (model servers, test servers).
public enum LoopbackPort {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// A port the kernel reports free right now. Another process can take it before the caller's
    /// server binds it; callers check that what answers there is theirs.
    public static func free() throws -> Int {
        try bindable(0) ?? { throw Unavailable(description: "bind() on 127.0.0.1 failed") }()
    }

    /// Whether `port` on 127.0.0.1 can be bound now (nobody listens there).
    public static func isFree(_ port: Int) -> Bool {
        guard (1...65535).contains(port) else { return false }
        return (try? bindable(port)) != nil
    }

    /// Binds `port` (0: any) on 127.0.0.1 and lets it go; the port bound, or nil when taken.
    private static func bindable(_ port: Int) throws -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Unavailable(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0 else { return nil }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

extension LoopbackPort {
    /// Whether the socket listening on `port` belongs to process `pid` or one of its children, so
    /// that an answer on the port is known to come from the server this process started and not
    /// from another that took the port first. Linux only (it reads /proc); nil where that cannot
    /// be told (elsewhere, or when no listening socket for the port is found, as can happen while
    /// sockets come and go), and then callers fall back on what the server says about itself.
    public static func isListening(on port: Int, byProcessTreeOf pid: Int32) -> Bool? {
        #if os(Linux)
        var inodes: Set<String> = []
        let hexPort = String(format: ":%04X", port)
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                guard fields.count > 9, fields[1].hasSuffix(hexPort), fields[3] == "0A" else { continue }
                inodes.insert("socket:[\(fields[9])]")
            }
        }
        // No listening socket found for a port that answers: the kernel's table changed while it
        // was read (it is not read atomically), so nothing can be told.
        if inodes.isEmpty { return nil }
        for process in [pid] + children(of: pid) {
            let directory = "/proc/\(process)/fd"
            for fd in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] {
                if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\(fd)"), inodes.contains(target) {
                    return true
                }
            }
        }
        return false
        #else
        return nil
        #endif
    }

    /// Children and grandchildren of `pid` (a server may serve from a forked process).
    private static func children(of pid: Int32) -> [Int32] {
        var parents: [Int32: Int32] = [:]
        for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = Int32(name), let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let rest = stat[stat.index(after: close)...].split(separator: " ")
            if rest.count > 1, let parent = Int32(rest[1]) { parents[child] = parent }
        }
        let direct = parents.filter { $0.value == pid }.map(\.key)
        return direct + direct.flatMap { child in parents.filter { $0.value == child }.map(\.key) }
    }
}
