import Foundation
import Yams

/// A Switchyard process as a deploy file describes it: the arguments after `switchyard`, the
/// environment, the files it expects at fixed paths, its health checks and its stop grace.
struct DeployedProcess: CustomStringConvertible {
    /// Where it was read, e.g. `docker-compose.yml services.worker`.
    var origin: String
    /// Arguments after the program name (`worker`, `--health-port`, …).
    var arguments: [String]
    var environment: [String: String] = [:]
    /// Absolute paths inside the container or host → the repository file that provides them
    /// (bind mounts, ConfigMaps written out by the reader).
    var files: [String: String] = [:]
    /// Secret files: absolute path inside the container or host → the secret's name.
    var secrets: [String: String] = [:]
    /// HTTP health checks: path and port (as the deploy file gives them).
    var httpProbes: [(path: String, port: Int)] = []
    /// Health checks that are commands (exec form; the program first).
    var commandProbes: [[String]] = []
    /// How long the deploy file lets the process stop after SIGTERM before killing it.
    var stopGrace: Duration?

    var description: String { origin }

    /// `worker` or `coordinator`.
    var subcommand: String { arguments.first ?? "" }
}

struct DeployFileError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Reads the repository's deploy files. Every reader fails loudly on a shape it does not
/// understand, so a deploy file cannot drift out of the test by changing form.
enum DeployFiles {
    /// The repository's root (this file is Tests/SwitchyardDeployTests/DeployFiles.swift).
    static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    static func text(_ relative: String) throws -> String { try String(contentsOfFile: path(relative), encoding: .utf8) }

