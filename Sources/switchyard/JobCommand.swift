import ArgumentParser
import Foundation
import SwitchyardCore
import SwitchyardQueue

/// `switchyard job <id>`: where one job is, what it carries and how it ended.
struct JobCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "job",
        abstract:
            "Inspect one job: where it is (waiting and its position, set aside, running on which worker, delayed until when, finished), its payload and its result.",
        discussion: """
            Values of payload and result fields whose names suggest a secret (token, secret, password, authorization, api_key, \
            credential) are shown as "***". Exit status 4 for a job this queue does not know (never pushed here, or expired).
            """
    )

    @OptionGroup var redis: RedisOptions

    @Argument(help: "The job id.")
    var id: String

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() async throws {
        let location = try await withQueue(redis) { queue in try await queue.locate(jobID: id) }
        let payload = location.job.flatMap { try? JSONValue.parse($0) }.map(Self.redacted)
        if json {
            var object: [String: JSONValue] = ["id": .string(id), "state": .string(Self.state(location.place))]
            switch location.place {
            case .waiting(let position): object["position"] = .number(Double(position))
            case .running(let worker, let heldFor):
                object["worker"] = .string(worker)
                object["held_for_s"] = .number((heldFor * 10).rounded() / 10)
            case .delayed(let due): object["due"] = .number(due)
            default: break
            }
            if let lane = location.lane { object["lane"] = .string(lane) }
            if let attempt = location.attempt { object["attempt"] = .number(Double(attempt)) }
            if let max = location.maxAttempts { object["max_attempts"] = .number(Double(max)) }
            if let batch = location.batch { object["batch"] = .string(batch) }
            if let payload { object["job"] = payload }
            if let result = location.result, let value = try? JSONValue.parse(Array(JSONEncoder().encode(result))) {
                object["result"] = Self.redacted(value)
            }
            print(String(decoding: JSONValue.object(object).jsonBytes, as: UTF8.self))
        } else {
            print(Self.describe(location))
            if let payload { print("payload: " + String(decoding: payload.jsonBytes, as: UTF8.self)) }
            if let result = location.result, let value = try? JSONValue.parse(Array(JSONEncoder().encode(result))) {
                print("result: " + String(decoding: Self.redacted(value).jsonBytes, as: UTF8.self))
            }
        }
        if location.place == .unknown { throw ExitCode(4) }
    }

    static func state(_ place: JobLocation.Place) -> String {
        switch place {
        case .finished: return "finished"
        case .waiting: return "waiting"
        case .parked: return "parked"
        case .running: return "running"
        case .delayed: return "delayed"
        case .between: return "between"
        case .unknown: return "unknown"
        }
    }

    static func describe(_ l: JobLocation) -> String {
        let attempt = l.attempt.map { a in " (attempt \(a)" + (l.maxAttempts.map { " of \($0)" } ?? "") + ")" } ?? ""
        let lane = l.lane.map { " on lane \($0)" } ?? ""
        let batch = l.batch.map { ", batch \($0)" } ?? ""
        switch l.place {
        case .finished:
            let status = l.result?.status.rawValue ?? "finished"
            let worker = l.result?.worker.map { " by \($0)" } ?? ""
            let attempts = l.result.map { " after \($0.attempts) attempt\($0.attempts == 1 ? "" : "s")" } ?? ""
            return "job \(l.id): \(status)\(worker)\(attempts)\(batch)"
        case .waiting(let position): return "job \(l.id): waiting\(lane), position \(position)\(attempt)\(batch)"
        case .parked: return "job \(l.id): set aside\(lane) for a worker that holds its model warm\(attempt)\(batch)"
        case .running(let worker, let heldFor):
            return "job \(l.id): running on \(worker)\(lane)\(attempt), lease renewed \(String(format: "%.1f", heldFor)) s ago\(batch)"
        case .delayed(let due):
            let date = ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: due))
            return
                "job \(l.id): delayed until \(date) (in \(String(format: "%.0f", max(0, due - Date().timeIntervalSince1970))) s)\(lane)\(attempt)\(batch)"
        case .between: return "job \(l.id): known, between two states (being retried or promoted); look again\(batch)"
        case .unknown: return "job \(l.id): unknown on this queue (never pushed here, or its record has expired)"
        }
    }

    /// The payload with the values of secret-looking fields replaced by "***".
    static func redacted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let fields):
            var out: [String: JSONValue] = [:]
            for (key, field) in fields {
                let lower = key.lowercased()
                let secret = ["token", "secret", "password", "authorization", "api_key", "apikey", "credential"].contains { lower.contains($0) }
                out[key] = secret ? .string("***") : redacted(field)
            }
            return .object(out)
        case .array(let items): return .array(items.map(redacted))
        default: return value
        }
    }
}
