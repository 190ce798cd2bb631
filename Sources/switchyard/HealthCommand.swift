import ArgumentParser
import Foundation
import Logging
import SwitchyardHTTP

/// `switchyard health [URL]`: one GET of a health endpoint, for container health checks where
/// no curl is installed (the images ship none). Exit status 0 for a 2xx answer, 1 for any other
/// answer or none within `--timeout`. It prints the status and the body (the reason on a 503).
struct HealthCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "health",
        abstract: "Check a health endpoint: exit 0 when it answers 2xx, else 1.",
        discussion: """
            The default URL is a worker's readiness on this machine (switchyard worker --health-port 8378). Use \
            http://127.0.0.1:8377/readyz for a coordinator.
            """
    )

    @Argument(help: "The URL to GET (http only).")
    var url = "http://127.0.0.1:8378/readyz"

    @Option(parsing: .unconditional, help: "How long to wait for the answer.")
    var timeout = "2s"

    func run() async throws {
        let limit = try parseDuration(timeout, field: "--timeout")
        guard limit > .zero else { throw ValidationError("--timeout: must be more than 0") }
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased() ?? ""), parsed.host != nil else {
            throw ValidationError("URL: '\(url)' is not an http:// or https:// URL")
        }
        let client = HTTPClient(logger: Logger(label: "switchyard.health", factory: { _ in SwiftLogNoOpLogHandler() }))
        defer { client.shutdown() }
        let request = HTTPRequest(url: url, connectTimeout: limit, timeout: limit)
        let response: HTTPResponse
        do {
            response = try await client.execute(request)
        } catch {
            printError("\(request.redactedURL): no answer: \(error)")
            throw ExitCode(1)
        }
        let body = String(decoding: response.body.prefix(4096), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        print("\(response.status) \(body)")
        if !(200..<300).contains(response.status) { throw ExitCode(1) }
    }
}
