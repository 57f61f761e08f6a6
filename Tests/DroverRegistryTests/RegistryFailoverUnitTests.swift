import Foundation
@testable import RegistryPostgres
import Testing

/// The parts of the PostgreSQL store's failover that need no server: which pooled connections
/// go when a server fails, and how far a new server's clock is from the one last read.
@Suite struct RegistryFailoverUnitTests {
    @Test func aFailedServerTakesItsOlderConnectionsWithItAndNoOthers() {
        let abandoned = AbandonedServers()
        let before = abandoned.generation
        abandoned.abandon("10.0.0.1:5432")
        #expect(abandoned.isAbandoned("10.0.0.1:5432", openedAt: before), "a connection opened before the failure goes")
        #expect(!abandoned.isAbandoned("10.0.0.2:5432", openedAt: before), "one to another server stays")
        #expect(!abandoned.isAbandoned("10.0.0.1:5432", openedAt: abandoned.generation), "one opened after the failure stays")
        let reopened = abandoned.generation
        abandoned.abandon("10.0.0.2:5432")
        #expect(!abandoned.isAbandoned("10.0.0.1:5432", openedAt: reopened), "another server's failure leaves it")
        #expect(abandoned.isAbandoned("10.0.0.2:5432", openedAt: reopened))
    }

    @Test func aNewServersClockIsMeasuredAgainstTheOldOneAndTheOutageForgiven() {
        let clock = RegistryClockReading()
        let start = ContinuousClock.now
        #expect(clock.rebase(of: "a", now: Date(), at: start) == nil, "a process that never read a clock cannot measure one")
        let old = Date(timeIntervalSince1970: 1_000_000)
        clock.read(old, on: "a started 1", at: start)
        #expect(clock.rebase(of: "a started 1", now: old.addingTimeInterval(99), at: start + .seconds(99)).map { $0.shift == 0 && $0.clockOffset == 0 } == true,
                "the same server: nothing to move")
        // 12.5 s without a primary here; the new server's clock is 40 s ahead, so it says
        // old + 52.5 s. Every row moves by 52.5 s: as old on the new clock as at the last
        // reading, the time without a primary counting against no one.
        let ahead = try! #require(clock.rebase(of: "b started 2", now: old.addingTimeInterval(52.5), at: start + .milliseconds(12_500)))
        #expect(abs(ahead.clockOffset - 40) < 1e-6, "clock offset \(ahead.clockOffset)")
        #expect(abs(ahead.shift - 52.5) < 1e-6, "shift \(ahead.shift)")
        let behind = try! #require(clock.rebase(of: "a started 3", now: old.addingTimeInterval(-19.7), at: start + .milliseconds(300)))
        #expect(abs(behind.clockOffset + 20) < 1e-6, "a clock behind: offset \(behind.clockOffset)")
        #expect(abs(behind.shift + 19.7) < 1e-6)
    }
}
