import Foundation
import SwitchyardCore
import SwitchyardHTTP

/// Leonardo image generation: create a generation, then poll it until it is COMPLETE or FAILED.
public struct LeonardoProvider: Provider {
    public let name: String
    let transport: ProviderTransport

    public init(configuration: ProviderConfiguration, client: HTTPClient, apiKey: Secret?) {
        self.name = configuration.name
        self.transport = ProviderTransport(name: configuration.name, configuration: configuration, client: client, apiKey: apiKey)
    }

    public func run(_ job: Job, model: String) async throws -> JobOutput {
        guard job.kind == .image else {
            throw ProviderError(.badRequest, "Leonardo runs image jobs only, not \(job.kind.rawValue)", provider: name)
        }
        var body: [String: JSONValue] = [
            "prompt": .string(job.input.prompt ?? ""),
            "modelId": .string(model),
            "num_images": .number(Double(job.input.count ?? 1)),
        ]
        if let size = job.input.size {
            let parts = size.split(separator: "x").compactMap { Double($0) }
            if parts.count == 2 {
                body["width"] = .number(parts[0])
                body["height"] = .number(parts[1])
            }
        }
        let parameters = job.input.parameters ?? [:]
        try ProviderParameters.checkNoOverride(parameters, own: body.keys, kind: .leonardo, provider: name)
        body.merge(parameters) { own, _ in own }
        let created = try await transport.json(transport.request("POST", "/generations", body: .object(body)))
        guard let id = created["sdGenerationJob"]?["generationId"]?.string else {
            throw ProviderError(.invalidResponse, "no sdGenerationJob.generationId in the answer", provider: name)
        }
        let configuration = transport.configuration
        let deadline = ContinuousClock.now + .milliseconds(configuration.pollTimeoutMs)
        while true {
            try await Task.sleep(for: .milliseconds(configuration.pollIntervalMs))
            // Polls are not calls of their own to the breaker and the limits: a generation
            // already paid for is never abandoned because a breaker opened meanwhile.
            let polled = try await TargetCall.$current.withValue(nil) {
                try await transport.json(transport.request("GET", "/generations/\(id)", idempotent: true))
            }
            let generation = polled["generations_by_pk"]
            switch generation?["status"]?.string {
            case "COMPLETE":
                let images = (generation?["generated_images"]?.array ?? []).map { image -> JSONValue in
                    .object(["url": image["url"] ?? .null, "id": image["id"] ?? .null])
                }
                return JobOutput(
                    output: .object(["generation_id": .string(id), "images": .array(images)]),
                    usage: JobUsage(images: images.count)
                )
            case "FAILED":
                throw ProviderError(.failed, "generation \(id) failed", provider: name)
            default:
                if ContinuousClock.now >= deadline {
                    throw ProviderError(.timeout, "generation \(id) not complete after \(configuration.pollTimeoutMs) ms of polling", provider: name)
                }
            }
        }
    }
}

/// Runware image inference over its HTTP task API: an array of tasks in, `data` or `errors` out.
public struct RunwareProvider: Provider {
    public let name: String
    let transport: ProviderTransport

    public init(configuration: ProviderConfiguration, client: HTTPClient, apiKey: Secret?) {
        self.name = configuration.name
        self.transport = ProviderTransport(name: configuration.name, configuration: configuration, client: client, apiKey: apiKey)
    }

    public func run(_ job: Job, model: String) async throws -> JobOutput {
        guard job.kind == .image else {
            throw ProviderError(.badRequest, "Runware runs image jobs only, not \(job.kind.rawValue)", provider: name)
        }
        let taskUUID = UUID().uuidString.lowercased()
        var task: [String: JSONValue] = [
            "taskType": .string("imageInference"),
            "taskUUID": .string(taskUUID),
            "positivePrompt": .string(job.input.prompt ?? ""),
            "model": .string(model),
            "numberResults": .number(Double(job.input.count ?? 1)),
        ]
        let sides = (job.input.size ?? "1024x1024").split(separator: "x").compactMap { Double($0) }
        if sides.count == 2 {
            task["width"] = .number(sides[0])
            task["height"] = .number(sides[1])
        }
        let parameters = job.input.parameters ?? [:]
        try ProviderParameters.checkNoOverride(parameters, own: task.keys, kind: .runware, provider: name)
        task.merge(parameters) { own, _ in own }
        let reply = try await transport.json(transport.request("POST", "", body: .array([.object(task)])))
        if let first = reply["errors"]?.array?.first {
            throw ProviderError(
                .badRequest,
                transport.scrub(first["message"]?.string ?? "task failed"),
                provider: name,
                providerCode: first["code"]?.string
            )
        }
        let images = (reply["data"]?.array ?? []).filter { $0["taskUUID"]?.string == taskUUID }.map { item -> JSONValue in
            .object(["url": item["imageURL"] ?? .null, "id": item["imageUUID"] ?? .null])
        }
        guard !images.isEmpty else { throw ProviderError(.invalidResponse, "no image for task \(taskUUID) in the answer", provider: name) }
        return JobOutput(output: .object(["images": .array(images)]), usage: JobUsage(images: images.count))
    }
}
