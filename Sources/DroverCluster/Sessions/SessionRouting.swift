import DroverKernel
import Foundation

/// The cluster's answer to "where is session S for this request?" as a pure function of what
/// the node knows at one instant: the session's row, every node's row with the database's clock,
/// this node's own copy of the session, and the request. `SessionManager.route` reads those
/// facts, asks ``next(_:)``, carries the action out and asks again, so every re-placement race
/// the chaos and proof runs found (a late heartbeat, an owner that died mid-start, a row left
/// `starting` or `quitting`, a row of this node's previous life) is a unit test of inputs and
/// expected actions, with no process and no sleep (`SessionRoutingTests`).
enum SessionRouting {
    /// What the node knows when it decides.
    struct Facts {
        /// The session's row; nil when there is none.
        var session: SessionRecord?
        /// Who asks.
        var username: String
        /// Every node's row, and the database's clock read with them.
        var nodes: [NodeRecord]
        var now: Date
        var heartbeatInterval: Int
        /// This node (nil before it registered).
        var selfID: Int64?
        /// Whether this node runs a live copy of the session (started, not over).
        var runsLocalCopy: Bool
        /// What the request is, and whether the session's kind counts only its client's writes.
        var request: SessionManager.ClientActivity = .write
        var kindCountsOnlyWrites = false
        /// The session's user asked to start it even though it is held.
        var startingHeld = false
    }

    /// What to do next.
    enum Action: Equatable {
        /// No such session, or another user's: the same answer for both.
        case notFound
        /// It is held (it went over its memory limit) and waits for its user.
        case refuseHeld(String)
        /// It is suspended, and this request (a page's poll) does not start it.
        case refuseSuspendedRead
        /// Send the request to this node's own copy.
        case serveLocally
        /// Send the request to the owner.
        case forward(NodeRecord)
        /// The row says this node runs it, but nothing runs here (a previous life of this node):
        /// free the row (`suspended`) by compare-and-set from `from`, then decide again.
        case free(from: SessionOwnership)
        /// It is being started, suspended or quit on a live owner: decide again in a moment.
        case retry(after: Duration)
        /// Place it again and start it, by compare-and-set from `from`: a resume, or a move
        /// when its node is gone (`nodeGone` then says how that node looked).
        case place(from: SessionOwnership, nodeGone: String?)
    }

    /// How long a request waits before it looks again at a session that is changing hands.
    static let changingHandsRetry = Duration.milliseconds(200)

    static func next(_ facts: Facts) -> Action {
        guard let session = facts.session, session.username == facts.username else { return .notFound }
        let ownership = session.ownership
        if ownership.state == .suspended {
            if let hold = session.hold, !facts.startingHeld { return .refuseHeld(hold) }
            if facts.request != .write, facts.kindCountsOnlyWrites { return .refuseSuspendedRead }
        }
        guard let owner = ownership.node else {
            // A row without a node is only ever suspended; anything else is mid-write: look again.
            return ownership.state == .suspended ? .place(from: ownership, nodeGone: nil) : .retry(after: changingHandsRetry)
        }
        guard let node = facts.nodes.first(where: { $0.id == owner }) else {
            // Its node's row was deleted.
            return .place(from: ownership, nodeGone: nil)
        }
        if node.isServing(now: facts.now, heartbeatInterval: facts.heartbeatInterval) {
            switch ownership.state {
            case .running:
                if owner != facts.selfID { return .forward(node) }
                return facts.runsLocalCopy ? .serveLocally : .free(from: ownership)
            case .starting, .suspending, .quitting:
                return .retry(after: changingHandsRetry)
            case .suspended:
                // Suspended but still naming a live node: placed again as a move.
                return .place(from: ownership, nodeGone: node.displayStatus(now: facts.now, heartbeatInterval: facts.heartbeatInterval))
            }
        }
        if ownership.state == .suspended { return .place(from: ownership, nodeGone: nil) }
        // Its node is gone (offline, unreachable, deleting): move it.
        return .place(from: ownership, nodeGone: node.displayStatus(now: facts.now, heartbeatInterval: facts.heartbeatInterval))
    }
}

/// How a node quits a session wherever it is, as a pure decision of the row and whether its owner
/// is up; `SessionManager.quit` carries the action out and, unless it is done, reads the row
/// again and decides again.
enum SessionQuitting {
    enum Action: Equatable {
        /// Nothing runs (suspended, or its node died with its process): claim the row for this
        /// node (`quitting`) by compare-and-set from `from`, remove the saved state, delete the row.
        case claimAndRemove(from: SessionOwnership)
        /// Another quit holds the row (`quitting` with no node): wait for it to finish.
        case waitForAnotherQuit
        /// Its owner is up: ask it to quit the session (here or by a signed call).
        case askOwner
    }

    static func next(_ ownership: SessionOwnership, ownerAlive: Bool) -> Action {
        guard ownership.state == .suspended || !ownerAlive else { return .askOwner }
        if ownership.state == .quitting && ownership.node == nil { return .waitForAnotherQuit }
        return .claimAndRemove(from: ownership)
    }
}

/// How a node moves a session (the dashboard's "move to node N"; a drain's "wherever the
/// balancer places it, but off this node"), as a pure decision of the session's row and what
/// the move did so far; `SessionStops.move` carries the action out, reads the row again and
/// decides again.
enum SessionMoving {
    struct Facts: Equatable {
        /// The session's row now; nil when it is gone.
        var row: SessionOwnership?
        /// The node it ran on when the move began.
        var from: Int64?
        /// The node asked for; nil for a drain (any node but `from`).
        var target: Int64?
        /// The move asked the owner to suspend the session already.
        var suspendAsked = false
        /// The move placed it already (and its start ran or lost a race).
        var placeTried = false
        /// A start the move waits for took longer than `session-response-timeout`.
        var pastDeadline = false
    }

    enum Action: Equatable {
        /// It runs where it is not wanted: its owner suspends it first (its state saved).
        case askOwnerToSuspend
        /// Suspended: place it (on the target, or by the balancer) and start it there.
        case place(from: SessionOwnership)
        /// It runs where the move wanted it (started there by the move, or by a request of its
        /// user meanwhile: a suspended session starts on use).
        case done
        /// It is starting where the move wanted it: wait.
        case waitForStart
        /// The session is gone.
        case gone
        /// It changed meanwhile in a way the move cannot finish (resumed elsewhere, suspended
        /// again after the move placed it): the caller may try again.
        case changed
    }

    static func next(_ facts: Facts) -> Action {
        guard let row = facts.row else { return .gone }
        if let at = row.node, at != facts.from, facts.target == nil || at == facts.target {
            switch row.state {
            case .running: return .done
            case .starting: return facts.pastDeadline ? .changed : .waitForStart
            default: return .changed
            }
        }
        if row.state == .suspended { return facts.placeTried ? .changed : .place(from: row) }
        return facts.suspendAsked ? .changed : .askOwnerToSuspend
    }
}
