import DroverKernel
import Testing

@Suite struct SessionGuardProtocolTests {
    /// The guard says whether it broke a stale lock to take it (droverd counts lock breaks);
    /// a bare `locked` from a guard of the previous version still reads.
    @Test func aLockTakenOverFromADeadHolderIsReportedAsSuch() {
        for event in [SessionGuardProtocol.Event.locked(brokeStale: true), .locked(brokeStale: false), .refreshed, .refreshFailed("disk full")] {
            #expect(SessionGuardProtocol.Event(line: event.line.dropLast()) == event, "\(event.line)")
        }
        #expect(SessionGuardProtocol.Event.locked(brokeStale: true).line == "locked broke-stale\n")
        #expect(SessionGuardProtocol.Event(line: "locked") == .locked(brokeStale: false))
    }
}
