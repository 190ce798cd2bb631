import Foundation
import Logging
import ServiceLifecycle
import SwitchyardCoordinator
import SwitchyardCore
import SwitchyardHTTP
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The dashboard in a real browser: headless Chromium, driven over the DevTools protocol, opens
/// the page of a coordinator running in process over a real redis-server and a real worker
/// process, and the figures it shows are checked against what the JSON API answers, before and
/// after jobs run, without reloading. The page must run without a console error or a Content-
/// Security-Policy violation. A screenshot is left in `.build/test-artifacts/dashboard.png`.
@Suite("Dashboard in a real browser", .serialized)
struct DashboardBrowserTests {
    static let queueName = "dash"

    @Test func pageShowsTheClusterAndFollowsItAsJobsRun() async throws {
        let chromium = try Self.requireChromium()
        // A providers file only so that the breakers panel has a target to show.
        let providers = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-dashboard-providers-\(UUID().uuidString).json")
        try Data(
            #"{"providers": [{"name": "standin", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}], "models": {"tiny": {"provider": "standin"}}}"#
                .utf8
        )
        .write(to: providers)
        defer { try? FileManager.default.removeItem(at: providers) }
        let cluster = try await CoordinatorFixture(queue: Self.queueName) { $0.providersFile = providers.path }
        let browser = try HeadlessBrowser(executable: chromium)
        do {
            try await Self.followTheCluster(cluster, browser, chromium: chromium)
        } catch {
            print("chromium log:\n\(browser.logExcerpt)")
            await Self.close(cluster, browser)
            throw error
        }
        await Self.close(cluster, browser)
    }

