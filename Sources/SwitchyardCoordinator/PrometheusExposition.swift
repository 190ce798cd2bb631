import Foundation
import SwitchyardMetrics
import SwitchyardQueue
import SwitchyardResilience

/// Writes Prometheus's text exposition format (0.0.4): one `# HELP` and `# TYPE` per family,
/// label values escaped, histograms as cumulative `le` buckets in seconds.
struct PrometheusExposition {
    private(set) var text = ""
    private var declared: Set<String> = []

    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// Declares a family once; samples of it may follow in any order only if no other family's
    /// samples come between, so callers add a family's samples together.
    mutating func family(_ name: String, _ type: String, _ help: String) {
        guard declared.insert(name).inserted else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.format(value) + "\n"
    }

    /// A histogram of µs samples, exported in seconds at `LatencyHistogram.prometheusBounds`.
    mutating func histogram(_ name: String, _ labels: [(String, String)], _ histogram: LatencyHistogram) {
        let counts = histogram.cumulative(at: LatencyHistogram.prometheusBounds)
        for (bound, count) in zip(LatencyHistogram.prometheusBounds, counts) {
            // `le` is inclusive: a bucket's last µs value, in seconds.
            sample(name + "_bucket", labels + [("le", Self.format(Double(bound) / 1e6))], Double(count))
        }
        sample(name + "_bucket", labels + [("le", "+Inf")], Double(histogram.count))
        sample(name + "_sum", labels, histogram.sum / 1e6)
        sample(name + "_count", labels, Double(histogram.count))
    }

    /// Escapes a label value: backslash, double quote and line feed, the only escapes the format
    /// has. By Unicode scalar, not Character: "\r\n" is one Character, and its line feed must be
    /// escaped too.
    static func escape(_ value: String) -> String {
        var out = ""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// A metric name from a swift-metrics label: Prometheus allows `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    static func name(_ label: String) -> String {
        var out = ""
        for (i, c) in label.enumerated() {
            let ok = c.isASCII && (c.isLetter || c == "_" || c == ":" || (i > 0 && c.isNumber))
            out.append(ok ? c : "_")
        }
        return out.isEmpty ? "_" : out
    }
}

extension PrometheusExposition {
    /// The workers' merged metrics: counters, gauges and histograms as the workers named them.
    mutating func add(merged: MetricsSnapshot) {
        var families: [String: [(MetricsRegistry.Key, Double)]] = [:]
        for (key, value) in merged.counters { families[Self.name(key.label), default: []].append((key, value)) }
        for name in families.keys.sorted() {
            family(name, "counter", Self.help[name] ?? "Counter \(name), summed over every worker process's series.")
            for (key, value) in families[name]!.sorted(by: { $0.0 < $1.0 }) { sample(name, Self.labels(key), value) }
        }
        families = [:]
        for (key, value) in merged.gauges { families[Self.name(key.label), default: []].append((key, value)) }
        for name in families.keys.sorted() {
            family(name, "gauge", Self.help[name] ?? "Gauge \(name), summed over the workers that reported in the last 30 s.")
            for (key, value) in families[name]!.sorted(by: { $0.0 < $1.0 }) { sample(name, Self.labels(key), value) }
        }
        var histograms: [String: [(MetricsRegistry.Key, LatencyHistogram)]] = [:]
        for (key, value) in merged.histograms { histograms[Self.name(key.label), default: []].append((key, value)) }
        for name in histograms.keys.sorted() {
            family(name, "histogram", Self.help[name] ?? "Histogram \(name) in seconds, merged over every worker process's series.")
            for (key, value) in histograms[name]!.sorted(by: { $0.0 < $1.0 }) { histogram(name, Self.labels(key), value) }
        }
    }

    static func labels(_ key: MetricsRegistry.Key) -> [(String, String)] {
        key.dimensions.keys.sorted().map { (name($0), key.dimensions[$0]!) }
    }

    /// Help texts of the workers' metrics (others get a generic one).
    static let help: [String: String] = [
        "switchyard_attempts_total": "Job attempts by how they ended.",
        "switchyard_queue_wait_seconds": "Time from push (or due time) to a job's first attempt.",
        "switchyard_run_seconds": "Time one attempt ran.",
        "switchyard_cache_answers_total": "Succeeded jobs by how the response cache served them.",
        "switchyard_tokens_total": "Prompt (in) and completion (out) tokens of succeeded jobs a model answered.",
        "switchyard_target_calls_total": "HTTP calls at a provider target by outcome.",
        "switchyard_target_call_seconds": "Time of one HTTP call at a provider target.",
        "switchyard_time_to_first_token_seconds": "Time from a streamed call's start to its first event, per target.",
        "switchyard_model_loads_total": "Model-server starts by outcome (ready, exited, timeout).",
        "switchyard_model_load_seconds": "Time a model server took to start and answer.",
        "switchyard_model_evictions_total": "Model servers stopped to make room for another model.",
        "switchyard_model_restarts_total": "Model servers started again after they exited.",
    ]

