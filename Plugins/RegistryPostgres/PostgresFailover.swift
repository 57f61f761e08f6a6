public import Foundation
import Synchronization

/// The servers whose pooled connections must all be dropped: one of their connections was
/// lost, or the server refused a write as read-only. A connection opened before its server was
/// abandoned is closed when next borrowed, so the pool moves to the new primary in one step
/// instead of failing once per pooled connection.
final class AbandonedServers: Sendable {
    private struct State {
        var generation: UInt64 = 0
        /// Server (`host:port`) → the generation at which it was abandoned.
        var abandoned: [String: UInt64] = [:]
    }
    private let state = Mutex(State())

    /// The generation a connection opened now carries.
    var generation: UInt64 { state.withLock { $0.generation } }

    func abandon(_ server: String) {
        state.withLock {
            $0.generation += 1
            $0.abandoned[server] = $0.generation
        }
    }

    /// Whether a connection to `server`, opened at generation `openedAt`, predates the
    /// server's last abandonment.
    func isAbandoned(_ server: String, openedAt: UInt64) -> Bool {
        state.withLock { $0.abandoned[server].map { $0 > openedAt } ?? false }
    }
}

/// What this process last read of the registry server's clock, to move liveness times onto
/// another server's clock after a failover.
///
/// A node is `Unreachable` when its `last_seen`, written by the database server's clock, is
/// three heartbeat intervals older than that clock's `now()`. A failover moves the registry to
/// another machine, and with it to another clock: every time written by the old one would look
/// older (or younger) by the difference. And while there was no primary, no node could write
/// its heartbeat: every row is as old as the failover was long. Either way healthy nodes would
/// look `Unreachable` and have their sessions re-placed. So every new connection compares the
/// server it reached (address and postmaster start: a standby promoted behind the same name
/// counts as another server) with the one this process last read the clock of; if they differ,
/// the stored times move by the new `now()` less the last one read from the old server: each
/// row is as old on the new clock as it was at that last reading, and the time without a
/// primary counts against no one. ``SQLRegistry/rebaseClock(server:offset:_:)`` does it once
/// across the cluster.
public final class RegistryClockReading: Sendable {
    private struct Reading {
        var server: String
        var now: Date
        var at: ContinuousClock.Instant
    }
    private let last = Mutex<Reading?>(nil)

    public init() {}

    /// The clock of `server` read `now`, at `at` on this machine's monotonic clock.
    public func read(_ now: Date, on server: String, at: ContinuousClock.Instant = .now) {
        last.withLock { $0 = Reading(server: server, now: now, at: at) }
    }

    /// For a new connection to `server` whose clock says `now`, nil when this process read
    /// no clock yet, else:
    /// - `shift`: how far to move the stored times (0 for the same server);
    /// - `clockOffset`: how far the new clock is ahead of the old one, carried forward by this
    ///   machine's monotonic clock (for the log); `shift` less this is the time without a primary.
    public func rebase(of server: String, now: Date, at: ContinuousClock.Instant = .now) -> (shift: Double, clockOffset: Double)? {
        last.withLock { last -> (shift: Double, clockOffset: Double)? in
            guard let last else { return nil }
            guard last.server != server else { return (0, 0) }
            let elapsed = at - last.at
            let carried = last.now.addingTimeInterval(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
            return (now.timeIntervalSince(last.now), now.timeIntervalSince(carried))
        }
    }
}
