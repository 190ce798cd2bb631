import Foundation
import Hummingbird
import NIOCore
import SwitchyardCore
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardResilience

/// The JSON API, `/api/v1/…`. docs/ARCHITECTURE.md ("Coordinator") lists every route.
extension Coordinator {
    func addAPIRoutes(to router: Router<BasicRequestContext>) {
        let api = router.group("/api/v1")
        api.get("/cluster") { request, _ in
            let queue = try self.queue(for: request)
            return try Response.json(encoding: try await self.redisCall { try await ClusterReader(queue: queue, logger: self.logger).summary() })
        }
        api.get("/timeline") { request, _ in
            let queue = try self.queue(for: request)
            let minutes = try Self.integer(request, "minutes", 1...ClusterReader.historyMinutes) ?? 60
            let timeline = try await self.redisCall { try await ClusterReader(queue: queue, logger: self.logger).timeline(minutes: minutes) }
            return try Response.json(encoding: timeline)
        }
        api.get("/queues") { _, _ in
            var statuses: [QueueStatus] = []
            for name in self.configuration.queues {
                var status = try await self.redisCall { try await self.queues[name]!.status() }
                status.workers = []
                statuses.append(status)
            }
            return try Response.json(encoding: statuses)
        }
        api.get("/workers") { request, _ in
            let queue = try self.queue(for: request)
            // A worker's registry token tells its own entry from another process's: nobody else's business.
            let workers = try await self.redisCall { try await queue.workers() }.map { worker in
                var worker = worker
                worker.token = nil
                return worker
            }
            return try Response.json(encoding: workers)
        }
        api.get("/jobs/:id") { request, context in
            let queue = try self.queue(for: request)
            let id = try Self.jobID(context)
            return try await self.jobAnswer(queue: queue, id: id)
        }
        api.post("/jobs") { request, context in
            let queue = try self.queue(for: request)
            let wait = try Self.number(request, "wait", 0...self.configuration.resultTimeout.seconds)
            let body = try await self.jsonBody(request, context)
            var job: Job
            do {
                job = try Job.fromRequest(body)
            } catch let error as JobValidationError {
                throw APIError.invalid(error)
            }
            // Waited for: its worker announces it when finished (see `waitForResult`).
            if let wait, wait > 0 { job.notify = true }
            let outcome = try await self.redisCall { try await queue.push(job) }
            if let wait, wait > 0, let result = try await self.waitForResult(queue: queue, id: outcome.jobID, timeout: .seconds(wait)) {
                return Response.json(bytes: result.encodedJSON())
            }
            return Response.json(Self.pushAnswer(outcome), status: Self.isDuplicate(outcome) ? .ok : .created)
        }
        api.post("/jobs/:id/cancel") { request, context in
            let queue = try self.queue(for: request)
            let id = try Self.jobID(context)
            let outcome = try await self.redisCall { try await queue.cancel(jobID: id) }
            switch outcome {
            case .cancelled: return Response.json(.object(["id": .string(id), "outcome": .string("cancelled")]))
            case .alreadyFinal: return Response.json(.object(["id": .string(id), "outcome": .string("already_final")]), status: .conflict)
            case .unknown: throw APIError.notFound("no job '\(id)' is known to queue '\(queue.configuration.name)'")
            }
        }
        api.post("/batches") { request, context in
            let queue = try self.queue(for: request)
            return try await self.pushBatch(queue: queue, body: try await self.jsonBody(request, context))
        }
        api.get("/batches/:id") { request, context in
            let queue = try self.queue(for: request)
            guard let id = context.parameters.get("id"), Job.isValidID(id) else {
                throw APIError(.badRequest, "field 'id': must be 1-128 letters, digits, '-', '_', '.' or ':'", param: "id", code: "invalid_field")
            }
            let (progress, ids) = try await self.redisCall { (try await queue.batchProgress(id), try await queue.batchJobIDs(id)) }
            guard progress.total > 0 || !ids.isEmpty else {
                throw APIError.notFound("no batch '\(id)' is known to queue '\(queue.configuration.name)'")
            }
            var object: [String: JSONValue] = [
                "batch": .string(id), "total": .number(Double(progress.total)), "succeeded": .number(Double(progress.succeeded)),
                "failed": .number(Double(progress.failed)), "dead": .number(Double(progress.dead)),
                "cancelled": .number(Double(progress.cancelled)), "finished": .number(Double(progress.finished)),
                "complete": .bool(progress.isComplete), "jobs": .array(ids.map(JSONValue.string)),
            ]
            if request.uri.queryParameters.get("results") == "true" {
                let results = try await self.redisCall { try await queue.results(of: ids) }
                object["results"] = .array(
                    zip(ids, results).map { id, result in
                        result.flatMap { try? JSONValue.parse($0.encodedJSON()) } ?? .object(["id": .string(id), "status": .string("pending")])
                    }
                )
            }
            return Response.json(.object(object))
        }
        api.get("/dead-letters") { request, _ in
            let queue = try self.queue(for: request)
            let limit = try Self.integer(request, "limit", 1...10_000) ?? 100
            return try Response.json(encoding: try await self.redisCall { try await queue.deadLetters(limit: limit) })
        }
        api.post("/dead-letters/:entry/retry") { request, context in
            let queue = try self.queue(for: request)
            let entry = context.parameters.get("entry") ?? ""
            let parts = entry.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(parts.count), parts.allSatisfy({ (1...19).contains($0.count) && $0.allSatisfy { $0.isASCII && $0.isNumber } })
            else {
                throw APIError(.badRequest, "field 'entry': a dead-letter entry id looks like 1700000000000-0", param: "entry", code: "invalid_field")
            }
            guard let id = try await self.redisCall({ try await queue.retryDeadLetter(entryID: entry) }) else {
                throw APIError.notFound("no dead letter '\(entry)' in queue '\(queue.configuration.name)'")
            }
            return Response.json(.object(["entry": .string(entry), "id": .string(id), "outcome": .string("queued")]))
        }
        api.delete("/dead-letters") { request, _ in
            let queue = try self.queue(for: request)
            let purged = try await self.redisCall { try await queue.purgeDeadLetters() }
            return Response.json(.object(["purged": .number(Double(purged))]))
        }
        api.get("/breakers") { _, _ in
            let reports = try await self.redisCall {
                var out: [JSONValue] = []
                for target in try await ProvidersFile.knownTargets(file: self.providers(), redis: self.redis) {
                    out.append(try await self.resilience.report(target))
                }
                return out
            }
            return Response.json(.array(reports))
        }
        for (verb, order) in [("open", BreakerBoard.Order.open), ("close", .close), ("reset", .reset)] {
            api.post("/breakers/\(verb)") { request, context in
                guard let object = try await self.jsonBody(request, context).object else {
                    throw APIError(.badRequest, "the body must be a JSON object: {\"target\": …, \"note\": …}", code: "invalid_body")
                }
                guard let name = object["target"]?.string else {
                    throw APIError(
                        .badRequest,
                        "field 'target': is required (a string, <provider>/<upstream model>)",
                        param: "target",
                        code: "invalid_field"
                    )
                }
                let note = object["note"]?.string ?? ""
                let status = try await self.redisCall { () async throws -> BreakerStatus? in
                    let known = try await ProvidersFile.knownTargets(file: self.providers(), redis: self.redis)
                    guard let target = known.first(where: { $0.id == name }) else { return nil }
                    let stamp = ISO8601DateFormatter().string(from: Date())
                    return try await self.resilience.breakers.force(
                        target,
                        order,
                        note: "coordinator API at \(stamp)\(note.isEmpty ? "" : ": \(note)")"
                    )
                }
                guard let status else { throw APIError(.notFound, "unknown target '\(name)'", param: "target", code: "unknown_target") }
                return Response.json(.object(["target": .string(name), "state": .string(status.state.rawValue)]))
            }
        }
    }

