import Foundation
import Hummingbird
import SwitchyardCore
import SwitchyardModels
import SwitchyardProviders
import SwitchyardQueue
import Synchronization

/// The OpenAI-compatible front, `/v1/…`: `POST /v1/chat/completions`, `POST /v1/completions`,
/// `POST /v1/embeddings`, `POST /v1/images/generations`, `GET /v1/models` and
/// `GET /v1/models/{model}`, so OpenAI's client libraries can use the cluster.
///
/// Each request becomes one job (`OpenAIRequest` says how each field is translated) pushed on the
/// request's queue (`?queue=`, else the first served), and the answer is built from the job's
/// result once it has one: `chatcmpl-<job id>` answers, a legacy completion being a chat job of
/// one user message (the model's chat template applies) answered as a `text_completion`, with
/// OpenAI's default of 16 tokens. A job that has no result within the configured result timeout
/// is answered 504 and keeps running (`GET /api/v1/jobs/<id>` finds its result later).
///
/// `stream: true` is answered as Server-Sent Events in OpenAI's chunk format, but not token by
/// token: workers do not publish partial output through Redis, so the stream is sent once the
/// job has finished, with the whole answer in one content chunk (a role delta, the content, a
/// chunk with the finish reason, the usage chunk when `stream_options.include_usage` asks for
/// it, then `data: [DONE]`). A job that failed is therefore answered with an ordinary HTTP error
/// even when a stream was asked for.
///
/// Failures are OpenAI-shaped errors: a bad field 400 naming it (`param`), an unknown model 404
/// `model_not_found`, a failed job 502 or the status its error calls for (see
/// `OpenAIShapes.failure`), a cancelled one 409. Tokens are checked by the authentication
/// middleware (`Authorization: Bearer`, what the `openai` package sends).
extension Coordinator {
    func addOpenAIRoutes(to router: Router<BasicRequestContext>) {
        let v1 = router.group("/v1")
        v1.get("/models") { _, _ in
            let listing = self.modelListing()
            return Response.json(.object(["object": .string("list"), "data": .array(listing.models.map(\.json))]))
        }
        v1.get("/models/**") { _, context in
            let name = context.parameters.getCatchAll().joined(separator: "/")
            guard let model = self.modelListing().models.first(where: { $0.id == name }) else {
                throw Self.modelNotFound(name)
            }
            return Response.json(model.json)
        }
        v1.post("/chat/completions") { request, context in try await self.answerOpenAI(.chat, request, context) }
        v1.post("/completions") { request, context in try await self.answerOpenAI(.completion, request, context) }
        v1.post("/embeddings") { request, context in try await self.answerOpenAI(.embedding, request, context) }
        v1.post("/images/generations") { request, context in try await self.answerOpenAI(.image, request, context) }
    }

