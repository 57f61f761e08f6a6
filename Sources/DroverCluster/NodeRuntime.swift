public import DroverKernel
public import Foundation
public import Logging
import Synchronization

/// The running node's shared state: what start-up established, and what a reload or the offline
/// flag changes while it runs. Every part of the node reads it; only ``ClusterMembership``
/// changes it.
public final class NodeRuntime: Sendable {
    public let configuration: DroverConfiguration
    public let key: SecureCookieKey
    public let store: any RegistryStore
    public let catalog: PluginCatalog
    public let address: NodeAddress
    /// The protocol this node speaks, part of the cluster's definition.
    public let clusterProtocol: ClusterProtocol
    public let logger: Logger
    /// Refuses replayed node-to-node requests.
    public let replayGuard = ReplayGuard()
    /// Revoked sign-ins, as last read from the registry (``refreshRevocations()``).
    public let revocations = RevocationList()
    /// What the node counts and times (`GET /metrics`).
    public let metrics: NodeMetrics
    /// The audit rows this node has still to write.
    public let auditLog = AuditLog()
    /// Each node's recent load, as this node read it (the dashboard's charts).
    public let loadHistory = LoadHistory()
    /// The node's monotonic clock: what its cut-off judgement, its route cache and its sweeps'
    /// intervals read.
    public let clock: NodeClock
    /// Which refusals were logged lately (``reportRefusal(_:key:)``).
    public let refusalReports = RateLimitedReports(every: .seconds(60))
    /// Whether this node can run each configured kind, checked at start (``SessionKindCheck``).
    public let kindAvailability: [SessionKindAvailability]
    /// The kinds this node can run: it publishes them and is placed only sessions of these.
    public var offeredKinds: [String] { kindAvailability.filter(\.offered).map(\.kind) }

    /// Records a state change in the audit log (written within half a second, in a batch).
    /// - Parameter node: the node concerned; this node when not given.
    public func audit(_ actor: AuditRecord.Actor, _ action: String, _ target: String, user: String? = nil, node: Int64? = nil,
                      result: String = "ok", reason: String = "") {
        auditLog.record(AuditRecord(actor: actor, action: action, target: target, username: user, node: node ?? nodeID,
                                    result: result, reason: reason))
    }

    /// Writes the queued audit rows; says so when some had to be dropped.
    public func flushAudit() async {
        let dropped = await auditLog.flush(to: store)
        if dropped > 0 { events.emit(.auditRowsDropped(count: dropped)) }
    }

    /// Reads the registry's revocations; a registry that cannot be read changes nothing.
    public func refreshRevocations() async {
        guard let revocations = try? await store.revocations(now: Date()) else { return }
        self.revocations.replace(with: revocations)
    }

    /// The destination a signed request names: `host:port`, as its sender addressed it.
    public static func destination(host: String, port: Int) -> String {
        (host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host) + ":\(port)"
    }

    /// Whether a signed request's destination names this node: its port, and its registered
    /// host or address, `www-host-name` or `www-address` — or, for a node that serves every
    /// address, 127.0.0.1, ::1 or localhost (the `drover` command on this machine calls it so).
    public func isOwnDestination(_ destination: String) -> Bool {
        guard let colon = destination.lastIndex(of: ":"), Int(destination[destination.index(after: colon)...]) == address.port else {
            return false
        }
        var host = String(destination[..<colon]).lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let server = configuration.server
        let own = [address.host, address.ipv4, loadBalancer.wwwHostName, server.wwwAddress].compactMap { $0?.lowercased() }
        if own.contains(host) { return true }
        return ["0.0.0.0", "::", ""].contains(server.wwwAddress) && ["127.0.0.1", "::1", "localhost"].contains(host)
    }

    /// Whether a client address is one that clients may never starve (``ClientLimits``): a node
    /// of the cluster as this node last saw it, or this machine (127.0.0.1, ::1: the `drover`
    /// command).
    public func isPrivilegedSource(_ address: String) -> Bool {
        if address == "127.0.0.1" || address == "::1" || address == "::ffff:127.0.0.1" { return true }
        return view.contains { $0.ipv4 == address || $0.host == address }
    }

    struct State {
        var loadBalancer: LoadBalancerConfiguration
        var diagnostics: Diagnostics
        var balancer: any BalancerStrategy
        var client: NodeClient
        var offlineMode: Bool
        /// SIGTERM came: the node has left placement and starts no session any more.
        var stopping = false
        /// Who asked for the offline-mode change not yet applied (the admin dashboard).
        var offlineModeAskedBy: AuditRecord.Actor?
        var nodeID: Int64?
        var view: [NodeRecord] = []
        /// When the registry last answered this node, and when it last knew a peer could
        /// be reached (or that it had none): see ``isCutOff``.
        var registryAnsweredAt: ContinuousClock.Instant
        var peerAnsweredAt: ContinuousClock.Instant
        var aliveWithheldReportedAt: ContinuousClock.Instant?
    }

    private let state: Mutex<State>

