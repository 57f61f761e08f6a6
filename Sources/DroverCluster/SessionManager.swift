public import DroverKernel
import DroverSessionProtocol
import Foundation
import Logging
import NIOHTTP1
import NIOPosix
import Synchronization

/// Where a session can be reached: on this node at its Unix socket, or through another node.
public enum SessionRoute: Sendable, Equatable {
    case local(SessionEndpoint)
    /// Another node: its address, and the name its certificate carries (``NodeClient/tlsName(of:)``).
    case remote(host: String, port: Int, name: String? = nil)

    /// A session of this node on the guard's socket (`session-command`'s kind).
    public static func local(socket path: String) -> SessionRoute { .local(.guardSocket(path)) }
}

/// Starts, suspends, resumes, moves and quits sessions; the cluster's side of the session runtime (docs/ARCHITECTURE.md).
/// It ties the parts together: the registry rows (claimed by compare-and-set), placement
/// (``PlacementEngine``), this node's running sessions (``SessionSupervisor``), the proxy's
/// routes (``RouteCache``) and the calls to other nodes.
///
/// A session runs on at most one node: on the owner, a guard process
/// (``SessionGuardHandle``, `drover-session-guard`) takes the session's cross-node lock on
/// shared storage, keeps it fresh, and ends every process of the session before the lock
/// could be judged stale anywhere.
public final class SessionManager: Sendable {
    public let runtime: NodeRuntime
    let lockDirectory: String
    /// Sessions whose process this node runs.
    let supervisor: SessionSupervisor
    /// Owners looked up recently, so the proxy does not read the registry for every request.
    let routes: RouteCache
    /// Client activity noted here, waiting to be written (the idle timeout's input).
    let activity = SessionActivity()
    /// The sessions' last CPU readings (``resourceReports()``).
    let cpuReadings = CPUReadings()
    /// Seconds a suspending session gets to save its state before it is killed.
    let suspendGrace: Double = 10
    /// Seconds the slowest kind gets to answer its readiness check (`start-timeout`).
    var startTimeout: Double { Double(runtime.configuration.kinds.kinds.map(\.startTimeout).max() ?? 30) }
    /// Starts under way on this node, bounded by `max-starting-sessions`.
    private let starting = Mutex(0)
    /// The sessions whose start this node is carrying out now.
    let launching = Mutex<Set<String>>([])
    /// The sessions whose suspend or quit this node is carrying out now: between the process's
    /// end and the row's last write they look like a stop left half done, and
    /// ``RowRecovery/completeInterruptedStops()`` must leave them to their stop.
    let stopping = Mutex<Set<String>>([])
    /// When this node last removed audit rows past `audit-retention-days`.
    /// Rows `starting` on this node with no start here, and when each was first seen so.
    let orphanedStarts = Mutex<[String: Date]>([:])

    public convenience init(runtime: NodeRuntime) {
        let ticker = AliveTicker { [events = runtime.events] late, took, guards in
            events.emit(.aliveTickLate(late: late, took: took, guards: guards))
        }
        self.init(runtime: runtime, launcher: GuardLauncher(ticker: ticker))
    }

    init(runtime: NodeRuntime, launcher: any SessionLauncher) {
        self.runtime = runtime
        routes = RouteCache(now: runtime.clock.now)
        supervisor = SessionSupervisor(launcher: launcher) { [runtime] id, event, _ in
            // What the guards say of the leases reaches the node's log, diagnostics and metrics.
            runtime.metrics.lock(event)
            switch event {
            case .lockRefreshFailed(let message):
                runtime.events.emit(.sessionLockRefreshFailed(session: id, error: message))
            case .ended(let reason, _, let detail) where reason == .leaseLost || reason == .droverdSilent:
                runtime.events.emit(.sessionLeaseEnded(session: id, reason: reason.rawValue, detail: detail))
            default:
                break
            }
        }
        let config = runtime.configuration
        lockDirectory = (config.server.sharedStoragePath ?? config.server.dataDirectory + "/shared") + "/sessions"
    }

    /// A command whose program is a relative path runs from the configuration directory.
    static func resolveCommand(_ command: String, against directory: String) -> String {
        let trimmed = command.trimmingCharacters(in: .whitespaces)
        guard let first = trimmed.split(separator: " ").first, first.contains("/"), !first.hasPrefix("/") else { return trimmed }
        return directory + "/" + trimmed
    }

