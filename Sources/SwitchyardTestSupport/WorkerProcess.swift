import Foundation
import SwitchyardCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real `switchyard worker` process for tests: started with arguments, killed or drained by signal.
public final class WorkerProcess: @unchecked Sendable {
    public let id: String
    public let process: ChildProcess
    public let logPath: String

    /// Starts `switchyard worker --redis-url <url> --worker-id <id> <arguments>`. Name the executor in
    /// `arguments` (`--executor echo` for the test executor): the worker has no default one.
    /// `namespace` runs it on a test host (`ip netns exec`, see `TestNetwork`); `environment` adds
    /// variables to the inherited ones.
    public init(
        redisURL: String,
        id: String = "w-\(UUID().uuidString.prefix(6))",
        arguments: [String],
        namespace: String? = nil,
        environment extra: [String: String] = [:]
    ) throws {
        self.id = id
        // A log of its own per process: the same id may be started again by a later test.
        self.logPath = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-\(id)-\(UUID().uuidString.prefix(8)).log").path
        var environment = ProcessInfo.processInfo.environment
        environment["SWITCHYARD_REDIS_URL"] = redisURL
        environment.merge(extra) { $1 }
        let command = [try Self.switchyardExecutable(), "worker", "--redis-url", redisURL, "--worker-id", id] + arguments
        // `ip netns exec` enters the namespace and execs the command: the same process, the same PID.
        let argv = namespace.map { ["netns", "exec", $0] + command } ?? Array(command.dropFirst())
        self.process = try ChildProcess(
            executable: namespace == nil ? command[0] : "ip",
            arguments: argv,
            environment: environment,
            outputPath: logPath
        )
    }

    deinit {
        if process.isRunning {
            process.send(SIGKILL)
            process.waitForExit()
        }
    }

    /// kill -9: the worker dies with its jobs in flight.
    public func kill() {
        process.send(SIGKILL)
        process.waitForExit()
    }

    /// SIGTERM and wait; returns the exit code (nil if it died by a signal).
    public func terminate(timeout: Duration = .seconds(60)) -> Int32? {
        process.send(SIGTERM)
        if !process.waitForExit(timeout: timeout) { process.send(SIGKILL) }
        let status = process.waitForExit()
        return status & 0x7f == 0 ? (status >> 8) & 0xff : nil
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The built `switchyard` executable: `SWITCHYARD_BIN`, or beside the test bundle in the build folder.
    public static func switchyardExecutable() throws -> String {
        if let path = ProcessInfo.processInfo.environment["SWITCHYARD_BIN"] { return path }
        var candidates: [URL] = []
        let argv0 = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var dir = argv0.deletingLastPathComponent()
        for _ in 0..<4 {
            candidates.append(dir.appendingPathComponent("switchyard"))
            dir = dir.deletingLastPathComponent()
        }
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug/switchyard"))
        for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate.path) {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue {
                return candidate.path
            }
        }
        throw RedisServer.StartError(description: "the switchyard executable is not built (swift build), or set SWITCHYARD_BIN")
    }
}
