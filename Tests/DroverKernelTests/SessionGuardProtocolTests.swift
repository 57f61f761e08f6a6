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

    /// A guard refreshes every refresh-rate or every third of the lease bound, whichever is
    /// sooner, so one late refresh cannot end a session: the defaults (20, 30) refresh every
    /// 9 s against a bound of 27 s; the suite's scaled (4, 6) every 1.8 s against 5.4 s.
    @Test func aGuardRefreshesWellInsideItsLease() {
        #expect(SessionGuardProtocol.refreshInterval(refreshRate: 20, timeoutInterval: 30) == 9)
        #expect(abs(SessionGuardProtocol.refreshInterval(refreshRate: 4, timeoutInterval: 6) - 1.8) < 1e-9)
        #expect(SessionGuardProtocol.refreshInterval(refreshRate: 2, timeoutInterval: 30) == 2, "a shorter refresh-rate is kept")
        for (rate, timeout) in [(20, 30), (4, 6), (1, 2), (60, 600)] {
            let bound = SessionGuardProtocol.leaseBound(timeoutInterval: timeout)
            #expect(bound - SessionGuardProtocol.refreshInterval(refreshRate: rate, timeoutInterval: timeout) >= bound * 2 / 3 - 1e-9)
        }
    }
}
