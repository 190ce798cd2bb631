import ArgumentParser
import Foundation
import SwitchyardQueue

/// `switchyard workers`: the live workers with the jobs they run; `workers drain <id>` asks one
/// to stop through Redis.
struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "List the live workers and the jobs they run, or ask one to drain and exit.",
        subcommands: [ListWorkers.self, DrainWorker.self],
        defaultSubcommand: ListWorkers.self
    )
}

struct ListWorkers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "The live workers: host and pid, profile, executor, jobs in flight and their ids, processed, last heartbeat."
    )

    @OptionGroup var redis: RedisOptions

    @Flag(help: "Print JSON (an array of registry entries, without their tokens) instead of a table.")
    var json = false

    func run() async throws {
        try await withQueue(redis) { queue in
            let workers = try await queue.workers().sorted { $0.id < $1.id }
            if json {
                print(
                    jsonLine(
                        workers.map { entry -> WorkerInfo in
                            var shown = entry
                            shown.token = nil
                            return shown
                        }
                    )
                )
                return
            }
            if workers.isEmpty {
                print("no live workers on queue '\(queue.configuration.name)'")
                return
            }
            let now = Date().timeIntervalSince1970
            for w in workers {
                print(
                    String(
                        format: "%@  %@ pid %d  %@  %@  in flight %d/%d  processed %d  seen %.1fs ago",
                        w.id,
                        w.host,
                        w.pid,
                        w.profile,
                        w.executor,
                        w.inFlight,
                        w.concurrency,
                        w.processed,
                        now - w.heartbeatAt
                    )
                )
                if let jobs = w.jobs, !jobs.isEmpty {
                    let more = w.inFlight > jobs.count ? " (and \(w.inFlight - jobs.count) more)" : ""
                    print("  running: " + jobs.joined(separator: " ") + more)
                }
            }
        }
    }
}

struct DrainWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Ask a live worker to drain and exit 0: it stops taking jobs within its next heartbeat (2 s) and finishes what runs.",
        discussion: """
            The request names the worker's process, so a process started later with the same id (a supervisor's \
            restart) runs normally; it expires after 10 minutes. Exit status 4 when no live worker has the id.
            """
    )

    @OptionGroup var redis: RedisOptions

    @Argument(help: "The worker's id (see `switchyard workers`).")
    var id: String

    func run() async throws {
        let found = try await withQueue(redis) { queue in try await queue.requestDrain(workerID: id) }
        guard let worker = found else {
            printError("no live worker '\(id)' (see switchyard workers)")
            throw ExitCode(4)
        }
        guard worker.token != nil else {
            printError(
                "worker '\(id)' runs a version that cannot be asked to drain through Redis; send it SIGTERM (pid \(worker.pid) on \(worker.host))"
            )
            throw ExitCode(1)
        }
        print(
            "asked worker \(worker.id) (pid \(worker.pid) on \(worker.host)) to drain: it stops taking jobs within 2 s and exits when its \(worker.inFlight) running jobs end"
        )
    }
}
