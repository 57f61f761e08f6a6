public import DroverKernel

/// Places a session on the candidate with the fewest active sessions (`balancer=sessions`, the
/// default). Ties go to the lower one-minute load, then to the lower node id, so the same
/// inputs always give the same answer.
public struct SessionsBalancerStrategy: BalancerStrategy {
    public let name = SessionsBalancerStrategyFactory.name

    public init() {}

    public func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision {
        guard let best = PlacementCandidate.fewestSessions(candidates) else { throw PlacementError.noCandidates }
        return PlacementDecision(chosen: best.node.id, scores: candidates.map { candidate in
            PlacementDecision.Score(node: candidate.node.id, value: Double(candidate.activeSessions),
                                    detail: "\(candidate.activeSessions) sessions, load \(candidate.node.load.one)")
        })
    }
}

/// Selects ``SessionsBalancerStrategy`` with `balancer=sessions`.
public enum SessionsBalancerStrategyFactory: BalancerStrategyFactory {
    public static let name = "sessions"

    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        SessionsBalancerStrategy()
    }
}
