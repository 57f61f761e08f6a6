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

/// A service that carries out part of ``SessionManager``'s work over its shared state (the
/// starts, the stops, the sweeps): the parts it reads, named once.
protocol SessionManagerPart: Sendable {
    var sessions: SessionManager { get }
}

extension SessionManagerPart {
    var runtime: NodeRuntime { sessions.runtime }
    var store: any RegistryStore { sessions.store }
    var supervisor: SessionSupervisor { sessions.supervisor }
    var routes: RouteCache { sessions.routes }
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
    let starting = Mutex(0)
    /// The sessions whose start this node is carrying out now.
    let launching = Mutex<Set<String>>([])
    /// The sessions whose suspend or quit this node is carrying out now: between the process's
    /// end and the row's last write they look like a stop left half done, and
    /// ``RowRecovery/completeInterruptedStops()`` must leave them to their stop.
    let stopping = Mutex<Set<String>>([])
    /// When this node last removed audit rows past `audit-retention-days`.
    /// Rows `starting` on this node with no start here, and when each was first seen so.
    let orphanedStarts = Mutex<[String: Date]>([:])
    /// The last pass of ``SessionStops/reapExited()``: each pass waits for the one before it.
    let reaps = Mutex<Task<Void, Never>?>(nil)

    public convenience init(runtime: NodeRuntime) {
        let ticker = AliveTicker { [events = runtime.events] late, took, guards in
            events.emit(.aliveTickLate(late: late, took: took, guards: guards))
        }
        self.init(runtime: runtime, launcher: GuardLauncher(ticker: ticker, logger: runtime.logger))
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

    /// Starting sessions (``SessionStarts``) and stopping them (``SessionStops``).
    var starts: SessionStarts { SessionStarts(sessions: self) }
    var stops: SessionStops { SessionStops(sessions: self) }

    // MARK: what the node's parts ask (carried out by ``SessionStarts`` and ``SessionStops``)

    /// Places a new session for `username` and starts it, here or on the chosen node.
    public func create(username: String, label: String?, kind asked: String? = nil, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        try await starts.create(username: username, label: label, kind: asked, by: actor)
    }

    /// Starts the process of a session placed on this node (the `launch` call's work).
    public func launch(_ id: String, isNew: Bool = false) async throws -> SessionRecord {
        try await starts.launch(id, isNew: isNew)
    }

    /// Suspends a session wherever it runs, its state saved.
    public func suspend(_ id: String, by actor: AuditRecord.Actor, reason: String? = nil) async throws {
        try await stops.suspend(id, by: actor, reason: reason)
    }

    /// Moves a session to `node`, or where the balancer places it (a drain).
    @discardableResult
    public func move(_ id: String, to node: Int64?, by actor: AuditRecord.Actor) async throws -> SessionRecord {
        try await stops.move(id, to: node, by: actor)
    }

    /// Ends a session wherever it runs and removes it.
    public func quit(_ id: String, by actor: AuditRecord.Actor) async throws {
        try await stops.quit(id, by: actor)
    }

    /// Suspends a session of this node (the `suspend` call's work).
    public func suspendLocal(_ id: String) async throws { try await stops.suspendLocal(id) }

    /// Quits a session of this node (the `quit` call's work).
    public func quitLocal(_ id: String) async throws { try await stops.quitLocal(id) }

    /// Suspends every session of this node.
    public func suspendAll(by actor: AuditRecord.Actor) async -> Int { await stops.suspendAll(by: actor) }

    /// Notices the sessions that ended without being asked.
    public func reapExited() async { await stops.reapExited() }


    // MARK: client activity

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

    /// Tells the other nodes that a session changed owner, so their proxies forget the old
    /// route at once instead of after its time to live.
    func announceMove(_ id: String) async {
        await membership.notifyPeers(.sessionMoved(.init(id: id)))
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
        return try await SessionFinding(sessions: self).route(id, username: username, startingHeld: startingHeld, request: request)
    }
}
