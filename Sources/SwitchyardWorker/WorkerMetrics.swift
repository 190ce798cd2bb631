import CoreMetrics
import SwitchyardMetrics

/// The worker's metrics, created through swift-metrics with the worker's own `MetricsRegistry`
/// as factory (so several in-process workers never mix numbers), and published with every
/// heartbeat (`sy:{<queue>}:metrics:<worker>:<series>`).
///
/// Every name is `switchyard_…`; histograms are in µs (`LatencyHistogram`).
struct WorkerMetrics: Sendable {
    let registry: MetricsRegistry

    /// `switchyard_attempts_total{queue,lane,status}`: attempts by how they ended (`succeeded`,
    /// `failed`, `dead`, `cancelled`, `retried`, `handed_back`).
    func attempts(_ dimensions: [(String, String)]) -> Counter {
        Counter(label: "switchyard_attempts_total", dimensions: dimensions, factory: registry)
    }

    /// `switchyard_queue_wait_seconds{queue,lane}`: from push (or due time) to a first attempt's start.
    func queueWait(_ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: "switchyard_queue_wait_seconds", dimensions: dimensions, factory: registry)
    }

    /// `switchyard_cache_answers_total{queue,status}`: succeeded jobs by how the response cache
    /// served them (`hit`, `miss`, `coalesced`, `bypass`).
    func cacheAnswers(_ dimensions: [(String, String)]) -> Counter {
        Counter(label: "switchyard_cache_answers_total", dimensions: dimensions, factory: registry)
    }

    /// `switchyard_tokens_total{queue,direction}`: prompt (`in`) and completion (`out`) tokens of
    /// succeeded jobs a model answered (not the cache).
    func tokens(_ dimensions: [(String, String)]) -> Counter {
        Counter(label: "switchyard_tokens_total", dimensions: dimensions, factory: registry)
    }

    /// `switchyard_run_seconds{queue,lane}`: one attempt, start to end.
    func runTime(_ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        CoreMetrics.Timer(label: "switchyard_run_seconds", dimensions: dimensions, factory: registry)
    }
}
