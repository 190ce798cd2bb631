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
            Values of payload and result fields named like a secret (token, api_key, x-api-key, secret, password, authorization, \
            cookie, private_key, and names ending in _token, _secret, _password, _api_key) are shown as "***": best effort, a \
            secret inside a message's text is not found. Exit status 4 for a job this queue does not know (never pushed here, or expired).
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
            let attempts = Self.attempts(location)
            if !attempts.isEmpty, let value = try? JSONValue.parse(Array(JSONEncoder().encode(attempts))) {
                object["attempts"] = Self.redacted(value)
            }
            if let result = location.result, let value = try? JSONValue.parse(Array(JSONEncoder().encode(result))) {
                object["result"] = Self.redacted(value)
            }
            printJSON(object)
        } else {
            print(Self.describe(location))
            let attempts = Self.attempts(location)
            if !attempts.isEmpty {
                print("attempts:")
                for a in attempts { print("  " + Self.describe(a)) }
            }
            if let payload { print("payload: " + String(decoding: payload.jsonBytes, as: UTF8.self)) }
            if let result = location.result, let value = try? JSONValue.parse(Array(JSONEncoder().encode(result))) {
                print("result: " + String(decoding: Self.redacted(value).jsonBytes, as: UTF8.self))
            }
        }
        if location.place == .unknown { throw ExitCode(4) }
    }

    /// Every attempt known: those that did not end the job, then the one that did (its result),
    /// or the one running now.
    static func attempts(_ l: JobLocation) -> [AttemptRecord] {
        var all = l.attempts
        // (A job run again by `switchyard retry` counts its attempts from 1 again; the history
        // keeps the earlier run's last attempt, so numbers may repeat.)
        if let r = l.result, r.attempts > 0 {
            all.append(
                AttemptRecord(
                    attempt: r.attempts,
                    outcome: r.status.rawValue,
                    worker: r.worker,
                    started: r.timings.started,
                    finished: r.timings.finished,
                    error: r.error
                )
            )
        } else if case .running(let worker, _) = l.place, let attempt = l.attempt {
            all.append(AttemptRecord(attempt: attempt, outcome: "running", worker: worker))
        }
        return all
    }

    static func describe(_ a: AttemptRecord) -> String {
        let time = ISO8601DateFormatter()
        var parts = ["#\(a.attempt) \(a.outcome)"]
        if let worker = a.worker { parts.append("on \(worker)") }
        if let started = a.started { parts.append("started \(time.string(from: Date(timeIntervalSince1970: started)))") }
        if let started = a.started, let finished = a.finished { parts.append(String(format: "ran %.2f s", max(0, finished - started))) }
        if a.started == nil, let finished = a.finished { parts.append("at \(time.string(from: Date(timeIntervalSince1970: finished)))") }
        if let error = a.error {
            parts.append("\(error.code): \(error.message)")
            if let after = error.retryAfter { parts.append("(the provider asked to retry after \(formatSeconds(after)))") }
        }
        if let next = a.nextAttemptAt { parts.append("next attempt due \(time.string(from: Date(timeIntervalSince1970: next)))") }
        return parts.joined(separator: "  ")
    }

    static func state(_ place: JobLocation.Place) -> String {
        switch place {
        case .finished: return "finished"
        case .waiting: return "waiting"
        case .parked: return "parked"
        case .running: return "running"
        case .delayed: return "delayed"
        case .orphaned: return "orphaned"
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
        case .orphaned:
            return
                "job \(l.id): delivered\(lane) but held by no worker (dropped from the group's pending list by hand): nothing will run it again\(attempt)\(batch)"
        case .between:
            return "job \(l.id): known, but on no lane and not delayed: between two states (a retry being scheduled; look again), "
                + "or finished with its result expired before its record\(batch)"
        case .unknown: return "job \(l.id): unknown on this queue (never pushed here, or its record has expired)"
        }
    }

    /// Field names whose values are secrets, lower-cased with '-' as '_'.
    static let secretNames: Set<String> = [
        "api_key", "apikey", "x_api_key", "token", "access_token", "refresh_token", "id_token", "auth_token", "bearer", "secret",
        "client_secret", "password", "passwd", "authorization", "proxy_authorization", "cookie", "set_cookie", "private_key",
        "access_key", "secret_key", "credential", "credentials",
    ]

    /// Whether a field of this name holds a secret: a listed name, or one ending in `_secret`,
    /// `_password`, `_api_key` or `_token` (not `_tokens`: `max_tokens` counts).
    static func isSecret(_ key: String) -> Bool {
        let name = key.lowercased().replacingOccurrences(of: "-", with: "_")
        if secretNames.contains(name) { return true }
        return ["_secret", "_password", "_api_key", "_token"].contains { name.hasSuffix($0) }
    }

    /// The payload with the values of secret-looking fields replaced by "***". Best effort: a
    /// secret inside a message's text is not found.
    static func redacted(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let fields):
            var out: [String: JSONValue] = [:]
            for (key, field) in fields { out[key] = isSecret(key) ? .string("***") : redacted(field) }
            return .object(out)
        case .array(let items): return .array(items.map(redacted))
        default: return value
        }
    }
}
