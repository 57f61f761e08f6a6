public import DroverKernel

import Foundation
public import Testing

/// What every balancer strategy must do, through the placement engine and an in-memory
/// registry, as checks any test target can run against a strategy it builds (an in-house
/// strategy's own tests included; see README, "Adding an in-house plugin"):
///
/// ```swift
/// @Test(arguments: BalancerConformance.Check.allCases)
/// func conforms(check: BalancerConformance.Check) async throws {
///     try await BalancerConformance.run(check) { MyStrategy() }
/// }
/// ```
public enum BalancerConformance {
    public enum Check: String, CaseIterable, Sendable, CustomTestStringConvertible {
        case returnsACandidateAndHonoursExclusions
        case failsClearlyWithNoCandidate
        case neverFillsANodePastItsLimit
        case placesOnlyWhereTheKindRuns

        public var testDescription: String { rawValue }
    }

    /// Runs `check` against strategies built by `make` (called once per placement engine).
    public static func run(_ check: Check, _ make: () throws -> any BalancerStrategy) async throws {
        switch check {
        case .returnsACandidateAndHonoursExclusions:
            let store = try await registryWithNodes(5)
            _ = try await store.setNodeStatus(.offlineMode, node: 2)
            _ = try await store.setNodeStatus(.deleting, node: 3)
            _ = try await store.setNodeStatus(.offline, node: 5)
            // Exclusion by status is the point here, not by age: with a long interval the rows
            // do not go stale while 20 placements run (a script each, say) on a busy machine.
            let engine = PlacementEngine(store: store, strategy: try make(), heartbeatInterval: 3600, diagnostics: .off)
            let survey = try await engine.survey()
            #expect(survey.candidates.map(\.node.id) == [1, 4])
            #expect(survey.excluded.map(\.reason) == ["in offline mode", "Deleting", "Offline"])
            for n in 0..<20 {
                let (stored, decision) = try await engine.placeNew(newSessionRecord(user: "user\(n)"))
                #expect([1, 4].contains(decision.chosen), "chose a node that is not a candidate")
                #expect(stored.ownership == SessionOwnership(node: decision.chosen, state: .starting))
                #expect(decision.scores.map(\.node).sorted() == [1, 4], "a score for every candidate and no other node")
            }
        case .failsClearlyWithNoCandidate:
            let store = try await registryWithNodes(2)
            _ = try await store.setNodeStatus(.offlineMode, node: 1)
            _ = try await store.setNodeStatus(.offline, node: 2)
            let engine = PlacementEngine(store: store, strategy: try make(), heartbeatInterval: 5, diagnostics: .off)
            await #expect(throws: PlacementError.noEligibleNode(["node 1 (127.0.0.1:8787) is in offline mode", "node 2 (127.0.0.2:8787) is Offline"])) {
                try await engine.placeNew(newSessionRecord(user: "u"))
            }
            let strategy = try make()
            #expect(throws: PlacementError.noCandidates) { try strategy.choose(PlacementRequest(username: "u"), among: [], prepared: .none) }
        case .placesOnlyWhereTheKindRuns:
            // Nodes 2 and 4 run JupyterLab; every node runs the default kind; none runs RStudio.
            let store = try await registryWithNodes(4) { $0 % 2 == 0 ? ["default", "jupyterlab"] : ["default"] }
            let engine = PlacementEngine(store: store, strategy: try make(), heartbeatInterval: 3600, diagnostics: .off)
            for n in 0..<12 {
                let (stored, decision) = try await engine.placeNew(newSessionRecord(user: "user\(n)", kind: "jupyterlab"))
                #expect([2, 4].contains(decision.chosen) && stored.kind == "jupyterlab", "a JupyterLab session on node \(decision.chosen)")
                #expect(decision.scores.map(\.node).sorted() == [2, 4], "the strategy saw only the nodes that run the kind")
            }
            let survey = try await engine.survey(kind: "jupyterlab")
            #expect(survey.excluded.map(\.reason) == Array(repeating: "unable to run 'jupyterlab' sessions (it offers default)", count: 2))
            // A resume is placed the same way.
            let suspended = try await engine.placeNew(newSessionRecord(user: "u", kind: "jupyterlab")).0
            _ = try await store.transitionSession(suspended.id, from: suspended.ownership, to: SessionOwnership(node: nil, state: .suspended))
            let suspendedRow = try #require(try await store.session(suspended.id))
            let resumed = try #require(try await engine.placeExisting(suspendedRow, from: suspendedRow.ownership))
            #expect([2, 4].contains(resumed.1.chosen))
            await #expect(throws: PlacementError.self) { try await engine.placeNew(newSessionRecord(user: "u", kind: "rstudio")) }
        case .neverFillsANodePastItsLimit:
            // max-sessions-per-node=3 on three nodes: nine placements fill them, whatever the
            // strategy prefers, and the tenth finds every node "full".
            let store = try await registryWithNodes(3)
            let engine = PlacementEngine(store: store, strategy: try make(), heartbeatInterval: 3600, diagnostics: .off, maxSessionsPerNode: 3)
            for n in 0..<9 { _ = try await engine.placeNew(newSessionRecord(user: "user\(n % 2)")) }
            #expect(try await store.activeSessionCounts() == [1: 3, 2: 3, 3: 3])
            let survey = try await engine.survey()
            #expect(survey.candidates.isEmpty && survey.excluded.allSatisfy { $0.reason.hasPrefix("full") }, "\(survey.excluded.map(\.reason))")
            await #expect(throws: PlacementError.self) { try await engine.placeNew(newSessionRecord(user: "u")) }
        }
    }

    /// An in-memory registry with `count` fresh, online nodes (ids 1...count, at 127.0.0.id),
    /// each offering the kinds `kinds` gives it (default: `default` only).
    public static func registryWithNodes(_ count: Int, kinds: (Int) -> [String] = { _ in ["default"] }) async throws -> InMemoryRegistryStore {
        let store = InMemoryRegistryStore()
        for n in 1...count {
            _ = try await store.registerNode(NodeRegistration(host: "127.0.0.\(n)", ipv4: "127.0.0.\(n)", port: 8787, status: .online,
                                                              cpus: 2, version: "t", configHash: "h", launcherFingerprint: nil, kinds: kinds(n)))
        }
        return store
    }

    /// A new session of `user` and `kind`, not placed yet.
    public static func newSessionRecord(user: String, kind: String = "default") -> SessionRecord {
        let now = Date()
        return SessionRecord(id: Crypto.randomBytes(16).hexString, username: user, ownership: SessionOwnership(node: nil, state: .starting),
                             createdAt: now, lastActive: now, label: nil, kind: kind)
    }
}
