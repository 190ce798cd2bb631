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
    @Test func aChildInheritsNoSecretsAndNoSymlinkedLog() throws {
        setenv("SWITCHYARD_TEST_PROVIDER_API_KEY", "planted-key-for-the-child-test", 1)
        setenv("SWITCHYARD_TEST_PLAIN", "plain-value", 1)
        defer {
            unsetenv("SWITCHYARD_TEST_PROVIDER_API_KEY")
            unsetenv("SWITCHYARD_TEST_PLAIN")
        }
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("env-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess(executable: "env", arguments: [], outputPath: log)
        #expect(child.waitForExit() == 0)
        let text = try String(contentsOfFile: log, encoding: .utf8)
        #expect(text.contains("SWITCHYARD_TEST_PLAIN=plain-value"))
        #expect(!text.contains("planted-key-for-the-child-test"))
        var info = stat()
        #expect(stat(log, &info) == 0 && info.st_mode & 0o777 == 0o600)
        // A log path that is a symbolic link (planted by someone else) is refused, not followed.
        let target = FileManager.default.temporaryDirectory.appendingPathComponent("target-\(UUID().uuidString)").path
        let link = target + ".link"
        FileManager.default.createFile(atPath: target, contents: Data())
        symlink(target, link)
        defer {
            try? FileManager.default.removeItem(atPath: target)
            try? FileManager.default.removeItem(atPath: link)
        }
        #expect(throws: ChildProcess.SpawnError.self) { try ChildProcess(executable: "true", arguments: [], outputPath: link) }
    }

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