    // MARK: - Helpers

    /// Runs a Redis call; a Redis failure becomes a 503 that says so.
    func redisCall<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as APIError {
            throw error
        } catch let error as RedisError {
            throw APIError.redis(error.message)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as JobValidationError {
            throw APIError.invalid(error)
        } catch let error as ReplicationTimeout {
            throw APIError(.serviceUnavailable, "\(error)", type: "server_error", code: "replication_timeout")
        } catch let error as PartialPushError {
            throw APIError(
                .serviceUnavailable,
                "Redis failed after \(error.pushed) jobs were written; push the same batch id again to complete it (jobs already pushed are not queued twice)",
                type: "server_error",
                code: "partial_push"
            )
        } catch {
            throw APIError.redis("\(error)")
        }
    }

    /// The request body as JSON, at most `maxBodyBytes`.
    func jsonBody(_ request: Request, _ context: BasicRequestContext) async throws -> JSONValue {
        var request = request
        // A browser sends a cross-origin form or text/plain POST without asking first: only a
        // JSON body is a request.
        let type = request.headers[.contentType]?.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased()
        guard type == "application/json" else {
            throw APIError(
                .unsupportedMediaType,
                "the body must be JSON, sent with Content-Type: application/json",
                param: "Content-Type",
                code: "unsupported_media_type"
            )
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.collectBody(upTo: configuration.maxBodyBytes)
        } catch let error as NIOTooManyBytesError {
            _ = error
            throw APIError(.contentTooLarge, "the body is larger than \(configuration.maxBodyBytes) bytes", code: "body_too_large")
        }
        do {
            return try JSONValue.parse(Array(buffer.readableBytesView))
        } catch {
            throw APIError(.badRequest, "the body is not valid JSON: \(error)", code: "invalid_json")
        }
    }

    func jobAnswer(queue: JobQueue, id: String) async throws -> Response {
        if let result = try await redisCall({ try await queue.result(of: id) }) { return Response.json(bytes: result.encodedJSON()) }
        let known = try await redisCall { try await queue.redis.send("EXISTS", queue.keys.job(id)).int == 1 }
        guard known else {
            throw APIError.notFound("no job '\(id)' is known to queue '\(queue.configuration.name)' (never pushed, or its record expired)")
        }
        return Response.json(.object(["id": .string(id), "status": .string("pending")]))
    }

