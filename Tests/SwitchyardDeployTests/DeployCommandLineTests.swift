import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardTestSupport
import Testing
import Yams

/// Every command line in the deploy files runs: the coordinator and worker of the compose file,
/// the Kubernetes manifests (CPU and GPU overlays) and the systemd units and launchd plist are
/// read, their paths, ports, Redis and secrets replaced by the test's own, and run for real
/// against a private Redis with a password. A flag renamed in the CLI, a variable the binary no
/// longer reads, a probe on a path that does not answer, a grace period shorter than the drain:
/// each fails here, not in a deployment.
@Suite("Deploy files: every command line runs", .serialized)
struct DeployCommandLineTests {
    @Test func composeServicesRunAsWritten() async throws {
        let run = try DeployRun()
        let coordinator = try DeployFiles.composeService("coordinator")
        let worker = try DeployFiles.composeService("worker")
        #expect(worker.stopGrace != nil, "the worker service sets stop_grace_period")
        try await exercise(run, coordinator: coordinator, worker: worker)
    }

    @Test func kubernetesCPUOverlayRunsAsWritten() async throws {
        let run = try DeployRun()
        let coordinator = try DeployFiles.kubernetesDeployment(
            "switchyard-coordinator",
            base: "deploy/k8s/base",
            overlay: "deploy/k8s/overlays/cpu",
            scratch: run.scratch
        )
        let worker = try DeployFiles.kubernetesDeployment(
            "switchyard-worker",
            base: "deploy/k8s/base",
            overlay: "deploy/k8s/overlays/cpu",
            scratch: run.scratch
        )
        #expect(!worker.httpProbes.isEmpty, "the worker has HTTP probes")
        try await exercise(run, coordinator: coordinator, worker: worker)
    }

    /// The GPU worker runs its profile's llama.cpp server, which is not on this machine: it is
    /// started as written and must become ready (a model server starts with a model's first job).
    @Test func kubernetesGPUOverlayWorkerStartsAsWritten() async throws {
        let run = try DeployRun()
        let worker = try DeployFiles.kubernetesDeployment(
            "switchyard-worker",
            base: "deploy/k8s/base",
            overlay: "deploy/k8s/overlays/gpu",
            scratch: run.scratch
        )
        #expect(worker.environment["SWITCHYARD_PROFILE"] == "rtx3090-wsl" || worker.arguments.contains("rtx3090-wsl"))
        try await exercise(run, coordinator: nil, worker: worker, runJob: false)
    }