    /// One request of the front: translate, check the model, push, wait, answer.
    func answerOpenAI(_ endpoint: OpenAIEndpoint, _ request: Request, _ context: BasicRequestContext) async throws -> Response {
        let queue = try self.queue(for: request)
        let translated = try OpenAIRequest(endpoint, body: try await jsonBody(request, context))
        var job = translated.job
        try checkModel(job.model)
        let outcome = try await redisCall { try await queue.push(job) }
        // A duplicate idempotency key: the answer is the first job's.
        job.id = outcome.jobID
        guard let result = try await waitForResult(queue: queue, id: job.id, timeout: configuration.resultTimeout) else {
            throw APIError(
                .gatewayTimeout,
                "job \(job.id) has no result after \(configuration.resultTimeout); it keeps running: GET /api/v1/jobs/\(job.id)",
                type: "server_error",
                code: "timeout"
            )
        }
        guard result.status == .succeeded else { throw OpenAIShapes.failure(result, job: job.id) }
        switch endpoint {
        case .chat, .completion:
            if translated.stream {
                let bytes = OpenAIShapes.stream(endpoint, job: job, result: result, includeUsage: translated.includeUsage)
                return Response(
                    status: .ok,
                    headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))
                )
            }
            return Response.json(OpenAIShapes.completion(endpoint, job: job, result: result))
        case .embedding:
            return Response.json(try OpenAIShapes.embeddings(job: job, result: result, base64: translated.base64))
        case .image:
            return Response.json(OpenAIShapes.images(job: job, result: result))
        }
    }

    static func modelNotFound(_ name: String) -> APIError {
        APIError(
            .notFound,
            "The model '\(name)' does not exist here: GET /v1/models lists the models this coordinator serves",
            param: "model",
            code: "model_not_found"
        )
    }

    /// Refuses a model no configured list has; with no providers file and no catalog configured,
    /// or one that names a default provider (which takes any model), every model is let through
    /// and the worker decides.
    func checkModel(_ name: String) throws {
        let listing = modelListing()
        guard !listing.acceptsAny, !listing.models.contains(where: { $0.id == name }) else { return }
        throw Self.modelNotFound(name)
    }

    /// The models the providers file and the model catalog name (the providers file's first
    /// when both name one), sorted by name, and whether a model outside them may be asked for.
    func modelListing() -> ModelListing {
        var listing = ModelListing()
        var seen: Set<String> = []
        var configured = false
        if let path = configuration.providersFile {
            configured = true
            do {
                let (file, created) = try Self.providersFiles.value(path: path, load: ProvidersFile.load(path:))
                for name in file.models.keys.sorted() where seen.insert(name).inserted {
                    listing.models.append(.init(id: name, ownedBy: file.provider(forModel: name) ?? "switchyard", created: created))
                }
                if file.defaultProvider != nil { listing.acceptsAny = true }
            } catch {
                // Cannot tell which models exist: let every one through, and say why.
                listing.acceptsAny = true
                logger.warning("cannot read the providers file for /v1/models", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        if let path = configuration.catalogFile {
            configured = true
            do {
                let (catalog, created) = try Self.catalogs.value(path: path, load: ModelCatalog.load(path:))
                for name in catalog.models.keys.sorted() where seen.insert(name).inserted {
                    listing.models.append(.init(id: name, ownedBy: "local", created: created))
                }
            } catch {
                listing.acceptsAny = true
                logger.warning("cannot read the model catalog for /v1/models", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        if !configured { listing.acceptsAny = true }
        listing.models.sort { $0.id < $1.id }
        return listing
    }

    /// Parsed providers files and catalogs by path, read again when the file changes: the
    /// front checks the model of every request, and an edited file shows without a restart.
    static let providersFiles = ParsedFileCache<ProvidersFile>()
    static let catalogs = ParsedFileCache<ModelCatalog>()
}

/// What `GET /v1/models` lists.
struct ModelListing: Sendable {
    struct Model: Sendable {
        var id: String
        var ownedBy: String
        /// When the file that names it was last changed (Unix seconds).
        var created: Int

        var json: JSONValue {
            .object(["id": .string(id), "object": .string("model"), "created": .number(Double(created)), "owned_by": .string(ownedBy)])
        }
    }

    var models: [Model] = []
    /// No list is configured (or one cannot be read, or a default provider takes any model).
    var acceptsAny = false
}

/// A file parsed once per version: kept by path with its size, modification time and inode,
/// and parsed again when any of them changes.
final class ParsedFileCache<Value: Sendable>: Sendable {
    private struct Stamp: Hashable {
        var size: Int
        var modified: Double
        var inode: Int
    }

    private let entries = Mutex<[String: (stamp: Stamp, value: Value)]>([:])

    /// The parsed file and when it was last modified (Unix seconds).
    func value(path: String, load: (String) throws -> Value) throws -> (Value, Int) {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        let stamp = attributes.map { attributes in
            Stamp(
                size: (attributes[.size] as? NSNumber)?.intValue ?? -1,
                modified: (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0,
                inode: (attributes[.systemFileNumber] as? NSNumber)?.intValue ?? -1
            )
        }
        if let stamp, let hit = entries.withLock({ $0[path] }), hit.stamp == stamp { return (hit.value, Int(stamp.modified)) }
        let value = try load(path)
        if let stamp { entries.withLock { $0[path] = (stamp, value) } }
        return (value, Int(stamp?.modified ?? 0))
    }
}
