import Foundation
import SwitchyardCore
import SwitchyardQueue

extension Coordinator {
    /// Waits for a job's final result, at most `timeout`; nil when it has none by then (the job
    /// keeps running). Polls its result key, soon at first and less often as the wait grows.
    func waitForResult(queue: JobQueue, id: String, timeout: Duration) async throws -> JobResult? {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        var pause = Duration.milliseconds(2)
        while true {
            if let result = try await redisCall({ try await queue.result(of: id) }) { return result }
            if clock.now >= deadline { return nil }
            try await Task.sleep(for: min(pause, deadline - clock.now))
            pause = min(pause * 2, .milliseconds(100))
        }
    }
}
