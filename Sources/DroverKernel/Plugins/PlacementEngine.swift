import Foundation
import Synchronization

/// Places sessions on nodes: finds the candidates, lets the balancer prepare, then makes the
/// choice inside the registry's placement lock with current counts, and records why. It joins
/// two plugin kinds (a ``BalancerStrategy`` and a ``RegistryStore``), so a balancer's
/// conformance suite runs it with the kernel alone.
public struct PlacementEngine: Sendable {
    public let store: any RegistryStore
    public let strategy: any BalancerStrategy
    public let heartbeatInterval: Int
    public let diagnostics: Diagnostics
    /// Counts and times each placement by strategy and outcome (a node's metrics; nil for the
    /// command line's dry runs).
    public let countPlacement: (@Sendable (_ strategy: String, _ outcome: String, _ took: Duration) -> Void)?
    /// `max-sessions-per-node` (0: no limit).
    public let maxSessionsPerNode: Int

    public init(store: any RegistryStore, strategy: any BalancerStrategy, heartbeatInterval: Int, diagnostics: Diagnostics,
                countPlacement: (@Sendable (_ strategy: String, _ outcome: String, _ took: Duration) -> Void)? = nil,
                maxSessionsPerNode: Int = 0) {
        self.maxSessionsPerNode = maxSessionsPerNode
        self.store = store
        self.strategy = strategy
        self.heartbeatInterval = heartbeatInterval
        self.diagnostics = diagnostics
        self.countPlacement = countPlacement
    }

    /// Every node, as a candidate or with the reason it is excluded.
    public func survey(kind: String? = nil) async throws -> PlacementCandidates {
        let counts = try await store.activeSessionCounts()
        let read = try await store.nodesWithClock()
        return PlacementCandidates(nodes: read.nodes, activeSessions: counts, now: read.now, heartbeatInterval: heartbeatInterval,
                                   maxSessionsPerNode: maxSessionsPerNode, kind: kind)
    }

    /// What a placement of `request` would do now, without placing anything.
    public func dryRun(_ request: PlacementRequest) async throws -> (PlacementCandidates, PlacementDecision) {
        let survey = try await survey(kind: request.kind)
        guard !survey.candidates.isEmpty else { throw survey.noCandidateError }
        let decision = try await strategy.place(request, among: survey.candidates)
        guard survey.mayChoose(decision.chosen) else { throw PlacementError.invalidChoice(decision.chosen) }
        return (survey, decision)
    }

    /// Places a new session and stores it in state `starting` on the chosen node, unless its
    /// user has `userLimit` sessions already (0: no limit), counted in the same step.
    public func placeNew(_ session: SessionRecord, userLimit: Int = 0) async throws -> (SessionRecord, PlacementDecision) {
        try await counted {
            let started = ContinuousClock.now
            let request = PlacementRequest(username: session.username, kind: session.kind)
            let (survey, prepared) = try await prepare(request)
            let decision = DecisionBox()
            let stored = try await store.placeNewSession(session, userLimit: userLimit) { counts in
                try decision.decide(strategy, request, survey: survey, counts: counts, prepared: prepared)
            }
            let made = decision.value!
            record(session: stored, survey: survey, decision: made, took: ContinuousClock.now - started)
            return (stored, made)
        }!
    }

    /// Places an existing session (suspended, or left by a dead node) by compare-and-set from
    /// `expected`; nil when someone else moved it first.
    public func placeExisting(_ session: SessionRecord, from expected: SessionOwnership) async throws -> (SessionRecord, PlacementDecision)? {
        try await counted {
            let started = ContinuousClock.now
            let request = PlacementRequest(username: session.username, kind: session.kind)
            let (survey, prepared) = try await prepare(request)
            let decision = DecisionBox()
            guard let stored = try await store.placeExistingSession(session.id, from: expected, choose: { counts in
                try decision.decide(strategy, request, survey: survey, counts: counts, prepared: prepared)
            }) else { return nil }
            let made = decision.value!
            record(session: stored, survey: survey, decision: made, took: ContinuousClock.now - started)
            return (stored, made)
        }
    }

    /// Counts and times a placement by its outcome: `placed`, `moved-meanwhile` (another node
    /// placed the session first), `no-node` (none could take it) or `failed`.
    private func counted<T>(_ placement: () async throws -> T?) async throws -> T? {
        let started = ContinuousClock.now
        let outcome: String
        defer { countPlacement?(strategy.name, outcome, .now - started) }
        do {
            let placed = try await placement()
            outcome = placed == nil ? "moved-meanwhile" : "placed"
            return placed
        } catch {
            if case PlacementError.noEligibleNode = error { outcome = "no-node" } else { outcome = "failed" }
            throw error
        }
    }

    private func prepare(_ request: PlacementRequest) async throws -> (PlacementCandidates, PlacementPreparation) {
        let survey = try await survey(kind: request.kind)
        guard !survey.candidates.isEmpty else { throw survey.noCandidateError }
        return (survey, await strategy.prepare(request, among: survey.candidates))
    }

    /// Writes the explanation of a real placement, and how long it took (reading the nodes, the
    /// balancer's choice and the registry write, not the session's start-up), to the
    /// diagnostics sink.
    private func record(session: SessionRecord, survey: PlacementCandidates, decision: PlacementDecision, took: Duration) {
        let scores = decision.scores.map { "\($0.node): \($0.detail)" }.joined(separator: "; ")
        let excluded = survey.excluded.map { "\($0.node.id): \($0.reason)" }.joined(separator: "; ")
        var fields: [(String, String)] = [("session", session.id), ("user", session.username), ("kind", session.kind), ("balancer", strategy.name),
                                          ("chosen", String(decision.chosen)), ("scores", scores)]
        if !excluded.isEmpty { fields.append(("excluded", excluded)) }
        if let note = decision.note { fields.append(("note", note)) }
        let (seconds, attoseconds) = took.components
        fields.append(("ms", String(format: "%.3f", Double(seconds) * 1000 + Double(attoseconds) / 1e15)))
        diagnostics.record("placement", fields: fields)
    }
}

/// Carries the strategy's decision out of the registry's choose callback.
private final class DecisionBox: Sendable {
    private let stored = Mutex<PlacementDecision?>(nil)
    var value: PlacementDecision? { stored.withLock { $0 } }

    func decide(_ strategy: any BalancerStrategy, _ request: PlacementRequest, survey: PlacementCandidates, counts: [Int64: Int],
                prepared: PlacementPreparation) throws -> Int64 {
        let decision = try strategy.choose(request, among: survey.refreshed(with: counts), prepared: prepared)
        guard survey.mayChoose(decision.chosen) else { throw PlacementError.invalidChoice(decision.chosen) }
        stored.withLock { $0 = decision }
        return decision.chosen
    }
}
