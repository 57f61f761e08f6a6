import DroverKernel
import DroverSessionProtocol

/// What happens to a session running on this node: its guard's reports, and droverd's own
/// steps (the session answered, a stop was asked for).
enum SessionEvent: Sendable, Equatable {
    /// The session's lock stayed held elsewhere; nothing was started.
    case lockBusy(String)
    /// Its main process runs as `pid`.
    case started(pid: Int32, isolation: String)
    /// It answers on its socket and its row says `running`: the launch is complete.
    case answered
    /// droverd asked it to stop (suspend, or quit).
    case stopRequested(SessionStop)
    /// Every process of it is gone, and why: its main process exited on its own (`exited`), the
    /// lease was lost, droverd was silent, it could not start, or it stopped as asked.
    case ended(SessionGuardProtocol.EndReason, status: Int32, detail: String)
    /// Its guard exited (or was killed) without saying the session ended first.
    case guardGone
    /// Its guard took the session's lock, breaking a stale one when `brokeStale` (the state
    /// does not change: lock metrics).
    case locked(brokeStale: Bool)
    /// Its guard refreshed the session's lock (the state does not change: lock metrics).
    case lockRefreshed
    /// A refresh of its lock failed; the guard ends the session if none succeeds in time.
    case lockRefreshFailed(String)
}

/// The two ways droverd stops a session.
enum SessionStop: String, Sendable, Equatable {
    case suspend, quit
}

/// One local session's life as a state machine: every change is an event applied by
/// ``next(on:)``, which is pure, so each path (a crash while starting, an exit during a
/// suspend, a guard that dies) is unit-tested without processes.
///
/// ```
/// launching ─started→ starting ─answered→ running ─stopRequested→ stopping ─ended→ finished
///     │                  │                    │
///     └─lockBusy, ended, guardGone→ failedToStart      └─ended, guardGone→ ended (reaped)
/// ```
enum SessionLifecycle: Sendable, Equatable {
    /// Its guard runs; the lock and the process are not reported yet.
    case launching
    /// Its process runs; it does not answer yet.
    case starting(pid: Int32)
    /// It answers, and its row says so: requests go to it.
    case running(pid: Int32)
    /// A suspend or quit is under way: its end is that stop's, not a crash.
    case stopping(pid: Int32, SessionStop)
    /// It ended before its launch was complete; the launcher reports why.
    case failedToStart(String)
    /// It ended without being asked (exited, lease lost, droverd silent, guard gone): its row
    /// is freed by the next sweep, so the next request starts it again.
    case ended(reason: String, detail: String)
    /// Stopped as asked; nothing of it is left.
    case finished

    func next(on event: SessionEvent) -> SessionLifecycle {
        switch (self, event) {
        case (.launching, .started(let pid, _)):
            return .starting(pid: pid)
        case (.launching, .lockBusy(let message)):
            return .failedToStart(message)
        case (.launching, .ended(let reason, _, let detail)):
            return .failedToStart(detail.isEmpty ? "it ended before it started (\(reason.rawValue))" : detail)
        case (.launching, .guardGone):
            return .failedToStart("its guard exited before starting it")
        case (.starting, .ended(let reason, let status, let detail)):
            // How the command ended, for "the session command … before answering".
            return .failedToStart(reason == .exited ? "exited (status \(status >> 8))" : "ended (\(reason.rawValue): \(detail))")
        case (.starting, .guardGone):
            return .failedToStart("ended (its guard exited)")
        case (.starting(let pid), .answered):
            return .running(pid: pid)
        case (.starting(let pid), .stopRequested(let stop)), (.running(let pid), .stopRequested(let stop)):
            return .stopping(pid: pid, stop)
        case (.running, .ended(let reason, let status, let detail)):
            let why = reason == .exited ? "exited (status \(status >> 8))" : reason.rawValue
            return .ended(reason: why, detail: detail)
        case (.running, .guardGone):
            return .ended(reason: "guard-died", detail: "its guard exited")
        case (.stopping, .ended), (.stopping, .guardGone):
            return .finished
        case (.failedToStart(let message), .answered):
            // Its row was marked running just as it ended: the sweep frees it.
            return .ended(reason: "failed", detail: message)
        case (.failedToStart, .stopRequested), (.ended, .stopRequested):
            // Nothing any more to stop. (While launching, the guard's report of the stop ends
            // the launch: see the first cases.)
            return .finished
        default:
            return self
        }
    }

    /// The main process, while there is one.
    var pid: Int32? {
        switch self {
        case .starting(let pid), .running(let pid), .stopping(let pid, _): pid
        default: nil
        }
    }

    /// Requests may go to it.
    var isRunning: Bool {
        if case .running = self { return true }
        return false
    }

    /// Ended without being asked, once running: the sweep frees its row.
    var needsReaping: Bool {
        if case .ended = self { return true }
        return false
    }

    /// Nothing of it runs any more.
    var isOver: Bool {
        switch self {
        case .failedToStart, .ended, .finished: true
        default: false
        }
    }
}
