import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import UnixSignals

struct DemoCommand: AsyncParsableCommand {
    /// Catalog names the demo's jobs alternate between.
    static let models = ["tiny-a", "tiny-b"]

    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Start a local cluster with a real llama.cpp server, push a batch of chat jobs, and show what happened.",
        discussion: """
            Needs the llama.cpp environment that scripts/setup.sh prepares (.venv-llama, or SWITCHYARD_LLAMA_VENV). \
            The model is the project's tiny generated one: its answers are gibberish, but every token is real inference.
            """
    )

    @OptionGroup var redis: RedisOptions

    @Option(parsing: .unconditional, help: "Worker processes.")
    var workers = 2

    @Option(parsing: .unconditional, help: "Chat jobs to push.")
    var jobs = 24

    @Option(help: "A GGUF model file to serve instead of generating the tiny one.")
    var modelFile: String?

    @Flag(help: "Keep the cluster (and its dashboard) running after the report, until Ctrl-C.")
    var keep = false

    @Option(parsing: .unconditional, help: "The coordinator's port (another free one when taken).")
    var coordinatorPort = 8377

    func validate() throws {
        guard (0...65535).contains(coordinatorPort) else {
            throw ValidationError("--coordinator-port: must be from 0 to 65535, got \(coordinatorPort)")
        }
    }

    func run() async throws {
        let say = sayer("demo")
        let venv = ProcessInfo.processInfo.environment["SWITCHYARD_LLAMA_VENV"] ?? FileManager.default.currentDirectoryPath + "/.venv-llama"
        let python = venv + "/bin/python"
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw ValidationError("no llama.cpp environment at \(venv): run ./scripts/setup.sh first (or ./scripts/demo.sh, which does)")
        }
        let model = try modelFile ?? generateTinyModel(python: python, say: say)

        // The catalog the workers load: two models (the same file under two names, so each costs a
        // real load), served by llama-cpp-python's server. Each worker fits one, so warm-model
        // routing has something to do: each worker keeps one model and gets that model's jobs.
        let catalogPath = FileManager.default.temporaryDirectory.appendingPathComponent("switchyard-demo-models-\(getpid()).json")
        let entry: [String: Any] = [
            "file": model, "framework": "llama-cpp-python", "memory_mb": 64, "context_size": 512,
            "command": HardwareProfile.llamaCppPythonServer(python: python),
        ]
        let catalog: [String: Any] = ["models": Dictionary(uniqueKeysWithValues: Self.models.map { ($0, entry) })]
        try JSONSerialization.data(withJSONObject: catalog, options: [.prettyPrinted]).write(to: catalogPath)
        defer { try? FileManager.default.removeItem(at: catalogPath) }

        // Trapped before anything starts, so a Ctrl-C during start-up also stops what did start.
        let signals = await UnixSignalsSequence(trapping: .sigint, .sigterm)
        let cluster = try await LocalCluster.start(
            options: redis,
            workers: workers,
            workerArguments: [
                "--executor", "local", "--models", catalogPath.path, "--profile", "cpu", "--concurrency", "2", "--set", "model_cache_size=1",
            ],
            coordinatorPort: coordinatorPort,
            say: say
        )
        if let dashboard = cluster.dashboardURL { say("dashboard: \(dashboard) (open it to watch the jobs run)") }
        do {
            try await pushAndReport(cluster: cluster, say: say)
        } catch {
            cluster.stop(say: say)
            throw error
        }
        if keep {
            say("the cluster keeps running\(cluster.dashboardURL.map { ": dashboard \($0)" } ?? ""); Ctrl-C stops it")
            for await _ in signals { break }
        }
        cluster.stop(say: say)
        // Cold starts and model loads, from the workers' own logs.
        var coldStarts: [String] = []
        for file in (try? FileManager.default.contentsOfDirectory(atPath: cluster.directory.path)) ?? [] where file.hasSuffix(".log") {
            let text = (try? String(contentsOfFile: cluster.directory.appendingPathComponent(file).path, encoding: .utf8)) ?? ""
            for line in text.split(separator: "\n") where line.contains("ready after") {
                let seconds = line.components(separatedBy: "ready after ").last?.split(separator: " ").first ?? "?"
                coldStarts.append("\(file.replacingOccurrences(of: ".log", with: "")): \(String(format: "%.2f", Double(seconds) ?? 0)) s")
            }
        }
        say(
            "model loads: \(coldStarts.count) for \(Self.models.count) models on \(workers) workers with room for one each "
                + "(warm-model routing gives each job to a worker that has its model loaded)"
        )
        for line in coldStarts { say("  cold start \(line)") }
    }

    private func generateTinyModel(python: String, say: (String) -> Void) throws -> String {
        let directory = FileManager.default.currentDirectoryPath + "/.build/tiny-models"
        let path = directory + "/switchyard-tiny-v2.gguf"
        if FileManager.default.fileExists(atPath: path) { return path }
        let script = FileManager.default.currentDirectoryPath + "/tools/tinymodel/make_tiny_gguf.py"
        guard FileManager.default.fileExists(atPath: script) else {
            throw ValidationError("tools/tinymodel/make_tiny_gguf.py not found: run the demo from the repository, or give --model-file")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        say("generating the tiny model (random weights, nothing downloaded)")
        let child = try ChildProcess(executable: python, arguments: [script, path])
        guard child.waitForExit() == 0 else { throw ValidationError("generating the tiny model failed") }
        return path
    }

    private func pushAndReport(cluster: LocalCluster, say: (String) -> Void) async throws {
        var redisConfiguration = try RedisConfiguration(url: cluster.redisURL)
        redisConfiguration.password = try redis.configuration().redis.password
        let pool = RedisConnectionPool(configuration: redisConfiguration)
        defer { pool.shutDown() }
        let queue = JobQueue(configuration: QueueConfiguration(name: try redis.configuration().queue), redis: pool)
        try await queue.ensureGroups()
        let batch = "demo-" + String(UInt64(Date().timeIntervalSince1970), radix: 36)
        let prompts = ["Name a river.", "What is a switchyard?", "Count to five.", "Say hello in French."]
        let jobList = (0..<jobs).map { i -> Job in
            Job(
                kind: .chat,
                model: Self.models[i % Self.models.count],
                input: JobInput(
                    messages: [ChatMessage(role: "user", content: prompts[i % prompts.count])],
                    parameters: ["max_tokens": .number(16), "temperature": .number(0)]
                ),
                batch: batch
            )
        }
        say("pushing \(jobs) chat jobs for \(Self.models.joined(separator: " and ")), alternating, as batch \(batch)")
        _ = try await queue.push(jobList)
        let progress = ProgressBar(total: jobs)
        let deadline = Date().addingTimeInterval(300)
        while Date() < deadline {
            let p = try await queue.batchProgress(batch)
            progress.update(p)
            if p.finished >= jobs { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        progress.finish()
        let results = try await queue.results(of: jobList.map(\.id)).compactMap { $0 }
        var byStatus: [String: Int] = [:]
        var byWorker: [String: Int] = [:]
        var byModel: [String: [String: Int]] = [:]
        let models = Dictionary(uniqueKeysWithValues: jobList.map { ($0.id, $0.model) })
        var waits: [Double] = []
        var runs: [Double] = []
        var cached: [String: Int] = [:]
        for r in results {
            cached[r.cache?.status.rawValue ?? "none", default: 0] += 1
            byStatus[r.status.rawValue, default: 0] += 1
            byWorker[r.worker ?? "?", default: 0] += 1
            byModel[models[r.id] ?? "?", default: [:]][r.worker ?? "?", default: 0] += 1
            if let q = r.timings.queued, let s = r.timings.started, let f = r.timings.finished {
                waits.append((s - q) * 1000)
                // Inference times are those of jobs the model actually ran.
                if r.cache?.status != .hit && r.cache?.status != .coalesced { runs.append((f - s) * 1000) }
            }
        }
        waits.sort()
        runs.sort()
        func pct(_ xs: [Double], _ p: Int) -> String { xs.isEmpty ? "-" : String(format: "%.1f ms", xs[min(xs.count - 1, xs.count * p / 100)]) }
        say("results: \(byStatus.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        say("by worker: \(byWorker.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        for (model, workers) in byModel.sorted(by: { $0.key < $1.key }) {
            say("  \(model) ran on: \(workers.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))")
        }
        say("queue wait: p50 \(pct(waits, 50)), p95 \(pct(waits, 95)); inference: p50 \(pct(runs, 50)), p95 \(pct(runs, 95))")
        let fromCache = (cached["hit"] ?? 0) + (cached["coalesced"] ?? 0)
        say(
            "response cache: \(fromCache) of \(results.count) answered from the cache, \(cached["miss"] ?? 0) computed "
                + "(the jobs repeat \(prompts.count) prompts at temperature 0: identical requests are answered once across the cluster)"
        )
        for r in results.prefix(3) {
            let content = r.output?["content"]?.string ?? ""
            let shown = content.unicodeScalars.map { $0.value < 32 || $0.value == 127 ? "·" : String($0) }.joined()
            say("  \(r.id): \"\(shown)\" (\(r.usage?.completionTokens ?? 0) tokens)")
        }
    }
}
