import DroverKernel
import Foundation

/// Whether this node starts a session placed on it, as a pure function of what it knows, like
/// ``SessionRouting``: ``SessionStarts/launch(_:isNew:)`` reads the facts, asks, and carries the
/// answer out. Two steps: before any I/O (the node stopping, `max-starting-sessions`), and once
/// the session's row, its kind and its user's account are read. Each refusal is a unit test of
/// facts and answer (`SessionAdmissionTests`), with no process.
enum SessionAdmission {
    /// What the node knows before it reads anything.
    struct Load: Equatable {
        var isStopping: Bool
        /// Starts in progress on this node.
        var starting: Int
        /// `max-starting-sessions`.
        var limit: Int
    }

    /// The first step's answer.
    enum Admission: Equatable {
        /// Count this start (the caller adds it to `starting` in the same locked step) and go on.
        case admit
        /// The node is stopping: free the row (``SessionStarts/freeFailedStart(_:isNew:)``) so
        /// that the session is placed again elsewhere, and refuse.
        case refuseStopping
        /// The node starts `limit` sessions already: refuse with `Retry-After`, the row left as
        /// it is for the caller's retry (here or, placed again, elsewhere).
        case refuseBusy(limit: Int)
    }

    static func admit(_ load: Load) -> Admission {
        if load.isStopping { return .refuseStopping }
        return load.starting < load.limit ? .admit : .refuseBusy(limit: load.limit)
    }

    /// What the node read for an admitted start.
    struct Placed {
        /// The session's row (nil: gone).
        var row: SessionRecord?
        /// This node (nil before it registered).
        var selfID: Int64?
        /// The row's kind, when this node offers it.
        var kind: SessionKind?
        /// The row's user's system account here, when there is one.
        var account: SessionProcess.Account?
        /// droverd's own user id: only root starts other users' sessions.
        var effectiveUID: uid_t
    }

    /// The second step's answer.
    enum Start: Equatable {
        /// Start it: the kind and the account it runs as.
        case start(kind: String, user: String)
        /// The row no longer waits to start here (moved, quit, or started elsewhere).
        case moved
        /// A kind this node does not offer (any longer).
        case kindUnavailable(String)
        /// No system account of that name on this node.
        case noAccount(String)
        /// droverd does not run as root and the session is another user's.
        case notOwnUser
    }

    static func start(_ placed: Placed) -> Start {
        guard let selfID = placed.selfID, let row = placed.row,
              row.ownership.node == selfID, row.ownership.state == .starting else { return .moved }
        guard let kind = placed.kind else { return .kindUnavailable(row.kind) }
        guard let account = placed.account else { return .noAccount(row.username) }
        if placed.effectiveUID != 0, account.uid != placed.effectiveUID { return .notOwnUser }
        return .start(kind: kind.name, user: account.name)
    }
}
