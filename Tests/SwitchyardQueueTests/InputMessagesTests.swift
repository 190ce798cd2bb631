import Foundation
import SwitchyardTestSupport
import Testing

/// Bad input gets the real error, naming the option: negative numbers, a unix URL a slash short,
/// no workers; and compound durations are read.
@Suite("Input and messages")
struct InputMessagesTests {
    @Test(arguments: [
        (["push", "--model", "m", "--prompt", "x", "--timeout", "-1"], "--timeout: must be more than 0"),
        (["push", "--model", "m", "--prompt", "x", "--max-attempts", "-2"], "--max-attempts: must be from 1 to 100"),
        (["worker", "--executor", "echo", "--lease", "-1s"], "--lease: '-1s' is not a duration"),
        (["worker", "--executor", "echo", "--concurrency", "-3"], "--concurrency: must be from 1 to 1024, got -3"),
        (["worker", "--executor", "echo", "--concurrency", "5000"], "--concurrency: must be from 1 to 1024, got 5000"),
        (["worker", "--executor", "echo", "--worker-id", "two words"], "--worker-id: must be 1 to 200 characters without spaces"),
        (["worker", "--executor", "echo", "--retry-base", "10s", "--retry-cap", "1s"], "--retry-base: 10s is more than --retry-cap (1s)"),
        (["worker", "--executor", "echo", "--result-ttl", "0"], "--result-ttl: must be at least 1s"),
        (["queue", "pause", "--lane", "urgent"], "--lane: 'urgent' is not a lane (high, default, low)"),
        (["batches", "--limit", "0"], "--limit: must be 1 to 10000, got 0"),
        (["dlq", "retry", "12-x"], "'12-x' is not a dead letter's entry id"),
        (["worker", "--executor", "echo", "--health-port", "-1"], "--health-port: must be 0 to 65535, got -1"),
        (["up", "--workers", "0"], "--workers: must be from 1 to 64, got 0"),
        (["ping", "--redis-url", "unix://run/x.sock"], "three slashes, unix:///run/x.sock"),
        (["worker", "--executor", "echo", "--lease", "1h30"], "--lease: '1h30' is not a duration (examples: 250ms, 2s, 1.5m, 1h30m, 24h)"),
        (["worker", "--executor", "echo", "--lease", "30m1h"], "--lease: '30m1h' is not a duration"),
    ])
    func theRealErrorNamesTheOption(arguments: [String], message: String) throws {
        let (code, output) = try runSwitchyard(arguments + (arguments.contains("--redis-url") ? [] : ["--redis-url", "redis://127.0.0.1:1"]))
        #expect(code == 64 && output.contains(message), "\(arguments): \(code.map(String.init) ?? "signal") \(output)")
        #expect(!output.contains("Missing value"), "\(output)")
    }

    /// `1h30m` is read as 90 minutes: a lease of 1h30m and a drain grace of 2m30s are accepted, and
    /// the first error is the next option's (checked after them), not theirs.
    @Test func compoundDurationsAreRead() throws {
        let (code, output) = try runSwitchyard(
            [
                "worker", "--executor", "echo", "--lease", "1h30m", "--shutdown-grace", "2m30s", "--max-result-bytes", "lots", "--redis-url",
                "redis://127.0.0.1:1",
            ]
        )
        #expect(code == 64 && output.contains("--max-result-bytes") && !output.contains("not a duration"), "\(output)")
    }

    /// Messages about counts read as English: one job, two jobs, one bad line.
    @Test func countsAreSingularOrPlural() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("bad-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: file) }
        try #"{"model": "m", "prompt": "x", "max_attempts": "3"}"#.write(to: file, atomically: true, encoding: .utf8)
        let (code, output) = try runSwitchyard(["push", "--file", file.path, "--redis-url", "redis://127.0.0.1:1"])
        #expect(code == 65, "\(output)")
        #expect(output.contains(#"field 'max_attempts': expected a whole number from 1 to 100, got a string "3""#), "\(output)")
        #expect(output.contains("nothing was pushed: 1 bad line\n"), "\(output)")
    }

    /// Shell completion comes from the command tree: it knows the queue-control commands.
    @Test func completionScriptsCoverEveryCommand() throws {
        for shell in ["bash", "zsh", "fish"] {
            let (code, output) = try runSwitchyard(["--generate-completion-script", shell])
            #expect(code == 0, "\(shell): \(output.prefix(300))")
            for command in ["queue", "retry", "batches", "delayed", "job", "workers"] { #expect(output.contains(command), "\(shell): \(command)") }
        }
    }
}
