public import DroverKernel
import Foundation

/// Sends each user to the same node while the node set is unchanged (`balancer=user-hash`).
///
/// Rendezvous (highest-random-weight) hashing over `user` and each node's `host:port`: when a
/// node joins, only the users whose top choice it becomes move to it; when one leaves, only its
/// users move. With `user-hash-balance-factor` (at least 1, e.g. 1.25), a user whose first
/// choice carries more than factor × the average active sessions goes to their next choice.
public struct UserHashBalancerStrategy: BalancerStrategy {
    public let name = UserHashBalancerStrategyFactory.name
    /// `user-hash-balance-factor`, or nil for pure hashing.
    public let balanceFactor: Double?

    public init(balanceFactor: Double?) {
        self.balanceFactor = balanceFactor
    }

    /// The user's preference order over `candidates`, best first.
    public static func ranking(username: String, among candidates: [PlacementCandidate]) -> [(candidate: PlacementCandidate, weight: UInt64)] {
        candidates.map { ($0, weight(username, $0.endpoint)) }.sorted { ($0.1, $1.0.node.id) > ($1.1, $0.0.node.id) }
    }

    /// A stable 64-bit hash of (user, node): FNV-1a, then a SplitMix64 finaliser to spread the
    /// bits. Stable across processes and versions, unlike Swift's seeded `Hasher`.
    static func weight(_ username: String, _ node: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(username.utf8) + [0] + Array(node.utf8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        hash = (hash ^ (hash >> 30)) &* 0xbf58_476d_1ce4_e5b9
        hash = (hash ^ (hash >> 27)) &* 0x94d0_49bb_1331_11eb
        return hash ^ (hash >> 31)
    }

    public func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision {
        let ranking = Self.ranking(username: request.username, among: candidates)
        guard var chosen = ranking.first?.candidate else { throw PlacementError.noCandidates }
        var note: String?
        if let factor = balanceFactor {
            let average = Double(candidates.reduce(0) { $0 + $1.activeSessions }) / Double(candidates.count)
            let limit = factor * average
            if Double(chosen.activeSessions) > limit, let next = ranking.first(where: { Double($0.candidate.activeSessions) <= limit }) {
                note = String(format: "node %lld carries %d sessions, over %.2f x the average %.2f; next choice taken",
                              chosen.node.id, chosen.activeSessions, factor, average)
                chosen = next.candidate
            }
        }
        let ranks = Dictionary(uniqueKeysWithValues: ranking.enumerated().map { ($1.candidate.node.id, $0 + 1) })
        return PlacementDecision(chosen: chosen.node.id, scores: candidates.map { candidate in
            let rank = ranks[candidate.node.id]!
            return PlacementDecision.Score(node: candidate.node.id, value: Double(rank),
                                           detail: "choice #\(rank) for \(request.username), \(candidate.activeSessions) sessions")
        }, note: note)
    }
}

/// Selects ``UserHashBalancerStrategy`` with `balancer=user-hash`.
public enum UserHashBalancerStrategyFactory: BalancerStrategyFactory {
    public static let name = "user-hash"
    public static let configurationKeys = ["user-hash-balance-factor"]

    /// Reads `user-hash-balance-factor` (none: pure hashing; otherwise a number ≥ 1).
    public static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy {
        guard let text = config.pluginSettings["user-hash-balance-factor"] else { return UserHashBalancerStrategy(balanceFactor: nil) }
        guard let factor = Double(text), factor.isFinite, factor >= 1 else {
            throw config.pluginSettings.error("user-hash-balance-factor", "'user-hash-balance-factor' must be a number of at least 1 (e.g. 1.25), found '\(text)'")
        }
        return UserHashBalancerStrategy(balanceFactor: factor)
    }
}
