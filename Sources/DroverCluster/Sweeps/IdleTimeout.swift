import DroverKernel
import Foundation
import Synchronization

/// `session-timeout-minutes`: writes the client activity this node noted to the registry, and
/// suspends this node's sessions that nobody used (README, "Idle sessions and limits"). Run by
/// the node's session services, each job in a loop of its own.
struct IdleTimeout: SessionManagerPart {
    let sessions: SessionManager

    /// `session-timeout-minutes` in seconds (0: off).
    var idleTimeout: Double { runtime.configuration.server.sessionTimeoutMinutes * 60 }

    /// How often ``flushActivity()`` and ``suspendIdle()`` run.
    public var activityInterval: Double { SessionActivity.interval(timeoutSeconds: idleTimeout) }

    /// Writes the activity noted since the last call to the registry; what cannot be written
    /// now is kept for the next call.
    func flushActivity() async {
        for (id, time) in sessions.activity.take() {
            do {
                try await store.touchSession(id, at: time)
            } catch {
                sessions.activity.note(id, at: time)
            }
        }
    }

    /// Suspends this node's running sessions that have had no client activity for
    /// `session-timeout-minutes` (and one interval more: activity noted by another node
    /// reaches the registry within an interval). Their state is saved as in any suspend; the
    /// next request resumes them.
    func suspendIdle() async {
        let timeout = idleTimeout
        guard timeout > 0, let node = runtime.nodeID, !runtime.isStopping else { return }
        guard let now = try? await store.now(),
              let running = try? await store.sessions(matching: SessionFilter(node: node, states: [.running])) else { return }
        let minutes = runtime.configuration.server.sessionTimeoutMinutes
        let idle = running.filter { now.timeIntervalSince($0.lastActive) > timeout + activityInterval }
        // Each in a task of its own (a few at a time): one program slow to say what it does
        // (each has ``ProgramActivity/answerSeconds``) holds no other session's suspend back.
        await withTaskGroup(of: Void.self) { group in
            for (index, session) in idle.enumerated() {
                if index >= 8 { await group.next() }
                group.addTask { await self.suspendIfIdle(session, now: now, timeout: timeout, minutes: minutes) }
            }
        }
    }

    /// Suspends `session`, idle by its client's activity, unless its program (a kind with its
    /// own activity source) says it is working or was used since.
    func suspendIfIdle(_ session: SessionRecord, now: Date, timeout: Double, minutes: Double) async {
        do {
            var idle = Int(now.timeIntervalSince(session.lastActive))
            var what = "client activity"
            if let kind = runtime.configuration.kinds[session.kind], kind.activity == .jupyter {
                // The program's own view: running work, or activity newer than the client's.
                var report: ProgramActivity?
                if let endpoint = supervisor.runningEndpoint(session.id) {
                    report = await ProgramActivity.readJupyter(endpoint, base: kind.basePath == .keep ? "/s/\(session.id)/" : "/")
                }
                if let report {
                    let latest = report.busy ? now : report.lastActivity
                    if let latest, latest > session.lastActive {
                        // Written as activity: the dashboard shows it, and the next sweeps need not ask.
                        try? await store.touchSession(session.id, at: min(latest, now))
                        if now.timeIntervalSince(latest) <= timeout + activityInterval { return }
                        idle = Int(now.timeIntervalSince(latest))
                    }
                }
                what = report == nil ? "client writes (its Jupyter API did not answer)" : "running kernel, kernel or terminal activity, or client writes"
            }
            try await sessions.suspend(session.id, by: .daemon,
                              reason: "idle: no \(what) for \(idle) s (session-timeout-minutes=\(String(format: "%g", minutes)))")
        } catch {
            // Reported by the suspend's audit row; the next sweep tries again.
        }
    }
}