    @Test func systemdUnitsRunAsWritten() async throws {
        let run = try DeployRun()
        let envFile = DeployFiles.path("deploy/systemd/switchyard.env")
        let files = ["/etc/switchyard/switchyard.env": envFile]
        let coordinator = try DeployFiles.systemdUnit("deploy/systemd/switchyard-coordinator.service", instance: "", files: files)
        let worker = try DeployFiles.systemdUnit("deploy/systemd/switchyard-worker@.service", instance: "1", files: files)
        #expect(
            worker.arguments.contains { $0.contains("testhost") && $0.contains("1") },
            "the template gives each instance its own id: \(worker.arguments)"
        )
        // A host's configuration files are the user's; the compose file's providers stand in.
        let hostFiles = ["/etc/switchyard/providers.json": DeployFiles.path("deploy/compose/providers.json")]
        try await exercise(run, coordinator: coordinator, worker: worker, files: hostFiles)
    }

    @Test func launchdWorkerRunsAsWritten() async throws {
        let run = try DeployRun()
        let worker = try DeployFiles.launchdPlist("deploy/launchd/dev.switchyard.worker.plist")
        // A Mac's own files: the model catalog (mlx_lm.server is not on this machine, so no job
        // runs) and the password file the plist names.
        var plist = worker
        var files: [String: String] = [:]
        if let models = plist.environment["SWITCHYARD_MODELS_FILE"] { files[models] = DeployFiles.path("deploy/compose/models.json") }
        if let providers = plist.environment["SWITCHYARD_PROVIDERS_FILE"] { files[providers] = DeployFiles.path("deploy/compose/providers.json") }
        if let password = plist.environment["SWITCHYARD_REDIS_PASSWORD_FILE"] { plist.secrets[password] = "redis_password" }
        #expect(plist.arguments.contains("apple-m"), "the plist runs the apple-m profile")
        try await exercise(run, coordinator: nil, worker: plist, files: files, runJob: plist.environment["SWITCHYARD_MODELS_FILE"] == nil)
    }

    /// What the test's replacements would hide: the Redis the processes name is the deployment's
    /// own, and the ScaledObject reads the lanes and group the workers use, with credentials from
    /// variables the worker's container has, and asks for one worker per `concurrency` jobs.
    @Test(arguments: ["deploy/k8s/overlays/cpu", "deploy/k8s/overlays/gpu"])
    func kubernetesWiringMatchesTheQueue(overlay: String) throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("wiring-\(UUID().uuidString.prefix(6))")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let worker = try DeployFiles.kubernetesDeployment("switchyard-worker", base: "deploy/k8s/base", overlay: overlay, scratch: scratch)
        let coordinator = try DeployFiles.kubernetesDeployment("switchyard-coordinator", base: "deploy/k8s/base", overlay: overlay, scratch: scratch)
        var services: [String: [Int]] = [:]
        for service in try DeployFiles.kubernetesObjects("Service", base: "deploy/k8s/base", overlay: overlay) {
            let name = (service["metadata"] as? [String: Any])?["name"] as? String ?? ""
            services[name] = ((service["spec"] as? [String: Any])?["ports"] as? [[String: Any]] ?? []).compactMap { $0["port"] as? Int }
        }
        for (process, variable) in [(worker, "SWITCHYARD_REDIS_URL"), (coordinator, "SWITCHYARD_REDIS_URL"), (worker, "KEDA_REDIS_ADDRESS")] {
            let value = try #require(process.environment[variable], "\(process): \(variable)")
            let address = try #require(URLComponents(string: value.contains("://") ? value : "redis://" + value), "\(variable): \(value)")
            let host = String((address.host ?? "").split(separator: ".").first ?? "")
            #expect(services[host]?.contains(address.port ?? 6379) == true, "\(process): \(variable) \(value) names no Service port (\(services))")
        }

        let queue = worker.environment["SWITCHYARD_QUEUE"] ?? "default"
        let profile = worker.environment["SWITCHYARD_PROFILE"] ?? "cpu"
        let concurrency =
            worker.arguments.firstIndex(of: "--concurrency").flatMap { Int(worker.arguments[$0 + 1]) }
            ?? HardwareProfile.named(profile)?.concurrency ?? 0
        let scaled = try #require(try DeployFiles.kubernetesObjects("ScaledObject", base: "deploy/k8s/base", overlay: overlay).first)
        let spec = try #require(scaled["spec"] as? [String: Any])
        #expect((spec["scaleTargetRef"] as? [String: Any])?["name"] as? String == "switchyard-worker")
        let triggers = spec["triggers"] as? [[String: Any]] ?? []
        var lagStreams: Set<String> = []
        var streams: Set<String> = []
        for trigger in triggers {
            let metadata = trigger["metadata"] as? [String: Any] ?? [:]
            #expect(trigger["type"] as? String == "redis-streams")
            streams.insert(metadata["stream"] as? String ?? "")
            if metadata["lagCount"] != nil { lagStreams.insert(metadata["stream"] as? String ?? "") }
            #expect(metadata["consumerGroup"] as? String == QueueKeys.group, "\(trigger)")
            for key in ["addressFromEnv", "passwordFromEnv"] {
                let variable = metadata[key] as? String ?? ""
                #expect(worker.environment[variable] != nil, "\(key) \(variable) is not a variable of the worker's container")
            }
        }
        let lanes = Set(QueueKeys(queue: queue).lanes)
        #expect(streams == lanes && lagStreams == lanes, "the triggers read \(streams.sorted()), the workers \(lanes.sorted())")
        if let modifiers = (spec["advanced"] as? [String: Any])?["scalingModifiers"] as? [String: Any] {
            let formula = modifiers["formula"] as? String ?? ""
            for trigger in triggers { #expect(formula.contains(trigger["name"] as? String ?? "<unnamed>"), "the formula leaves out \(trigger)") }
            #expect(modifiers["target"] as? String == "\(concurrency)", "one worker per \(concurrency) jobs: \(modifiers)")
        } else {
            for trigger in triggers {
                let metadata = trigger["metadata"] as? [String: Any] ?? [:]
                #expect((metadata["lagCount"] ?? metadata["pendingEntriesCount"]) as? String == "\(concurrency)", "\(trigger)")
            }
        }
    }

    @Test func composeWiringMatchesTheQueue() throws {
        guard let top = try Yams.load(yaml: try DeployFiles.text("docker-compose.yml")) as? [String: Any],
            let services = top["services"] as? [String: [String: Any]]
        else { throw DeployFileError("docker-compose.yml: no services") }
        for name in ["coordinator", "worker", "worker-gpu"] {
            let process = try DeployFiles.composeService(name)
            let value = try #require(process.environment["SWITCHYARD_REDIS_URL"], "\(process)")
            let url = try #require(URLComponents(string: value))
            let redis = services[url.host ?? ""]
            #expect((redis?["image"] as? String)?.hasPrefix("redis") == true && (url.port ?? 6379) == 6379, "\(process): \(value)")
        }
    }

    /// The compose file's GPU worker runs llama.cpp's CUDA server, not on this machine: it is
    /// started as written and must become ready (its pinned model fails to load and is logged).
    @Test func composeGPUWorkerStartsAsWritten() async throws {
        let run = try DeployRun()
        let worker = try DeployFiles.composeService("worker-gpu")
        #expect(worker.environment["SWITCHYARD_PROFILE"] == "rtx3090-wsl")
        try await exercise(run, coordinator: nil, worker: worker, runJob: false)
    }

    // MARK: -

    /// Starts the coordinator (when given) and the worker as written, waits for every health
    /// check they declare, runs one real job through them, and stops both with SIGTERM within
    /// the grace the deploy file gives.
    func exercise(
        _ run: DeployRun,
        coordinator: DeployedProcess?,
        worker: DeployedProcess,
        files: [String: String] = [:],
        runJob: Bool = true
    )
        async throws
    {
        #expect(worker.subcommand == "worker", "\(worker): runs \(worker.arguments.first ?? "nothing")")
        var coordinatorChild: (child: ChildProcess, log: String)?
        if let coordinator {
            #expect(coordinator.subcommand == "coordinator", "\(coordinator)")
            let started = try run.start(coordinator, files: files)
            coordinatorChild = started
            try await waitForProbes(run, coordinator, child: started.child, log: started.log)
        }
        let (workerChild, workerLog) = try run.start(worker, files: files)
        try await waitForProbes(run, worker, child: workerChild, log: workerLog)

        let (_, environment) = try run.rewrite(worker, files: files)
        if runJob {
            var redisConfiguration = try RedisConfiguration(url: run.redisURL)
            redisConfiguration.password = run.redisPassword
            let pool = RedisConnectionPool(configuration: redisConfiguration)
            defer { pool.shutDown() }
            let queue = JobQueue(configuration: QueueConfiguration(name: environment["SWITCHYARD_QUEUE"] ?? "default"), redis: pool)
            let providers =
                try run.rewrite(worker, files: files).environment["SWITCHYARD_PROVIDERS_FILE"]
                ?? worker.arguments.drop(while: { $0 != "--providers" }).dropFirst().first
            let model = try DeployRun.chatModel(in: try #require(providers, "\(worker): a providers file"))
            let job = Job(kind: .chat, model: model, input: JobInput(messages: [ChatMessage(role: "user", content: "deployed")]))
            _ = try await queue.push(job)
            let finished = try await eventually(timeout: .seconds(60)) { try await queue.result(of: job.id) != nil }
            let result = try await queue.result(of: job.id)
            #expect(finished && result?.status == .succeeded, "\(worker): \(String(describing: result))\n\(log(workerLog))")
            if let coordinator, coordinatorChild != nil {
                // The job through the coordinator's API and metrics, with the deploy file's token.
                let base = "http://127.0.0.1:\(run.coordinatorPort)"
                let answer = await run.get(base + "/api/v1/jobs/\(job.id)", token: run.coordinatorToken)
                #expect(answer.status == 200 && answer.body.contains("succeeded"), "\(coordinator): \(answer)")
                let metrics = await run.get(base + "/metrics", token: run.coordinatorToken)
                #expect(metrics.status == 200 && metrics.body.contains("switchyard_workers"), "\(coordinator): /metrics \(metrics.status)")
            }
        }

        // SIGTERM drains within the grace the deploy file allows.
        let grace = worker.stopGrace ?? .seconds(10)
        let stopped = run.stop(workerChild, within: grace)
        #expect(stopped.took != nil && stopped.code == 0, "\(worker): stopped \(stopped) within \(grace)\n\(log(workerLog))")
        if let coordinatorChild, let coordinator {
            let stoppedCoordinator = run.stop(coordinatorChild.child, within: coordinator.stopGrace ?? .seconds(10))
            #expect(stoppedCoordinator.took != nil && stoppedCoordinator.code == 0, "\(coordinator): \(stoppedCoordinator)")
        }
    }

    /// Every HTTP probe answers 200 and every health-check command exits 0, within a minute.
    func waitForProbes(_ run: DeployRun, _ process: DeployedProcess, child: ChildProcess, log path: String) async throws {
        #expect(
            !process.httpProbes.isEmpty || !process.commandProbes.isEmpty || process.origin.hasSuffix(".service")
                || process.origin.hasSuffix(".plist"),
            "\(process): declares no health check"
        )
        var httpProbes = process.httpProbes
        if httpProbes.isEmpty, let i = process.arguments.firstIndex(of: "--health-port"), i + 1 < process.arguments.count,
            let port = Int(process.arguments[i + 1])
        {
            // A host's unit declares no probe, but serves the endpoint: it must answer.
            httpProbes.append(("/readyz", port))
        }
        for probe in httpProbes {
            let url = "http://127.0.0.1:\(run.port(probe.port))\(probe.path)"
            var last = (status: 0, body: "")
            let ok = await eventually(timeout: .seconds(60)) {
                last = await run.get(url)
                return last.status == 200 || !child.isRunning
            }
            #expect(ok, "\(process): probe \(probe.path) on \(probe.port): \(last)\n\(log(path))")
        }
        for command in process.commandProbes {
            var status: Int32 = -1
            let ok = try await eventually(timeout: .seconds(60)) {
                status = try run.runProbeCommand(command)
                return status == 0 || !child.isRunning
            }
            #expect(ok, "\(process): health check \(command) exited \(status)\n\(log(path))")
        }
        if httpProbes.isEmpty && process.commandProbes.isEmpty {
            // No probe declared (a host's unit without a health port): it must at least keep running.
            try await Task.sleep(for: .seconds(2))
        }
        try #require(child.isRunning, "\(process): exited at start\n\(log(path))")
    }

    func log(_ path: String) -> String { String(((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").suffix(3000)) }
}

/// The container image as deploy/Dockerfile builds it: its default command and health check run
/// (with the compose worker's environment), and its runtime stage installs every library the
/// binary links. No image is built here (no container engine): the file is read and its command
/// lines run against the binary the tests use.
@Suite("Deploy files: the container image", .serialized)
struct ContainerImageTests {
    /// The final stage's instructions, continuation lines joined.
    static func finalStage(_ relative: String) throws -> [(instruction: String, rest: String)] {
        var joined: [String] = []
        var current = ""
        for raw in try DeployFiles.text(relative).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if current.isEmpty && (line.hasPrefix("#") || line.isEmpty) { continue }
            if line.hasSuffix("\\") {
                current += line.dropLast() + " "
            } else {
                joined.append(current + line)
                current = ""
            }
        }
        var stage: [(String, String)] = []
        for line in joined {
            let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
            let instruction = parts[0].uppercased()
            if instruction == "FROM" { stage = [] }
            stage.append((instruction, parts.count > 1 ? parts[1] : ""))
        }
        return stage
    }

    static func execForm(_ text: String, _ what: String) throws -> [String] {
        guard let data = text.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String] else {
            throw DeployFileError("\(what): not the exec form (a JSON list): \(text)")
        }
        return list
    }

    /// Each image's default command with the environment compose gives the service built from it
    /// (the GPU worker's catalog names a model not on this machine: it is logged, and the worker
    /// becomes ready without it).
    @Test(arguments: [("deploy/Dockerfile", "worker"), ("deploy/Dockerfile.gpu", "worker-gpu")])
    func theImagesDefaultCommandRunsAndItsHealthCheckPasses(dockerfile: String, service: String) async throws {
        let stage = try Self.finalStage(dockerfile)
        let entrypoint = try Self.execForm(try #require(stage.last { $0.instruction == "ENTRYPOINT" }?.rest), "ENTRYPOINT")
        let command = try Self.execForm(try #require(stage.last { $0.instruction == "CMD" }?.rest), "CMD")
        let healthcheck = try #require(stage.last { $0.instruction == "HEALTHCHECK" }?.rest)
        let cmd = try #require(healthcheck.range(of: "CMD "), "HEALTHCHECK has a CMD")
        let probe = try Self.execForm(String(healthcheck[cmd.upperBound...]), "HEALTHCHECK")
        #expect(entrypoint == ["switchyard"], "the entrypoint is the binary: \(entrypoint)")
        #expect(stage.contains { $0.instruction == "USER" && !$0.rest.hasPrefix("root") && !$0.rest.hasPrefix("0") }, "runs as a non-root user")

        // The image's default command, with the environment compose gives its workers.
        let run = try DeployRun()
        var worker = try DeployFiles.composeService(service)
        worker.origin = "\(dockerfile) CMD (with compose's \(service) environment)"
        worker.arguments = command
        worker.commandProbes = [probe]
        worker.httpProbes = []
        try await DeployCommandLineTests().exercise(run, coordinator: nil, worker: worker, runJob: service == "worker")
    }

    @Test func theRuntimeStageInstallsEveryLibraryTheBinaryLinks() throws {
        let stage = try Self.finalStage("deploy/Dockerfile")
        var installed: Set<String> = ["libc6", "libgcc-s1"]  // essential in every Debian image
        for (instruction, rest) in stage where instruction == "RUN" && rest.contains("apt-get install") {
            for command in rest.components(separatedBy: "&&") where command.contains("apt-get install") {
                for word in command.split(separator: " ") where !word.hasPrefix("-") && !["apt-get", "install"].contains(word) {
                    installed.insert(String(word))
                }
            }
        }
        let binary = try WorkerProcess.switchyardExecutable()
        // What the binary and the Swift runtime it links need: the release build links the
        // runtime statically (--static-swift-stdlib), so the runtime's own needs become the binary's.
        let ldd = try capture("ldd", [binary])
        var paths: [String: String] = [:]
        for line in ldd.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count >= 3, parts[1] == "=>" { paths[String(parts[0].trimmingCharacters(in: .whitespaces))] = String(parts[2]) }
        }
        func isSwiftRuntime(_ path: String) -> Bool { path.contains("/swift/") || path.contains("/usr/lib/swift") }
        var needed: Set<String> = []
        var visit = [binary]
        var seen: Set<String> = []
        while let file = visit.popLast() {
            guard seen.insert(file).inserted else { continue }
            for line in try capture("readelf", ["-d", file]).split(separator: "\n") where line.contains("(NEEDED)") {
                guard let open = line.firstIndex(of: "["), let close = line.firstIndex(of: "]") else { continue }
                let name = String(line[line.index(after: open)..<close])
                guard let path = paths[name] else { continue }
                if isSwiftRuntime(path) { visit.append(path) } else { needed.insert(path) }
            }
        }
        #expect(needed.contains { $0.contains("libhiredis") } && needed.contains { $0.contains("libcurl") }, "\(needed)")
        for path in needed.sorted() {
            // dpkg knows each file by one spelling: /lib or /usr/lib (merged /usr), the link or its target.
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map {
                $0.hasPrefix("/") ? $0 : URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent($0).path
            }
            var candidates: [String] = []
            for p in [path, target].compactMap({ $0 }) {
                candidates += [p, p.hasPrefix("/usr/") ? String(p.dropFirst(4)) : "/usr" + p]
            }
            var package = ""
            for candidate in candidates {
                let owner = try capture("dpkg", ["-S", candidate])
                if !owner.hasPrefix("dpkg-query") && owner.contains(":") {
                    package = String(owner.split(separator: ":").first ?? "")
                    break
                }
            }
            #expect(
                installed.contains(package),
                "\(path) comes from \(package), which the runtime stage does not install (it installs \(installed.sorted()))"
            )
        }
    }

    func capture(_ program: String, _ arguments: [String]) throws -> String {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("capture-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: out) }
        let child = try ChildProcess(executable: program, arguments: arguments, outputPath: out)
        _ = child.waitForExit()
        return (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    }
}