    var store: any RegistryStore { runtime.store }
    var logger: Logger { runtime.logger }
    var membership: ClusterMembership { ClusterMembership(runtime: runtime) }

    func engine() -> PlacementEngine {
        PlacementEngine(store: store, strategy: runtime.balancer, heartbeatInterval: runtime.loadBalancer.heartbeatInterval,
                        diagnostics: runtime.diagnostics, countPlacement: { [metrics = runtime.metrics] in metrics.placement(strategy: $0, outcome: $1, took: $2) },
                        maxSessionsPerNode: runtime.loadBalancer.maxSessionsPerNode)
    }

    /// The sessions this node runs.
    public func localSessionIDs() -> [String] { supervisor.ids }

    /// The node's metrics as Prometheus text, with its sessions by phase and its status read now.
    public func metricsExposition() -> [UInt8] {
        let status = runtime.view.first { $0.id == runtime.nodeID }?.status
        let kinds = runtime.configuration.kinds
        return runtime.metrics.exposition(sessionsByState: supervisor.countsByPhase, sessionsByKind: supervisor.countsByKind,
                                          kinds: kinds.names, status: status, resources: resourceReports(),
                                          limits: Dictionary(uniqueKeysWithValues: kinds.kinds.map { ($0.name, $0.limits) }))
    }

    // MARK: creating and launching

    /// Places a new session for `username` and starts it, here or on the chosen node.
    public func create(username: String, label: String?, kind asked: String? = nil, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        do {
            let kind = try await admitKind(asked, for: username)
            let session = try await placeAndLaunch(username: username, label: label, kind: kind.name)
            runtime.audit(actor, "session-create", session.id, user: username, node: session.ownership.node, reason: "kind \(kind.name)")
            return session
        } catch {
            runtime.audit(actor, "session-create", "-", user: username, node: nil, result: "failed",
                          reason: (asked.map { "kind \(Self.shown($0)): " } ?? "") + "\(error)")
            throw error
        }
    }

