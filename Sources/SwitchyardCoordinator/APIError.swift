import Foundation
import Hummingbird
import SwitchyardCore

/// An error answer of the coordinator, in OpenAI's error shape for the JSON API and the
/// OpenAI-compatible front alike:
/// `{"error": {"message": …, "type": …, "param": …, "code": …}}`. `param` names the field at
/// fault (`jobs[3].model`) when there is one.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(_ status: HTTPResponse.Status, _ message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status.code) \(message)" }

    /// A job request that failed validation: 400 naming the field, under `prefix` (`jobs[3]`).
    static func invalid(_ error: JobValidationError, prefix: String = "") -> APIError {
        let field = prefix.isEmpty ? error.field : (error.field == "(line)" ? prefix : "\(prefix).\(error.field)")
        return APIError(.badRequest, "field '\(field)': \(error.problem)", param: field, code: "invalid_field")
    }

    static func notFound(_ what: String) -> APIError { APIError(.notFound, what, code: "not_found") }

    static func redis(_ message: String) -> APIError {
        APIError(.serviceUnavailable, "Redis is unreachable or failed: \(message)", type: "server_error", code: "redis_unavailable")
    }

    var body: JSONValue {
        var object: [String: JSONValue] = ["message": .string(message), "type": .string(type)]
        object["param"] = param.map(JSONValue.string) ?? .null
        object["code"] = code.map(JSONValue.string) ?? .null
        return .object(["error": .object(object)])
    }

    func response(challenge: Bool = false) -> Response {
        var response = Response.json(body, status: status)
        if challenge { response.headers[.wwwAuthenticate] = "Bearer" }
        return response
    }
}

extension Response {
    /// A JSON answer written by the one JSON writer (`JSONValue`).
    static func json(_ value: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        json(bytes: value.jsonBytes, status: status)
    }

    static func json(bytes: [UInt8], status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json", .cacheControl: "no-store"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))
        )
    }

    static func json<T: Encodable>(encoding value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return json(bytes: Array(try encoder.encode(value)), status: status)
    }
}

/// Turns every error a route throws into an answer in the error shape: an `APIError` as it is,
/// Hummingbird's own (a body too large, say) with its status, anything else a 500 that says
/// what failed (never a secret: Redis errors carry no password).
struct ErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response()
        } catch let error as HTTPError {
            let message = error.body ?? (error.status == .contentTooLarge ? "the request body is too large" : error.status.reasonPhrase)
            return APIError(error.status, message, code: error.status == .notFound ? "not_found" : nil).response()
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            context.logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return APIError(.internalServerError, "internal error: \(error)", type: "server_error").response()
        }
    }
}
