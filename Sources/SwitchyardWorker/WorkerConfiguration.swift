import Foundation
import SwitchyardCore
import SwitchyardMetrics
import SwitchyardQueue

/// How one worker process runs jobs.
public struct WorkerConfiguration: Sendable {
    /// The worker's consumer name in the group and its registry id.
    public var id: String
    /// Jobs run at once.
    public var concurrency: Int
    /// How long one blocking read waits before the loop looks around (shutdown, free slots).
    public var blockTimeout: Duration
    /// How long a draining worker lets in-flight jobs finish before handing the rest back.
    public var shutdownGrace: Duration
    public var heartbeatInterval: Duration
    /// A registry entry without a heartbeat for this long counts as gone.
    public var heartbeatTTL: Duration
    /// How often due retries and delayed jobs are promoted onto their lanes.
    public var promoteInterval: Duration
    /// How often running jobs are checked for timeouts and cancellation.
    public var watchInterval: Duration
    /// The hardware profile's name, published in the registry.
    public var profile: String
    /// The executor's name, published in the registry.
    public var executorName: String
    /// Warm-model routing, for executors that report their warm models (the local one); nil
    /// turns it off and the worker takes jobs strictly in queue order.
    public var warmRouting: WarmRouting?
    /// How long a job told to stop (timeout, `cancel`, lost lease, shutdown) may go on before the
    /// worker stops waiting for its executor, frees the slot and writes the outcome. Default: 10 s.
    public var abandonAfter: Duration
    /// The largest result, in bytes of its stored JSON, a job may write; a larger one ends the
    /// job `failed` with `result_too_large`. Keep it under Redis's `proto-max-bulk-len`
    /// (512 MB by default). Default: 64 MiB.
    public var maxResultBytes: Int
    /// How long a stopping worker, after the grace period, keeps trying to write outcomes, hand
    /// back jobs and deregister when Redis fails; it stops at once when Redis cannot be reached.
    /// What it could not write is reclaimed after its lease. Default: 10 s.
    public var shutdownWriteTime: Duration
    /// Called once the worker holds its id in the registry, before it takes any job: what must
    /// not run for a worker that is refused (its id is a live worker's) starts here. Default: nil.
    public var whenRegistered: (@Sendable () async -> Void)?
    /// Counters the heartbeat publishes as the registry entry's `resilience` (the breakers'
    /// and rate limits'); nil: none. Default nil.
    public var resilienceCounters: (@Sendable () -> [String: Int])?
    /// Burst mode (`worker --burst`): the worker drains and exits 0 once the queue has nothing
    /// left (see `Worker.stopIfNothingLeft`), for cron jobs and CI. Default false.
    public var burst = false
    /// Why the worker is not ready yet although it runs (say, pinned models still loading), or
    /// nil when nothing holds it back; asked by `Worker.currentHealth()`. Default nil.
    public var notReadyReason: (@Sendable () async -> String?)?
    /// Where the worker keeps its metrics (published with every heartbeat); nil: a registry of
    /// its own. Give one to share it with the executor's metrics. Default nil.
    public var metrics: MetricsRegistry?

    public init(
        id: String = WorkerConfiguration.defaultID(),
        concurrency: Int = 4,
        blockTimeout: Duration = .seconds(2),
        shutdownGrace: Duration = .seconds(30),
        heartbeatInterval: Duration = .seconds(2),
        heartbeatTTL: Duration = .seconds(10),
        promoteInterval: Duration = .milliseconds(100),
        watchInterval: Duration = .milliseconds(250),
        profile: String = "cpu",
        executorName: String = "unnamed",
        warmRouting: WarmRouting? = WarmRouting(),
        abandonAfter: Duration = .seconds(10),
        maxResultBytes: Int = 64 << 20,
        shutdownWriteTime: Duration = .seconds(10)
    ) {
        self.id = id
        self.concurrency = concurrency
        self.blockTimeout = blockTimeout
        self.shutdownGrace = shutdownGrace
        self.heartbeatInterval = heartbeatInterval
        self.heartbeatTTL = heartbeatTTL
        self.promoteInterval = promoteInterval
        self.watchInterval = watchInterval
        self.profile = profile
        self.executorName = executorName
        self.warmRouting = warmRouting
        self.abandonAfter = abandonAfter
        self.maxResultBytes = maxResultBytes
        self.shutdownWriteTime = shutdownWriteTime
    }

    /// host-pid-random: unique per process, readable in `switchyard status`.
    public static func defaultID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "host"
        return "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString.prefix(4).lowercased())"
    }
}

/// Resident memory of this process in bytes (0 where it cannot be read).
func residentMemoryBytes() -> Int {
    #if os(Linux)
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    #else
    return 0
    #endif
}
