import Foundation

/// What a supervisor asks a worker: is it alive, and is it ready for work.
///
/// Read by the worker's health endpoint (`switchyard worker --health-port`): Kubernetes probes,
/// compose health checks and `switchyard health`. Liveness does not depend on Redis: a worker
/// riding out a Redis outage is alive, and restarting it would only lose its in-flight jobs.
public struct WorkerHealth: Sendable, Equatable {
    /// False when the worker's watch loop, which ticks every `watchInterval` once the worker is
    /// registered, has not ticked for `WorkerHealth.stallLimit`: something in the process is
    /// stuck, and a restart helps. A worker still waiting for Redis to register is live.
    public var live: Bool
    /// True when the worker holds its id in the registry, its last heartbeat reached Redis within
    /// the heartbeat TTL, and it is not draining; `Worker.currentHealth()` also asks
    /// `WorkerConfiguration.notReadyReason` (pinned models loading).
    public var ready: Bool
    /// Why the worker is not live or not ready (nil when it is both).
    public var reason: String?
    /// The worker's id.
    public var worker: String
    /// Jobs running now.
    public var inFlight: Int
    /// Seconds since the last heartbeat that reached Redis (nil before the first).
    public var sinceLastHeartbeat: Double?

    /// How long the watch loop may go without a tick before the worker counts as stalled: 60 s.
    /// Long enough for a loop round held up by a slow Redis (a command timeout plus a reconnect
    /// wait), short enough for a supervisor to restart a stuck process within minutes.
    public static let stallLimit: Duration = .seconds(60)
}

extension Worker {
    /// The worker's health now. Cheap: reads state under the lock, no Redis call.
    public var health: WorkerHealth {
        let now = ContinuousClock.now
        return state.withLock { s in
            let sinceHeartbeat = s.lastHeartbeat.map { now - $0 }
            // The watch loop starts at registration; before it, the worker is waiting for Redis.
            let stalled = s.registered && now - s.lastWatchTick > WorkerHealth.stallLimit
            var reason: String?
            var ready = false
            if stalled {
                reason = "stalled: the watch loop has not run for \(seconds(now - s.lastWatchTick)) s"
            } else if s.displaced {
                reason = "displaced: another process registered this worker's id"
            } else if s.draining {
                reason = "draining: not taking jobs"
            } else if !s.registered {
                reason = "starting: not registered yet (waiting for Redis)"
            } else if let since = sinceHeartbeat, since > configuration.heartbeatTTL {
                reason = "Redis not reached for \(seconds(since)) s (heartbeat TTL \(seconds(configuration.heartbeatTTL)) s)"
            } else {
                ready = true
            }
            return WorkerHealth(
                live: !stalled,
                ready: ready,
                reason: reason,
                worker: configuration.id,
                inFlight: s.inFlight.count,
                sinceLastHeartbeat: sinceHeartbeat.map { Double($0.components.seconds) + Double($0.components.attoseconds) / 1e18 }
            )
        }
    }

    /// `health`, and not ready while `WorkerConfiguration.notReadyReason` gives a reason (the
    /// local executor's pinned models loading). What the health endpoint answers.
    public func currentHealth() async -> WorkerHealth {
        var health = self.health
        if health.ready, let check = configuration.notReadyReason, let reason = await check() {
            health.ready = false
            health.reason = reason
        }
        return health
    }

    /// Called by the watch loop on every round.
    func noteWatchTick() { state.withLock { $0.lastWatchTick = .now } }

    /// Called when a heartbeat (or the registration) reached Redis.
    func noteHeartbeat() {
        state.withLock { s in
            if !s.registered { s.lastWatchTick = .now }
            s.registered = true
            s.lastHeartbeat = .now
        }
    }
}

private func seconds(_ d: Duration) -> String { String(format: "%.1f", Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18) }
