import DroverKernel
import Foundation
import Synchronization

/// Frees the registry rows this node's sessions left behind: those of its previous run (at
/// start), stops that ended half done, starts that never came, and copies of sessions another
/// node has taken over. Each is a compare-and-set, so a row someone else changed meanwhile is
/// left to them.
public struct RowRecovery: SessionManagerPart {
    let sessions: SessionManager

    public init(sessions: SessionManager) {
        self.sessions = sessions
    }

    /// Frees the rows this node owned in a previous run that ended without suspending them (it
    /// was killed, and restarted before its peers re-placed them): their processes died with
    /// it, so they become `suspended` and start again from their saved state at their next
    /// request; a quit that was under way is completed. Called once the node has joined, before
    /// it serves.
    /// - Returns: how many rows were freed or removed.
    @discardableResult
    public func releaseRowsOfPreviousRun() async -> Int {
        guard let self_ = runtime.nodeID else { return 0 }
        let rows: [SessionRecord]
        do {
            rows = try await store.sessions(matching: SessionFilter(node: self_, states: [.starting, .running, .suspending, .quitting]))
        } catch {
            runtime.events.emit(.previousRunUnreadable(error: "\(error)"))
            return 0
        }
        var released = 0
        for row in rows where supervisor.state(row.id) == nil {
            do {
                guard try await sessions.stops.release(row) else { continue }
                released += 1
                runtime.events.emit(.sessionReleased(session: row.id, was: row.ownership.state.rawValue))
                runtime.audit(.daemon, "session-recover", row.id, user: row.username,
                              reason: row.ownership.state == .quitting ? "its quit, left half done by this node's previous run, was completed"
                                : "left \(row.ownership.state.rawValue) by this node's previous run; suspended, it starts again from its saved state")
            } catch {
                runtime.events.emit(.sessionReleaseFailed(session: row.id, error: "\(error)"))
            }
        }
        if released > 0 { runtime.events.emit(.sessionsReleased(count: released)) }
        return released
    }

    /// Finishes the suspends and quits of this node that ended half done: the session's
    /// processes are gone but the row still says `suspending` or `quitting`, because the
    /// registry could not be written at the end (the node was cut off, the database restarted).
    /// Every request for such a session would wait on it for ever. Sessions still stopping here
    /// are left to their stop. Run every two seconds by ``SessionService``.
    public func completeInterruptedStops() async {
        guard let self_ = runtime.nodeID,
              let rows = try? await store.sessions(matching: SessionFilter(node: self_, states: [.suspending, .quitting])) else { return }
        let underWay = sessions.stopping.withLock { $0 }
        for row in rows where supervisor.state(row.id)?.isOver ?? true && !underWay.contains(row.id) {
            let released = (try? await sessions.stops.release(row)) == true
            supervisor.forget(row.id)
            sessions.routes.forget(row.id)
            // Not freed: the row changed meanwhile (its stop finished after all); nothing was recovered.
            guard released else { continue }
            runtime.events.emit(.sessionStopCompleted(session: row.id, was: row.ownership.state.rawValue))
            runtime.audit(.daemon, "session-recover", row.id, user: row.username,
                          reason: "its \(row.ownership.state == .quitting ? "quit" : "suspend"), left half done, was completed")
        }
    }

    /// Frees rows placed on this node to start whose start never came: the node that placed
    /// them died, or lost its connection, before its call arrived. Such a row stayed `starting`
    /// on a live node, and every request for the session waited on it. A row is freed
    /// (`suspended`: its next request starts it anew) once it has been so for three `timeout`s
    /// and five seconds, longer than a forwarded start takes to arrive, retries included. Run
    /// every two seconds by ``SessionService``. Time is the registry's clock, so a test moves it.
    public func freeOrphanedStarts() async {
        guard let self_ = runtime.nodeID,
              let rows = try? await store.sessions(matching: SessionFilter(node: self_, states: [.starting])),
              let now = try? await store.now() else { return }
        let timeout = runtime.loadBalancer.timeout
        let grace = TimeInterval(3 * (timeout > 0 ? timeout : 75) + 5)
        let orphans = Set(rows.map(\.id).filter { id in supervisor.state(id) == nil && !sessions.launching.withLock { $0.contains(id) } })
        let due: [String] = sessions.orphanedStarts.withLock { seen in
            seen = seen.filter { orphans.contains($0.key) }
            for id in orphans where seen[id] == nil { seen[id] = now }
            return seen.filter { now.timeIntervalSince($0.value) >= grace }.map(\.key)
        }
        for id in due {
            let freed = try? await store.transitionSession(id, from: SessionOwnership(node: self_, state: .starting),
                                                           to: SessionOwnership(node: nil, state: .suspended))
            if freed == true {
                runtime.events.emit(.orphanedStartFreed(session: id))
                runtime.audit(.daemon, "session-recover", id, reason: "placed on this node, its start never came; suspended")
            }
            sessions.orphanedStarts.withLock { _ = $0.removeValue(forKey: id) }
        }
    }

    /// Ends the sessions this node runs whose row no longer says so: another node re-placed
    /// them while this one looked dead (its heartbeats late through a database restart, say),
    /// or the row is gone. The row is the authority. Without this the copy here ran on behind a
    /// healthy guard that kept its lock, and every start elsewhere waited for that lock and
    /// failed, for as long as this node lived. The copy is suspended (its state saved for the
    /// new owner), or quit when the row is gone, and its lock given up. Run every two seconds by
    /// ``SessionService``; a registry that cannot be read changes nothing.
    public func releaseSessionsTakenAway() async {
        guard let self_ = runtime.nodeID else { return }
        let running = supervisor.ids.filter { supervisor.state($0)?.isRunning == true }
        // One read of this node's rows; only a session missing from them is looked up alone.
        guard !running.isEmpty, let mine = try? await store.sessions(matching: SessionFilter(node: self_)) else { return }
        let ours = Set(mine.map(\.id))
        for id in running where !ours.contains(id) {
            let row: SessionRecord?
            do {
                row = try await store.session(id)
            } catch {
                continue
            }
            if row?.ownership.node != self_ { await endTakenAway(id, row: row) }
        }
    }

    func endTakenAway(_ id: String, row: SessionRecord?) async {
        // A stop of its own may have begun meanwhile; that one finishes the session.
        guard supervisor.state(id)?.isRunning == true, let entry = supervisor.session(id) else { return }
        let owner = row.map { "\($0.ownership.node.map { "node \($0)" } ?? "no node") \($0.ownership.state.rawValue)" } ?? "no row"
        runtime.events.emit(.sessionTakenAway(session: id, row: owner))
        runtime.audit(.daemon, "session-end", id, user: entry.username, reason: "taken away: its row says \(owner); this copy was ended")
        // Gone, or being quit elsewhere: nothing to save. Otherwise the new owner resumes it
        // from what this copy saves now (it cannot start before this copy's lock is free).
        let quit = row == nil || row?.ownership.state == .quitting
        await supervisor.stop(id, quit ? .quit : .suspend)
        // A session saves when it is ended (SIGTERM as well as SIGUSR1), so a quit that was
        // completed elsewhere while this copy ran on would find its state back. It goes again.
        if quit, let account = await SessionProcess.lookUp(entry.username) { await sessions.stops.removeState(entry.stateDirectory, of: account) }
        await sessions.stops.finish(id, entry, quit ? .quit : .suspended)
    }
}
