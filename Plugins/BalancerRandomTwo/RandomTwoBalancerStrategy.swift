public import DroverKernel

/// The power of two random choices (`balancer=random-two`): pick two candidates at random and
/// take the one with fewer sessions. Nearly as even as `sessions`, without every node
/// converging on the same least-loaded node. Added as an in-house plugin would be (README).
public struct RandomTwoBalancerStrategy: BalancerStrategy {
    public let name = RandomTwoBalancerStrategyFactory.name

    public init() {}

    public func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision {
        guard !candidates.isEmpty else { throw PlacementError.noCandidates }
        let picked = Array(candidates.shuffled().prefix(2))
        let chosen = PlacementCandidate.fewestSessions(picked)!
        return PlacementDecision(chosen: chosen.node.id, scores: candidates.map { candidate in
            let drawn = picked.contains { $0.node.id == candidate.node.id }
            return PlacementDecision.Score(node: candidate.node.id, value: drawn ? Double(candidate.activeSessions) : nil,
                                           detail: "\(candidate.activeSessions) sessions" + (drawn ? ", drawn" : ""))
        })
    }
}

/// Selects ``RandomTwoBalancerStrategy`` with `balancer=random-two`.
public enum RandomTwoBalancerStrategyFactory: BalancerStrategyFactory {
    public static let name = "random-two"

    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        RandomTwoBalancerStrategy()
    }
}
