import Foundation
import Hummingbird
import SwitchyardMetrics
import SwitchyardProviders
import SwitchyardQueue
import SwitchyardRedis
import SwitchyardResilience

extension Coordinator {
    func addMetricsRoute(to router: Router<BasicRequestContext>) {
        router.get("/metrics") { _, _ in
            let text = try await self.prometheusText()
            return Response(
                status: .ok,
                headers: [.contentType: PrometheusExposition.contentType],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text))
            )
        }
    }

    /// Everything `/metrics` shows, for every served queue.
    func prometheusText() async throws -> String {
        var statuses: [QueueStatus] = []
        var combined = MetricsSnapshot(worker: "*", series: "*", startedAt: 0, takenAt: 0)
        do {
            for name in configuration.queues {
                let queue = queues[name]!
                statuses.append(try await queue.status())
                // Each queue's merge is its own; the workers' labels carry the queue, so adding
                // them up keeps them apart.
                let merged = try await ClusterReader(queue: queue, logger: logger).merged().snapshot
                combined.counters.merge(merged.counters, uniquingKeysWith: +)
                combined.gauges.merge(merged.gauges, uniquingKeysWith: +)
                for (key, histogram) in merged.histograms { combined.histograms[key, default: LatencyHistogram()].merge(histogram) }
            }
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError.redis("\(error)")
        }
        var exposition = PrometheusExposition()
        exposition.add(merged: combined)
        exposition.add(statuses: statuses, now: Date().timeIntervalSince1970)
        // Breakers are best effort: a scrape still answers when they cannot be read.
        if let breakers = try? await breakerStates() { exposition.add(breakers: breakers) }
        return exposition.text
    }

    func breakerStates() async throws -> [BreakerExport] {
        var out: [BreakerExport] = []
        let states = BreakerState.allCases
        for target in try await ProvidersFile.knownTargets(file: providers(), redis: redis) {
            let status = try await resilience.breakers.status(target)
            let counts = try await redis.send(
                RedisCommand("HMGET", arguments: [ResilienceKeys.breaker(target.id)] + states.map(ResilienceKeys.transitionField))
            )
            var transitions: [String: Int] = [:]
            for (state, value) in zip(states, counts.array ?? []) { transitions[state.rawValue] = value.string.flatMap(Int.init) ?? 0 }
            out.append(BreakerExport(target: target.id, state: status.state.rawValue, transitions: transitions))
        }
        return out
    }

    /// The providers file, read on each use so an edited file shows without a restart; nil when
    /// none is configured or it cannot be read (logged).
    func providers() -> ProvidersFile? {
        guard let path = configuration.providersFile else { return nil }
        do {
            return try ProvidersFile.load(path: path)
        } catch {
            logger.warning("cannot read the providers file", metadata: ["path": "\(path)", "error": "\(error)"])
            return nil
        }
    }
}