    static func followTheCluster(_ cluster: CoordinatorFixture, _ browser: HeadlessBrowser, chromium: String) async throws {
        // Before any worker: jobs wait in every lane.
        var pushed: [Job] = []
        for (lane, n) in [(JobPriority.high, 2), (.default, 4), (.low, 3)] {
            pushed += (0..<n).map { Self.job("\(lane.rawValue) \($0)", priority: lane) }
        }
        // Fails its only attempt: a dead letter.
        let doomed = Self.job("doomed", metadata: ["echo.fail_attempts": "9"])
        pushed.append(doomed)
        _ = try await cluster.queue.push(pushed)

        try await browser.open(cluster.baseURL + "/")
        var api = try await cluster.json("/api/v1/cluster")
        var page = try await Self.pageCaughtUp(with: api, browser)
        Self.expectPage(page, matches: api)
        #expect(page.metric("workers-alive") == 0)
        #expect(page.metric("queue-waiting-high") == 2)
        #expect(page.metric("queue-waiting-default") == 5)
        #expect(page.metric("queue-waiting-low") == 3)
        #expect(page.metric("pushed-total") == 10)
        #expect(page.text("queue-name") == Self.queueName)
        #expect(page.workers.isEmpty)

        // A worker runs them; the same page, never reloaded, follows.
        let worker = try WorkerProcess(
            redisURL: cluster.server.url,
            id: "dash-worker",
            arguments: ["--queue", Self.queueName, "--executor", "echo", "--concurrency", "2"]
        )
        defer { _ = worker.terminate() }
        try await cluster.waitForResults(pushed)
        api = try await cluster.json("/api/v1/cluster")
        page = try await Self.pageCaughtUp(with: api, browser)
        Self.expectPage(page, matches: api)
        #expect(page.metric("workers-alive") == 1)
        #expect(page.metric("waiting-total") == 0)
        #expect(page.workers == ["dash-worker"])
        // Every job ended one way or another (9 succeed and 1 dies, unless the worker lost one).
        let ended = ["succeeded-total", "failed-total", "dead-total"].compactMap { page.metric($0) }.reduce(0, +)
        #expect(ended == 10, "\(page.metrics.filter { $0.key.hasSuffix("-total") })")
        #expect((page.metric("dead-letters") ?? 0) >= 1)
        #expect(page.deadLetters.contains { $0.contains(doomed.id) }, "\(page.deadLetters)")
        let succeededBefore = try #require(page.metric("succeeded-total"))

        // More jobs: the figures move again.
        let more = (0..<6).map { Self.job("more \($0)", metadata: ["echo.sleep_ms": "20"]) }
        _ = try await cluster.queue.push(more)
        try await cluster.waitForResults(more)
        api = try await cluster.json("/api/v1/cluster")
        page = try await Self.pageCaughtUp(with: api, browser)
        Self.expectPage(page, matches: api)
        #expect(page.metric("pushed-total") == 16)
        #expect((page.metric("succeeded-total") ?? 0) > succeededBefore)
        let succeeded = try #require(api["counters"]?["succeeded"]?.number)

        // The workers' metrics arrive with their heartbeats: windows and charts fill in.
        let charted = try await browser.until(timeout: .seconds(30)) { page in
            page.metric("window-60m-succeeded") == succeeded && page.bars >= 1 && page.runPoints >= 1 && page.waitPoints >= 1
        }
        #expect(charted.metric("window-60m-succeeded") == succeeded)
        #expect(charted.bars >= 1 && charted.runPoints >= 1 && charted.waitPoints >= 1)

        // Breakers: the panel lists the targets the API does, and follows a forced one.
        let targets = try await cluster.json("/api/v1/breakers").array ?? []
        let target = try #require(targets.first?["target"]?.string, "the providers file gives the coordinator a target")
        let (status, body, _) = try await cluster.request("POST", "/api/v1/breakers/open", json: .object(["target": .string(target)]))
        #expect(status == 200, "\(String(decoding: body, as: UTF8.self))")
        let forced = try await browser.until { $0.breakers[target] == "forced_open" }
        #expect(forced.breakersShown && forced.breakers.count == targets.count, "\(forced.breakers)")

        let screenshot = try await browser.screenshot()
        let artifacts = Self.packageRoot.appendingPathComponent(".build/test-artifacts")
        try FileManager.default.createDirectory(at: artifacts, withIntermediateDirectories: true)
        let path = artifacts.appendingPathComponent("dashboard.png")
        try screenshot.write(to: path)
        print("dashboard screenshot: \(path.path)")

        let problems = browser.problems()
        #expect(problems.isEmpty, "the page logged errors:\n\(problems.joined(separator: "\n"))")

        // Without the DevTools protocol too: a plain --dump-dom run executes the script, and its
        // figures are the API's.
        let dump = try await HeadlessBrowser.dumpDOM(executable: chromium, url: cluster.baseURL + "/")
        api = try await cluster.json("/api/v1/cluster")
        #expect(dump.value(of: "succeeded-total") == api["counters"]?["succeeded"]?.number, "\(dump.dom.prefix(2000))")
        #expect(dump.value(of: "workers-alive") == api["workers"]?["alive"]?.number)
        #expect(dump.value(of: "queue-waiting-default") == 0)
        #expect(dump.consoleLines.isEmpty, "chromium logged:\n\(dump.consoleLines.joined(separator: "\n"))")
    }

    @Test func asksForATokenWhenReadsNeedOneAndKeepsItOutOfURLs() async throws {
        let chromium = try Self.requireChromium()
        let token = "dashboard-test-token-\(UUID().uuidString.prefix(8))"
        let cluster = try await CoordinatorFixture(queue: Self.queueName) {
            $0.tokens = [token]
            $0.reads = .token
        }
        let browser = try HeadlessBrowser(executable: chromium)
        do {
            try await Self.askForToken(cluster, browser, token: token)
        } catch {
            print("chromium log:\n\(browser.logExcerpt)")
            await Self.close(cluster, browser)
            throw error
        }
        await Self.close(cluster, browser)
    }

