import DroverKernel
import DroverSessionProtocol
import Foundation
import Synchronization

/// Starting sessions, the cluster's side: placing a new session and starting it on its owner
/// (here, or by a signed call), and starting a session placed on this node (admission under
/// `max-starting-sessions`, the guard, the kind's readiness check, the row to `running`). A
/// start that fails leaves no row `starting`. Carried out for ``SessionManager``, whose state
/// (the starts under way) it shares, as the sweeps do.
struct SessionStarts: SessionManagerPart {
    let sessions: SessionManager

    /// Places a new session for `username` and starts it, here or on the chosen node.
    func create(username: String, label: String?, kind asked: String? = nil, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        do {
            let kind = try await sessions.admitKind(asked, for: username)
            let session = try await placeAndLaunch(username: username, label: label, kind: kind.name)
            runtime.audit(actor, "session-create", session.id, user: username, node: session.ownership.node, reason: "kind \(kind.name)")
            return session
        } catch {
            runtime.audit(actor, "session-create", "-", user: username, node: nil, result: "failed",
                          reason: (asked.map { "kind \(SessionManager.shown($0)): " } ?? "") + "\(error)")
            throw error
        }
    }

    func placeAndLaunch(username: String, label: String?, kind: String) async throws -> SessionRecord {
        let now = try await store.now()
        let record = SessionRecord(id: Crypto.randomBytes(16).hexString, username: username,
                                   ownership: SessionOwnership(node: nil, state: .starting), createdAt: now, lastActive: now, label: label,
                                   kind: kind)
        for attempt in 1... {
            // `max-sessions-per-user`: every session of the user counts, suspended ones too (each
            // can be resumed at any time), counted by the registry in the step that inserts the
            // new one, so starts at once through several nodes cannot pass it together.
            let placed: SessionRecord
            do {
                placed = try await sessions.engine().placeNew(record, userLimit: runtime.configuration.server.maxSessionsPerUser).0
            } catch RegistryError.userLimitReached(let user, let count, let limit) {
                throw SessionError.limitReached("\(user) has \(count) sessions, the most allowed (max-sessions-per-user=\(limit)); quit one to start another")
            }
            do {
                // A new session: no node can have a route to it cached, so nobody is told it moved.
                return try await launchOnOwner(placed, isNew: true)
            } catch {
                // No half-made session: a row whose process never ran goes.
                if let row = try? await store.session(placed.id), row.ownership == placed.ownership {
                    _ = try? await store.deleteSession(placed.id)
                }
                // Placed on a node that began stopping meanwhile: it has left placement by
                // now (it does so before refusing), so the next placement goes elsewhere.
                if case SessionError.stopping = error, attempt < 3 { continue }
                throw error
            }
        }
        preconditionFailure("unreachable")
    }

    /// Starts a placed session on its owner: here, or by a signed call to the owning node.
    func launchOnOwner(_ session: SessionRecord, isNew: Bool = false) async throws -> SessionRecord {
        guard let owner = session.ownership.node else { throw SessionError.launchFailed("the session has no node") }
        if owner == runtime.nodeID { return try await launch(session.id, isNew: isNew) }
        var known = runtime.view.first { $0.id == owner }
        if known == nil { known = try await store.nodes().first { $0.id == owner } }
        guard let node = known else { throw SessionError.launchFailed("node \(owner) is gone") }
        do {
            _ = try await callRetryingConnects(.launch(session.id, isNew: isNew), on: node)
        } catch let refusal as PeerRefusal {
            throw refusal.sessionError(node: [429, 421, 503, 409].contains(refusal.status) ? "node \(owner)" : "node \(owner) (\(node.host):\(node.port))")
        }
        guard let stored = try await store.session(session.id) else { throw SessionError.notFound }
        return stored
    }

    /// Sends a call to `node`, trying again (twice, briefly) when no connection could be made:
    /// the request was not sent then, so a start cannot run twice, and a node that is busy (a
    /// burst of starts on a loaded machine) is not taken for one that is gone.
    func callRetryingConnects<Answer>(_ call: TypedCall<Answer>, on node: NodeRecord) async throws -> Answer {
        for attempt in 1... {
            do {
                return try await runtime.client.call(call, on: node, answerWithin: launchBound)
            } catch NodeClient.Failure.notConnected(let peer, let reason) where attempt < 3 {
                runtime.events.emit(.startConnectRetry(peer: peer, reason: reason))
                try await Task.sleep(for: .milliseconds(250 * attempt))
            }
        }
        preconditionFailure("unreachable")
    }

