import Synchronization

/// A sign-in cookie, or every cookie of a user, that must no longer be accepted: written to
/// the registry at sign-out (one cookie) or by `drover revoke-user` (all of a user's cookies
/// issued until then), kept until the cookies it covers have expired anyway.
public struct CookieRevocation: Sendable, Equatable, Codable {
    /// ``SignInCookie/digest(of:)`` of the one cookie revoked; nil: every cookie of `username`
    /// issued up to `issuedUpTo`.
    public var cookieDigest: String?
    public var username: String
    /// Unix seconds; for a user's revocation, cookies issued then or before are revoked.
    public var issuedUpTo: Double
    /// Unix seconds after which the record may go (the covered cookies have expired by then).
    public var expiresAt: Double

    public init(cookieDigest: String?, username: String, issuedUpTo: Double, expiresAt: Double) {
        self.cookieDigest = cookieDigest
        self.username = username
        self.issuedUpTo = issuedUpTo
        self.expiresAt = expiresAt
    }

    /// The registry's key for the record.
    public var id: String { cookieDigest ?? "user \(username) \(Int(issuedUpTo))" }
}

/// The revocations a node knows of, checked for every signed-in request: refreshed from the
/// registry every two seconds and at once when a peer says they changed. Whoever must act on a
/// change (closing a revoked cookie's WebSocket tunnels) registers with ``onChange(_:)``.
public final class RevocationList: Sendable {
    private struct State {
        var digests: Set<String> = []
        /// The newest `issuedUpTo` per user.
        var users: [String: Double] = [:]
    }

    private let state = Mutex(State())
    private let observers = Mutex<[@Sendable () -> Void]>([])

    public init() {}

    /// Whether the cookie with `digest`, of `user`, issued at `issuedAt`, is revoked.
    public func isRevoked(digest: String, user: String, issuedAt: Double) -> Bool {
        state.withLock { state in
            if state.digests.contains(digest) { return true }
            guard let upTo = state.users[user] else { return false }
            return issuedAt <= upTo
        }
    }

    /// Replaces what is known by `revocations` (the registry's unexpired rows).
    public func replace(with revocations: [CookieRevocation]) {
        let changed = state.withLock { state in
            var next = State()
            for revocation in revocations { Self.add(revocation, to: &next) }
            defer { state = next }
            return next.digests != state.digests || next.users != state.users
        }
        if changed { notify() }
    }

    /// Adds one revocation (this node's own sign-out, before the registry is read again).
    public func add(_ revocation: CookieRevocation) {
        state.withLock { Self.add(revocation, to: &$0) }
        notify()
    }

    /// Calls `observer` after every change.
    public func onChange(_ observer: @escaping @Sendable () -> Void) {
        observers.withLock { $0.append(observer) }
    }

    private static func add(_ revocation: CookieRevocation, to state: inout State) {
        if let digest = revocation.cookieDigest {
            state.digests.insert(digest)
        } else {
            state.users[revocation.username] = max(state.users[revocation.username] ?? 0, revocation.issuedUpTo)
        }
    }

    private func notify() {
        for observer in observers.withLock({ $0 }) { observer() }
    }
}