    /// One queue's depth, age of the oldest waiting job, counters and workers.
    mutating func add(statuses: [QueueStatus], now: Double) {
        family("switchyard_queue_waiting", "gauge", "Entries no worker has read yet, per lane.")
        for s in statuses {
            for lane in s.lanes { sample("switchyard_queue_waiting", [("queue", s.queue), ("lane", lane.name)], Double(lane.waiting)) }
        }
        family("switchyard_queue_pending", "gauge", "Entries read by a worker and not finished, per lane.")
        for s in statuses {
            for lane in s.lanes { sample("switchyard_queue_pending", [("queue", s.queue), ("lane", lane.name)], Double(lane.pending)) }
        }
        family("switchyard_queue_parked", "gauge", "Waiting entries set aside by warm-model routing, per lane.")
        for s in statuses {
            for lane in s.lanes { sample("switchyard_queue_parked", [("queue", s.queue), ("lane", lane.name)], Double(lane.parked)) }
        }
        family("switchyard_queue_oldest_waiting_seconds", "gauge", "Age of the oldest entry no worker has read yet (0: none waits).")
        for s in statuses {
            for lane in s.lanes {
                sample("switchyard_queue_oldest_waiting_seconds", [("queue", s.queue), ("lane", lane.name)], lane.oldestWaitingSeconds ?? 0)
            }
        }
        family("switchyard_queue_delayed", "gauge", "Jobs waiting for a retry or a not-before time.")
        for s in statuses { sample("switchyard_queue_delayed", [("queue", s.queue)], Double(s.delayed)) }
        family("switchyard_queue_dead", "gauge", "Entries in the dead-letter stream.")
        for s in statuses { sample("switchyard_queue_dead", [("queue", s.queue)], Double(s.dead)) }
        family("switchyard_queue_jobs_total", "counter", "The queue's own counters kept in Redis (pushed, succeeded, failed, dead, ...).")
        for s in statuses {
            for name in s.counters.keys.sorted() {
                sample("switchyard_queue_jobs_total", [("queue", s.queue), ("event", name)], Double(s.counters[name]!))
            }
        }
        family("switchyard_workers", "gauge", "Workers whose registry entry is alive.")
        for s in statuses { sample("switchyard_workers", [("queue", s.queue)], Double(s.workers.count)) }
        family("switchyard_worker_in_flight", "gauge", "Jobs a worker is running.")
        for s in statuses { for w in s.workers { sample("switchyard_worker_in_flight", Self.worker(s, w), Double(w.inFlight)) } }
        family("switchyard_worker_concurrency", "gauge", "Jobs a worker runs at once at most.")
        for s in statuses { for w in s.workers { sample("switchyard_worker_concurrency", Self.worker(s, w), Double(w.concurrency)) } }
        family("switchyard_worker_rss_bytes", "gauge", "A worker process's resident memory.")
        for s in statuses { for w in s.workers { sample("switchyard_worker_rss_bytes", Self.worker(s, w), Double(w.rssBytes)) } }
        family("switchyard_worker_warm_models", "gauge", "Models a worker holds loaded in its model servers.")
        for s in statuses { for w in s.workers { sample("switchyard_worker_warm_models", Self.worker(s, w), Double(w.models?.count ?? 0)) } }
        family("switchyard_worker_heartbeat_age_seconds", "gauge", "Time since a worker's last heartbeat.")
        for s in statuses { for w in s.workers { sample("switchyard_worker_heartbeat_age_seconds", Self.worker(s, w), max(0, now - w.heartbeatAt)) } }
        family("switchyard_worker_info", "gauge", "A worker's host, hardware profile, version and executor (always 1).")
        for s in statuses {
            for w in s.workers {
                sample(
                    "switchyard_worker_info",
                    Self.worker(s, w) + [("profile", w.profile), ("version", w.version), ("executor", w.executor)],
                    1
                )
            }
        }
        family(
            "switchyard_live_cache_events",
            "gauge",
            "Response-cache events counted by the live worker processes, summed (falls when a worker stops; switchyard_cache_answers_total does not)."
        )
        for s in statuses {
            var cache: [String: Int] = [:]
            for w in s.workers { cache.merge(w.cache ?? [:], uniquingKeysWith: +) }
            for name in cache.keys.sorted() { sample("switchyard_live_cache_events", [("queue", s.queue), ("event", name)], Double(cache[name]!)) }
        }
        family(
            "switchyard_live_resilience_events",
            "gauge",
            "Breaker and rate-limit events counted by the live worker processes, summed (falls when a worker stops)."
        )
        for s in statuses {
            var counters: [String: Int] = [:]
            for w in s.workers { counters.merge(w.resilience ?? [:], uniquingKeysWith: +) }
            for name in counters.keys.sorted() {
                sample("switchyard_live_resilience_events", [("queue", s.queue), ("event", name)], Double(counters[name]!))
            }
        }
    }

    static func worker(_ s: QueueStatus, _ w: WorkerInfo) -> [(String, String)] {
        [("queue", s.queue), ("worker", w.id), ("host", w.host)]
    }

    /// Every breaker's state (1 for the state it is in, 0 for the others) and its transitions.
    mutating func add(breakers: [BreakerExport]) {
        let states = BreakerState.allCases.map(\.rawValue)
        family("switchyard_breaker_state", "gauge", "A target's circuit breaker: 1 for its current state.")
        for breaker in breakers {
            for state in states {
                sample("switchyard_breaker_state", [("target", breaker.target), ("state", state)], breaker.state == state ? 1 : 0)
            }
        }
        family(
            "switchyard_breaker_transitions_total",
            "counter",
            "Transitions of a target's breaker into each state, counted once for the cluster (reset when an idle breaker's state expires)."
        )
        for breaker in breakers {
            for state in states {
                sample("switchyard_breaker_transitions_total", [("target", breaker.target), ("to", state)], Double(breaker.transitions[state] ?? 0))
            }
        }
    }
}

/// A breaker as `/metrics` exports it.
struct BreakerExport: Sendable {
    var target: String
    var state: String
    var transitions: [String: Int]
}