    /// How long a start forwarded to the owner may take: the owner may wait for the session's
    /// lock to go stale, then for the session to answer (a local start waits as long).
    var launchBound: NodeClient.AnswerBound {
        NodeClient.AnswerBound(seconds: runtime.configuration.fileLocks.timeoutInterval + 5 + Int(sessions.startTimeout) + 5,
                               setting: "the time a session may take to start")
    }

    /// Starts the process of a session placed on this node (state `starting`), unless the node
    /// already starts `max-starting-sessions` sessions.
    /// - Parameters:
    ///   - isNew: the session's first start: no peer can have a route to it, so none is told
    ///     (under a burst of starts those calls were most of the node-to-node traffic).
    func launch(_ id: String, isNew: Bool = false) async throws -> SessionRecord {
        let (isStopping, limit) = (runtime.isStopping, runtime.configuration.server.maxStartingSessions)
        // Decided and counted in one locked step (``SessionAdmission/admit(_:)``).
        let admission = sessions.starting.withLock { count in
            let admission = SessionAdmission.admit(.init(isStopping: isStopping, starting: count, limit: limit))
            if admission == .admit { count += 1 }
            return admission
        }
        switch admission {
        case .admit:
            break
        case .refuseStopping:
            await freeFailedStart(id, isNew: isNew)
            throw SessionError.stopping("this node is stopping and starts no session; it is placed again elsewhere")
        case .refuseBusy(let limit):
            throw SessionError.busy("this node is starting \(limit) sessions already (max-starting-sessions in rserver.conf); retry shortly")
        }
        sessions.launching.withLock { _ = $0.insert(id) }
        defer {
            sessions.starting.withLock { $0 -= 1 }
            sessions.launching.withLock { _ = $0.remove(id) }
        }
        do {
            return try await launchAdmitted(id, isNew: isNew)
        } catch {
            await freeFailedStart(id, isNew: isNew)
            throw error
        }
    }

    /// A start that failed here leaves no row behind in `starting` (where every request would
    /// wait for it): a new session's row goes, a resumed one's is `suspended` again, so its next
    /// request starts it anew. Done by the owner itself, since the node that asked for the start
    /// may be gone (killed meanwhile); its own clean-up then finds nothing to do.
    func freeFailedStart(_ id: String, isNew: Bool) async {
        guard let self_ = runtime.nodeID, supervisor.state(id) == nil,
              let row = try? await store.session(id), row.ownership == SessionOwnership(node: self_, state: .starting) else { return }
        if isNew {
            _ = try? await store.deleteSession(id)
        } else {
            _ = try? await store.transitionSession(id, from: row.ownership, to: SessionOwnership(node: nil, state: .suspended))
        }
    }

