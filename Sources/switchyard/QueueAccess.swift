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

func printError(_ message: String) {
    FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}

let jsonLines: JSONEncoder = {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return encoder
}()

func jsonLine<T: Encodable>(_ value: T) -> String {
    (try? String(decoding: jsonLines.encode(value), as: UTF8.self)) ?? "{}"
}

/// Parses "250ms", "2s", "1.5m" or a plain number of seconds.
func parseDuration(_ text: String, field: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
    for (suffix, scale) in units where text.hasSuffix(suffix) {
        if let n = Double(text.dropLast(suffix.count)), n >= 0 { return .milliseconds(Int64(n * scale * 1000)) }
    }
    if let n = Double(text), n >= 0 { return .milliseconds(Int64(n * 1000)) }
    throw ValidationError("\(field): '\(text)' is not a duration (examples: 250ms, 2s, 1.5m)")
}
