import DroverKernel
import DroverSessionProtocol
import Foundation
import Synchronization

/// Stopping sessions, the cluster's side: suspending, quitting and moving a session wherever
/// it runs (on its owner, here or by a signed call; what nothing runs any more is taken over
/// by compare-and-set: ``SessionQuitting``), this node's own stops (the row through
/// `suspending`/`quitting`, the guard's stop, the saved state), the sessions that ended on
/// their own, and the rows this node frees. Carried out for ``SessionManager``, whose state
/// (the stops under way) it shares, as the sweeps do.
struct SessionStops: SessionManagerPart {
    let sessions: SessionManager

    /// Suspends a session wherever it runs: SIGUSR1, a grace period to save its state, then
    /// SIGKILL; the row becomes `suspended` with no node.
    func suspend(_ id: String, by actor: AuditRecord.Actor, reason: String? = nil) async throws {
        guard let session = try await store.session(id) else { throw SessionError.notFound }
        do {
            try await onOwner(session, .suspend(id)) { try await self.suspendLocal(id) }
            runtime.audit(actor, "session-suspend", id, user: session.username, node: session.ownership.node, reason: reason ?? "")
        } catch {
            runtime.audit(actor, "session-suspend", id, user: session.username, node: session.ownership.node, result: "failed", reason: (reason.map { $0 + ": " } ?? "") + "\(error)")
            throw error
        }
    }

    /// Moves a session to `node` (the admin dashboard's choice), or with nil where the balancer
    /// places it (a drain: the session's own node is in offline mode, so not a candidate):
    /// suspended where it runs (its state saved), then started there at once, so its user finds
    /// it running. Each step is ``SessionMoving``'s decision on the row as it is now.
    /// - Returns: the session as it runs now.
    @discardableResult
    func move(_ id: String, to node: Int64?, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        guard let first = try await store.session(id) else { throw SessionError.notFound }
        let asked = node.map { "to node \($0), asked for" } ?? "placed by the balancer (drain)"
        do {
            if let node {
                let read = try await store.nodesWithClock()
                guard let target = read.nodes.first(where: { $0.id == node }),
                      target.isServing(now: read.now, heartbeatInterval: runtime.loadBalancer.heartbeatInterval) else {
                    throw SessionError.unavailable("node \(node) is not serving; pick an Online node")
                }
            }
            var facts = SessionMoving.Facts(row: first.ownership, from: first.ownership.node, target: node)
            // Waiting for a start where the move wanted it (its user's request resumed it there).
            let deadline = runtime.clock.now() + .seconds(runtime.configuration.server.sessionResponseTimeout)
            var session = first
            while true {
                switch SessionMoving.next(facts) {
                case .askOwnerToSuspend:
                    facts.suspendAsked = true
                    try await onOwner(session, .suspend(id)) { try await self.suspendLocal(id) }
                case .place(let from):
                    facts.placeTried = true
                    let placed = if let node {
                        try await store.placeExistingSession(id, from: from, choose: { _ in node })
                    } else {
                        try await sessions.engine().placeExisting(session, from: from)?.0
                    }
                    if let placed {
                        do {
                            let launched = try await sessions.starts.launchOnOwnerOrFree(placed)
                            runtime.audit(actor, "session-move", id, user: first.username, node: launched.ownership.node, reason: asked)
                            return launched
                        } catch SessionError.moved {}
                    }
                case .done:
                    runtime.audit(actor, "session-move", id, user: first.username, node: session.ownership.node,
                                  reason: asked + "; resumed there meanwhile by a request of its user")
                    return session
                case .waitForStart:
                    try await Task.sleep(for: .milliseconds(100))
                case .gone:
                    throw SessionError.notFound
                case .changed:
                    throw SessionError.moved("session \(id) changed while it was moved; try again")
                }
                guard let now = try await store.session(id) else { throw SessionError.notFound }
                session = now
                facts.row = now.ownership
                facts.pastDeadline = runtime.clock.now() >= deadline
            }
        } catch {
            runtime.audit(actor, "session-move", id, user: first.username, node: node, result: "failed", reason: "\(asked): \(error)")
            throw error
        }
    }

    /// Ends a session wherever it runs and removes it; returns only once its row is gone. The
    /// session may move meanwhile (its node restarted, or another request resumed it), so each
    /// step is checked against the row and taken again on its new owner, a few times at most.
    func quit(_ id: String, by actor: AuditRecord.Actor) async throws {
        guard let session = try await store.session(id) else { throw SessionError.notFound }
        do {
            try await quitWherever(session)
            runtime.audit(actor, "session-quit", id, user: session.username, node: session.ownership.node)
        } catch {
            runtime.audit(actor, "session-quit", id, user: session.username, node: session.ownership.node, result: "failed", reason: "\(error)")
            throw error
        }
    }