    func launchAdmitted(_ id: String, isNew: Bool) async throws -> SessionRecord {
        // The facts for ``SessionAdmission/start(_:)``: the account is looked up only for a row
        // that still waits here, of a kind offered here.
        let row = try await store.session(id)
        var placed = SessionAdmission.Placed(row: row, selfID: runtime.nodeID, kind: row.flatMap { runtime.configuration.kinds[$0.kind] },
                                             account: nil, effectiveUID: geteuid())
        if let row, row.ownership == SessionOwnership(node: placed.selfID, state: .starting), placed.kind != nil {
            placed.account = await SessionProcess.lookUp(row.username)
        }
        let decision = SessionAdmission.start(placed)
        guard case .start = decision, let self_ = placed.selfID, let session = row, let kind = placed.kind, let account = placed.account else {
            throw Self.refusal(decision, session: id)
        }
        let stateDirectory = account.stateDirectory(id)
        let plan = try sessions.launchPlan(id, kind: kind, account: account)
        let started = runtime.clock.now()
        let pid = try await supervisor.start(id, spec: plan.spec, endpoint: plan.endpoint, username: account.name,
                                             stateDirectory: stateDirectory) { [runtime] in runtime.mayTellGuardsAlive() }
        do {
            try await waitUntilAnswering(id: id, kind: kind, plan: plan, account: account, log: stateDirectory + "/session.log")
            let running = SessionOwnership(node: self_, state: .running, pid: pid)
            guard try await store.transitionSession(id, from: SessionOwnership(node: self_, state: .starting), to: running) else {
                throw SessionError.moved("session \(id) was moved while it started")
            }
            supervisor.apply(.answered, to: id)
            if let endpoint = supervisor.runningEndpoint(id) { routes.remember(id, .local(endpoint), username: account.name, kind: kind.name) }
            (isNew ? runtime.metrics.startLatency : runtime.metrics.resumeLatency).record(.now - started)
            runtime.events.emit(.sessionStarted(session: id, user: account.name, pid: pid, isolation: supervisor.session(id)?.isolation ?? "?"))
            if !isNew { await sessions.announceMove(id) }
            return try await store.session(id) ?? session
        } catch {
            await supervisor.abandon(id, within: sessions.suspendGrace + 5)
            runtime.events.emit(.sessionStartFailed(session: id, error: "\(error)"))
            throw error
        }
    }

    /// The error a refused start (``SessionAdmission/start(_:)``) answers with.
    static func refusal(_ decision: SessionAdmission.Start, session id: String) -> SessionError {
        switch decision {
        case .start, .moved:
            .moved("session \(id) is no longer waiting to start on this node; it was moved meanwhile")
        case .kindUnavailable(let name):
            .kindUnavailable("session \(id) is a '\(SessionManager.shown(name))' session, a kind this node no longer offers")
        case .noAccount(let user):
            .launchFailed("there is no system account '\(user)' on this node")
        case .notOwnUser:
            .launchFailed("droverd runs as \(SessionProcess.currentAccount?.name ?? "uid \(geteuid())") and can only start its own user's sessions; run it as root")
        }
    }

    /// Waits until the session answers its kind's readiness check at its endpoint, on a
    /// connection whose listener was verified (being bound is not being up).
    func waitUntilAnswering(id: String, kind: SessionKind, plan: SessionLaunchPlan, account: SessionProcess.Account, log: String) async throws {
        let deadline = runtime.clock.now() + .milliseconds(Int(plan.startTimeout * 1000))
        while true {
            // The cgroup is known once the guard reported the start.
            let endpoint = supervisor.session(id)?.endpoint ?? plan.endpoint
            if await supervisor.launcher.answers(endpoint, path: plan.readyPath) { return }
            let state = supervisor.state(id) ?? .failedToStart("it is gone")
            let failed: String? = switch state {
            case .failedToStart(let why): "\(why) before answering"
            case .ended(let reason, let detail): "ended (\(reason)\(detail.isEmpty ? "" : ": \(detail)")) before answering"
            default: runtime.clock.now() < deadline ? nil : "did not answer \(plan.readyPath) within its start-timeout (\(Int(plan.startTimeout)) s)"
            }
            if let failed {
                // The log's tail, read with the user's rights: what the user could read anyway.
                // Secrets removed: the session's own never reaches a message.
                var tail = await SessionProcess.runAsUser(account, ["/usr/bin/tail", "-c", "600", "--", log])
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                if let secret = plan.endpoint.secret?.value { tail = tail.replacingOccurrences(of: secret, with: "[secret]") }
                throw SessionError.launchFailed("the '\(kind.name)' session \(failed)" + (tail.isEmpty ? "" : "; the end of its log: \(tail)"))
            }
            try await Task.sleep(for: .milliseconds(40))
        }
    }

    /// Launches a re-placed session; if that fails, frees the row again (suspended) so a later
    /// request can retry, and reports the failure.
    func launchOnOwnerOrFree(_ placed: SessionRecord) async throws -> SessionRecord {
        do {
            return try await launchOnOwner(placed)
        } catch {
            // Only the placement made here: a start another request made meanwhile is its own.
            if let node = placed.ownership.node {
                _ = try? await store.transitionSession(placed.id, from: SessionOwnership(node: node, state: .starting),
                                                       to: SessionOwnership(node: nil, state: .suspended))
            }
            throw error
        }
    }
}