    /// Parses a duration the way compose and systemd write them: `75s`, `1m30s`, `90`, `2min`.
    static func duration(_ text: String) throws -> Duration {
        let scanner = Scanner(string: text.trimmingCharacters(in: .whitespaces))
        var total = 0.0
        var sawAny = false
        while !scanner.isAtEnd {
            guard let value = scanner.scanDouble() else { throw DeployFileError("'\(text)' is not a duration") }
            let unit = scanner.scanCharacters(from: .letters) ?? "s"
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s", "sec": scale = 1
            case "m", "min": scale = 60
            case "h": scale = 3600
            default: throw DeployFileError("'\(text)': unknown unit '\(unit)'")
            }
            total += value * scale
            sawAny = true
        }
        guard sawAny else { throw DeployFileError("'\(text)' is not a duration") }
        return .milliseconds(Int(total * 1000))
    }

    // MARK: - Compose

    /// The compose file's `${VAR:-default}` / `${VAR-default}` / `${VAR}` with only the defaults
    /// (the test's environment plays no part): what a newcomer without an env file gets.
    static func interpolate(_ text: String) -> String {
        var out = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { break }
            let inner = rest[start.upperBound..<end]
            if let sep = inner.range(of: ":-") ?? inner.range(of: "-") {
                out += inner[sep.upperBound...]
            } else if let sep = inner.range(of: ":?") ?? inner.range(of: "?") {
                // Required variables have no default: the test cannot run them as written.
                out += "<required \(inner[..<sep.lowerBound])>"
            }
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    /// One service of the top-level docker-compose.yml.
    static func composeService(_ name: String) throws -> DeployedProcess {
        let file = "docker-compose.yml"
        guard let top = try Yams.load(yaml: try text(file)) as? [String: Any],
            let services = top["services"] as? [String: Any], let service = services[name] as? [String: Any]
        else { throw DeployFileError("\(file): no service '\(name)'") }
        let origin = "\(file) services.\(name)"
        var process = DeployedProcess(origin: origin, arguments: [])
        // The images' entrypoint is `switchyard`; a service may name it again.
        var argv: [String] = []
        if let entrypoint = service["entrypoint"] {
            argv = try strings(entrypoint, "\(origin).entrypoint")
            guard argv.first.map({ $0.hasSuffix("switchyard") }) == true else {
                throw DeployFileError("\(origin): entrypoint \(argv) is not switchyard")
            }
            argv.removeFirst()
        }
        argv += try strings(service["command"] ?? [], "\(origin).command")
        process.arguments = argv.map(interpolate)
        switch service["environment"] {
        case let map as [String: Any]:
            for (key, value) in map { process.environment[key] = interpolate("\(value)") }
        case let list as [Any]:
            for item in list {
                let pair = "\(item)".split(separator: "=", maxSplits: 1).map(String.init)
                process.environment[pair[0]] = pair.count > 1 ? interpolate(pair[1]) : ""
            }
        case nil: break
        default: throw DeployFileError("\(origin).environment: not a map or a list")
        }
        if let envFiles = service["env_file"] {
            throw DeployFileError("\(origin).env_file (\(envFiles)): the test reads environment only; keep it in `environment`")
        }
        for item in service["secrets"] as? [Any] ?? [] {
            if let name = item as? String {
                process.secrets["/run/secrets/\(name)"] = name
            } else if let object = item as? [String: Any], let source = object["source"] as? String {
                let target = object["target"] as? String ?? source
                process.secrets[target.hasPrefix("/") ? target : "/run/secrets/\(target)"] = source
            } else {
                throw DeployFileError("\(origin).secrets: unreadable item \(item)")
            }
        }
        for item in service["volumes"] as? [Any] ?? [] {
            var source: String?
            var target: String?
            if let short = item as? String {
                let parts = short.split(separator: ":").map(String.init)
                if parts.count >= 2 { (source, target) = (parts[0], parts[1]) }
            } else if let object = item as? [String: Any] {
                source = object["source"] as? String
                target = object["target"] as? String
                if object["type"] as? String != "bind" { source = nil }
            }
            // Bind mounts of repository files; named volumes hold data, not configuration.
            if let source, let target, source.hasPrefix(".") || source.hasPrefix("/") {
                process.files[target] = path(interpolate(source))
            }
        }
        if let health = service["healthcheck"] as? [String: Any], let test = health["test"] {
            var parts = try strings(test, "\(origin).healthcheck.test")
            switch parts.first {
            case "CMD": parts.removeFirst()
            case "CMD-SHELL": throw DeployFileError("\(origin).healthcheck: use the exec form (CMD), not a shell")
            case "NONE": parts = []
            default: break
            }
            if !parts.isEmpty { process.commandProbes.append(parts.map(interpolate)) }
        }
        if let grace = service["stop_grace_period"] as? String { process.stopGrace = try duration(grace) }
        return process
    }

    // MARK: - Kubernetes

    /// Every document of every YAML file under `folder` (recursively), with the file it came from.
    static func manifests(under folder: String) throws -> [(file: String, object: [String: Any])] {
        var out: [(String, [String: Any])] = []
        let base = path(folder)
        guard let walker = FileManager.default.enumerator(atPath: base) else { throw DeployFileError("\(folder): not found") }
        for case let relative as String in walker where relative.hasSuffix(".yaml") || relative.hasSuffix(".yml") {
            let file = "\(folder)/\(relative)"
            for document in try Yams.load_all(yaml: try text(file)) {
                if let object = document as? [String: Any] { out.append((file, object)) }
            }
        }
        return out.sorted { $0.0 < $1.0 }
    }

    /// The one container of the Deployment `name` found under `folder`, resolved against the
    /// ConfigMaps, Secrets and volumes there. ConfigMaps' data (and those of kustomize's
    /// `configMapGenerator`) are written into `scratch` so they can be mounted.
    /// The folders a kustomize overlay builds from (the base, the overlay, the folders it adds as
    /// resources) and its patch files.
    static func kustomizeLayout(base: String, overlay: String?) throws -> (folders: [String], patches: [String]) {
        var folders = [base]
        var patches: [String] = []
        guard let overlay else { return (folders, patches) }
        folders.append(overlay)
        guard let k = try Yams.load(yaml: try text("\(overlay)/kustomization.yaml")) as? [String: Any] else {
            throw DeployFileError("\(overlay)/kustomization.yaml: unreadable")
        }
        for resource in k["resources"] as? [String] ?? [] {
            let resolved = URL(fileURLWithPath: path("\(overlay)/\(resource)")).standardizedFileURL.path
            let relative = String(resolved.dropFirst(root.standardizedFileURL.path.count + 1))
            if relative != base && !folders.contains(relative) { folders.append(relative) }
        }
        for patch in (k["patches"] as? [[String: Any]] ?? []) + (k["patchesStrategicMerge"] as? [String] ?? []).map({ ["path": $0] }) {
            guard let file = patch["path"] as? String else {
                throw DeployFileError("\(overlay): inline patches are not read by the test; keep patches in files")
            }
            let patchPath = "\(overlay)/\(file)"
            let object = try Yams.load(yaml: try text(patchPath)) as? [String: Any]
            if object == nil || object?["kind"] == nil {
                throw DeployFileError("\(patchPath): JSON 6902 patches are not read by the test; use strategic-merge patches")
            }
            patches.append(patchPath)
        }
        return (folders, patches)
    }

    /// Every object of `kind` an overlay builds, with the overlay's patches of it merged the way
    /// kustomize merges a custom resource's (maps merged, lists replaced; not for Deployments,
    /// whose containers merge by name: `kubernetesDeployment`).
    static func kubernetesObjects(_ kind: String, base: String, overlay: String?) throws -> [[String: Any]] {
        let (folders, patches) = try kustomizeLayout(base: base, overlay: overlay)
        var objects: [[String: Any]] = []
        for folder in folders {
            for (file, object) in try manifests(under: folder) where !patches.contains(file) && object["kind"] as? String == kind {
                objects.append(object)
            }
        }
        func name(_ object: [String: Any]) -> String? { (object["metadata"] as? [String: Any])?["name"] as? String }
        for patchFile in patches {
            guard let patch = try Yams.load(yaml: try text(patchFile)) as? [String: Any], patch["kind"] as? String == kind else { continue }
            for i in objects.indices where name(objects[i]) == name(patch) { objects[i] = mergeMaps(objects[i], patch) }
        }
        return objects
    }

    static func mergeMaps(_ base: [String: Any], _ patch: [String: Any]) -> [String: Any] {
        var out = base
        for (key, value) in patch {
            if let old = base[key] as? [String: Any], let new = value as? [String: Any] { out[key] = mergeMaps(old, new) } else { out[key] = value }
        }
        return out
    }

    static func kubernetesDeployment(_ name: String, base: String, overlay: String?, scratch: URL) throws -> DeployedProcess {
        // The base's manifests, the overlay's other resources (folders it adds), its generators and patches.
        let (folders, allPatches) = try kustomizeLayout(base: base, overlay: overlay)
        var patches: [String] = []
        for patchPath in allPatches {
            let object = try Yams.load(yaml: try text(patchPath)) as? [String: Any]
            if object?["kind"] as? String == "Deployment", (object?["metadata"] as? [String: Any])?["name"] as? String == name {
                patches.append(patchPath)
            }
        }
        let patchSet = Set(allPatches)
        var documents: [(file: String, object: [String: Any])] = []
        for folder in folders { documents += try manifests(under: folder).filter { !patchSet.contains($0.file) } }
        func kind(_ k: String) -> [(file: String, object: [String: Any])] { documents.filter { $0.object["kind"] as? String == k } }
        func named(_ object: [String: Any]) -> String? { (object["metadata"] as? [String: Any])?["name"] as? String }

        // ConfigMaps: manifests, then kustomize generators (files and literals).
        var configMaps: [String: [String: String]] = [:]
        for (_, object) in kind("ConfigMap") {
            if let n = named(object) { configMaps[n, default: [:]].merge((object["data"] as? [String: Any] ?? [:]).mapValues { "\($0)" }) { $1 } }
        }
        // Secrets and their keys: manifests (data, stringData) and kustomize generators.
        var secretKeys: [String: Set<String>] = [:]
        for (_, object) in kind("Secret") {
            if let n = named(object) {
                let keys = Array((object["data"] as? [String: Any] ?? [:]).keys) + Array((object["stringData"] as? [String: Any] ?? [:]).keys)
                secretKeys[n, default: []].formUnion(keys)
            }
        }
        for folder in folders {
            let kustomization = "\(folder)/kustomization.yaml"
            guard FileManager.default.fileExists(atPath: path(kustomization)),
                let k = try Yams.load(yaml: try text(kustomization)) as? [String: Any]
            else { continue }
            for generator in k["configMapGenerator"] as? [[String: Any]] ?? [] {
                guard let n = generator["name"] as? String else { continue }
                for entry in generator["files"] as? [String] ?? [] {
                    let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                    let key = parts.count == 2 ? parts[0] : URL(fileURLWithPath: parts[0]).lastPathComponent
                    let source = parts.count == 2 ? parts[1] : parts[0]
                    configMaps[n, default: [:]][key] = try text("\(folder)/\(source)")
                }
                for literal in generator["literals"] as? [String] ?? [] {
                    let parts = literal.split(separator: "=", maxSplits: 1).map(String.init)
                    if parts.count == 2 { configMaps[n, default: [:]][parts[0]] = parts[1] }
                }
            }
            for generator in k["secretGenerator"] as? [[String: Any]] ?? [] {
                guard let n = generator["name"] as? String else { continue }
                for entry in (generator["files"] as? [String] ?? []) + (generator["literals"] as? [String] ?? []) {
                    let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
                    let isFile = (generator["files"] as? [String] ?? []).contains(entry)
                    secretKeys[n, default: []].insert(parts.count == 2 || !isFile ? parts[0] : URL(fileURLWithPath: parts[0]).lastPathComponent)
                }
            }
        }

        guard let (file, deployment) = kind("Deployment").first(where: { named($0.object) == name && !$0.file.hasPrefix(overlay ?? "\u{0}") })
        else { throw DeployFileError("no Deployment '\(name)' under \(folders)") }
        var spec = ((deployment["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any] ?? [:]
        for patchFile in patches {
            // Strategic-merge patches of the same Deployment: containers merge by name.
            guard let patch = try Yams.load(yaml: try text(patchFile)) as? [String: Any],
                let patchSpec = ((patch["spec"] as? [String: Any])?["template"] as? [String: Any])?["spec"] as? [String: Any]
            else { throw DeployFileError("\(patchFile): not a Deployment patch") }
            spec = mergePodSpec(spec, patchSpec)
        }
        let origin = "\(file) Deployment \(name)" + (patches.isEmpty ? "" : " + \(patches.joined(separator: ", "))")
        guard let containers = spec["containers"] as? [[String: Any]], let container = containers.first(where: { ($0["name"] as? String) != nil })
        else { throw DeployFileError("\(origin): no container") }
        var argv = (container["command"] as? [Any] ?? []).map { "\($0)" }
        guard argv.isEmpty || argv.first?.hasSuffix("switchyard") == true else {
            throw DeployFileError("\(origin): command \(argv) is not switchyard")
        }
        if !argv.isEmpty { argv.removeFirst() }
        argv += (container["args"] as? [Any] ?? []).map { "\($0)" }
        var process = DeployedProcess(origin: origin, arguments: argv)

        for item in container["env"] as? [[String: Any]] ?? [] {
            guard let key = item["name"] as? String else { continue }
            if let value = item["value"] {
                process.environment[key] = "\(value)"
            } else if let from = item["valueFrom"] as? [String: Any] {
                if let ref = from["configMapKeyRef"] as? [String: Any], let map = ref["name"] as? String, let k = ref["key"] as? String {
                    guard let value = configMaps[map]?[k] else { throw DeployFileError("\(origin): env \(key): ConfigMap \(map) has no key \(k)") }
                    process.environment[key] = value
                } else if let ref = from["secretKeyRef"] as? [String: Any], let secret = ref["name"] as? String {
                    guard let keys = secretKeys[secret] else { throw DeployFileError("\(origin): env \(key): no Secret '\(secret)'") }
                    // A key the Secret lacks stops the pod from starting.
                    guard let k = ref["key"] as? String, keys.contains(k) else {
                        throw DeployFileError("\(origin): env \(key): Secret \(secret) has no key '\(ref["key"] ?? "")' (it has \(keys.sorted()))")
                    }
                    process.environment[key] = "<secret \(secret)/\(ref["key"] ?? "")>"
                } else if from["fieldRef"] != nil || from["resourceFieldRef"] != nil {
                    process.environment[key] = "test-\(key.lowercased())"
                } else {
                    throw DeployFileError("\(origin): env \(key): unreadable valueFrom")
                }
            }
        }
        for item in container["envFrom"] as? [[String: Any]] ?? [] {
            if let ref = item["configMapRef"] as? [String: Any], let map = ref["name"] as? String {
                guard let data = configMaps[map] else { throw DeployFileError("\(origin): envFrom: no ConfigMap '\(map)'") }
                process.environment.merge(data) { $1 }
            } else if item["secretRef"] != nil {
                throw DeployFileError("\(origin): envFrom secretRef: mount secrets as files instead")
            }
        }
        // Volumes: ConfigMaps are written out; Secrets become secret files.
        let volumes = Dictionary(
            (spec["volumes"] as? [[String: Any]] ?? []).compactMap { v in (v["name"] as? String).map { ($0, v) } },
            uniquingKeysWith: { $1 }
        )
        for mount in container["volumeMounts"] as? [[String: Any]] ?? [] {
            guard let volumeName = mount["name"] as? String, let mountPath = mount["mountPath"] as? String, let volume = volumes[volumeName] else {
                throw DeployFileError("\(origin): a volumeMount names no volume: \(mount)")
            }
            let subPath = mount["subPath"] as? String
            // A volume's sources: a configMap, a secret, or several of them projected into one folder.
            var sources: [(kind: String, object: [String: Any])] = []
            if let configMap = volume["configMap"] as? [String: Any] { sources.append(("configMap", configMap)) }
            if let secret = volume["secret"] as? [String: Any] { sources.append(("secret", secret)) }
            for source in (volume["projected"] as? [String: Any])?["sources"] as? [[String: Any]] ?? [] {
                if let configMap = source["configMap"] as? [String: Any] { sources.append(("configMap", configMap)) }
                if let secret = source["secret"] as? [String: Any] { sources.append(("secret", secret)) }
            }
            if sources.isEmpty && volume["emptyDir"] == nil && volume["persistentVolumeClaim"] == nil {
                throw DeployFileError("\(origin): volume \(volumeName): a kind the test does not read")
            }
            for (sourceKind, source) in sources {
                let sourceName = (source["name"] as? String) ?? (source["secretName"] as? String) ?? ""
                // Items map keys to file names; without items every key is a file of its name.
                let items = (source["items"] as? [[String: Any]])?.compactMap { item -> (String, String)? in
                    guard let key = item["key"] as? String else { return nil }
                    return (key, item["path"] as? String ?? key)
                }
                if sourceKind == "configMap" {
                    guard let data = configMaps[sourceName] else {
                        throw DeployFileError("\(origin): volume \(volumeName): no ConfigMap '\(sourceName)'")
                    }
                    let folder = scratch.appendingPathComponent("configmap-\(sourceName)")
                    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                    for (key, file) in items ?? data.keys.map({ ($0, $0) }) {
                        guard let value = data[key] else { throw DeployFileError("\(origin): ConfigMap \(sourceName) has no key \(key)") }
                        let target = folder.appendingPathComponent(file)
                        try value.write(to: target, atomically: true, encoding: .utf8)
                        if subPath == nil || subPath == file { process.files[subPath == nil ? "\(mountPath)/\(file)" : mountPath] = target.path }
                    }
                } else {
                    guard let keys = secretKeys[sourceName] else {
                        throw DeployFileError("\(origin): volume \(volumeName): no Secret '\(sourceName)'")
                    }
                    for (key, _) in items ?? [] where !keys.contains(key) {
                        throw DeployFileError("\(origin): volume \(volumeName): Secret \(sourceName) has no key '\(key)' (it has \(keys.sorted()))")
                    }
                    guard let items else {
                        // Every key of the secret: the test's secrets are named by the file's basename.
                        process.secrets[mountPath + "/*"] = sourceName
                        continue
                    }
                    for (key, file) in items where subPath == nil || subPath == file {
                        process.secrets[subPath == nil ? "\(mountPath)/\(file)" : mountPath] = key
                    }
                }
            }
        }
        var namedPorts: [String: Int] = [:]
        for port in container["ports"] as? [[String: Any]] ?? [] {
            if let n = port["name"] as? String, let p = port["containerPort"] as? Int { namedPorts[n] = p }
        }
        for probeKey in ["startupProbe", "readinessProbe", "livenessProbe"] {
            guard let probe = container[probeKey] as? [String: Any] else { continue }
            if let get = probe["httpGet"] as? [String: Any], let probePath = get["path"] as? String {
                let port: Int? = (get["port"] as? Int) ?? (get["port"] as? String).flatMap { namedPorts[$0] ?? Int($0) }
                guard let port else { throw DeployFileError("\(origin).\(probeKey): unknown port \(get["port"] ?? "")") }
                process.httpProbes.append((probePath, port))
            } else if let exec = probe["exec"] as? [String: Any], let command = exec["command"] as? [Any] {
                process.commandProbes.append(command.map { "\($0)" })
            } else {
                throw DeployFileError("\(origin).\(probeKey): only httpGet and exec probes are understood")
            }
        }
        if let grace = spec["terminationGracePeriodSeconds"] as? Int { process.stopGrace = .seconds(grace) }
        return process
    }

    /// A strategic merge of two pod specs, as far as the deploy files use it: containers merge
    /// by name (env by name, other keys replaced), other keys are replaced.
    static func mergePodSpec(_ base: [String: Any], _ patch: [String: Any]) -> [String: Any] {
        var out = base
        for (key, value) in patch {
            if key == "containers" || key == "volumes", let old = base[key] as? [[String: Any]], let new = value as? [[String: Any]] {
                out[key] = mergeList(old, new, by: "name") { key == "containers" ? mergeContainer($0, $1) : $1 }
            } else {
                out[key] = value
            }
        }
        return out
    }

    static func mergeContainer(_ base: [String: Any], _ patch: [String: Any]) -> [String: Any] {
        var out = base
        for (key, value) in patch {
            if key == "env" || key == "volumeMounts", let old = base[key] as? [[String: Any]], let new = value as? [[String: Any]] {
                out[key] = mergeList(old, new, by: key == "env" ? "name" : "mountPath") { $1 }
            } else {
                out[key] = value
            }
        }
        return out
    }

    /// A list merged by a key, as a strategic merge does: an item of `new` replaces (through
    /// `merge`) the item of `old` with the same key, or is added.
    static func mergeList(
        _ old: [[String: Any]],
        _ new: [[String: Any]],
        by id: String,
        merge: ([String: Any], [String: Any]) -> [String: Any]
    ) -> [[String: Any]] {
        var merged = old
        for item in new {
            if let i = merged.firstIndex(where: { ($0[id] as? String) == (item[id] as? String) }) {
                merged[i] = merge(merged[i], item)
            } else {
                merged.append(item)
            }
        }
        return merged
    }

    // MARK: - systemd

    /// A unit's `ExecStart` (one), `Environment=`, `EnvironmentFile=` and `LoadCredential=`, with
    /// `%i` (the instance), `%H` (the host), `%d` (the credentials folder) and `${VAR}`/`$VAR`
    /// expanded as systemd does. `files` maps paths the unit names (its environment file) to
    /// repository files.
    static func systemdUnit(_ relative: String, instance: String, files: [String: String]) throws -> DeployedProcess {
        let origin = relative
        var process = DeployedProcess(origin: origin, arguments: [])
        var execStart: String?
        let specifiers: [String: String] = ["%i": instance, "%I": instance, "%H": "testhost", "%d": "/run/credentials/\(origin)", "%%": "%"]
        func expandSpecifiers(_ s: String) -> String {
            var out = s
            for (k, v) in specifiers { out = out.replacingOccurrences(of: k, with: v) }
            return out
        }
        var lines: [String] = []
        var current = ""
        for raw in try text(relative).split(separator: "\n", omittingEmptySubsequences: false) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasSuffix("\\") {
                current += line.dropLast() + " "
                continue
            }
            lines.append(current + line)
            current = ""
        }
        for line in lines where !line.hasPrefix("#") && !line.hasPrefix(";") && line.contains("=") {
            let key = String(line[..<line.firstIndex(of: "=")!]).trimmingCharacters(in: .whitespaces)
            let value = String(line[line.index(after: line.firstIndex(of: "=")!)...]).trimmingCharacters(in: .whitespaces)
            switch key {
            case "ExecStart":
                guard execStart == nil else { throw DeployFileError("\(origin): more than one ExecStart") }
                execStart = value
            case "Environment":
                for assignment in try shellWords(value) {
                    let pair = assignment.split(separator: "=", maxSplits: 1).map(String.init)
                    if pair.count == 2 { process.environment[pair[0]] = expandSpecifiers(pair[1]) }
                }
            case "EnvironmentFile":
                let optional = value.hasPrefix("-")
                let named = expandSpecifiers(optional ? String(value.dropFirst()) : value)
                guard let local = files[named] else {
                    if optional { continue }
                    throw DeployFileError("\(origin): EnvironmentFile \(named): the test has no file for it")
                }
                for raw in try String(contentsOfFile: local, encoding: .utf8).split(separator: "\n") {
                    let line = raw.trimmingCharacters(in: .whitespaces)
                    guard !line.isEmpty, !line.hasPrefix("#"), let eq = line.firstIndex(of: "=") else { continue }
                    var v = String(line[line.index(after: eq)...])
                    if v.count >= 2, (v.hasPrefix("\"") && v.hasSuffix("\"")) || (v.hasPrefix("'") && v.hasSuffix("'")) {
                        v = String(v.dropFirst().dropLast())
                    }
                    process.environment[String(line[..<eq])] = v
                }
            case "LoadCredential", "LoadCredentialEncrypted":
                let name = String(value.split(separator: ":").first ?? "")
                process.secrets["/run/credentials/\(origin)/\(name)"] = name
            case "TimeoutStopSec":
                process.stopGrace = try duration(value)
            default: break
            }
        }
        guard let execStart else { throw DeployFileError("\(origin): no ExecStart") }
        var words = try shellWords(expandSpecifiers(execStart.drop(while: { "-@:+!".contains($0) }).description))
        // systemd expands $VAR and ${VAR} from the unit's environment.
        words = words.flatMap { word -> [String] in
            if word.hasPrefix("$"), !word.hasPrefix("${") {
                return (process.environment[String(word.dropFirst())] ?? "").split(separator: " ").map(String.init)
            }
            var out = word
            while let start = out.range(of: "${"), let end = out[start.upperBound...].firstIndex(of: "}") {
                let name = String(out[start.upperBound..<end])
                out.replaceSubrange(start.lowerBound...end, with: process.environment[name] ?? "")
            }
            return [out]
        }
        guard words.first?.hasSuffix("switchyard") == true else {
            throw DeployFileError("\(origin): ExecStart runs \(words.first ?? ""), not switchyard")
        }
        process.arguments = Array(words.dropFirst())
        return process
    }

    /// Splits a command line into words as systemd does for the cases the units use (spaces,
    /// double and single quotes).
    static func shellWords(_ line: String) throws -> [String] {
        var words: [String] = []
        var current = ""
        var quote: Character?
        var inWord = false
        for c in line {
            if let q = quote {
                if c == q { quote = nil } else { current.append(c) }
            } else if c == "\"" || c == "'" {
                quote = c
                inWord = true
            } else if c == " " || c == "\t" {
                if inWord { words.append(current) }
                current = ""
                inWord = false
            } else {
                current.append(c)
                inWord = true
            }
        }
        if quote != nil { throw DeployFileError("unbalanced quote in: \(line)") }
        if inWord { words.append(current) }
        return words
    }

    // MARK: - launchd

    static func launchdPlist(_ relative: String) throws -> DeployedProcess {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(relative)))
        guard let plist = try PropertyListSerialization.propertyList(from: data, format: nil) as? [String: Any] else {
            throw DeployFileError("\(relative): not a dictionary")
        }
        guard let argv = plist["ProgramArguments"] as? [String], argv.first?.hasSuffix("switchyard") == true else {
            throw DeployFileError("\(relative): ProgramArguments does not run switchyard")
        }
        var process = DeployedProcess(origin: relative, arguments: Array(argv.dropFirst()))
        process.environment = plist["EnvironmentVariables"] as? [String: String] ?? [:]
        if let exit = plist["ExitTimeOut"] as? Int { process.stopGrace = .seconds(exit) }
        return process
    }

    private static func strings(_ value: Any, _ what: String) throws -> [String] {
        if let list = value as? [Any] { return list.map { "\($0)" } }
        throw DeployFileError("\(what): use a list (exec form), not \(type(of: value))")
    }
}