    /// Pushes `{"jobs": [...], "batch"?: id, "model"?, "kind"?, "priority"?}`: every job is
    /// checked first, and nothing is pushed when one is bad (the error names `jobs[i].field`).
    func pushBatch(queue: JobQueue, body: JSONValue) async throws -> Response {
        guard let object = body.object else {
            throw APIError(.badRequest, "the body must be a JSON object with 'jobs', a list of job requests", code: "invalid_body")
        }
        for key in object.keys.sorted() where !["jobs", "batch", "model", "kind", "priority"].contains(key) {
            throw APIError(.badRequest, "field '\(key)': unknown field", param: key, code: "invalid_field")
        }
        guard let requests = object["jobs"]?.array, !requests.isEmpty else {
            throw APIError(.badRequest, "field 'jobs': is required, a non-empty list of job requests", param: "jobs", code: "invalid_field")
        }
        guard requests.count <= 100_000 else {
            throw APIError(.badRequest, "field 'jobs': at most 100000 jobs per request", param: "jobs", code: "invalid_field")
        }
        let batch =
            object["batch"]?.string ?? "b" + String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36) + UUID().uuidString.prefix(6).lowercased()
        guard Job.isValidID(batch), batch.count <= 100 else {
            throw APIError(.badRequest, "field 'batch': must be 1-100 letters, digits, '-', '_', '.' or ':'", param: "batch", code: "invalid_field")
        }
        var defaults = JobDefaults(batch: batch)
        defaults.model = object["model"]?.string
        if let kind = object["kind"]?.string {
            guard let k = JobKind(rawValue: kind) else {
                throw APIError(.badRequest, "field 'kind': '\(kind)' is not one of chat, image, embedding", param: "kind", code: "invalid_field")
            }
            defaults.kind = k
        }
        if let priority = object["priority"]?.string {
            guard let p = JobPriority(rawValue: priority) else {
                throw APIError(
                    .badRequest,
                    "field 'priority': '\(priority)' is not one of high, default, low",
                    param: "priority",
                    code: "invalid_field"
                )
            }
            defaults.priority = p
        }
        var jobs: [Job] = []
        var seen: [String: Int] = [:]
        for (index, request) in requests.enumerated() {
            var lineDefaults = defaults
            lineDefaults.id = "\(batch)-\(index + 1)"
            do {
                let job = try Job.fromRequest(request, defaults: lineDefaults)
                if let first = seen[job.id] {
                    throw APIError(
                        .badRequest,
                        "field 'jobs[\(index)].id': '\(job.id)' was already used by jobs[\(first)]",
                        param: "jobs[\(index)].id",
                        code: "invalid_field"
                    )
                }
                seen[job.id] = index
                jobs.append(job)
            } catch let error as JobValidationError {
                throw APIError.invalid(error, prefix: "jobs[\(index)]")
            }
        }
        let outcomes = try await redisCall { try await queue.push(jobs) }
        let duplicates = outcomes.filter(Self.isDuplicate).count
        return Response.json(
            .object([
                "batch": .string(batch), "pushed": .number(Double(jobs.count - duplicates)), "duplicates": .number(Double(duplicates)),
                "jobs": .array(outcomes.map { .string($0.jobID) }),
            ]),
            status: .created
        )
    }

    static func isDuplicate(_ outcome: PushOutcome) -> Bool {
        if case .duplicate = outcome { return true }
        return false
    }

    static func pushAnswer(_ outcome: PushOutcome) -> JSONValue {
        .object(["id": .string(outcome.jobID), "status": .string(isDuplicate(outcome) ? "duplicate" : "queued")])
    }

    static func jobID(_ context: BasicRequestContext) throws -> String {
        guard let id = context.parameters.get("id"), Job.isValidID(id) else {
            throw APIError(.badRequest, "field 'id': must be 1-128 letters, digits, '-', '_', '.' or ':'", param: "id", code: "invalid_field")
        }
        return id
    }

    static func integer(_ request: Request, _ name: String, _ range: ClosedRange<Int>) throws -> Int? {
        guard let text = request.uri.queryParameters.get(name) else { return nil }
        guard let n = Int(text), range.contains(n) else {
            throw APIError(
                .badRequest,
                "field '\(name)': expected a whole number from \(range.lowerBound) to \(range.upperBound), got '\(text)'",
                param: name,
                code: "invalid_field"
            )
        }
        return n
    }

    static func number(_ request: Request, _ name: String, _ range: ClosedRange<Double>) throws -> Double? {
        guard let text = request.uri.queryParameters.get(name) else { return nil }
        guard let n = Double(text), n.isFinite, range.contains(n) else {
            throw APIError(
                .badRequest,
                "field '\(name)': expected a number from \(range.lowerBound) to \(range.upperBound), got '\(text)'",
                param: name,
                code: "invalid_field"
            )
        }
        return n
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
