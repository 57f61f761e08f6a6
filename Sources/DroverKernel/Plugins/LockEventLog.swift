import Foundation

/// The `enable-logging` log of a lock provider: every acquire, refusal, refresh, break and
/// release, with pid and path, to `log-file` or (when unset) the system log.
public struct LockEventLog: Sendable {
    private let writer: LineWriter?
    private let toSyslog: Bool

    /// Logging as `file-locks` asks; off when `enable-logging=0`.
    /// - Throws: ``ConfigurationError`` naming `log-file` when it cannot be opened.
    public init(config: FileLocksConfiguration) throws(ConfigurationError) {
        guard config.enableLogging else {
            writer = nil
            toSyslog = false
            return
        }
        if let path = config.logFile {
            switch LineWriter.appending(to: path) {
            case .success(let opened): writer = opened
            case .failure(let failure): throw config.source.error("log-file", "\(failure); set log-file= to a writable path")
            }
            toSyslog = false
        } else {
            writer = nil
            toSyslog = true
        }
    }

    public static let off = LockEventLog()

    private init() {
        writer = nil
        toSyslog = false
    }

    /// Writes `action` (e.g. `acquired`, `refused`, `refreshed`, `broke stale lock`, `released`).
    public func record(_ action: String, path: String, detail: String = "") {
        guard writer != nil || toSyslog else { return }
        let line = "\(DiagnosticsEvent.timestamp(Date())) pid=\(getpid()) lock \(action) path=\(DiagnosticsEvent.quoted(path))"
            + (detail.isEmpty ? "" : " " + detail)
        if let writer {
            writer.write(line: line)
        } else {
            withVaList([line]) { vsyslog(LOG_INFO, "%s", $0) }
        }
    }
}
