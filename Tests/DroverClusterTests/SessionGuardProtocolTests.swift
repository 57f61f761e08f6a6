import DroverKernel
import DroverSessionProtocol
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

    /// The watchdog reads the clock and then the stamps the guard's other threads keep; a stamp
    /// made between the two reads is later than its `now`. That is a word just heard, not
    /// centuries of silence (a healthy session was ended "droverd-silent" that way, about one
    /// in 3,600 in a burst of starts).
    @Test func aStampMadeAfterTheWatchdogReadTheClockIsNoSilence() {
        let second: UInt64 = 1_000_000_000
        let now = 500 * second
        func verdict(refresh: UInt64, word: UInt64) -> SessionGuardProtocol.EndReason? {
            SessionGuardProtocol.watchdogVerdict(now: now, lastRefresh: refresh, lastWord: word,
                                                 leaseBound: 9 * second, silenceBound: 3 * second)
        }
        #expect(verdict(refresh: now - second, word: now + 1_000) == nil)
        #expect(verdict(refresh: now + 1_000, word: now - second) == nil)
        #expect(verdict(refresh: now + 1_000, word: now + 1_000) == nil)
        // The bounds themselves still hold, the lease judged first.
        #expect(verdict(refresh: now - second, word: now - 3 * second) == nil)
        #expect(verdict(refresh: now - second, word: now - 3 * second - 1) == .droverdSilent)
        #expect(verdict(refresh: now - 9 * second - 1, word: now - second) == .leaseLost)
        #expect(verdict(refresh: now - 9 * second - 1, word: now - 4 * second) == .leaseLost)
    }
}
