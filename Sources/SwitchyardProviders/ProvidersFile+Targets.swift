import Foundation
import SwitchyardCore
import SwitchyardRedis
import SwitchyardResilience

extension ProvidersFile {
    /// Every target an operator may look at: those of `file` (shared ones, in file order), then
    /// any other whose breaker is stored in Redis (a target of another worker's providers file).
    public static func knownTargets(file: ProvidersFile?, redis: RedisConnectionPool) async throws -> [ResilienceTarget] {
        var targets = file?.sharedTargets ?? []
        var known = Set(targets.map(\.id))
        // Breaker keys spread over a cluster's slots: every master is scanned.
        let found = try await redis.forEachPrimary { connection -> [String] in
            var ids: [String] = []
            var cursor = "0"
            repeat {
                let reply = try await connection.send("SCAN", cursor, "MATCH", ResilienceKeys.breakerPattern, "COUNT", 500)
                guard let parts = reply.array, parts.count == 2 else { break }
                cursor = parts[0].string ?? "0"
                ids += (parts[1].array ?? []).compactMap(\.string).compactMap(ResilienceKeys.target(ofBreakerKey:))
            } while cursor != "0"
            return ids
        }
        for id in found.flatMap({ $0 }).sorted() where known.insert(id).inserted {
            targets.append(file?.target(id: id) ?? ResilienceTarget(id: id))
        }
        return targets
    }
}

extension Resilience {
    /// One target's breaker and rate-limit headroom as a JSON object: what `switchyard breakers
    /// --json` prints a line of and the coordinator's `/api/v1/breakers` lists.
    public func report(_ target: ResilienceTarget) async throws -> JSONValue {
        let status = try await breakers.status(target)
        let room = try await limits.headroom(target)
        var object: [String: JSONValue] = [
            "target": .string(target.id), "state": .string(status.state.rawValue), "enabled": .bool(target.breaker.enabled),
            "failure_rate": .number(status.failureRate), "slow_call_rate": .number(status.slowCallRate),
            "calls": .number(Double(status.calls)), "failures": .number(Double(status.failures)),
            "slow_calls": .number(Double(status.slowCalls)), "openings_in_a_row": .number(Double(status.openingsInARow)),
            "probes_in_flight": .number(Double(status.probesInFlight)), "reason": .string(status.reason),
        ]
        if let until = status.openUntil { object["open_until"] = .number(until) }
        if let since = status.since { object["since"] = .number(since) }
        if let forced = status.forcedBy { object["forced_by"] = .string(forced) }
        if let r = room.requests { object["request_headroom"] = .number(r.rounded(.down)) }
        if let t = room.tokens { object["token_headroom"] = .number(t.rounded(.down)) }
        return .object(object)
    }
}
