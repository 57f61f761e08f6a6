@testable import DroverCluster
import DroverKernel
import Foundation
import Testing

/// The cluster's routing of a request to a session (`SessionRouting`, issue 36 item 1) driven
/// through the re-placement races the chaos and proof runs found, each as inputs and the
/// actions expected, with no process, no registry and no sleep: time is the database clock the
/// node read, set here.
@Suite struct SessionRoutingTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let interval = 2

    /// A node row, last seen `age` seconds before ``now``.
    func node(_ id: Int64, _ status: NodeStatus = .online, age: Double = 0, unreachableSince: Date? = nil) -> NodeRecord {
        NodeRecord(id: id, host: "node\(id)", ipv4: "127.0.0.\(id)", port: 8787, status: status, lastSeen: Self.now.addingTimeInterval(-age),
                   load: LoadAverage(one: 0, five: 0, fifteen: 0), cpus: 2, startedAt: Self.now, version: "1", configHash: "h",
                   launcherFingerprint: nil, unreachableSince: unreachableSince)
    }

    func session(_ state: SessionState, on owner: Int64?, user: String = "alice", hold: String? = nil) -> SessionRecord {
        SessionRecord(id: "s1", username: user, ownership: SessionOwnership(node: owner, state: state), createdAt: Self.now,
                      lastActive: Self.now, label: nil, hold: hold)
    }

    func facts(_ session: SessionRecord?, nodes: [NodeRecord], on selfID: Int64 = 1, localCopy: Bool = false,
               request: SessionManager.ClientActivity = .write, onlyWrites: Bool = false, startingHeld: Bool = false) -> SessionRouting.Facts {
        SessionRouting.Facts(session: session, username: "alice", nodes: nodes, now: Self.now, heartbeatInterval: Self.interval,
                             selfID: selfID, runsLocalCopy: localCopy, request: request, kindCountsOnlyWrites: onlyWrites, startingHeld: startingHeld)
    }

    @Test func aRunningSessionIsServedWhereItRuns() {
        #expect(SessionRouting.next(facts(session(.running, on: 1), nodes: [node(1), node(2)], localCopy: true)) == .serveLocally)
        #expect(SessionRouting.next(facts(session(.running, on: 2), nodes: [node(1), node(2)])) == .forward(node(2)))
        // An owner in offline mode still runs its sessions.
        #expect(SessionRouting.next(facts(session(.running, on: 2), nodes: [node(1), node(2, .offlineMode)])) == .forward(node(2, .offlineMode)))
    }

    @Test func anotherUsersSessionAndNoSessionLookTheSame() {
        #expect(SessionRouting.next(facts(session(.running, on: 2, user: "mallory"), nodes: [node(2)])) == .notFound)
        #expect(SessionRouting.next(facts(nil, nodes: [node(2)])) == .notFound)
    }

    /// A late heartbeat: the owner's row is older than three intervals, so the session is
    /// placed again as a move, by compare-and-set from the row as it was; a heartbeat just
    /// inside the bound keeps it where it is.
    @Test func aLateHeartbeatMovesTheSessionAndOneInTimeDoesNot() {
        let running = session(.running, on: 2)
        let late = node(2, age: Double(3 * Self.interval) + 0.5)
        #expect(SessionRouting.next(facts(running, nodes: [node(1), late])) == .place(from: running.ownership, nodeGone: "Unreachable"))
        #expect(SessionRouting.next(facts(running, nodes: [node(1), node(2, age: Double(3 * Self.interval) - 0.5)])) == .forward(node(2, age: Double(3 * Self.interval) - 0.5)))
        // A peer that found it silent marks it unreachable before its row is old.
        let marked = node(2, unreachableSince: Self.now)
        #expect(SessionRouting.next(facts(running, nodes: [node(1), marked])) == .place(from: running.ownership, nodeGone: "Unreachable"))
    }

    /// An owner that died while starting the session: the row says `starting` on a node that is
    /// gone; it is placed again. On a live owner the request waits and looks again.
    @Test func anOwnerThatDiedMidStartLosesTheSessionAndALiveOneKeepsIt() {
        let starting = session(.starting, on: 2)
        #expect(SessionRouting.next(facts(starting, nodes: [node(1), node(2, .offline)])) == .place(from: starting.ownership, nodeGone: "Offline"))
        #expect(SessionRouting.next(facts(starting, nodes: [node(1), node(2)])) == .retry(after: SessionRouting.changingHandsRetry))
    }

    /// Rows left `quitting` or `suspending`: waited for on a live owner, taken over from a dead
    /// one; a row whose node row was deleted is placed again.
    @Test func rowsLeftHalfWayAreWaitedForOrTakenOver() {
        for state in [SessionState.quitting, .suspending] {
            let row = session(state, on: 2)
            #expect(SessionRouting.next(facts(row, nodes: [node(1), node(2)])) == .retry(after: SessionRouting.changingHandsRetry))
            #expect(SessionRouting.next(facts(row, nodes: [node(1), node(2, age: 60)])) == .place(from: row.ownership, nodeGone: "Unreachable"))
        }
        let orphan = session(.running, on: 9)
        #expect(SessionRouting.next(facts(orphan, nodes: [node(1)])) == .place(from: orphan.ownership, nodeGone: nil))
    }

    /// The row says this node runs it, but nothing runs here (this node's previous life): the row
    /// is freed first, then — the next decision, on the freed row — the session starts again.
    @Test func aRowOfThisNodesPreviousLifeIsFreedThenResumed() {
        let stale = session(.running, on: 1)
        #expect(SessionRouting.next(facts(stale, nodes: [node(1), node(2)], localCopy: false)) == .free(from: stale.ownership))
        let freed = session(.suspended, on: nil)
        #expect(SessionRouting.next(facts(freed, nodes: [node(1), node(2)])) == .place(from: freed.ownership, nodeGone: nil))
    }

    /// A session taken away from a healthy owner (another node's row now): requests follow the
    /// row, never this node's leftover copy.
    @Test func aSessionTakenAwayIsServedWhereItsRowSays() {
        #expect(SessionRouting.next(facts(session(.running, on: 2), nodes: [node(1), node(2)], on: 1, localCopy: true)) == .forward(node(2)))
    }

    /// A suspended row that still names a live node is placed as a move; one naming no node as a
    /// resume; a row with no node in another state is mid-write and looked at again.
    @Test func suspendedRowsAreResumedOrMoved() {
        let named = session(.suspended, on: 2)
        #expect(SessionRouting.next(facts(named, nodes: [node(1), node(2)])) == .place(from: named.ownership, nodeGone: "Online"))
        #expect(SessionRouting.next(facts(named, nodes: [node(1), node(2, .offline)])) == .place(from: named.ownership, nodeGone: nil))
        #expect(SessionRouting.next(facts(session(.starting, on: nil), nodes: [node(1)])) == .retry(after: SessionRouting.changingHandsRetry))
    }

    /// Held (over its memory limit): refused until its user starts it; a Jupyter kind's poll does
    /// not start a suspended session, a page opened does.
    @Test func aHeldSessionAndAPollWaitForTheUser() {
        let held = session(.suspended, on: nil, hold: "it used more than its memory-limit")
        #expect(SessionRouting.next(facts(held, nodes: [node(1)])) == .refuseHeld("it used more than its memory-limit"))
        #expect(SessionRouting.next(facts(held, nodes: [node(1)], startingHeld: true)) == .place(from: held.ownership, nodeGone: nil))
        let suspended = session(.suspended, on: nil)
        #expect(SessionRouting.next(facts(suspended, nodes: [node(1)], request: .read, onlyWrites: true)) == .refuseSuspendedRead)
        #expect(SessionRouting.next(facts(suspended, nodes: [node(1)], request: .read, onlyWrites: false)) == .place(from: suspended.ownership, nodeGone: nil))
        #expect(SessionRouting.next(facts(suspended, nodes: [node(1)], request: .write, onlyWrites: true)) == .place(from: suspended.ownership, nodeGone: nil))
        // A running session is served whatever the request.
        #expect(SessionRouting.next(facts(session(.running, on: 2), nodes: [node(2)], request: .read, onlyWrites: true)) == .forward(node(2)))
    }
}

