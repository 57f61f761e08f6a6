public import Foundation

/// Which nodes may take a new session, and why each other node may not.
public struct PlacementCandidates: Sendable {
    public var candidates: [PlacementCandidate]
    /// Excluded nodes with the reason, e.g. `in offline mode`.
    public var excluded: [(node: NodeRecord, reason: String)]
    /// `max-sessions-per-node` (0: no limit).
    public var maxSessionsPerNode: Int
    /// Nodes that could take the session but speak an older cluster protocol than the newest
    /// candidates: while a cluster is upgraded, new sessions go to the new nodes (so sessions
    /// drift towards them), and to these only when every new one is full.
    public var olderProtocol: [PlacementCandidate] = []

    /// Candidates are nodes that are `Online` (not in offline mode, not `Deleting`, not
    /// refused), not `Unreachable`, not full (`maxSessionsPerNode` sessions or more), and able
    /// to run `kind` (nil: any). Of those, the nodes of the newest cluster protocol are
    /// preferred (``olderProtocol``).
    public init(nodes: [NodeRecord], activeSessions: [Int64: Int], now: Date, heartbeatInterval: Int, maxSessionsPerNode: Int = 0,
                kind: String? = nil) {
        self.maxSessionsPerNode = maxSessionsPerNode
        var candidates: [PlacementCandidate] = []
        var excluded: [(NodeRecord, String)] = []
        for node in nodes {
            if node.status != .online {
                excluded.append((node, node.status == .offlineMode ? "in offline mode" : node.status.rawValue))
            } else if node.isUnreachable(now: now, heartbeatInterval: heartbeatInterval) {
                excluded.append((node, "Unreachable (last seen \(Int(now.timeIntervalSince(node.lastSeen))) s ago)"))
            } else if let kind, !node.kinds.contains(kind) {
                excluded.append((node, "unable to run '\(kind)' sessions (it offers \(node.kinds.isEmpty ? "no kind" : node.kinds.joined(separator: ", ")))"))
            } else if let full = Self.fullness(activeSessions[node.id] ?? 0, max: maxSessionsPerNode) {
                excluded.append((node, full))
            } else {
                candidates.append(PlacementCandidate(node: node, activeSessions: activeSessions[node.id] ?? 0))
            }
        }
        let newest = candidates.map(\.node.protocolVersion).max() ?? 0
        self.candidates = candidates.filter { $0.node.protocolVersion == newest }
        olderProtocol = candidates.filter { $0.node.protocolVersion != newest }
        self.excluded = excluded + olderProtocol.map {
            ($0.node, "of an older release (Drover \($0.node.version), cluster protocol \($0.node.protocolVersion)) while nodes of protocol \(newest) "
                + "take new sessions; it takes them when those are full")
        }
    }

    /// The error for an empty candidate list: every node with its reason.
    public var noCandidateError: PlacementError {
        .noEligibleNode(excluded.map { Self.line($0.node, $0.reason) })
    }

    /// One node of a ``PlacementError/noEligibleNode(_:)``: `node 2 (h2:8787) is full (…)`.
    static func line(_ node: NodeRecord, _ reason: String) -> String {
        "node \(node.id) (\(node.host):\(node.port)) is \(reason)"
    }

    /// Whether a balancer may choose node `id`: a candidate, or an older-protocol one (which
    /// ``refreshed(with:)`` offers when the new ones are full).
    public func mayChoose(_ id: Int64) -> Bool {
        candidates.contains { $0.node.id == id } || olderProtocol.contains { $0.node.id == id }
    }

    /// The reason a node with `count` sessions is excluded, or nil when it is not full.
    static func fullness(_ count: Int, max: Int) -> String? {
        max > 0 && count >= max ? "full (\(count) sessions, max-sessions-per-node=\(max))" : nil
    }

    /// The same candidates with current session counts, less those that have become full.
    /// - Throws: ``PlacementError/noEligibleNode(_:)`` when every one has.
    public func refreshed(with counts: [Int64: Int]) throws(PlacementError) -> [PlacementCandidate] {
        let recounted = { (list: [PlacementCandidate]) in list.map { PlacementCandidate(node: $0.node, activeSessions: counts[$0.node.id] ?? 0) } }
        let isOpen = { (candidate: PlacementCandidate) in Self.fullness(candidate.activeSessions, max: maxSessionsPerNode) == nil }
        let (newest, older) = (recounted(candidates), recounted(olderProtocol))
        // The new nodes filled up meanwhile: the older ones take the session rather than nobody.
        let open = newest.contains(where: isOpen) ? newest.filter(isOpen) : older.filter(isOpen)
        let current = newest + older
        guard open.isEmpty, !current.isEmpty else { return open }
        let olderIDs = Set(older.map(\.node.id))
        throw .noEligibleNode(excluded.filter { !olderIDs.contains($0.node.id) }.map { Self.line($0.node, $0.reason) }
            + current.map { Self.line($0.node, Self.fullness($0.activeSessions, max: maxSessionsPerNode)!) })
    }
}