    func quitWherever(_ first: SessionRecord) async throws {
        let id = first.id
        var session = first
        for attempt in 1...8 {
            switch SessionQuitting.next(session.ownership, ownerAlive: try await ownerIsAlive(session.ownership)) {
            case .waitForAnotherQuit:
                break
            case .claimAndRemove(let ownership):
                // Claimed for this node by compare-and-set, so a resume racing with us cannot
                // lose its process, and so that, should this node die before the row is gone, it
                // completes the quit when it comes back (`RowRecovery.releaseRowsOfPreviousRun`).
                let removed = try await whileStopping(id) {
                    guard try await store.transitionSession(id, from: ownership, to: SessionOwnership(node: runtime.nodeID, state: .quitting)) else {
                        return false
                    }
                    // The saved state goes first: a row left `quitting` gets its quit
                    // completed, a state folder without a row would stay for ever.
                    await removeSavedState(session)
                    _ = try await store.deleteSession(id)
                    return true
                }
                if removed {
                    routes.forget(id)
                    return
                }
            case .askOwner:
                try await onOwner(session, .quit(id)) { try await self.quitLocal(id) }
            }
            guard let now = try await store.session(id) else {
                routes.forget(id)
                return
            }
            session = now
            try await Task.sleep(for: .milliseconds(100 * attempt))
        }
        throw SessionError.unavailable("session \(id) kept moving while it was being quit; try again")
    }

    /// Whether the node owning a session is up (Online or in offline mode, and not
    /// Unreachable); false when the session has no owner or the owner is gone.
    func ownerIsAlive(_ ownership: SessionOwnership) async throws -> Bool {
        let read = try await store.nodesWithClock()
        guard let owner = ownership.node, let node = read.nodes.first(where: { $0.id == owner }) else { return false }
        return node.isServing(now: read.now, heartbeatInterval: runtime.loadBalancer.heartbeatInterval)
    }

    /// Runs `body` if this node owns the session, else asks the owner by a signed call.
    func onOwner(_ session: SessionRecord, _ call: TypedCall<NoContent>, _ body: () async throws -> Void) async throws {
        guard let owner = session.ownership.node else { return }
        if owner == runtime.nodeID { return try await body() }
        guard let node = (try await store.nodes()).first(where: { $0.id == owner }) else { throw SessionError.unavailable("its node \(owner) is gone") }
        do {
            _ = try await runtime.client.call(call, on: node, answerWithin: stopBound)
        } catch let refusal as PeerRefusal {
            throw SessionError.unavailable("node \(owner) could not \(call.call.name) the session: \(refusal.message)")
        }
    }

    /// Runs `body`, the stop of session `id`, with it marked as under way on this node.
    func whileStopping<T>(_ id: String, _ body: () async throws -> T) async throws -> T {
        sessions.stopping.withLock { _ = $0.insert(id) }
        defer { sessions.stopping.withLock { _ = $0.remove(id) } }
        return try await body()
    }

    func suspendLocal(_ id: String) async throws {
        try await whileStopping(id) { try await suspendHere(id) }
    }

    func suspendHere(_ id: String) async throws {
        guard let self_ = runtime.nodeID, let entry = supervisor.session(id) else {
            // Not running here: a row left running by this node's previous life is simply freed.
            if let row = try await store.session(id), row.ownership.node == runtime.nodeID {
                _ = try await store.transitionSession(id, from: row.ownership, to: SessionOwnership(node: nil, state: .suspended))
            }
            return
        }
        if let pid = entry.state.pid {
            let running = SessionOwnership(node: self_, state: .running, pid: pid)
            _ = try await store.transitionSession(id, from: running, to: SessionOwnership(node: self_, state: .suspending, pid: pid))
        }
        // SIGUSR1, the grace to save, then every process of the session is ended.
        let started = runtime.clock.now()
        await supervisor.stop(id, .suspend)
        runtime.metrics.suspendLatency.record(.now - started)
        if case .ended(.suspended, _, let detail) = supervisor.session(id)?.end, !detail.isEmpty {
            runtime.events.emit(.sessionKilledAfterGrace(session: id))
        }
        // Peers forget their route before the row says suspended: a client that waits for
        // that (the API's state) and asks again through another node is routed afresh there,
        // not sent on a hop to this node.
        routes.forget(id)
        await sessions.announceMove(id)
        _ = try await store.transitionSession(id, from: SessionOwnership(node: self_, state: .suspending), to: SessionOwnership(node: nil, state: .suspended))
        await finish(id, entry, .suspended, announce: false)
    }

    func quitLocal(_ id: String) async throws {
        try await whileStopping(id) { try await quitHere(id) }
    }

