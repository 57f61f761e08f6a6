/// A node that may take a new session, with what the balancer knows of it.
public struct PlacementCandidate: Sendable, Equatable {
    public var node: NodeRecord
    /// Sessions running or starting there, placements in flight included.
    public var activeSessions: Int

    public init(node: NodeRecord, activeSessions: Int) {
        self.node = node
        self.activeSessions = activeSessions
    }
}

/// What a strategy decided and why: the chosen node and a score or remark for each candidate.
public struct PlacementDecision: Sendable, Equatable {
    public struct Score: Sendable, Equatable {
        public var node: Int64
        /// Lower is better, where the strategy scores numerically.
        public var value: Double?
        /// A human-readable account, e.g. `3 sessions, load 0.25`.
        public var detail: String

        public init(node: Int64, value: Double?, detail: String) {
            self.node = node
            self.value = value
            self.detail = detail
        }
    }

    public var chosen: Int64
    public var scores: [Score]

    public init(chosen: Int64, scores: [Score]) {
        self.chosen = chosen
        self.scores = scores
    }
}

/// Picks the node for a new or resumed session (`balancer=` in `load-balancer`).
public protocol BalancerStrategy: Sendable {
    /// The name that selected this strategy.
    var name: String { get }
    /// Chooses among `candidates`, which the caller has already filtered (online, reachable,
    /// not in offline mode) and which is never empty.
    func place(username: String, among candidates: [PlacementCandidate]) async throws -> PlacementDecision
}

/// Builds a ``BalancerStrategy`` from `load-balancer`.
public protocol BalancerStrategyFactory: Sendable {
    /// The `balancer=` value that selects this strategy.
    static var name: String { get }
    /// Keys of `load-balancer` this strategy reads, beyond the kernel's.
    static var configurationKeys: [String] { get }
    /// Builds the strategy; reads only `load-balancer`.
    static func make(config: LoadBalancerConfiguration, context: PluginContext) throws -> any BalancerStrategy
}

extension BalancerStrategyFactory {
    public static var configurationKeys: [String] { [] }
}

/// Why no node could be chosen.
public enum PlacementError: Error, Equatable, CustomStringConvertible {
    /// The strategy was given no candidate.
    case noCandidates

    public var description: String {
        switch self {
        case .noCandidates: "no node can take a new session"
        }
    }
}
