import CProcessShim
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process, for redis-server, model servers and workers.
///
/// Foundation's `Process` hands the child the signal mask of whichever thread spawned it; from a
/// Swift concurrency thread that mask blocks SIGTERM, so the child could never be stopped
/// gracefully. Here the child starts with an empty mask and default signal handlers, without a
/// shell, inherits no descriptor but its standard ones, and is reaped with waitpid.
///
/// By default a child dies with its parent: on Linux it gets `parentDeathSignal` (SIGKILL unless
/// told otherwise) when this process ends, even by `kill -9`, so model servers and `up`'s workers
/// never outlive the process that started them. Elsewhere that signal does not exist; owners that
/// must not leak children there also keep a PID file (see `ModelServerManager`).
public final class ChildProcess: @unchecked Sendable {
    public struct SpawnError: Error, CustomStringConvertible {
        public let description: String
    }

    public let pid: pid_t
    public let executable: String
    private let lock = NSLock()
    private var exitStatus: Int32?

    /// Starts `executable` (looked up in PATH when it has no slash) with `arguments`.
    /// Output goes to `outputPath` (appended; created 0600; never through a symbolic link) or
    /// /dev/null. `parentDeathSignal` nil lets the child outlive this process.
    public init(
        executable: String,
        arguments: [String],
        environment: [String: String]? = nil,
        outputPath: String? = nil,
        newProcessGroup: Bool = false,
        parentDeathSignal: Int32? = SIGKILL
    ) throws {
        self.executable = executable
        let environment = environment ?? Self.inheritableEnvironment()
        guard let path = Self.resolve(executable, searchPath: ProcessInfo.processInfo.environment["PATH"]) else {
            throw SpawnError(description: "cannot start \(executable): not found (nor executable) in PATH")
        }
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        let env = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            for pointer in argv { free(pointer) }
            for pointer in env { free(pointer) }
        }
        let group: Int32 = newProcessGroup ? 1 : 0
        let signal = parentDeathSignal ?? 0
        let pid = SpawnThread.shared.run {
            argv.withUnsafeBufferPointer { argvBuffer in
                env.withUnsafeBufferPointer { envBuffer in
                    syp_spawn(path, argvBuffer.baseAddress, envBuffer.baseAddress, outputPath, group, signal)
                }
            }
        }
        guard pid > 0 else {
            throw SpawnError(description: "cannot start \(executable): \(String(cString: strerror(-pid)))")
        }
        self.pid = pid
    }

    /// `name` itself when it holds a slash, else the first executable file of that name in `searchPath`.
    static func resolve(_ name: String, searchPath: String?) -> String? {
        if name.contains("/") { return name }
        for directory in (searchPath ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            var isDirectory: ObjCBool = false
            if FileManager.default.isExecutableFile(atPath: candidate),
                FileManager.default.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue
            {
                return candidate
            }
        }
        return nil
    }

    /// This process's environment without secrets: a model server has no business with the
    /// Redis password or a provider's API key. Left out: Switchyard's own URL variables, every
    /// variable whose name holds KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL or AUTH (any
    /// case; but HF_TOKEN and HUGGING_FACE_HUB_TOKEN, which model servers use to fetch gated
    /// models, stay), and every value that is a URL with credentials in it.
    public static func inheritableEnvironment() -> [String: String] {
        ProcessInfo.processInfo.environment.filter { key, value in !isSecret(key, value: value) }
    }

    static func isSecret(_ name: String, value: String = "") -> Bool {
        let upper = name.uppercased()
        // What model servers need to fetch gated models, or to tune themselves.
        if ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TOKENIZERS_PARALLELISM"].contains(upper) { return false }
        if upper.hasPrefix("SWITCHYARD_") && upper.contains("URL") { return true }
        if ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH"].contains(where: { upper.contains($0) }) { return true }
        // A URL with credentials in it (redis://user:password@host, postgres://…).
        return value.range(of: #"://[^/@\s]*:[^/@\s]*@"#, options: .regularExpression) != nil
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

    /// Blocks the calling thread until the process exits; returns the raw wait status. It sleeps
    /// in the kernel (a pidfd, else a backing-off poll): call it from a thread of its own, never
    /// from Swift's cooperative pool.
    @discardableResult
    public func waitForExit() -> Int32 {
        while true {
            if let status = lock.withLock({ reapIfExited() }) { return status }
            if syp_wait_exit(pid, -1) < 0 { return pollForExit(until: nil) ?? -1 }
        }
    }

    /// Waits up to `timeout` for the process to exit; true if it did.
    public func waitForExit(timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while true {
            if !isRunning { return true }
            let left = deadline - ContinuousClock.now
            if left <= .zero { return false }
            let ms = Int32(clamping: max(1, left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            if syp_wait_exit(pid, ms) < 0 { return pollForExit(until: deadline) != nil }
        }
    }

    /// Polls with a growing pause (1 to 20 ms) until the process exits or `deadline` passes.
    private func pollForExit(until deadline: ContinuousClock.Instant?) -> Int32? {
        var pause: UInt32 = 1_000
        while deadline.map({ ContinuousClock.now < $0 }) ?? true {
            if let status = lock.withLock({ reapIfExited() }) { return status }
            usleep(pause)
            pause = min(pause * 2, 20_000)
        }
        return lock.withLock { reapIfExited() }
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still running; waits for the exit.
    public func terminate(grace: Duration = .seconds(5)) {
        send(SIGTERM)
        if !waitForExit(timeout: grace) { send(SIGKILL) }
        waitForExit()
    }
}

/// Children are forked from one thread that lives as long as the process: Linux sends the
/// parent-death signal when the thread that forked a child exits, and threads of Swift's
/// cooperative pool come and go.
final class SpawnThread: @unchecked Sendable {
    static let shared = SpawnThread()
    private let condition = NSCondition()
    private var work: [@Sendable () -> Void] = []

    private init() {
        let thread = Thread { [unowned self] in self.loop() }
        thread.name = "switchyard.spawn"
        thread.start()
    }

    /// Runs `body` on the spawn thread and returns its result; the caller waits (a fork is quick).
    func run<T>(_ body: @escaping () -> T) -> T {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        let item: @Sendable () -> Void = { [body = UncheckedBox(value: body)] in
            box.value = body.value()
            done.signal()
        }
        condition.lock()
        work.append(item)
        condition.signal()
        condition.unlock()
        done.wait()
        return box.value!
    }

    private func loop() {
        while true {
            condition.lock()
            while work.isEmpty { condition.wait() }
            let next = work.removeFirst()
            condition.unlock()
            next()
        }
    }

    private final class ResultBox<T>: @unchecked Sendable { var value: T? }
    private struct UncheckedBox<T>: @unchecked Sendable { let value: T }
}
