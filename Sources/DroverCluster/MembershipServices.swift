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
        // At high priority: under a burst of work (a hundred session starts) the beat's wake-ups
        // go ahead of the queued ordinary jobs on the cooperative pool, as its registry call
        // goes ahead in the registry's line, so a busy node is not taken for a dead one.
        let membership = self.membership
        await withTaskGroup(of: Void.self) { group in
            group.addTask(priority: .high) {
                await repeatUntilShutdown(on: membership.runtime.clock, every: { Double(membership.runtime.loadBalancer.heartbeatInterval) }) {
                    await membership.heartbeat()
                    // glibc keeps freed heap in per-thread arenas; after a burst of connections
                    // (say, a thousand WebSockets) give it back, so memory returns to its baseline.
                    drover_malloc_trim()
                }
            }
        }
        await membership.leave()
    }
}

/// Looks for failed peers twice per heartbeat interval (``ClusterMembership/detectFailedPeers()``),
/// so a node that dies is `Unreachable` everywhere within two intervals and a second; and, as
/// often, whether this node itself is cut off (``ClusterMembership/checkReachability(wasCutOff:)``).
public struct FailureDetectorService: Service {
    let membership: ClusterMembership

    public init(membership: ClusterMembership) {
        self.membership = membership
    }

    public func run() async throws {
        let membership = self.membership
        let every: @Sendable () -> Double = { max(0.25, Double(membership.runtime.loadBalancer.heartbeatInterval) / 2) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await repeatUntilShutdown(on: membership.runtime.clock, every: every) { await membership.detectFailedPeers() }
            }
            // Apart: a registry read that hangs in a partition must not stop this check.
            group.addTask {
                var cutOff = false
                await repeatUntilShutdown(on: membership.runtime.clock, every: every) { cutOff = await membership.checkReachability(wasCutOff: cutOff) }
            }
        }
    }
}

/// The first step of a node's stop: on graceful shutdown (SIGTERM) it leaves placement
/// (``ClusterMembership/leavePlacement()``) and returns. Listed last among droverd's services,
/// it is the first the service group stops; the sessions are suspended after it, the HTTP
/// connections quiesced after them, and the node goes `Offline` last.
public struct LeavePlacementService: Service {
    let membership: ClusterMembership

    public init(membership: ClusterMembership) {
        self.membership = membership
    }

    public func run() async throws {
        try? await gracefulShutdown()
        await membership.leavePlacement()
    }
}

/// Runs `body` every `seconds()` (read again each time, so a reload applies), start to start,
/// on the node's clock: a slow run shortens the wait after it instead of pushing every later run
/// back. Until graceful shutdown or cancellation; a shutdown during the wait skips the last run.
func repeatUntilShutdown(on clock: NodeClock, every seconds: () -> Double, _ body: () async -> Void) async {
    var last = clock.now()
    while !Task.isShuttingDownGracefully, !Task.isCancelled {
        let next = last.advanced(by: .seconds(seconds()))
        if next > clock.now() {
            try? await cancelWhenGracefulShutdown {
                try await clock.sleep(next)
            }
        }
        if Task.isShuttingDownGracefully || Task.isCancelled { return }
        last = clock.now()
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

/// Watches this node's session processes (and finishes stops left half done); on graceful
/// shutdown (SIGTERM), suspends every session before the node leaves the cluster, so they
/// resume elsewhere with their state.
public struct SessionService: Service {
    let sessions: SessionManager

    public init(sessions: SessionManager) {
        self.sessions = sessions
    }

    public func run() async throws {
        let sessions = self.sessions
        // Each sweep is a small service with one job (Sweeps/).
        let (idle, rows, audit) = (IdleTimeout(sessions: sessions), RowRecovery(sessions: sessions), AuditPruning(sessions: sessions))
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await repeatUntilShutdown(on: sessions.runtime.clock, every: { 0.5 }) {
                    await sessions.reapExited()
                    await sessions.runtime.flushAudit()
                }
            }
            // A registry read each time: less often.
            group.addTask {
                await repeatUntilShutdown(on: sessions.runtime.clock, every: { 2 }) {
                    await sessions.runtime.refreshRevocations()
                    await rows.completeInterruptedStops()
                    await rows.releaseSessionsTakenAway()
                    await rows.freeOrphanedStarts()
                    await audit.pruneAudit()
                }
            }
            // Client activity to the registry; the idle timeout in a loop of its own, so that
            // asking slow programs for their activity never holds the activity's writes back.
            group.addTask {
                await repeatUntilShutdown(on: sessions.runtime.clock, every: { idle.activityInterval }) {
                    await idle.flushActivity()
                }
            }
            group.addTask {
                await repeatUntilShutdown(on: sessions.runtime.clock, every: { idle.activityInterval }) {
                    await idle.suspendIdle()
                }
            }
        }
        await idle.flushActivity()
        let count = await sessions.suspendAll(by: .daemon)
        await sessions.runtime.flushAudit()
        if count > 0 { sessions.runtime.events.emit(.sessionsSuspendedBeforeLeaving(count: count)) }
    }
}
