public import DroverKernel
public import Prometheus
import Synchronization

/// What a node counts and times, exported at `GET /metrics` in Prometheus's text format.
///
/// Each node has its own (an in-process test node too); droverd also bootstraps swift-metrics
/// with the same registry, so a library's own metrics land beside these. A node exports only
/// its own events and its own sessions: a cluster's totals are the sum over its nodes. Names
/// follow Prometheus's conventions: `drover_…_total` for counters, `…_seconds` for durations.
/// README, "Operating a cluster", lists every family.
public final class NodeMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry

    /// Proxied requests by the class of their answer (1xx … 5xx), and how long the answer's
    /// head took.
    private let proxiedByClass: [Prometheus.Counter]
    private let proxyLatency: DurationHistogram
    /// Client connections open now, and WebSocket tunnels among them.
    public let clientConnections: Gauge
    public let webSockets: Gauge
    let heartbeatLatency: DurationHistogram
    private let heartbeatFailures: Prometheus.Counter
    let startLatency: DurationHistogram
    let resumeLatency: DurationHistogram
    let suspendLatency: DurationHistogram
    private let lockAcquisitions: Prometheus.Counter
    private let lockBreaks: Prometheus.Counter
    private let lockRefreshes: Prometheus.Counter
    private let lockRefreshFailures: Prometheus.Counter

    /// Families whose series are made as their labels are first seen.
    private enum Family {
        static func named(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "drover", metricName: name, unitName: unit, helpText: help)
        }
        static var placements: MetricNameDescriptor { named("placements", "total", "Placements of sessions by this node, by balancer and outcome (placed, no-node, failed).") }
        static var placementLatency: MetricNameDescriptor { named("placement_duration", "seconds", "Time to place a session: reading the nodes, the balancer's choice and the registry write.") }
        static var registryLatency: MetricNameDescriptor { named("registry_call_duration", "seconds", "Registry calls by this node, by operation.") }
        static var registryErrors: MetricNameDescriptor { named("registry_errors", "total", "Registry calls by this node that failed, by operation.") }
        static var peerCallFailures: MetricNameDescriptor { named("peer_call_failures", "total", "Calls and notices to other nodes that failed, by call.") }
        static var refusals: MetricNameDescriptor { named("requests_refused", "total", "Requests refused at the edge, by reason.") }
        static var sessionStops: MetricNameDescriptor { named("session_stops", "total", "Sessions of this node stopped as asked or exited, by how.") }
        static var sessionEnds: MetricNameDescriptor { named("session_unasked_ends", "total", "Sessions of this node ended without being asked, by reason (exited, lease-lost, droverd-silent, guard-gone, taken-away).") }
        static var startFailures: MetricNameDescriptor { named("session_start_failures", "total", "Session starts on this node that failed.") }
        static var sessions: MetricNameDescriptor { named("sessions", "", "Sessions this node runs, by state (suspended sessions belong to no node).") }
        static var sessionsByKind: MetricNameDescriptor { named("sessions_by_kind", "", "Sessions this node starts or runs, by session kind.") }
        static var memoryLimitKills: MetricNameDescriptor { named("session_memory_limit_kills", "total", "Sessions of this node ended for using more than their kind's memory-limit, by kind.") }
        static var memoryBytes: MetricNameDescriptor { named("session_memory", "bytes", "Memory the running sessions of this node use now (their cgroups' count), summed by kind.") }
        static var memoryLimitBytes: MetricNameDescriptor { named("session_memory_limit", "bytes", "The memory-limit of one session of the kind (kinds with a limit only).") }
        static var cpuSeconds: MetricNameDescriptor { named("session_cpu", "seconds", "CPU time the running sessions of this node have used since they started, summed by kind.") }
        static var cpuLimit: MetricNameDescriptor { named("session_cpu_limit", "cpus", "The cpu-limit of one session of the kind, in CPUs (kinds with a limit only).") }
        static var nodeStatus: MetricNameDescriptor { named("node_status", "", "1 for this node's status as the registry records it, 0 for the others.") }
    }

    /// The buckets of every duration histogram: 1 ms to a minute.
    static let buckets: [Duration] = [.milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                      .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                      .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60)]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        func counter(_ name: String, _ help: String, labels: [(String, String)] = []) -> Prometheus.Counter {
            registry.makeCounter(descriptor: Family.named(name, "total", help), labels: labels)
        }
        func gauge(_ name: String, _ help: String) -> Gauge {
            registry.makeGauge(descriptor: Family.named(name, "", help))
        }
        func histogram(_ name: String, _ help: String) -> DurationHistogram {
            registry.makeDurationHistogram(descriptor: Family.named(name, "seconds", help), buckets: Self.buckets)
        }
        proxiedByClass = (1...5).map {
            counter("proxied_requests", "Requests proxied to sessions by this node, by the class of the answer's status.", labels: [("class", "\($0)xx")])
        }
        proxyLatency = histogram("proxied_request_duration", "Time from a proxied request's head to its answer's head.")
        clientConnections = gauge("client_connections", "Client connections open on this node.")
        webSockets = gauge("websockets", "WebSocket tunnels to sessions open through this node.")
        heartbeatLatency = histogram("heartbeat_duration", "One heartbeat of this node: the registry write and the offline-mode check.")
        heartbeatFailures = counter("heartbeat_failures", "Heartbeats of this node that could not be written.")
        startLatency = histogram("session_start_duration", "Time to start a new session on this node until it answers.")
        resumeLatency = histogram("session_resume_duration", "Time to start a suspended or moved session on this node until it answers.")
        suspendLatency = histogram("session_suspend_duration", "Time to suspend a session of this node (its save, then every process ended).")
        lockAcquisitions = counter("lock_acquisitions", "Session locks taken by this node's session guards.")
        lockBreaks = counter("lock_breaks", "Stale session locks broken by this node's session guards to take them.")
        lockRefreshes = counter("lock_refreshes", "Session lock refreshes by this node's session guards.")
        lockRefreshFailures = counter("lock_refresh_failures", "Session lock refreshes by this node's session guards that failed.")
        // The families made on first use appear from the start too, at zero where a series has
        // a natural default, so a dashboard's queries have something to read.
        for state in Self.sessionStates { registry.makeGauge(descriptor: Family.sessions, labels: [("state", state)]).set(to: 0) }
        _ = registry.makeCounter(descriptor: Family.startFailures)
    }

    /// The session states ``exposition(sessionsByState:status:)`` always reports, at zero when none.
    static let sessionStates = ["starting", "running", "stopping"]

    // Label values known before anything happens: each of their series is exported from the
    // first scrape, at zero, so a dashboard's rate() has a start to measure from (Prometheus's
    // instrumentation guidelines).
    static let placementOutcomes = ["placed", "moved-meanwhile", "no-node", "failed"]
    static let registryOperations = ["active_session_counts", "append_audit", "audit", "cluster", "create_session", "define_cluster",
                                     "delete_node", "delete_session", "heartbeat", "mark_unreachable", "migrate", "nodes", "now",
                                     "place_session", "prune_audit", "register_node", "reset_cluster", "restore", "revocations", "revoke",
                                     "session", "sessions", "set_node_status", "sign_in_failure", "sign_in_success", "snapshot", "touch_session", "transition_session"]
    static let refusalReasons = ["status-address", "internal-call-signature", "hop-signature", "sign-in-failed", "sign-in-throttled",
                                 "websocket-origin"]
    static let stops = ["suspended", "quit", "exited"]
    static let unaskedEnds = ["exited", "lease-lost", "droverd-silent", "guard-died", "failed", "taken-away", "memory-limit"]
    static let notices = ["node-joined", "node-left", "node-deleted", "node-status", "session-moved", "revocations-changed"]

    /// Makes every series whose labels are known in advance, at zero: the configured balancer's
    /// placements by outcome, every registry operation, refusal reason, stop, end and notice.
    /// Called at start and when a reload changes the balancer.
    public func prepare(strategy: String) {
        for outcome in Self.placementOutcomes {
            _ = registry.makeCounter(descriptor: Family.placements, labels: [("strategy", strategy), ("outcome", outcome)])
        }
        _ = registry.makeDurationHistogram(descriptor: Family.placementLatency, labels: [("strategy", strategy)], buckets: Self.buckets)
        for operation in Self.registryOperations {
            _ = registry.makeDurationHistogram(descriptor: Family.registryLatency, labels: [("operation", operation)], buckets: Self.buckets)
            _ = registry.makeCounter(descriptor: Family.registryErrors, labels: [("operation", operation)])
        }
        for reason in Self.refusalReasons { _ = registry.makeCounter(descriptor: Family.refusals, labels: [("reason", reason)]) }
        for how in Self.stops { _ = registry.makeCounter(descriptor: Family.sessionStops, labels: [("how", how)]) }
        for reason in Self.unaskedEnds { _ = registry.makeCounter(descriptor: Family.sessionEnds, labels: [("reason", reason)]) }
        for call in Self.notices { _ = registry.makeCounter(descriptor: Family.peerCallFailures, labels: [("call", call)]) }
    }

    // MARK: the data path

    /// One proxied request answered with `status` after `took`.
    public func proxied(status: Int, took: Duration) {
        proxiedByClass[min(4, max(0, status / 100 - 1))].increment()
        proxyLatency.record(took)
    }

    // MARK: sessions, placement, locks

    func placement(strategy: String, outcome: String, took: Duration) {
        registry.makeCounter(descriptor: Family.placements, labels: [("strategy", strategy), ("outcome", outcome)]).increment()
        registry.makeDurationHistogram(descriptor: Family.placementLatency, labels: [("strategy", strategy)], buckets: Self.buckets).record(took)
    }

    func lock(_ event: SessionEvent) {
        switch event {
        case .locked(let brokeStale):
            lockAcquisitions.increment()
            if brokeStale { lockBreaks.increment() }
        case .lockRefreshed: lockRefreshes.increment()
        case .lockRefreshFailed: lockRefreshFailures.increment()
        default: break
        }
    }

    /// A registry call `operation` that took `took`, and whether it failed.
    func registryCall(_ operation: String, took: Duration, failed: Bool) {
        registry.makeDurationHistogram(descriptor: Family.registryLatency, labels: [("operation", operation)], buckets: Self.buckets).record(took)
        if failed { registry.makeCounter(descriptor: Family.registryErrors, labels: [("operation", operation)]).increment() }
    }

    // MARK: events

    /// Counts what the node's events tell (``EventLog``'s observer).
    public func count(_ event: NodeEvent) {
        func refused(_ reason: String) {
            registry.makeCounter(descriptor: Family.refusals, labels: [("reason", reason)]).increment()
        }
        switch event {
        case .heartbeatFailed:
            heartbeatFailures.increment()
        case .peerCallFailed(_, let call, _, _):
            registry.makeCounter(descriptor: Family.peerCallFailures, labels: [("call", call)]).increment()
        case .statusRefused: refused("status-address")
        case .internalCallRefused: refused("internal-call-signature")
        case .hopRefused: refused("hop-signature")
        case .signInRefused: refused("sign-in-failed")
        case .signInThrottled: refused("sign-in-throttled")
        case .webSocketOriginRefused: refused("websocket-origin")
        case .ticketReplayed: refused("session-ticket-replayed")
        case .sessionStopped(_, _, let how):
            registry.makeCounter(descriptor: Family.sessionStops, labels: [("how", how.rawValue)]).increment()
        case .sessionEnded(_, let reason, _):
            // "exited (status 1)": the reason, without its detail.
            let kind = reason.split(separator: " ").first.map(String.init) ?? reason
            registry.makeCounter(descriptor: Family.sessionEnds, labels: [("reason", kind)]).increment()
        case .sessionTakenAway:
            registry.makeCounter(descriptor: Family.sessionEnds, labels: [("reason", "taken-away")]).increment()
        case .sessionStartFailed:
            registry.makeCounter(descriptor: Family.startFailures).increment()
        default: break
        }
    }

    /// A session of `kind` ended for going over its memory limit.
    func memoryLimitKill(kind: String) {
        registry.makeCounter(descriptor: Family.memoryLimitKills, labels: [("kind", kind)]).increment()
    }

    // MARK: scraping

    /// The exposition: the node's own sessions by state and its status are read now, the rest
    /// was counted as it happened.
    public func exposition(sessionsByState: [String: Int], sessionsByKind: [String: Int] = [:], kinds: [String] = [], status: NodeStatus?,
                           resources: [SessionResourceReport] = [], limits: [String: SessionLimits] = [:]) -> [UInt8] {
        // Every configured kind from the first scrape, at zero when none runs.
        for kind in Set(kinds).union(sessionsByKind.keys) {
            registry.makeGauge(descriptor: Family.sessionsByKind, labels: [("kind", kind)]).set(to: Double(sessionsByKind[kind] ?? 0))
            _ = registry.makeCounter(descriptor: Family.memoryLimitKills, labels: [("kind", kind)])
            let running = resources.filter { $0.kind == kind }
            registry.makeGauge(descriptor: Family.memoryBytes, labels: [("kind", kind)]).set(to: Double(running.compactMap(\.memoryBytes).reduce(0, +)))
            registry.makeGauge(descriptor: Family.cpuSeconds, labels: [("kind", kind)]).set(to: running.compactMap(\.cpuSeconds).reduce(0, +))
            if let bytes = limits[kind]?.memoryBytes { registry.makeGauge(descriptor: Family.memoryLimitBytes, labels: [("kind", kind)]).set(to: Double(bytes)) }
            if let cpus = limits[kind]?.cpus { registry.makeGauge(descriptor: Family.cpuLimit, labels: [("kind", kind)]).set(to: cpus) }
        }
        for state in Set(Self.sessionStates).union(sessionsByState.keys) {
            registry.makeGauge(descriptor: Family.sessions, labels: [("state", state)]).set(to: Double(sessionsByState[state] ?? 0))
        }
        for each in NodeStatus.allCases {
            registry.makeGauge(descriptor: Family.nodeStatus, labels: [("status", each.rawValue)]).set(to: each == status ? 1 : 0)
        }
        return registry.emitToBuffer()
    }
}
