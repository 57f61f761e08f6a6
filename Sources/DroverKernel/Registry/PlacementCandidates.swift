public import Foundation

/// Which nodes may take a new session, and why each other node may not.
public struct PlacementCandidates: Sendable {
    public var candidates: [PlacementCandidate]
    /// Excluded nodes with the reason, e.g. `in offline mode`.
    public var excluded: [(node: NodeRecord, reason: String)]

    /// Candidates are nodes that are `Online` (not in offline mode, not `Deleting`, not
    /// refused) and not `Unreachable`.
    public init(nodes: [NodeRecord], activeSessions: [Int64: Int], now: Date, heartbeatInterval: Int) {
        var candidates: [PlacementCandidate] = []
        var excluded: [(NodeRecord, String)] = []
        for node in nodes {
            if node.status != .online {
                excluded.append((node, node.status == .offlineMode ? "in offline mode" : node.status.rawValue))
            } else if node.isUnreachable(now: now, heartbeatInterval: heartbeatInterval) {
                excluded.append((node, "Unreachable (last seen \(Int(now.timeIntervalSince(node.lastSeen))) s ago)"))
            } else {
                candidates.append(PlacementCandidate(node: node, activeSessions: activeSessions[node.id] ?? 0))
            }
        }
        self.candidates = candidates
        self.excluded = excluded
    }

    /// The error for an empty candidate list: every node with its reason.
    public var noCandidateError: PlacementError {
        .noEligibleNode(excluded.map { "node \($0.node.id) (\($0.node.host):\($0.node.port)) is \($0.reason)" })
    }

    /// The same candidates with current session counts.
    public func refreshed(with counts: [Int64: Int]) -> [PlacementCandidate] {
        candidates.map { PlacementCandidate(node: $0.node, activeSessions: counts[$0.node.id] ?? 0) }
    }
}
