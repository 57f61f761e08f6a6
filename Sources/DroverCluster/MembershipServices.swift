import CShims
public import ServiceLifecycle
import UnixSignals

/// Heartbeats every `heartbeat-interval` seconds until graceful shutdown, then leaves the
/// cluster (row `Offline`, peers told).
public struct HeartbeatService: Service {
    let membership: ClusterMembership

    public init(membership: ClusterMembership) {
        self.membership = membership
    }

    public func run() async throws {
        await repeatUntilShutdown(every: { Double(membership.runtime.loadBalancer.heartbeatInterval) }) {
            await membership.heartbeat()
            // glibc keeps freed heap in per-thread arenas; after a burst of connections (say,
            // a thousand WebSockets) give it back, so the node's memory returns to its baseline.
            drover_malloc_trim()
        }
        await membership.leave()
    }
}

/// Looks for failed peers twice per heartbeat interval (``ClusterMembership/detectFailedPeers()``),
/// so a node that dies is `Unreachable` everywhere within two intervals and a second.
public struct FailureDetectorService: Service {
    let membership: ClusterMembership

    public init(membership: ClusterMembership) {
        self.membership = membership
    }

    public func run() async throws {
        await repeatUntilShutdown(every: { max(0.25, Double(membership.runtime.loadBalancer.heartbeatInterval) / 2) }) {
            await membership.detectFailedPeers()
        }
    }
}

/// Runs `body` every `seconds()` (read again each time, so a reload applies) until graceful
/// shutdown or cancellation; a shutdown during the wait skips the last run.
func repeatUntilShutdown(every seconds: () -> Double, _ body: () async -> Void) async {
    while !Task.isShuttingDownGracefully, !Task.isCancelled {
        let wait = seconds()
        try? await cancelWhenGracefulShutdown {
            try await Task.sleep(for: .seconds(wait))
        }
        if Task.isShuttingDownGracefully || Task.isCancelled { return }
        await body()
    }
}

/// Reloads `load-balancer` (and the offline flag) on SIGHUP — what `drover reload`,
/// `drover offline` and `drover online` send.
public struct ReloadService: Service {
    let membership: ClusterMembership

    public init(membership: ClusterMembership) {
        self.membership = membership
    }

    public func run() async throws {
        for await _ in await UnixSignals.UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            await membership.reload()
        }
    }
}

/// Watches this node's session processes; on graceful shutdown (SIGTERM), suspends every
/// session before the node leaves the cluster, so they resume elsewhere with their state.
public struct SessionService: Service {
    let sessions: SessionManager

    public init(sessions: SessionManager) {
        self.sessions = sessions
    }

    public func run() async throws {
        await repeatUntilShutdown(every: { 0.5 }) {
            await sessions.reapExited()
        }
        let count = await sessions.suspendAll()
        if count > 0 { sessions.runtime.logger.notice("suspended \(count) session(s) before leaving") }
    }
}