/// Quitting a session wherever it is (`SessionQuitting`): each case of the row and its owner.
@Suite struct SessionQuittingTests {
    @Test func aQuitAsksALiveOwnerAndTakesOverWhatNothingRuns() {
        let running = SessionOwnership(node: 2, state: .running)
        #expect(SessionQuitting.next(running, ownerAlive: true) == .askOwner)
        // Its node died with its process: the quit claims the row and removes it here.
        #expect(SessionQuitting.next(running, ownerAlive: false) == .claimAndRemove(from: running))
        let suspended = SessionOwnership(node: nil, state: .suspended)
        #expect(SessionQuitting.next(suspended, ownerAlive: false) == .claimAndRemove(from: suspended))
        // A row left quitting by a dead node is taken over; one another quit holds is waited for.
        let leftQuitting = SessionOwnership(node: 2, state: .quitting)
        #expect(SessionQuitting.next(leftQuitting, ownerAlive: false) == .claimAndRemove(from: leftQuitting))
        #expect(SessionQuitting.next(SessionOwnership(node: nil, state: .quitting), ownerAlive: false) == .waitForAnotherQuit)
        // A start or a stop under way on a live owner: the owner is asked (it waits for it).
        #expect(SessionQuitting.next(SessionOwnership(node: 2, state: .starting), ownerAlive: true) == .askOwner)
    }
}
