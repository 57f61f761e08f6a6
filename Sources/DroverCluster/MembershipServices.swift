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
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let interval = membership.runtime.loadBalancer.heartbeatInterval
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: .seconds(interval))
            }
            if Task.isShuttingDownGracefully || Task.isCancelled { break }
            await membership.heartbeat()
        }
        await membership.leave()
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
