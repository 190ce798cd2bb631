import CProcessShim
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process started with posix_spawn, for redis-server and model servers.
///
/// Foundation's `Process` hands the child the signal mask of whichever thread spawned it; from a
/// Swift concurrency thread that mask blocks SIGTERM, so the child could never be stopped
/// gracefully. Here the child starts with an empty mask and default signal handlers, without a
/// shell, and is reaped with waitpid.
public final class ChildProcess: @unchecked Sendable {
    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
    }

    public let pid: pid_t
    public let executable: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Starts `executable` (looked up in PATH when it has no slash) with `arguments`.
    /// Output goes to `outputPath` (appended) or /dev/null.
    public init(
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        outputPath: String? = nil,
        newProcessGroup: Bool = false
    ) throws {
        self.executable = executable
        var actions = posix_spawn_file_actions_t()
        var attributes = posix_spawnattr_t()
        posix_spawn_file_actions_init(&actions)
        posix_spawnattr_init(&attributes)
        defer {
            posix_spawn_file_actions_destroy(&actions)
            posix_spawnattr_destroy(&attributes)
        }
        let output = outputPath ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Sockets of this process (Redis connections, listeners) must not live on in the child.
        syp_spawn_close_from(&actions, 3)

        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        var flags = Int32(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF)
        #if canImport(Darwin)
        flags |= Int32(POSIX_SPAWN_CLOEXEC_DEFAULT)
        #endif
        if newProcessGroup {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = (environment ?? Self.inheritableEnvironment()).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in env { free(pointer) }
        }
        var pid = pid_t()
        let rc = posix_spawnp(&pid, executable, &actions, &attributes, argv, env)
        guard rc == 0 else {
            throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        self.pid = pid
    }

    /// This process's environment without Switchyard's secrets: a model server has no business
    /// with the Redis password.
    public static func inheritableEnvironment() -> [String: String] {
        ProcessInfo.processInfo.environment.filter { key, _ in
            !(key.hasPrefix("SWITCHYARD_") && (key.contains("PASSWORD") || key.contains("URL") || key.contains("KEY")))
        }
    }

    /// Sends a signal (SIGTERM, SIGKILL, ...). Does nothing once the process has been reaped, so a
    /// recycled pid is never signalled.
    public func send(_ signal: Int32) {
        lock.withLock {
            if exitStatus == nil { _ = kill(pid, signal) }
        }
    }

    /// True until the process has exited (reaping it if it has).
    public var isRunning: Bool { lock.withLock { reapIfExited() } == nil }

    /// The raw wait status once the process has exited and been reaped.
    public var status: Int32? { lock.withLock { reapIfExited() } }

    /// Reaps the child if it has exited. Called only under `lock`, so the reap and the record of
    /// the status happen together.
    private func reapIfExited() -> Int32? {
        if let exitStatus { return exitStatus }
        var status: Int32 = 0
        let r = waitpid(pid, &status, WNOHANG)
        if r == pid || (r < 0 && errno == ECHILD) {
            exitStatus = r == pid ? status : -1
        }
        return exitStatus
    }

    /// Blocks the calling thread until the process exits; returns the raw wait status.
    @discardableResult
    public func waitForExit() -> Int32 {
        var pause: UInt32 = 1_000
        while true {
            if let status = lock.withLock({ reapIfExited() }) { return status }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    public func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if !isRunning { return true }
            usleep(2_000)
        }
        return !isRunning
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still running; waits for the exit.
    public func terminate(grace: Duration = .seconds(5)) {
        send(SIGTERM)
        if !waitForExit(timeout: grace) { send(SIGKILL) }
        waitForExit()
    }
}
