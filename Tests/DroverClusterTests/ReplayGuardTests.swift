import DroverKernel
import DroverCluster
import Foundation
import Testing

/// The replay bookkeeping of signed requests and hop openings (issue 34, item 4): insertion and
/// expiry without copying the table, bounded memory, and a user's flood of openings that cannot
/// deny the cluster's own internal calls or another user's openings.
@Suite struct ReplayGuardTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func aNonceIsAcceptedOnceUntilItsTimestampHasLeftTheWindow() {
        let guard_ = ReplayGuard()
        let stamp = start.timeIntervalSince1970
        #expect(guard_.accept(nonce: "n1", timestamp: stamp, now: start))
        #expect(!guard_.accept(nonce: "n1", timestamp: stamp, now: start.addingTimeInterval(1)))
        // Still refused while a timestamp that old or that new could be valid anywhere.
        #expect(!guard_.accept(nonce: "n1", timestamp: stamp, now: start.addingTimeInterval(2 * InternalRequestSignature.allowedSkew)))
        // Gone once it cannot be: the table does not grow for ever.
        #expect(guard_.accept(nonce: "n2", timestamp: stamp + 200, now: start.addingTimeInterval(200)))
        #expect(guard_.counts.internalCalls == 1)
        #expect(guard_.accept(nonce: "n1", timestamp: stamp + 200, now: start.addingTimeInterval(200)), "n1 expired and was dropped")
        // Openings are a table of their own.
        #expect(guard_.acceptOpening(nonce: "n2", timestamp: stamp + 200, user: "alice", now: start.addingTimeInterval(200)) == .accepted)
        #expect(guard_.acceptOpening(nonce: "n2", timestamp: stamp + 200, user: "alice", now: start.addingTimeInterval(201)) == .replayed)
    }

    @Test func oneUsersFloodOfOpeningsDeniesNeitherTheClusterNorAnotherUser() {
        let guard_ = ReplayGuard(capacity: 1000, perUser: 100)
        let stamp = start.timeIntervalSince1970
        for n in 0..<100 {
            #expect(guard_.acceptOpening(nonce: "flood-\(n)", timestamp: stamp, user: "mallory", now: start) == .accepted)
        }
        #expect(guard_.acceptOpening(nonce: "flood-100", timestamp: stamp, user: "mallory", now: start) == .ownerFull)
        #expect(guard_.acceptOpening(nonce: "alice-1", timestamp: stamp, user: "alice", now: start) == .accepted)
        for n in 0..<500 { #expect(guard_.accept(nonce: "call-\(n)", timestamp: stamp, now: start)) }
        // The flood's share frees as its nonces expire.
        let later = start.addingTimeInterval(2 * InternalRequestSignature.allowedSkew + 3)
        #expect(guard_.acceptOpening(nonce: "flood-101", timestamp: later.timeIntervalSince1970, user: "mallory", now: later) == .accepted)
        #expect(guard_.counts.openings == 1, "the expired ones were dropped whole")
    }

    @Test func aFullTableRefusesRatherThanForgets() {
        let guard_ = ReplayGuard(capacity: 50, perUser: 50)
        let stamp = start.timeIntervalSince1970
        for n in 0..<50 { #expect(guard_.accept(nonce: "c\(n)", timestamp: stamp, now: start)) }
        #expect(!guard_.accept(nonce: "c50", timestamp: stamp, now: start), "no room: refused, never an old nonce forgotten early")
        #expect(!guard_.accept(nonce: "c0", timestamp: stamp, now: start))
        #expect(guard_.counts.internalCalls == 50)
    }

    @Test func aQuarterOfAMillionNoncesStayWithinTheirBound() {
        // Many seconds of a steady stream: the table holds only the window's worth.
        let guard_ = ReplayGuard(capacity: 1_000_000, perUser: 1_000_000)
        for second in 0..<500 {
            let now = start.addingTimeInterval(Double(second))
            for n in 0..<500 {
                _ = guard_.acceptOpening(nonce: "\(second)-\(n)", timestamp: now.timeIntervalSince1970, user: "u", now: now)
            }
        }
        let window = Int(2 * InternalRequestSignature.allowedSkew) + 3
        #expect(guard_.counts.openings <= window * 500, "\(guard_.counts.openings) nonces kept")
    }
}