    private func placeAndLaunch(username: String, label: String?, kind: String) async throws -> SessionRecord {
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
                placed = try await engine().placeNew(record, userLimit: runtime.configuration.server.maxSessionsPerUser).0
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
    private func callRetryingConnects<Answer>(_ call: TypedCall<Answer>, on node: NodeRecord) async throws -> Answer {
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
        NodeClient.AnswerBound(seconds: runtime.configuration.fileLocks.timeoutInterval + 5 + Int(startTimeout) + 5,
                               setting: "the time a session may take to start")
    }

    /// How long a suspend or quit forwarded to the owner may take: the session's grace period
    /// to save its state, then the kill.
    var stopBound: NodeClient.AnswerBound {
        NodeClient.AnswerBound(seconds: Int(suspendGrace) + 10, setting: "the time a session may take to save its state")
    }

    /// Starts the process of a session placed on this node (state `starting`), unless the node
    /// already starts `max-starting-sessions` sessions.
    /// - Parameters:
    ///   - isNew: the session's first start: no peer can have a route to it, so none is told
    ///     (under a burst of starts those calls were most of the node-to-node traffic).
    public func launch(_ id: String, isNew: Bool = false) async throws -> SessionRecord {
        if runtime.isStopping {
            await freeFailedStart(id, isNew: isNew)
            throw SessionError.stopping("this node is stopping and starts no session; it is placed again elsewhere")
        }
        let limit = runtime.configuration.server.maxStartingSessions
        let admitted = starting.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
        guard admitted else {
            throw SessionError.busy("this node is starting \(limit) sessions already (max-starting-sessions in rserver.conf); retry shortly")
        }
        launching.withLock { _ = $0.insert(id) }
        defer {
            starting.withLock { $0 -= 1 }
            launching.withLock { _ = $0.remove(id) }
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
    private func freeFailedStart(_ id: String, isNew: Bool) async {
        guard let self_ = runtime.nodeID, supervisor.state(id) == nil,
              let row = try? await store.session(id), row.ownership == SessionOwnership(node: self_, state: .starting) else { return }
        if isNew {
            _ = try? await store.deleteSession(id)
        } else {
            _ = try? await store.transitionSession(id, from: row.ownership, to: SessionOwnership(node: nil, state: .suspended))
        }
    }

    private func launchAdmitted(_ id: String, isNew: Bool) async throws -> SessionRecord {
        guard let self_ = runtime.nodeID, let session = try await store.session(id),
              session.ownership.node == self_, session.ownership.state == .starting else {
            throw SessionError.moved("session \(id) is no longer waiting to start on this node; it was moved meanwhile")
        }
        guard let kind = runtime.configuration.kinds[session.kind] else {
            throw SessionError.kindUnavailable("session \(id) is a '\(Self.shown(session.kind))' session, a kind this node no longer offers")
        }
        guard let account = await SessionProcess.lookUp(session.username) else {
            throw SessionError.launchFailed("there is no system account '\(session.username)' on this node")
        }
        if geteuid() != 0, account.uid != geteuid() {
            throw SessionError.launchFailed("droverd runs as \(SessionProcess.currentAccount?.name ?? "uid \(geteuid())") and can only start its own user's sessions; run it as root")
        }
        let stateDirectory = account.stateDirectory(id)
        let plan = try launchPlan(id, kind: kind, account: account)
        let started = ContinuousClock.now
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
            if !isNew { await announceMove(id) }
            return try await store.session(id) ?? session
        } catch {
            await supervisor.abandon(id, within: suspendGrace + 5)
            runtime.events.emit(.sessionStartFailed(session: id, error: "\(error)"))
            throw error
        }
    }

    /// Waits until the session answers its kind's readiness check at its endpoint, on a
    /// connection whose listener was verified (being bound is not being up).
    func waitUntilAnswering(id: String, kind: SessionKind, plan: SessionLaunchPlan, account: SessionProcess.Account, log: String) async throws {
        let deadline = Date().addingTimeInterval(plan.startTimeout)
        while true {
            // The cgroup is known once the guard reported the start.
            let endpoint = supervisor.session(id)?.endpoint ?? plan.endpoint
            if await supervisor.launcher.answers(endpoint, path: plan.readyPath) { return }
            let state = supervisor.state(id) ?? .failedToStart("it is gone")
            let failed: String? = switch state {
            case .failedToStart(let why): "\(why) before answering"
            case .ended(let reason, let detail): "ended (\(reason)\(detail.isEmpty ? "" : ": \(detail)")) before answering"
            default: Date() < deadline ? nil : "did not answer \(plan.readyPath) within its start-timeout (\(Int(plan.startTimeout)) s)"
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

    // MARK: suspending and quitting

    /// Suspends a session wherever it runs: SIGUSR1, a grace period to save its state, then
    /// SIGKILL; the row becomes `suspended` with no node.
    public func suspend(_ id: String, by actor: AuditRecord.Actor, reason: String? = nil) async throws {
        guard let session = try await store.session(id) else { throw SessionError.notFound }
        do {
            try await onOwner(session, .suspend(id)) { try await self.suspendLocal(id) }
            runtime.audit(actor, "session-suspend", id, user: session.username, node: session.ownership.node, reason: reason ?? "")
        } catch {
            runtime.audit(actor, "session-suspend", id, user: session.username, node: session.ownership.node, result: "failed", reason: (reason.map { $0 + ": " } ?? "") + "\(error)")
            throw error
        }
    }

    /// What a client did, for the idle timeout.
    public enum ClientActivity: Sendable {
        /// A request that changes nothing (`GET`, `HEAD`, `OPTIONS`) and opens no page: a page's
        /// scripts polling, fetching, or opening a WebSocket.
        case read
        /// Any other request, or a page opened in the browser (a navigation).
        case write
    }

    /// Client activity on session `id`, through this node (the proxy's; see ``SessionActivity``).
    /// For a kind whose program reports its own activity (`activity=jupyter`), only the client's
    /// writes count: its reads are the open page's polling, its frames reach the program, which
    /// counts them itself (the proxy asks ``countsOnlyWrites(_:)`` and does not note those).
    public func noteActivity(_ id: String) {
        activity.note(id)
    }

    /// Whether session `id` (of the kind its route was found with) counts only its client's writes.
    public func countsOnlyWrites(_ id: String) -> Bool {
        routes.fresh(id).map { countsOnlyWrites(kind: $0.kind) } ?? false
    }

    func countsOnlyWrites(kind: String) -> Bool {
        runtime.configuration.kinds[kind]?.activity == .jupyter
    }

    /// Moves a session to `node` (the admin dashboard's choice), or with nil where the balancer
    /// places it (a drain: the session's own node is in offline mode, so not a candidate):
    /// suspended where it runs (its state saved), then started there at once, so its user finds
    /// it running.
    /// - Returns: the session as it runs now.
    @discardableResult
    public func move(_ id: String, to node: Int64?, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        guard var session = try await store.session(id) else { throw SessionError.notFound }
        let asked = node.map { "to node \($0), asked for" } ?? "placed by the balancer (drain)"
        let from = session.ownership.node
        do {
            if let node {
                let read = try await store.nodesWithClock()
                guard let target = read.nodes.first(where: { $0.id == node }),
                      target.isServing(now: read.now, heartbeatInterval: runtime.loadBalancer.heartbeatInterval) else {
                    throw SessionError.unavailable("node \(node) is not serving; pick an Online node")
                }
            }
            if session.ownership.state != .suspended {
                try await onOwner(session, .suspend(id)) { try await self.suspendLocal(id) }
                guard let now = try await store.session(id) else { throw SessionError.notFound }
                session = now
            }
            let placed: SessionRecord?
            if session.ownership.state != .suspended {
                placed = nil
            } else if let node {
                placed = try await store.placeExistingSession(id, from: session.ownership, choose: { _ in node })
            } else {
                placed = try await engine().placeExisting(session, from: session.ownership)?.0
            }
            var launched: SessionRecord?
            if let placed {
                do { launched = try await launchOnOwnerOrFree(placed) } catch SessionError.moved {}
            }
            if let launched {
                runtime.audit(actor, "session-move", id, user: session.username, node: launched.ownership.node, reason: asked)
                return launched
            }
            guard let resumed = try await resumedMeanwhile(id, from: from, to: node) else {
                throw SessionError.moved("session \(id) changed while it was moved; try again")
            }
            runtime.audit(actor, "session-move", id, user: session.username, node: resumed.ownership.node,
                          reason: asked + "; resumed there meanwhile by a request of its user")
            return resumed
        } catch {
            runtime.audit(actor, "session-move", id, user: session.username, node: node, result: "failed", reason: "\(asked): \(error)")
            throw error
        }
    }

    /// After a move lost its race for the suspended row: a request of the session's user may
    /// have resumed it meanwhile (a suspended session starts on use, and the user's client keeps
    /// asking during a drain). That is the move done when the session runs (or is starting, then
    /// awaited) where the move wanted it: on `node`, or for a drain anywhere but `from`.
    private func resumedMeanwhile(_ id: String, from: Int64?, to node: Int64?) async throws -> SessionRecord? {
        let deadline = ContinuousClock.now + .seconds(runtime.configuration.server.sessionResponseTimeout)
        while let now = try await store.session(id), let at = now.ownership.node, at != from, node == nil || at == node {
            if now.ownership.state == .running { return now }
            guard now.ownership.state == .starting, ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    /// Ends a session wherever it runs and removes it; returns only once its row is gone. The
    /// session may move meanwhile (its node restarted, or another request resumed it), so each
    /// step is checked against the row and taken again on its new owner, a few times at most.
    public func quit(_ id: String, by actor: AuditRecord.Actor) async throws {
        guard let session = try await store.session(id) else { throw SessionError.notFound }
        do {
            try await quitWherever(session)
            runtime.audit(actor, "session-quit", id, user: session.username, node: session.ownership.node)
        } catch {
            runtime.audit(actor, "session-quit", id, user: session.username, node: session.ownership.node, result: "failed", reason: "\(error)")
            throw error
        }
    }

    private func quitWherever(_ first: SessionRecord) async throws {
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
    private func ownerIsAlive(_ ownership: SessionOwnership) async throws -> Bool {
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
    private func whileStopping<T>(_ id: String, _ body: () async throws -> T) async throws -> T {
        stopping.withLock { _ = $0.insert(id) }
        defer { stopping.withLock { _ = $0.remove(id) } }
        return try await body()
    }

    public func suspendLocal(_ id: String) async throws {
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
        let started = ContinuousClock.now
        await supervisor.stop(id, .suspend)
        runtime.metrics.suspendLatency.record(.now - started)
        if case .ended(.suspended, _, let detail) = supervisor.session(id)?.end, !detail.isEmpty {
            runtime.events.emit(.sessionKilledAfterGrace(session: id))
        }
        // Peers forget their route before the row says suspended: a client that waits for
        // that (the API's state) and asks again through another node is routed afresh there,
        // not sent on a hop to this node.
        routes.forget(id)
        await announceMove(id)
        _ = try await store.transitionSession(id, from: SessionOwnership(node: self_, state: .suspending), to: SessionOwnership(node: nil, state: .suspended))
        await finish(id, entry, .suspended, announce: false)
    }

    public func quitLocal(_ id: String) async throws {
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
        if announce { await announceMove(id) }
    }

    /// Tells the other nodes that a session changed owner, so their proxies forget the old
    /// route at once instead of after its time to live.
    func announceMove(_ id: String) async {
        await membership.notifyPeers(.sessionMoved(.init(id: id)))
    }

    /// Suspends every session of this node (`drover suspend-all`, and SIGTERM before the node
    /// goes `Offline`).
    public func suspendAll(by actor: AuditRecord.Actor) async -> Int {
        let ids = localSessionIDs()
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
    public func reapExited() async {
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

    /// Starts again a session that was held (it went over its memory limit), at its user's
    /// word: the page its next request showed, or `POST /api/sessions/ID/start`.
    public func restart(_ id: String, username: String) async throws -> SessionRoute? {
        try await route(id, username: username, startingHeld: true)
    }

    // MARK: finding sessions for the proxy

    /// Forgets a cached owner (after a failed forward, or a peer saying the session moved).
    public func invalidateRoute(_ id: String) {
        routes.forget(id)
    }

    /// Forgets every cached route to the node at `host:port`: it has just (re)joined, and a
    /// node that comes back has freed the sessions of its previous run, so a request sent
    /// there on an old route would find its session gone (502 "moved while on its way").
    public func forgetRoutes(toHost host: String, port: Int) {
        // A route names the node's IPv4 address when it has one, and its name (for TLS) when
        // it is known by one: the notice names the node as it registered, so either may match.
        routes.forget { route in
            if case .remote(let to, port, let name) = route { to == host || name == host } else { false }
        }
    }

    /// A recently confirmed route, without touching the registry: the proxy's fast path.
    /// With whether the session's kind counts only its client's writes (``countsOnlyWrites(_:)``),
    /// from the same lookup.
    public func cachedRouteAndActivity(_ id: String, username: String) -> (route: SessionRoute, onlyWrites: Bool)? {
        guard let cached = freshRoute(id), cached.username == username else { return nil }
        return (cached.route, countsOnlyWrites(kind: cached.kind))
    }

    /// A cached route still fresh, unless it is to a session of this node that has ended
    /// (its socket answers no more).
    private func freshRoute(_ id: String) -> RouteCache.Entry? {
        guard let cached = routes.fresh(id) else { return nil }
        if case .local = cached.route, supervisor.hasEnded(id) { return nil }
        return cached
    }

    /// Where to send a request for session `id` of `username`, starting (or moving) the session
    /// first if it is suspended or its node is gone. nil when the session does not exist or
    /// belongs to someone else.
    /// - Parameters:
    ///   - startingHeld: start it even if it is held (its user asked); otherwise a held
    ///     session is ``SessionError/held(_:)``.
    ///   - request: what the request is. A read that is not a page opened (an open page's
    ///     polling) does not start a suspended session of a kind whose program reports its own
    ///     activity: the idle timeout suspended it with its page open, and only its user's
    ///     return (the page opened again, a write) starts it (``SessionError/suspended(_:)``).
    public func route(_ id: String, username: String, startingHeld: Bool = false, request: ClientActivity = .write) async throws -> SessionRoute? {
        if let cached = freshRoute(id) {
            return cached.username == username ? cached.route : nil
        }
        // Ended a moment ago (lease lost, exited): free its row now rather than at the next
        // sweep, so this request starts it again instead of meeting a dead socket.
        if supervisor.hasEnded(id) { await reapExited() }
        // A session being suspended (its node stopping, say), started or moved is waited for,
        // not answered with an error: as long as the proxy waits for a session's answer.
        let deadline = ContinuousClock.now + .seconds(runtime.configuration.server.sessionResponseTimeout)
        repeat {
            let session = try await store.session(id)
            let read = try await store.nodesWithClock()
            let facts = SessionRouting.Facts(
                session: session, username: username, nodes: read.nodes, now: read.now, heartbeatInterval: runtime.loadBalancer.heartbeatInterval,
                selfID: runtime.nodeID, runsLocalCopy: liveEndpoint(id) != nil, request: request,
                kindCountsOnlyWrites: session.map { countsOnlyWrites(kind: $0.kind) } ?? false, startingHeld: startingHeld)
            switch SessionRouting.next(facts) {
            case .notFound:
                return nil
            case .refuseHeld(let reason):
                throw SessionError.held(reason)
            case .refuseSuspendedRead:
                throw SessionError.suspended("session \(id) is suspended; open its page again (reload it) to start it")
            case .serveLocally:
                if let endpoint = liveEndpoint(id) { return remembered(.local(endpoint), session!) }
            case .forward(let node):
                return remembered(.remote(host: node.ipv4 ?? node.host, port: node.port, name: NodeClient.tlsName(of: node)), session!)
            case .free(let ownership):
                // Ours in the registry but not running here (a previous life of this node).
                _ = try await store.transitionSession(id, from: ownership, to: SessionOwnership(node: nil, state: .suspended))
            case .retry(let pause):
                try await Task.sleep(for: pause)
            case .place(let ownership, let nodeGone):
                if let nodeGone { runtime.events.emit(.sessionRePlaced(session: id, nodeStatus: nodeGone)) }
                if let route = try await resume(session!, from: ownership) { return remembered(route, session!) }
            }
        } while ContinuousClock.now < deadline
        throw SessionError.unavailable("session \(id) keeps moving; try again")
    }

    private func remembered(_ route: SessionRoute, _ session: SessionRecord) -> SessionRoute {
        routes.remember(session.id, route, username: session.username, kind: session.kind)
        return route
    }

    /// The endpoint of a session this node runs (or is finishing starting), unless it ended.
    private func liveEndpoint(_ id: String) -> SessionEndpoint? {
        supervisor.session(id).flatMap { $0.state.isOver ? nil : $0.endpoint }
    }

    /// Places a suspended (or orphaned) session again and starts it; nil when another node got
    /// there first (the caller looks again).
    private func resume(_ session: SessionRecord, from expected: SessionOwnership) async throws -> SessionRoute? {
        // Clear answers, not a loop of failed starts: a kind removed from the configuration, a
        // user who has left the kind's groups.
        guard let kind = runtime.configuration.kinds[session.kind] else {
            throw SessionError.kindUnavailable("session \(session.id) is a '\(Self.shown(session.kind))' session, and that kind is no longer configured; "
                + "quit it (its files stay in your home) and start another kind")
        }
        try await checkGroups(kind, session.username)
        guard let (placed, _) = try await engine().placeExisting(session, from: expected) else { return nil }
        // A move when its row still named a node (gone, or unreachable); a resume otherwise.
        let action = expected.node == nil ? "session-resume" : "session-move"
        let reason = expected.node.map { "its node \($0) was gone (\(expected.state.rawValue) there)" } ?? ""
        let running: SessionRecord
        do {
            running = try await launchOnOwnerOrFree(placed)
        } catch SessionError.stopping {
            // Its row is suspended again; the stopping node has left placement: look again.
            return nil
        } catch SessionError.moved {
            // Another request or node started or freed it meanwhile: look again.
            return nil
        } catch {
            runtime.audit(.user(session.username), action, session.id, user: session.username, node: placed.ownership.node,
                          result: "failed", reason: "\(error)")
            throw error
        }
        runtime.audit(.user(session.username), action, session.id, user: session.username, node: running.ownership.node, reason: reason)
        guard running.ownership.state == .running, let owner = running.ownership.node else { return nil }
        if owner == runtime.nodeID { return liveEndpoint(session.id).map { .local($0) } }
        guard let node = (try await store.nodes()).first(where: { $0.id == owner }) else { return nil }
        return .remote(host: node.ipv4 ?? node.host, port: node.port, name: NodeClient.tlsName(of: node))
    }

    /// Launches a re-placed session; if that fails, frees the row again (suspended) so a later
    /// request can retry, and reports the failure.
    private func launchOnOwnerOrFree(_ placed: SessionRecord) async throws -> SessionRecord {
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
