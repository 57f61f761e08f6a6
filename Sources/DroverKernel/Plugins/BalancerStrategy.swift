/// A node that may take a new session, with what the balancer knows of it.
public struct PlacementCandidate: Sendable, Equatable {
    public var node: NodeRecord
    /// Sessions starting, running or suspending there.
    public var activeSessions: Int

    public init(node: NodeRecord, activeSessions: Int) {
        self.node = node
        self.activeSessions = activeSessions
    }

    /// `host:port`, as peers and custom scripts name nodes.
    public var endpoint: String { "\(node.host):\(node.port)" }

    /// The candidate with the fewest active sessions; ties go to the lower one-minute load,
    /// then the lower node id, so the answer is deterministic. The `sessions` strategy, and
    /// the fallback of any strategy that cannot decide.
    public static func fewestSessions(_ candidates: [PlacementCandidate]) -> PlacementCandidate? {
        candidates.min { a, b in
            (a.activeSessions, a.node.load.one, a.node.id) < (b.activeSessions, b.node.load.one, b.node.id)
        }
    }
}

/// What is being placed: a struct so that later fields do not change every strategy's
/// signature again.
public struct PlacementRequest: Sendable, Equatable {
    /// The session's user.
    public var username: String
    /// The session's kind (`kinds/<kind>.conf`; `default` is `session-command`). The candidates
    /// a strategy is given can all run it.
    public var kind: String

    public init(username: String, kind: String = SessionKindNames.legacy) {
        self.username = username
        self.kind = kind
    }
}

/// What a strategy worked out before the choice: slow work (a script, a remote call) done
/// outside the registry's placement lock.
public struct PlacementPreparation: Sendable, Equatable {
    /// A node the strategy already settled on, if any.
    public var preferred: Int64?
    /// Why, or why the strategy fell back (logged and shown by `drover place`).
    public var note: String?

    public init(preferred: Int64? = nil, note: String? = nil) {
        self.preferred = preferred
        self.note = note
    }

    public static let none = PlacementPreparation()
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
    /// A remark on the decision as a whole (e.g. a fallback and its reason).
    public var note: String?

    public init(chosen: Int64, scores: [Score], note: String? = nil) {
        self.chosen = chosen
        self.scores = scores
        self.note = note
    }
}

/// Picks the node for a new or resumed session (`balancer=` in `load-balancer`).
///
/// A placement runs in two steps. ``prepare(_:among:)`` may be slow (it runs before any
/// lock is taken). ``choose(_:among:prepared:)`` must be fast and synchronous: it runs
/// while the registry serialises placements, with session counts that include every
/// placement before it, so concurrent placements on several nodes cannot herd onto one node.
public protocol BalancerStrategy: Sendable {
    /// The name that selected this strategy.
    var name: String { get }
    /// Slow work ahead of the choice. The default does nothing.
    func prepare(_ request: PlacementRequest, among candidates: [PlacementCandidate]) async -> PlacementPreparation
    /// Chooses among `candidates` (already filtered: online, reachable, not in offline mode,
    /// able to run the request's kind; never empty), whose session counts are current.
    func choose(_ request: PlacementRequest, among candidates: [PlacementCandidate], prepared: PlacementPreparation) throws -> PlacementDecision
}

extension BalancerStrategy {
    public func prepare(_ request: PlacementRequest, among candidates: [PlacementCandidate]) async -> PlacementPreparation { .none }

    /// Both steps at once, for dry runs and tests.
    public func place(_ request: PlacementRequest, among candidates: [PlacementCandidate]) async throws -> PlacementDecision {
        let prepared = await prepare(request, among: candidates)
        return try choose(request, among: candidates, prepared: prepared)
    }
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
    /// A strategy was given no candidate.
    case noCandidates
    /// No node may take a session; one reason per node.
    case noEligibleNode([String])
    /// The strategy chose a node that is not a candidate.
    case invalidChoice(Int64)

    public var description: String {
        switch self {
        case .noCandidates: "no node can take a new session"
        case .noEligibleNode(let reasons):
            reasons.isEmpty ? "no node can take a new session: the cluster has no nodes"
                : "no node can take a new session: " + reasons.joined(separator: "; ")
        case .invalidChoice(let node): "the balancer chose node \(node), which cannot take sessions"
        }
    }
}
