public import DroverKernel
import Foundation

/// Places a session on the candidate with the lowest five-minute load average per CPU, from
/// its latest heartbeat (`balancer=system-load`). Ties go to fewer sessions, then the lower id.
public struct SystemLoadBalancerStrategy: BalancerStrategy {
    public let name = SystemLoadBalancerStrategyFactory.name

    public init() {}

    public func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision {
        let best = candidates.min { a, b in
            (a.node.load.five, a.activeSessions, a.node.id) < (b.node.load.five, b.activeSessions, b.node.id)
        }
        guard let best else { throw PlacementError.noCandidates }
        return PlacementDecision(chosen: best.node.id, scores: candidates.map { candidate in
            PlacementDecision.Score(node: candidate.node.id, value: candidate.node.load.five,
                                    detail: String(format: "load5 %.3f per CPU, %d sessions", candidate.node.load.five, candidate.activeSessions))
        })
    }
}

/// Selects ``SystemLoadBalancerStrategy`` with `balancer=system-load`.
public enum SystemLoadBalancerStrategyFactory: BalancerStrategyFactory {
    public static let name = "system-load"

    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        SystemLoadBalancerStrategy()
    }
}
