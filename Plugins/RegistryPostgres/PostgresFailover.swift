import Synchronization

/// The servers whose pooled connections must all be dropped: one of their connections was
/// lost, or the server refused a write as read-only. A connection opened before its server was
/// abandoned is closed when next borrowed, so the pool moves to the new primary in one step
/// instead of failing once per pooled connection.
final class AbandonedServers: Sendable {
    private struct State {
        var generation: UInt64 = 0
        /// Server (`host:port`) → the generation at which it was abandoned.
        var abandoned: [String: UInt64] = [:]
    }
    private let state = Mutex(State())

    /// The generation a connection opened now carries.
    var generation: UInt64 { state.withLock { $0.generation } }

    func abandon(_ server: String) {
        state.withLock {
            $0.generation += 1
            $0.abandoned[server] = $0.generation
        }
    }

    /// Whether a connection to `server`, opened at generation `openedAt`, predates the
    /// server's last abandonment.
    func isAbandoned(_ server: String, openedAt: UInt64) -> Bool {
        state.withLock { $0.abandoned[server].map { $0 > openedAt } ?? false }
    }
}
