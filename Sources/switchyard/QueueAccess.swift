import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import SwitchyardQueue
import SwitchyardRedis

/// Opens the queue a command works on; closes it when the command is done.
func withQueue<T>(
    _ options: RedisOptions,
    queueConfiguration: (inout QueueConfiguration) -> Void = { _ in },
    _ body: (JobQueue) async throws -> T
) async throws -> T {
    let configuration = try options.configuration()
    var queueConfig = QueueConfiguration(name: configuration.queue)
    queueConfig.durability = configuration.durability
    queueConfiguration(&queueConfig)
    let pool = RedisConnectionPool(configuration: configuration.redis, logger: cliLogger)
    defer { pool.shutDown() }
    let queue = JobQueue(configuration: queueConfig, redis: pool, logger: cliLogger)
    do {
        return try await body(queue)
    } catch let error as RedisError {
        printError(error.message)
        throw ExitCode(2)
    }
}

/// Commands log warnings only; workers log at info.
let cliLogger: Logger = {
    var logger = Logger(label: "switchyard")
    logger.logLevel = .warning
    return logger
}()

/// "90 s", "1.5 s", "2 h": a number of seconds as people read it in a message.
func formatSeconds(_ seconds: Double) -> String {
    if seconds >= 7200 && seconds.truncatingRemainder(dividingBy: 3600) == 0 { return "\(Int(seconds / 3600)) h" }
    if seconds == seconds.rounded() { return "\(Int(seconds)) s" }
    return String(format: "%.1f s", seconds)
}

/// One JSON object on its own line of standard output (`--json`).
func printJSON(_ fields: [String: JSONValue]) {
    print(String(decoding: JSONValue.object(fields).jsonBytes, as: UTF8.self))
}

/// A line on standard error that is not an error (progress, a note, a hint).
func printNote(_ message: String) {
    FileHandle.standardError.write(Data("\(message)\n".utf8))
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}

let jsonLines: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
}()

/// The line for a job without a final result: `{"id":…,"status":"pending"}`, written by the
/// JSON writer (an id is quoted and escaped whatever it holds).
func pendingLine(_ id: String) -> String {
    var out: [UInt8] = []
    JSONValue.object(["id": .string(id), "status": .string("pending")]).write(to: &out)
    return String(decoding: out, as: UTF8.self)
}

func unknownLine(_ id: String) -> String {
    var out: [UInt8] = []
    JSONValue.object(["id": .string(id), "status": .string("unknown")]).write(to: &out)
    return String(decoding: out, as: UTF8.self)
}

func jsonLine<T: Encodable>(_ value: T) -> String {
    (try? String(decoding: jsonLines.encode(value), as: UTF8.self)) ?? "{}"
}

/// Parses "250ms", "2s", "1.5m", "1h", "2d", a sum of them with the larger units first ("1h30m",
/// "2m30s") or a plain number of seconds: finite, not negative, at most 365 days (so
/// infinities, NaN and absurd values get a clear error, not a crash).
func parseDuration(_ text: String, field: String) throws -> Duration {
    let units: [String: Double] = ["ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400]
    let order = ["d", "h", "m", "s", "ms"]
    let notADuration = ValidationError("\(field): '\(text)' is not a duration (examples: 250ms, 2s, 1.5m, 1h30m, 24h)")
    var seconds: Double
    if let n = Double(text), text.first?.isNumber == true || text.first == "." {
        seconds = n
    } else {
        seconds = 0
        var rest = Substring(text)
        var lastUnit = -1
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            let unit = rest.dropFirst(number.count).prefix { $0.isLetter }
            guard !number.isEmpty, let value = Double(number), let scale = units[String(unit)],
                let rank = order.firstIndex(of: String(unit)), rank > lastUnit
            else { throw notADuration }
            seconds += value * scale
            lastUnit = rank
            rest = rest.dropFirst(number.count + unit.count)
        }
        if lastUnit < 0 { throw notADuration }
    }
    guard seconds.isFinite else { throw notADuration }
    guard seconds >= 0, seconds <= 365 * 86400 else {
        throw ValidationError("\(field): '\(text)' is out of range (from 0 to 365 days)")
    }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}

/// Parses a size: "512", "64kb", "16mb", "1gb" (powers of 1024); at least 1 byte, at most 1 GiB.
func parseSize(_ text: String, field: String) throws -> Int {
    let units: [(String, Double)] = [("kb", 1024), ("mb", 1024 * 1024), ("gb", 1024 * 1024 * 1024), ("b", 1)]
    let lower = text.lowercased()
    var bytes: Double?
    for (suffix, scale) in units where lower.hasSuffix(suffix) {
        if let n = Double(lower.dropLast(suffix.count)) { bytes = n * scale }
        break
    }
    if bytes == nil, let n = Double(lower) { bytes = n }
    guard let bytes, bytes.isFinite, lower.first?.isNumber == true else {
        throw ValidationError("\(field): '\(text)' is not a size (examples: 65536, 64kb, 16mb)")
    }
    guard bytes >= 1, bytes <= 1024 * 1024 * 1024 else { throw ValidationError("\(field): '\(text)' is out of range (from 1 byte to 1gb)") }
    return Int(bytes)
}
