import Foundation
import Synchronization

/// Client activity on sessions, noted by the node the client reached (a proxied request, or
/// bytes the client sends through a WebSocket; never the session's own output), and written to
/// the registry in batches (``RegistryStore/touchSession(_:at:)``, one write per active
/// session per interval), not once per request. Read by the idle timeout
/// (`session-timeout-minutes`) of whichever node runs the session.
final class SessionActivity: Sendable {
    private let pending = Mutex<[String: Date]>([:])

    func note(_ id: String, at time: Date = Date()) {
        pending.withLock { $0[id] = max($0[id] ?? time, time) }
    }

    /// What was noted since the last call.
    func take() -> [String: Date] {
        pending.withLock { pending in
            defer { pending = [:] }
            return pending
        }
    }

    /// How often a node writes its notes and looks for idle sessions: a sixth of the timeout
    /// (so activity reaches the registry well inside it), at most every ten seconds, at least
    /// every quarter second.
    static func interval(timeoutSeconds: Double) -> Double {
        timeoutSeconds > 0 ? min(10, max(0.25, timeoutSeconds / 6)) : 10
    }
}