    static func askForToken(_ cluster: CoordinatorFixture, _ browser: HeadlessBrowser, token: String) async throws {
        _ = try await cluster.queue.push((0..<3).map { Self.job("waiting \($0)") })

        // The page and its assets are public and carry a strict policy; the data is not.
        let (pageStatus, _, headers) = try await cluster.request("GET", "/")
        #expect(pageStatus == 200)
        let policy = headers.last { $0.name.lowercased() == "content-security-policy" }?.value ?? ""
        #expect(policy.contains("default-src 'self'") && !policy.contains("unsafe"), "\(policy)")
        for asset in ["/assets/dashboard.js", "/assets/dashboard.css", "/assets/favicon.svg"] {
            #expect(try await cluster.request("GET", asset).status == 200, "\(asset)")
        }
        #expect(try await cluster.request("GET", "/api/v1/cluster").status == 401)

        try await browser.open(cluster.baseURL + "/", recordRequests: true)
        let asked = try await browser.until { $0.state == "auth" && $0.tokenBox }
        #expect(asked.tokenMessage.contains("needs a token"))

        try await browser.submitToken("not-\(token)")
        let refused = try await browser.until { $0.state == "auth" && $0.tokenMessage.contains("refused") }
        #expect(refused.tokenBox)

        try await browser.submitToken(token)
        let api = try await cluster.json("/api/v1/cluster", token: token)
        let page = try await Self.pageCaughtUp(with: api, browser)
        Self.expectPage(page, matches: api)
        #expect(page.metric("queue-waiting-default") == 3)
        #expect(!page.tokenBox)
        let stored = try await browser.evaluate(#"({href: location.href, stored: sessionStorage.getItem("switchyard.coordinator.token")})"#)
        #expect(stored["stored"]?.string == token)
        #expect(stored["href"]?.string?.contains(token) == false)

        // A reload keeps the token for this tab: no question asked again.
        try await browser.open(cluster.baseURL + "/", recordRequests: true)
        let again = try await browser.until { $0.state == "live" }
        #expect(!again.tokenBox && again.metric("queue-waiting-default") == 3)

        let requests = browser.requests()
        #expect(requests.allSatisfy { !$0.url.contains(token) }, "a URL holds the token")
        let withToken = requests.filter { $0.url.contains("/api/v1/") && $0.authorization == "Bearer \(token)" }
        #expect(withToken.count >= 5, "the API was read with the token: \(requests.map(\.url))")
        // The 401s before the token was given are expected; nothing else may go wrong.
        let problems = browser.problems().filter { !$0.contains("status of 401") }
        #expect(problems.isEmpty, "the page logged errors:\n\(problems.joined(separator: "\n"))")
    }

    // MARK: - Helpers

    static func requireChromium() throws -> String {
        try #require(
            HeadlessBrowser.find(),
            "chromium is not installed: run scripts/setup.sh, which installs it (Debian: apt-get install -y chromium); the dashboard test needs a real browser"
        )
    }

    static func close(_ cluster: CoordinatorFixture, _ browser: HeadlessBrowser) async {
        try? await offThePool { browser.quit() }
        await cluster.close()
    }

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func job(_ prompt: String, priority: JobPriority = .default, metadata: [String: String] = [:]) -> Job {
        Job(
            kind: .chat,
            model: "tiny",
            input: JobInput(messages: [ChatMessage(role: "user", content: prompt)]),
            priority: priority,
            maxAttempts: 1,
            metadata: metadata
        )
    }

    /// Waits until the page shows a poll answered after `api` was read: on a cluster at rest
    /// both then say the same.
    static func pageCaughtUp(with api: JSONValue, _ browser: HeadlessBrowser) async throws -> PageView {
        let readAt = try #require(api["now"]?.number)
        return try await browser.until { $0.state == "live" && ($0.metric("updated-at") ?? 0) > readAt }
    }

    static func expectPage(_ page: PageView, matches api: JSONValue, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(page.metric("workers-alive") == api["workers"]?["alive"]?.number, sourceLocation: sourceLocation)
        #expect(page.metric("succeeded-total") == (api["counters"]?["succeeded"]?.number ?? 0), sourceLocation: sourceLocation)
        #expect(page.metric("dead-letters") == api["dead"]?.number, sourceLocation: sourceLocation)
        for lane in api["lanes"]?.array ?? [] {
            let name = lane["name"]?.string ?? "?"
            #expect(page.metric("queue-waiting-\(name)") == lane["waiting"]?.number, "lane \(name)", sourceLocation: sourceLocation)
            #expect(page.metric("queue-running-\(name)") == lane["pending"]?.number, "lane \(name)", sourceLocation: sourceLocation)
        }
    }
}