    func quitHere(_ id: String) async throws {
        guard let self_ = runtime.nodeID, let entry = supervisor.session(id) else {
            if let row = try await store.session(id), row.ownership.node == runtime.nodeID {
                _ = try await release(row, quitting: true)
            }
            return
        }
        if let pid = entry.state.pid {
            _ = try await store.transitionSession(id, from: SessionOwnership(node: self_, state: .running),
                                                  to: SessionOwnership(node: self_, state: .quitting, pid: pid))
        }
        await supervisor.stop(id, .quit)
        // State before row: should this node die in between, the row it left `quitting` has
        // its quit completed when the node comes back.
        if let account = await SessionProcess.lookUp(entry.username) { await removeState(entry.stateDirectory, of: account) }
        _ = try await store.deleteSession(id)
        await finish(id, entry, .quit)
    }

    /// A quit session's saved state goes with it.
    func removeSavedState(_ session: SessionRecord) async {
        guard let account = await SessionProcess.lookUp(session.username) else { return }
        await removeState(account.stateDirectory(session.id), of: account)
    }

    /// Deletes a session's state folder as its user, never as root (the user controls every
    /// name on the way there).
    func removeState(_ path: String, of account: SessionProcess.Account) async {
        _ = await SessionProcess.runAsUser(account, ["/bin/rm", "-rf", "--", path])
    }

    func finish(_ id: String, _ entry: SessionSupervisor.Supervised, _ how: NodeEvent.StopOutcome, announce: Bool = true) async {
        supervisor.forget(id)
        routes.forget(id)
        runtime.events.emit(.sessionStopped(session: id, user: entry.username, how: how))
        if announce { await sessions.announceMove(id) }
    }

    /// Suspends every session of this node (`drover suspend-all`, and SIGTERM before the node
    /// goes `Offline`).
    func suspendAll(by actor: AuditRecord.Actor) async -> Int {
        let ids = sessions.localSessionIDs()
        await withTaskGroup(of: Void.self) { group in
            for id in ids {
                group.addTask {
                    let user = self.supervisor.session(id)?.username
                    do {
                        try await self.suspendLocal(id)
                        self.runtime.audit(actor, "session-suspend", id, user: user)
                    } catch {
                        self.runtime.events.emit(.sessionSuspendFailed(session: id, error: "\(error)"))
                        self.runtime.audit(actor, "session-suspend", id, user: user, result: "failed", reason: "\(error)")
                    }
                }
            }
        }
        return ids.count
    }

    /// Frees a row of this node whose session runs nowhere: a quit under way is completed (row
    /// and saved state removed), anything else becomes `suspended`, by compare-and-set.
    /// - Returns: whether the row was freed (false: it changed meanwhile).
    func release(_ row: SessionRecord, quitting: Bool = false) async throws -> Bool {
        if quitting || row.ownership.state == .quitting {
            // The saved state first, then the row: a row still there gets its quit completed.
            await removeSavedState(row)
            return try await store.deleteSession(row.id)
        }
        return try await store.transitionSession(row.id, from: row.ownership, to: SessionOwnership(node: nil, state: .suspended))
    }

    /// Notices sessions that ended without being asked: their main process exited, or their
    /// guard ended them (lease lost, droverd silent) or died. The row is freed (`suspended`), so
    /// the next request starts it again from its saved state — except for a session that went
    /// over its memory limit: it is held (``SessionRecord/hold``), and its next request is told
    /// so, with a way to start it again, rather than starting it into the same end.
    ///
    /// One pass at a time: the half-second sweep and a request that meets an ended session both
    /// reap. Two passes over one session logged, audited and counted its end twice (a proof run
    /// saw `drover_session_memory_limit_kills_total` at 2), and a request that did not wait for
    /// the pass under way could free a row that pass was about to hold.
    func reapExited() async {
        let pass = sessions.reaps.withLock { last -> Task<Void, Never> in
            let previous = last
            let pass = Task { [self] in
                await previous?.value
                await reapEnded()
            }
            last = pass
            return pass
        }
        await pass.value
    }

    private func reapEnded() async {
        guard let self_ = runtime.nodeID else { return }
        for (id, entry) in supervisor.ended() {
            guard case .ended(let reason, let detail) = entry.state else { continue }
            runtime.events.emit(.sessionEnded(session: id, reason: "\(reason)", detail: detail))
            runtime.audit(.daemon, "session-end", id, user: entry.username, reason: detail.isEmpty ? "\(reason)" : "\(reason): \(detail)")
            let running = SessionOwnership(node: self_, state: .running)
            if reason == SessionGuardProtocol.EndReason.memoryLimit.rawValue {
                runtime.metrics.memoryLimitKill(kind: entry.kind)
                _ = try? await store.holdSession(id, from: running, reason: detail)
            } else {
                _ = try? await store.transitionSession(id, from: running, to: SessionOwnership(node: nil, state: .suspended))
            }
            await finish(id, entry, .exited)
        }
    }

    /// How long a suspend or quit forwarded to the owner may take: the session's grace period
    /// to save its state, then the kill.
    var stopBound: NodeClient.AnswerBound {
        NodeClient.AnswerBound(seconds: Int(sessions.suspendGrace) + 10, setting: "the time a session may take to save its state")
    }
}
