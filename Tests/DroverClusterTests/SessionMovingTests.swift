@testable import DroverCluster
import DroverKernel
import Testing

/// The move of a session (dashboard or drain) as a sequence of rows and decisions: no process,
/// no sleep. Node 1 is where the session ran, node 2 the target, node 3 another node.
@Suite struct SessionMovingTests {
    typealias Facts = SessionMoving.Facts
    static func row(_ node: Int64?, _ state: SessionState) -> SessionOwnership { SessionOwnership(node: node, state: state) }

    @Test func aRunningSessionIsSuspendedWhereItRunsThenPlacedAndDone() {
        var facts = Facts(row: Self.row(1, .running), from: 1, target: 2)
        #expect(SessionMoving.next(facts) == .askOwnerToSuspend)
        facts.suspendAsked = true
        facts.row = Self.row(nil, .suspended)
        #expect(SessionMoving.next(facts) == .place(from: Self.row(nil, .suspended)))
        facts.placeTried = true
        facts.row = Self.row(2, .running)
        #expect(SessionMoving.next(facts) == .done, "started on the target")
    }

    @Test func aSuspendedSessionIsPlacedAtOnce() {
        let facts = Facts(row: Self.row(nil, .suspended), from: nil, target: 2)
        #expect(SessionMoving.next(facts) == .place(from: Self.row(nil, .suspended)))
        #expect(SessionMoving.next(Facts(row: Self.row(nil, .suspended), from: nil, target: nil)) == .place(from: Self.row(nil, .suspended)))
    }

    /// During a drain its user's client keeps asking: a suspended session starts on use, so the
    /// move may find it resumed by that request. Anywhere but the draining node is the drain
    /// done; for a move to node 2, only node 2 is.
    @Test func aSessionItsUserResumedMeanwhileIsTheMoveDoneOnlyWhereTheMoveWantedIt() {
        var drain = Facts(row: Self.row(3, .running), from: 1, target: nil, suspendAsked: true, placeTried: true)
        #expect(SessionMoving.next(drain) == .done)
        drain.row = Self.row(1, .running)
        #expect(SessionMoving.next(drain) == .changed, "back on the draining node after the move placed it: try again")

        var move = Facts(row: Self.row(3, .running), from: 1, target: 2, suspendAsked: true, placeTried: true)
        #expect(SessionMoving.next(move) == .changed, "resumed on node 3, not the node asked for")
        move.row = Self.row(2, .running)
        #expect(SessionMoving.next(move) == .done)
    }

    @Test func aStartWhereTheMoveWantedItIsAwaitedUpToTheResponseTimeout() {
        var facts = Facts(row: Self.row(2, .starting), from: 1, target: 2, suspendAsked: true, placeTried: true)
        #expect(SessionMoving.next(facts) == .waitForStart)
        facts.pastDeadline = true
        #expect(SessionMoving.next(facts) == .changed)
    }

    @Test func whatTheMoveCannotFinishIsSaidSo() {
        #expect(SessionMoving.next(Facts(row: nil, from: 1, target: 2)) == .gone)
        // Its owner was asked and it still runs there (or it was resumed on it again).
        #expect(SessionMoving.next(Facts(row: Self.row(1, .running), from: 1, target: 2, suspendAsked: true)) == .changed)
        // Placed once, suspended again (its start failed and was freed): not placed twice.
        #expect(SessionMoving.next(Facts(row: Self.row(nil, .suspended), from: 1, target: 2, suspendAsked: true, placeTried: true)) == .changed)
        // Stopping on the target: not what the move was for.
        #expect(SessionMoving.next(Facts(row: Self.row(2, .suspending), from: 1, target: 2, suspendAsked: true, placeTried: true)) == .changed)
        // Already on the target when asked: moved again there (suspended, placed, started).
        #expect(SessionMoving.next(Facts(row: Self.row(2, .running), from: 2, target: 2)) == .askOwnerToSuspend)
    }
}