/// What the page shows, as its `data-metric` figures and a few facts about its panels.
struct PageView: Sendable {
    var state: String
    var metrics: [String: String]
    var workers: [String]
    var deadLetters: [String]
    var breakers: [String: String]
    var breakersShown: Bool
    var bars: Int
    var runPoints: Int
    var waitPoints: Int
    var tokenBox: Bool
    var tokenMessage: String

    /// Reads all of it in one evaluation, so the figures come from one render.
    static let script = #"""
        (() => {
          // While the page is still loading (or about:blank), there is nothing to read yet.
          if (!document.getElementById("token-form")) return { state: "not-loaded", metrics: {} };
          const all = (selector) => [...document.querySelectorAll(selector)];
          const metrics = {};
          for (const node of all("[data-metric]")) metrics[node.dataset.metric] = node.dataset.value ?? node.textContent;
          return {
            state: document.body.dataset.state,
            metrics,
            workers: all("#workers tr[data-worker]").map((row) => row.dataset.worker),
            deadLetters: all("#dead-letters tr[data-entry]").map((row) => row.textContent),
            breakers: Object.fromEntries(all("#breakers tr[data-target]").map((row) =>
              [row.dataset.target, row.querySelector("[data-field=state]").dataset.value])),
            breakersShown: !document.getElementById("breakers-panel").hidden,
            bars: all("#chart-throughput rect.bar").length,
            runPoints: all("#chart-run circle").length,
            waitPoints: all("#chart-wait circle").length,
            tokenBox: !document.getElementById("token-form").hidden,
            tokenMessage: document.getElementById("token-message").textContent,
          };
        })()
        """#

    init(_ value: JSONValue) {
        state = value["state"]?.string ?? ""
        metrics = (value["metrics"]?.object ?? [:]).compactMapValues(\.string)
        workers = (value["workers"]?.array ?? []).compactMap(\.string)
        deadLetters = (value["deadLetters"]?.array ?? []).compactMap(\.string)
        breakers = (value["breakers"]?.object ?? [:]).compactMapValues(\.string)
        breakersShown = value["breakersShown"]?.bool ?? false
        bars = value["bars"]?.integer ?? 0
        runPoints = value["runPoints"]?.integer ?? 0
        waitPoints = value["waitPoints"]?.integer ?? 0
        tokenBox = value["tokenBox"]?.bool ?? false
        tokenMessage = value["tokenMessage"]?.string ?? ""
    }

    func metric(_ name: String) -> Double? { metrics[name].flatMap(Double.init) }
    func text(_ name: String) -> String? { metrics[name] }
}

/// Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// the browser reads commands on its fd 3 and writes answers and events on its fd 4, each a JSON
/// text ending in NUL), so the test needs no WebSocket client. Keeps the page's console
/// messages, uncaught exceptions, log entries and requests, to check.
///
/// Blocking inside; the async methods run on threads of their own (`offThePool`).
final class HeadlessBrowser: @unchecked Sendable {
    struct ProtocolError: Error, CustomStringConvertible {
        let description: String
    }

    /// A request the page sent.
    struct SentRequest: Sendable {
        var url: String
        var authorization: String?
    }

    let executable: String
    let pid: pid_t
    let logPath: String
    let profile: URL
    private let commands: Int32
    private let answers: Int32
    private let condition = NSCondition()
    private var replies: [Int: [String: Any]] = [:]
    private var events: [(method: String, params: [String: Any])] = []
    private var lastID = 0
    private var ended = false
    private var session: String?

    /// The browser to use: the first of the usual names in PATH.
    static func find() -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for name in ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"] {
            for directory in path.split(separator: ":") + ["/usr/bin"] {
                let candidate = "\(directory)/\(name)"
                if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            }
        }
        return nil
    }

    static func arguments(profile: URL) -> [String] {
        [
            "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=\(profile.path)", "--window-size=1366,900",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync", "--disable-background-networking",
            "--disable-component-update", "--mute-audio", "--hide-scrollbars", "--force-color-profile=srgb", "--lang=en-US",
            "--enable-logging=stderr", "--v=0",
        ]
    }

    init(executable: String) throws {
        self.executable = executable
        let stamp = UUID().uuidString.prefix(8)
        profile = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-chromium-\(stamp)")
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-chromium-\(stamp).log").path
        var toBrowser: [Int32] = [0, 0]
        var fromBrowser: [Int32] = [0, 0]
        guard pipe(&toBrowser) == 0, pipe(&fromBrowser) == 0 else {
            throw ProtocolError(description: "pipe: \(String(cString: strerror(errno)))")
        }
        // Only the browser gets these, as its fds 3 and 4; no other child inherits them.
        for fd in toBrowser + fromBrowser { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        // The browser's ends are its own once it runs; ours stay here.
        defer {
            close(toBrowser[0])
            close(fromBrowser[1])
        }
        do {
            pid = try Self.spawn(
                executable,
                Self.arguments(profile: profile) + ["--remote-debugging-pipe", "about:blank"],
                stdout: logPath,
                pipes: (toBrowser[0], fromBrowser[1])
            )
        } catch {
            close(toBrowser[1])
            close(fromBrowser[0])
            throw error
        }
        commands = toBrowser[1]
        answers = fromBrowser[0]
        Thread.detachNewThread { [self] in readLoop() }
    }

    deinit {
        close(commands)
        close(answers)
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The end of the browser's log without its complaints about D-Bus (none in a container).
    var logExcerpt: String { log.split(separator: "\n").filter { !$0.contains("dbus") && !$0.contains("D-Bus") }.suffix(40).joined(separator: "\n") }

    /// Starts `executable` in a process group of its own, with an empty signal mask (a thread of
    /// the cooperative pool may block signals), `stdout` and `stderr` (default: the same file),
    /// and `pipes` as its fds 3 and 4.
    static func spawn(
        _ executable: String,
        _ arguments: [String],
        stdout: String,
        stderr: String? = nil,
        pipes: (Int32, Int32)? = nil
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        if let stderr {
            posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        if let (input, output) = pipes {
            posix_spawn_file_actions_adddup2(&actions, input, 3)
            posix_spawn_file_actions_adddup2(&actions, output, 4)
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard status == 0 else { throw ProtocolError(description: "cannot start \(executable): \(String(cString: strerror(status)))") }
        return pid
    }

    /// Waits for `pid` to exit, at most `timeout`; then kills what is left of its process group.
    static func reap(_ pid: pid_t, timeout: Duration) {
        let deadline = ContinuousClock.now + timeout
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if ContinuousClock.now >= deadline {
                kill(-pid, SIGKILL)
                waitpid(pid, &status, 0)
                break
            }
            usleep(20_000)
        }
        // Renderers and helpers of this browser only: the group is the one it was started in.
        kill(-pid, SIGKILL)
    }

    private func readLoop() {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(answers, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            let searchFrom = buffer.count
            buffer.append(contentsOf: chunk[0..<n])
            var start = 0
            var index = searchFrom
            while index < buffer.count {
                if buffer[index] == 0 {
                    if let object = try? JSONSerialization.jsonObject(with: Data(buffer[start..<index])) as? [String: Any] { deliver(object) }
                    start = index + 1
                }
                index += 1
            }
            if start > 0 { buffer.removeFirst(start) }
        }
        condition.withLock {
            ended = true
            condition.broadcast()
        }
    }

    private func deliver(_ message: [String: Any]) {
        condition.withLock {
            if let id = message["id"] as? Int {
                replies[id] = message
            } else if let method = message["method"] as? String {
                events.append((method, message["params"] as? [String: Any] ?? [:]))
            }
            condition.broadcast()
        }
    }

    /// Sends one command and waits for its answer; to the page's session unless `browserLevel`.
    @discardableResult
    func call(_ method: String, _ params: [String: Any] = [:], browserLevel: Bool = false, timeout: Duration = .seconds(30)) throws -> [String: Any] {
        let id = condition.withLock {
            lastID += 1
            return lastID
        }
        var message: [String: Any] = ["id": id, "method": method, "params": params]
        if !browserLevel, let session = condition.withLock({ session }) { message["sessionId"] = session }
        var bytes = [UInt8](try JSONSerialization.data(withJSONObject: message))
        bytes.append(0)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { write(commands, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ProtocolError(description: "\(method): the browser is gone (\(String(cString: strerror(errno))))") }
            written += n
        }
        let deadline = Date().addingTimeInterval(Double(timeout.components.seconds))
        condition.lock()
        defer { condition.unlock() }
        while replies[id] == nil {
            if ended { throw ProtocolError(description: "\(method): the browser closed the pipe") }
            if !condition.wait(until: deadline) { throw ProtocolError(description: "\(method): no answer within \(timeout)") }
        }
        let reply = replies.removeValue(forKey: id)!
        if let error = reply["error"] as? [String: Any] {
            throw ProtocolError(description: "\(method): \(error["message"] as? String ?? "\(error)")")
        }
        return reply["result"] as? [String: Any] ?? [:]
    }

    /// Opens `url` in a fresh tab at 1366×900, with the page's console, log (and requests) watched
    /// from before it loads.
    func open(_ url: String, recordRequests: Bool = false) async throws {
        try await offThePool { [self] in
            // A second open loads the page again in the same tab (sessionStorage and all).
            if condition.withLock({ session }) != nil {
                try call("Page.navigate", ["url": url])
                return
            }
            let target = try call("Target.createTarget", ["url": "about:blank"], browserLevel: true)
            guard let targetID = target["targetId"] as? String else { throw ProtocolError(description: "no target id: \(target)") }
            let attached = try call("Target.attachToTarget", ["targetId": targetID, "flatten": true], browserLevel: true)
            guard let id = attached["sessionId"] as? String else { throw ProtocolError(description: "no session id: \(attached)") }
            condition.withLock { session = id }
            try call("Runtime.enable")
            try call("Log.enable")
            try call("Page.enable")
            if recordRequests { try call("Network.enable") }
            try call("Emulation.setDeviceMetricsOverride", ["width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": false])
            try call("Page.navigate", ["url": url])
        }
    }

    /// The value of `expression` in the page (JSON-serialisable).
    func evaluate(_ expression: String) async throws -> JSONValue {
        try await offThePool { [self] in
            let result = try call("Runtime.evaluate", ["expression": "JSON.stringify(\(expression))", "returnByValue": true])
            if let exception = result["exceptionDetails"] as? [String: Any] {
                throw ProtocolError(description: "the page threw: \(exception)")
            }
            guard let text = (result["result"] as? [String: Any])?["value"] as? String else {
                throw ProtocolError(description: "no value: \(result)")
            }
            return try JSONValue.parse(Array(text.utf8))
        }
    }

    func view() async throws -> PageView { PageView(try await evaluate(PageView.script)) }

    /// Reads the page until `condition` holds; fails with the last view when it never does.
    func until(timeout: Duration = .seconds(20), _ holds: (PageView) -> Bool) async throws -> PageView {
        var last: PageView?
        var failure: (any Error)?
        let held = await eventually(timeout: timeout) {
            // A read while the page navigates can fail (its context goes away): try again.
            do {
                last = try await view()
                failure = nil
            } catch {
                failure = error
                return false
            }
            return last.map(holds) ?? false
        }
        guard held, let last else {
            let shown = last.map { "state \($0.state), \($0.metrics.sorted { $0.key < $1.key })" } ?? "nothing"
            throw ProtocolError(description: "the page never got there; it shows \(shown)\(failure.map { "; last error: \($0)" } ?? "")")
        }
        return last
    }

    func submitToken(_ token: String) async throws {
        let literal = String(decoding: JSONValue.string(token).jsonBytes, as: UTF8.self)
        _ = try await evaluate(
            #"(() => { document.getElementById("token-input").value = \#(literal); document.getElementById("token-form").requestSubmit(); return true; })()"#
        )
    }

    func screenshot() async throws -> Data {
        try await offThePool { [self] in
            let shot = try call("Page.captureScreenshot", ["format": "png"])
            guard let base64 = shot["data"] as? String, let data = Data(base64Encoded: base64) else {
                throw ProtocolError(description: "no screenshot data")
            }
            return data
        }
    }

    /// Everything that went wrong in the page: uncaught exceptions, console errors and warnings,
    /// error log entries (failed loads, policy violations), and "Uncaught" in the browser's log.
    func problems() -> [String] {
        var out: [String] = condition.withLock {
            events.compactMap { event -> String? in
                switch event.method {
                case "Runtime.exceptionThrown":
                    let details = event.params["exceptionDetails"] as? [String: Any] ?? [:]
                    let description = (details["exception"] as? [String: Any])?["description"] as? String
                    return "exception: \(description ?? details["text"] as? String ?? "?")"
                case "Runtime.consoleAPICalled":
                    let type = event.params["type"] as? String ?? ""
                    guard ["error", "warning", "assert"].contains(type) else { return nil }
                    let args = (event.params["args"] as? [[String: Any]] ?? []).map { "\($0["value"] ?? $0["description"] ?? "")" }
                    return "console.\(type): \(args.joined(separator: " "))"
                case "Log.entryAdded":
                    let entry = event.params["entry"] as? [String: Any] ?? [:]
                    guard entry["level"] as? String == "error" else { return nil }
                    return "log (\(entry["source"] ?? "?")): \(entry["text"] ?? "") \(entry["url"] ?? "")"
                default:
                    return nil
                }
            }
        }
        out += log.split(separator: "\n").filter { $0.contains("Uncaught") }.map { "browser log: \($0)" }
        return out
    }

    func requests() -> [SentRequest] {
        condition.withLock {
            events.filter { $0.method == "Network.requestWillBeSent" }.compactMap { event in
                guard let request = event.params["request"] as? [String: Any], let url = request["url"] as? String else { return nil }
                let headers = request["headers"] as? [String: Any] ?? [:]
                let authorization = headers.first { $0.key.lowercased() == "authorization" }?.value as? String
                return SentRequest(url: url, authorization: authorization)
            }
        }
    }

    /// Closes the browser and waits for it; what is left of its process group is killed.
    func quit() {
        _ = try? call("Browser.close", browserLevel: true, timeout: .seconds(5))
        Self.reap(pid, timeout: .seconds(10))
        try? FileManager.default.removeItem(at: profile)
        try? FileManager.default.removeItem(atPath: logPath)
    }

    /// What `chromium --dump-dom` prints of `url` once the script ran (`--virtual-time-budget`
    /// lets its first polls finish), with the console lines of its log.
    struct DOMDump: Sendable {
        var dom: String
        var consoleLines: [String]

        /// The `data-value` of the first element with `data-metric="name"`.
        func value(of name: String) -> Double? {
            let pattern = #"data-metric="\#(NSRegularExpression.escapedPattern(for: name))"[^>]*?data-value="([^"]*)""#
            guard let regex = try? NSRegularExpression(pattern: pattern),
                let match = regex.firstMatch(in: dom, range: NSRange(dom.startIndex..., in: dom)),
                let range = Range(match.range(at: 1), in: dom)
            else { return nil }
            return Double(dom[range])
        }
    }

    static func dumpDOM(executable: String, url: String) async throws -> DOMDump {
        try await offThePool {
            let stamp = UUID().uuidString.prefix(8)
            let directory = FileManager.default.temporaryDirectory
            let profile = directory.appendingPathComponent("switchyard-chromium-dump-\(stamp)")
            let domPath = directory.appendingPathComponent("switchyard-dashboard-\(stamp).html").path
            let logPath = directory.appendingPathComponent("switchyard-dashboard-\(stamp).log").path
            defer {
                for path in [domPath, logPath] { try? FileManager.default.removeItem(atPath: path) }
                try? FileManager.default.removeItem(at: profile)
            }
            let pid = try spawn(
                executable,
                arguments(profile: profile) + ["--virtual-time-budget=5000", "--dump-dom", url],
                stdout: domPath,
                stderr: logPath
            )
            reap(pid, timeout: .seconds(60))
            let dom = (try? String(contentsOfFile: domPath, encoding: .utf8)) ?? ""
            let log = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
            // The page logs nothing itself: any console line is an error or a violation.
            let console = log.split(separator: "\n").filter { $0.contains(":CONSOLE") || $0.contains("Uncaught") }.map(String.init)
            return DOMDump(dom: dom, consoleLines: console)
        }
    }
}
