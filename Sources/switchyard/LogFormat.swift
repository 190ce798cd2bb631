import ArgumentParser
import Foundation
import Logging
import SwitchyardCore
import Synchronization

/// `--log-format`: how long-running commands (worker, coordinator) write their log to standard
/// error. `text` (the default) is swift-log's line format; `json` is one JSON object per line, for
/// log collectors (Loki, CloudWatch, journald with a JSON parser).
enum LogFormat: String, ExpressibleByArgument, CaseIterable {
    case text, json

    /// Makes every logger created after this write in this format. Call once, first thing.
    func bootstrap() {
        guard self == .json else { return }
        LogFormat.once.withLock { done in
            guard !done else { return }
            done = true
            LoggingSystem.bootstrap { label in JSONLogHandler(label: label) }
        }
    }

    private static let once = Mutex(false)
}

/// One JSON object per line on standard error:
/// `{"ts":"2026-12-02T01:02:03.456Z","level":"warning","label":"switchyard.worker","message":"…","worker":"w1",…}`.
/// Metadata become top-level fields (a field named like a fixed one is prefixed with `meta_`).
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String) { self.label = label }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let (level, message, extra, source) = (event.level, event.message, event.metadata, event.source)
        var fields: [String: JSONValue] = [:]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { _, new in new } }
        if let extra { all.merge(extra) { _, new in new } }
        for (key, value) in all { fields[key] = .string("\(value)") }
        for fixed in ["ts", "level", "label", "message", "source"] where fields[fixed] != nil {
            fields["meta_" + fixed] = fields.removeValue(forKey: fixed)
        }
        fields["ts"] = .string(Self.timestamp())
        fields["level"] = .string(level.rawValue)
        fields["label"] = .string(label)
        fields["message"] = .string(message.description)
        fields["source"] = .string(source)
        var bytes = JSONValue.object(fields).jsonBytes
        bytes.append(10)
        // One write per line, so lines from several threads never interleave.
        bytes.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }

    private static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var time = now.tv_sec
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
            parts.tm_year + 1900,
            parts.tm_mon + 1,
            parts.tm_mday,
            parts.tm_hour,
            parts.tm_min,
            parts.tm_sec,
            now.tv_nsec / 1_000_000
        )
    }
}
