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
        (["worker", "--executor", "echo", "--concurrency", "-3"], "--concurrency: must be at least 1"),
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
}