    /// - Parameter metrics: where the node's metrics are kept; droverd passes the one whose
    ///   registry it also gave swift-metrics.
    /// - Parameter clock: the node's monotonic clock (``NodeClock``); tests move it by hand.
    public init(setup: NodeSetup, store: any RegistryStore, address: NodeAddress, logger: Logger, metrics: NodeMetrics = NodeMetrics(),
                clock: NodeClock = .system) throws {
        self.clock = clock
        configuration = setup.configuration
        kindAvailability = SessionKindCheck.check(setup.configuration)
        key = setup.key
        self.metrics = metrics
        self.store = MeasuredRegistryStore(store, metrics: metrics)
        catalog = setup.catalog
        self.address = address
        self.logger = logger
        let lb = setup.configuration.effectiveLoadBalancer
        clusterProtocol = ClusterProtocol(sslEnabled: setup.configuration.server.sslEnabled, verifySSLCerts: lb.verifySSLCerts)
        let balancer = try setup.catalog.makeBalancer(lb, context: PluginContext(setup.configuration, key: setup.key, logger: logger))
        metrics.prepare(strategy: balancer.name)
        state = Mutex(State(loadBalancer: lb, diagnostics: setup.diagnostics, balancer: balancer,
                            client: try NodeClient(key: setup.key, protocol: clusterProtocol, timeoutSeconds: lb.timeout, caFile: lb.sslCAFile),
                            offlineMode: FileManager.default.fileExists(atPath: setup.configuration.offlineFlagFile),
                            registryAnsweredAt: clock.now(), peerAnsweredAt: clock.now()))
    }

    public var loadBalancer: LoadBalancerConfiguration { state.withLock { $0.loadBalancer } }
    public var diagnostics: Diagnostics { state.withLock { $0.diagnostics } }
    /// Where the node's events go: its log, and its diagnostics as configured now.
    public var events: EventLog { EventLog(logger: logger, diagnostics: diagnostics, observer: metrics.count) }
    public var balancer: any BalancerStrategy { state.withLock { $0.balancer } }
    public var client: NodeClient { state.withLock { $0.client } }
    public var offlineMode: Bool { state.withLock { $0.offlineMode } }
    /// Whether the node is stopping (``ClusterMembership/leavePlacement()``): it takes no new
    /// session, not even one already placed on it.
    public var isStopping: Bool { state.withLock { $0.stopping } }
    /// This node's row id, once it has joined.
    public var nodeID: Int64? { state.withLock { $0.nodeID } }
    /// The node rows as last read from the registry.
    public var view: [NodeRecord] { state.withLock { $0.view } }

    /// How long this node may reach neither the registry nor any peer before it counts itself
    /// cut off: two heartbeat intervals and a second (the peers find it unreachable after an
    /// interval and a second).
    static func cutOffBound(heartbeatInterval: Int) -> Double { Double(heartbeatInterval) * 2 + 1 }

    /// Whether this node has reached neither the registry nor any peer for
    /// ``cutOffBound(heartbeatInterval:)``:
    /// the others will re-place its sessions, which it can no longer serve, so it stops
    /// telling their guards it is alive and they end them (``SessionGuardHandle``). Computed
    /// from the last contacts, so it holds even while the loops that record them are stuck.
    public var isCutOff: Bool {
        state.withLock { Self.isCutOff($0, now: clock.now()) }
    }

    private static func isCutOff(_ state: State, now: ContinuousClock.Instant) -> Bool {
        let bound = Duration.seconds(cutOffBound(heartbeatInterval: state.loadBalancer.heartbeatInterval))
        return now - state.registryAnsweredAt > bound && now - state.peerAnsweredAt > bound
    }

    /// Whether the guards may be told this node is alive (asked by the alive ticker for each
    /// guard each second): not while it counts itself cut off, which it logs at most once a
    /// second with how long the registry and the peers have been silent.
    public func mayTellGuardsAlive() -> Bool {
        let withheld = state.withLock { state -> (registry: Double, peer: Double, report: Bool)? in
            let now = clock.now()
            guard Self.isCutOff(state, now: now) else { return nil }
            let report = state.aliveWithheldReportedAt.map { now - $0 >= .seconds(1) } ?? true
            if report { state.aliveWithheldReportedAt = now }
            return ((now - state.registryAnsweredAt) / .seconds(1), (now - state.peerAnsweredAt) / .seconds(1), report)
        }
        guard let withheld else { return true }
        if withheld.report { events.emit(.aliveWithheld(registrySilent: withheld.registry, peerSilent: withheld.peer)) }
        return false
    }

    /// The registry answered: the node is not cut off.
    func registryAnswered() {
        state.withLock { $0.registryAnsweredAt = clock.now() }
    }

    /// A peer answered (or there is none that could take this node's sessions).
    func peerAnswered() {
        state.withLock { $0.peerAnsweredAt = clock.now() }
    }

    /// Seconds since the registry last answered.
    var registrySilence: Double {
        state.withLock { (clock.now() - $0.registryAnsweredAt) / .seconds(1) }
    }

    @discardableResult
    func update<T>(_ body: (inout State) -> T) -> T {
        state.withLock { body(&$0) }
    }
}

/// The one monotonic clock a node's parts read (``NodeRuntime/clock``): the system's in a node,
/// one the test moves in a unit test (postgres-nio's pool takes its clock the same way), so a
/// timing rule is tested by moving time rather than by waiting for it.
public struct NodeClock: Sendable {
    /// Monotonic time: timeouts, deadlines, the cut-off judgement, the route cache.
    public let now: @Sendable () -> ContinuousClock.Instant
    /// Wall time: what is compared with times other machines wrote (cookie expiry, sign-in
    /// throttle windows shared through the registry).
    public let wall: @Sendable () -> Date

    /// Waits until `now()` reaches the instant (throws when the task is cancelled): what the
    /// node's loops (heartbeat, failure detection, sweeps) pace themselves with, so a test that
    /// moves the clock also runs them.
    public let sleep: @Sendable (ContinuousClock.Instant) async throws -> Void

    public init(now: @escaping @Sendable () -> ContinuousClock.Instant, wall: @escaping @Sendable () -> Date = { Date() },
                sleep: @escaping @Sendable (ContinuousClock.Instant) async throws -> Void = { try await Task.sleep(until: $0, clock: .continuous) }) {
        self.now = now
        self.wall = wall
        self.sleep = sleep
    }

    public static let system = NodeClock(now: { .now })
}
