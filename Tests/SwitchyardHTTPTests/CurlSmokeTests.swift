import Foundation
import SwitchyardHTTP
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("libcurl through the C shim")
struct CurlSmokeTests {
    @Test func linkedCurlHasWhatTheClientNeeds() {
        #expect(Curl.version.hasPrefix("libcurl/"))
        #expect(Curl.supportsGzip)
        #expect(Curl.supportsTLS)
    }

    @Test func getAndPostAgainstALocalServerReusingTheConnection() async throws {
        let server = try TinyHTTPServer()
        defer { server.stop() }
        let client = HTTPClient()
        defer { client.shutdown() }
        let first = try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(server.port)/hello?x=1", headers: [("X-Test", "smoke")]))
        #expect(first.status == 200)
        #expect(first.header("content-type") == "application/json")
        let echoed = try JSONSerialization.jsonObject(with: Data(first.body)) as? [String: String]
        #expect(echoed?["method"] == "GET")
        #expect(echoed?["path"] == "/hello?x=1")
        #expect(echoed?["x-test"] == "smoke")
        #expect(first.newConnections == 1)

        let body = Array(#"{"prompt":"hi"}"#.utf8)
        let second = try await client.execute(HTTPRequest(method: "POST", url: "http://127.0.0.1:\(server.port)/v1/echo", body: body))
        let posted = try JSONSerialization.jsonObject(with: Data(second.body)) as? [String: String]
        #expect(posted?["method"] == "POST")
        #expect(posted?["body"] == #"{"prompt":"hi"}"#)
        // Keep-alive: the second request went over the first one's connection.
        #expect(second.newConnections == 0)
        #expect(server.connectionsAccepted == 1)
    }

    @Test func refusedConnectionCarriesCurlsCode() async throws {
        let port = try TinyHTTPServer.unusedPort()
        let client = HTTPClient()
        defer { client.shutdown() }
        await #expect {
            try await client.execute(HTTPRequest(url: "http://127.0.0.1:\(port)/", connectTimeout: .seconds(2)))
        } throws: { error in
            (error as? HTTPClientError)?.curlCode == 7  // CURLE_COULDNT_CONNECT
        }
    }
}

/// A keep-alive HTTP/1.1 server on a thread, answering every request with a JSON echo of it.
final class TinyHTTPServer: @unchecked Sendable {
    let port: Int
    private let listener: Int32
    private let lock = NSLock()
    private var accepted = 0
    private var stopped = false

    var connectionsAccepted: Int { lock.withLock { accepted } }

    init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        self.listener = listener
        self.port = Int(UInt16(bigEndian: address.sin_port))
        listen(listener, 16)
        Thread { [self] in acceptLoop() }.start()
    }

    static func unusedPort() throws -> Int {
        let s = try TinyHTTPServer()
        let p = s.port
        s.stop()
        return p
    }

    func stop() {
        lock.withLock { stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { return }
            lock.withLock { accepted += 1 }
            Thread { [self] in serve(fd) }.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            // Read the head.
            var headEnd: Int?
            while headEnd == nil {
                if let r = buffer.firstRange(of: [13, 10, 13, 10]) {
                    headEnd = r.upperBound
                    break
                }
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[0..<n])
            }
            let head = String(decoding: buffer[0..<headEnd!], as: UTF8.self)
            let lines = head.split(separator: "\r\n")
            let requestLine = lines.first.map { $0.split(separator: " ") } ?? []
            var headers: [String: String] = [:]
            for line in lines.dropFirst() {
                if let colon = line.firstIndex(of: ":") {
                    headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            let length = Int(headers["content-length"] ?? "0") ?? 0
            while buffer.count < headEnd! + length {
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[0..<n])
            }
            let body = String(decoding: buffer[headEnd!..<(headEnd! + length)], as: UTF8.self)
            buffer.removeFirst(headEnd! + length)
            let echo: [String: String] = [
                "method": requestLine.count > 0 ? String(requestLine[0]) : "",
                "path": requestLine.count > 1 ? String(requestLine[1]) : "",
                "x-test": headers["x-test"] ?? "",
                "body": body,
            ]
            let json = (try? JSONSerialization.data(withJSONObject: echo, options: [.sortedKeys])) ?? Data()
            let response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: \(json.count)\r\n\r\n"
            let bytes = Array(response.utf8) + Array(json)
            if write(fd, bytes, bytes.count) != bytes.count { return }
        }
    }
}
