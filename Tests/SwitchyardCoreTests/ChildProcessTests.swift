import Foundation
import SwitchyardCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("Child processes")
struct ChildProcessTests {
    @Test func childStopsOnSIGTERMEvenWhenSpawnedFromATask() async throws {
        // A shell that waits on sleep; SIGTERM ends it only if the signal is not blocked in the child.
        let child = try ChildProcess(executable: "sh", arguments: ["-c", "sleep 30"])
        #expect(child.isRunning)
        child.send(SIGTERM)
        #expect(child.waitForExit(timeout: .seconds(10)))
        let status = child.waitForExit()
        // Killed by the signal, not exited normally.
        #expect(status & 0x7f == SIGTERM)
    }

    @Test func terminateEscalatesToSIGKILL() throws {
        let child = try ChildProcess(executable: "sh", arguments: ["-c", "trap '' TERM; sleep 30"])
        usleep(100_000)  // let the shell install its trap
        child.terminate(grace: .milliseconds(200))
        #expect(!child.isRunning)
        #expect(kill(child.pid, 0) != 0)  // gone: no such process
    }

    @Test func writesOutputToAFileAndReportsExitCode() throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("child-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        let child = try ChildProcess(executable: "sh", arguments: ["-c", "echo out; echo err >&2; exit 3"], outputPath: log.path)
        let status = child.waitForExit()
        #expect((status >> 8) & 0xff == 3)
        let text = try String(contentsOf: log, encoding: .utf8)
        #expect(text.contains("out") && text.contains("err"))
    }

    @Test func missingExecutableIsAClearError() {
        #expect {
            try ChildProcess(executable: "/nonexistent/switchyard-test-binary", arguments: [])
        } throws: { error in
            "\(error)".contains("/nonexistent/switchyard-test-binary")
        }
    }
}
