@testable import DroverCluster
import DroverKernel
import Foundation
import Testing

/// Whether a node starts a session placed on it (issue 36: launch admission as a pure
/// decision): the facts in, the answer out, no process and no sleep. Node 1 is this node.
@Suite struct SessionAdmissionTests {
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let kind = SessionKind.legacy(command: "/bin/true", file: "rserver.conf")
    static let alice = SessionProcess.Account(name: "alice", uid: 1001, gid: 1001, home: "/home/alice")

    static func row(_ node: Int64?, _ state: SessionState, user: String = "alice") -> SessionRecord {
        SessionRecord(id: "s1", username: user, ownership: SessionOwnership(node: node, state: state), createdAt: now, lastActive: now, label: nil)
    }

    @Test func upToTheLimitStartsAreAdmittedAndTheNextIsToldToRetry() {
        #expect(SessionAdmission.admit(.init(isStopping: false, starting: 0, limit: 2)) == .admit)
        #expect(SessionAdmission.admit(.init(isStopping: false, starting: 1, limit: 2)) == .admit)
        #expect(SessionAdmission.admit(.init(isStopping: false, starting: 2, limit: 2)) == .refuseBusy(limit: 2))
        #expect(SessionAdmission.admit(.init(isStopping: false, starting: 7, limit: 2)) == .refuseBusy(limit: 2))
    }

    /// A stopping node starts nothing, however idle: its row is freed so the session is placed
    /// again elsewhere (a busy node's row is left for the caller's retry instead).
    @Test func aStoppingNodeRefusesFirstAndFreesTheRow() {
        #expect(SessionAdmission.admit(.init(isStopping: true, starting: 0, limit: 2)) == .refuseStopping)
        #expect(SessionAdmission.admit(.init(isStopping: true, starting: 5, limit: 2)) == .refuseStopping, "stopping before busy")
    }

    @Test func aRowStillWaitingHereOfAnOfferedKindAndAKnownUserIsStarted() {
        let placed = SessionAdmission.Placed(row: Self.row(1, .starting), selfID: 1, kind: Self.kind, account: Self.alice, effectiveUID: 0)
        #expect(SessionAdmission.start(placed) == .start(kind: Self.kind.name, user: "alice"))
        // Not root: only droverd's own user's sessions.
        var own = placed
        own.effectiveUID = 1001
        #expect(SessionAdmission.start(own) == .start(kind: Self.kind.name, user: "alice"))
        own.effectiveUID = 1002
        #expect(SessionAdmission.start(own) == .notOwnUser)
    }

    /// The races the chaos runs found, as rows: the session moved to another node, quit, or
    /// already running (another start won) while this start waited for admission.
    @Test func aRowThatNoLongerWaitsHereIsMoved() {
        for row in [Self.row(2, .starting), Self.row(nil, .suspended), Self.row(1, .running), Self.row(1, .quitting), nil] as [SessionRecord?] {
            let placed = SessionAdmission.Placed(row: row, selfID: 1, kind: Self.kind, account: Self.alice, effectiveUID: 0)
            #expect(SessionAdmission.start(placed) == .moved, "\(String(describing: row?.ownership))")
        }
        // A node not yet registered starts nothing.
        #expect(SessionAdmission.start(.init(row: Self.row(1, .starting), selfID: nil, kind: Self.kind, account: Self.alice, effectiveUID: 0)) == .moved)
    }

    @Test func aKindNotOfferedHereOrAUserWithoutAnAccountIsRefusedByName() {
        var lab = Self.row(1, .starting)
        lab.kind = "jupyterlab"
        #expect(SessionAdmission.start(.init(row: lab, selfID: 1, kind: nil, account: Self.alice, effectiveUID: 0)) == .kindUnavailable("jupyterlab"))
        #expect(SessionAdmission.start(.init(row: Self.row(1, .starting, user: "ghost"), selfID: 1, kind: Self.kind, account: nil, effectiveUID: 0))
                    == .noAccount("ghost"))
        // What the start answers with.
        #expect("\(SessionStarts.refusal(.noAccount("ghost"), session: "s1"))".contains("there is no system account 'ghost' on this node"))
        #expect("\(SessionStarts.refusal(.kindUnavailable("jupyterlab"), session: "s1"))".contains("a kind this node no longer offers"))
    }
}
