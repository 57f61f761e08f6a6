public import DroverKernel

/// A session operation that failed, with the message a user or operator sees and the HTTP
/// status it is answered with.
public enum SessionError: CodedError, Equatable, CustomStringConvertible {
    case notFound
    case launchFailed(String)
    case unavailable(String)
    /// The node already starts `max-starting-sessions` sessions; try again shortly.
    case busy(String)
    /// The node is stopping and starts no session: the placer places it again elsewhere.
    case stopping(String)
    /// The row changed while the session was being started (another request or node started
    /// it, or freed it): not a failure of the session, the caller looks at the row again.
    case moved(String)
    /// The user has `max-sessions-per-user` sessions already.
    case limitReached(String)
    /// No such kind is configured (or none was named and there is no default).
    case unknownKind(String)
    /// The user's groups may not start this kind.
    case kindForbidden(String)
    /// The session's kind is no longer configured, or no node can run it now.
    case kindUnavailable(String)
    /// It was stopped (it went over its memory limit) and waits for its user to start it again.
    case held(String)
    /// It is suspended, and a page's polling does not start it (a kind with its own activity).
    case suspended(String)

    public var description: String {
        switch self {
        case .notFound: "no such session"
        case .launchFailed(let reason): "the session could not start: \(reason)"
        case .unavailable(let reason): reason
        case .busy(let reason): reason
        case .stopping(let reason): reason
        case .moved(let reason): reason
        case .limitReached(let reason): reason
        case .unknownKind(let reason), .kindForbidden(let reason), .kindUnavailable(let reason), .suspended(let reason): reason
        case .held(let reason): "the session was stopped: \(reason); start it again from the page of its address or with POST /api/sessions/ID/start"
        }
    }

    /// 404 for a missing session, 429 for a node at its start limit or a user at theirs, 500 for a start that
    /// failed, 503 for a session or node that is not available right now, 421 (misdirected)
    /// for a start sent to a node that is stopping, which its placer places again, 409 for a
    /// start whose row changed meanwhile.
    public var httpStatus: Int {
        switch self {
        case .notFound: 404
        case .busy, .limitReached: 429
        case .launchFailed: 500
        case .unavailable: 503
        case .stopping: 421
        case .moved: 409
        case .unknownKind: 400
        case .kindForbidden: 403
        case .kindUnavailable: 503
        case .held, .suspended: 409
        }
    }

    /// Seconds to send in `Retry-After`, for the answers worth retrying.
    public var retryAfterSeconds: Int? {
        switch self {
        case .busy, .stopping, .moved: 1
        case .unavailable: 5
        case .kindUnavailable: 30
        case .notFound, .launchFailed, .limitReached, .unknownKind, .kindForbidden, .held, .suspended: nil
        }
    }
}
