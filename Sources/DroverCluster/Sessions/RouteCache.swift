import DroverKernel
import Synchronization

/// Where sessions were found recently, so the proxy does not read the registry for every
/// request: a route is trusted for `timeToLive` after it was confirmed, and forgotten at once
/// when a forward fails or a peer says the session moved.
final class RouteCache: Sendable {
    struct Entry: Sendable, Equatable {
        var route: SessionRoute
        var username: String
        /// The session's kind: what the node the client reached does to its requests (strip
        /// the prefix, add the secret) depends on it.
        var kind: String = SessionKindNames.legacy
    }

    let timeToLive: Duration
    private let now: @Sendable () -> ContinuousClock.Instant
    private let entries = Mutex<[String: (entry: Entry, at: ContinuousClock.Instant)]>([:])

    /// - Parameter now: the clock (injected, so tests move time by hand).
    init(timeToLive: Duration = .seconds(5), now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.timeToLive = timeToLive
        self.now = now
    }

    /// Records that session `id` of `username` was found at `route` just now.
    func remember(_ id: String, _ route: SessionRoute, username: String, kind: String = SessionKindNames.legacy) {
        let at = now()
        entries.withLock { $0[id] = (Entry(route: route, username: username, kind: kind), at) }
    }

    /// The route confirmed less than `timeToLive` ago, if any.
    func fresh(_ id: String) -> Entry? {
        let now = now()
        return entries.withLock { entries in
            guard let cached = entries[id] else { return nil }
            guard now - cached.at < timeToLive else {
                entries.removeValue(forKey: id)
                return nil
            }
            return cached.entry
        }
    }

    func forget(_ id: String) {
        entries.withLock { _ = $0.removeValue(forKey: id) }
    }

    /// Forgets every route that `matches`.
    func forget(where matches: (SessionRoute) -> Bool) {
        entries.withLock { entries in entries = entries.filter { !matches($0.value.entry.route) } }
    }

    var count: Int { entries.withLock { $0.count } }
}
