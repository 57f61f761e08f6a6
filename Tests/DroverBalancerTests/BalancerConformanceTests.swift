import DroverCluster
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Synchronization
import Testing

/// What every balancer strategy must do, through the placement engine and a registry.
@Suite struct BalancerConformanceTests {
    /// README promises that every strategy of the catalog runs through this suite.
    @Test func everyCatalogStrategyIsCovered() {
        let catalog = Set(PluginCatalog.builtin.balancerStrategies.map { $0.name })
        #expect(catalog == Set(StrategyCase.allCases.map(\.strategyName)), "add a StrategyCase for each new strategy")
    }

    @Test(arguments: StrategyCase.allCases)
    func returnsACandidateAndHonoursExclusions(strategyCase: StrategyCase) async throws {
        let scripts = TemporaryDirectory()
        let strategy = try strategyCase.make(scripts)
        let store = try await registryWithNodes(5)
        _ = try await store.setNodeStatus(.offlineMode, node: 2)
        _ = try await store.setNodeStatus(.deleting, node: 3)
        _ = try await store.setNodeStatus(.offline, node: 5)
        // Exclusion by status is the point here, not by age: with a long interval the rows do not
        // go stale while 20 placements run (a custom script each) on a busy machine.
        let engine = PlacementEngine(store: store, strategy: strategy, heartbeatInterval: 3600, diagnostics: .off)
        let survey = try await engine.survey()
        #expect(survey.candidates.map(\.node.id) == [1, 4])
        #expect(survey.excluded.map(\.reason) == ["in offline mode", "Deleting", "Offline"])
        for n in 0..<20 {
            let (stored, decision) = try await engine.placeNew(newRecord("user\(n)"))
            #expect([1, 4].contains(decision.chosen))
            #expect(stored.ownership == SessionOwnership(node: decision.chosen, state: .starting))
            #expect(decision.scores.map(\.node).sorted() == [1, 4])
        }
    }

    @Test(arguments: StrategyCase.allCases)
    func failsClearlyWithNoCandidate(strategyCase: StrategyCase) async throws {
        let scripts = TemporaryDirectory()
        let store = try await registryWithNodes(2)
        _ = try await store.setNodeStatus(.offlineMode, node: 1)
        _ = try await store.setNodeStatus(.offline, node: 2)
        let engine = PlacementEngine(store: store, strategy: try strategyCase.make(scripts), heartbeatInterval: 5, diagnostics: .off)
        await #expect(throws: PlacementError.noEligibleNode(["node 1 (127.0.0.1:8787) is in offline mode", "node 2 (127.0.0.2:8787) is Offline"])) {
            try await engine.placeNew(newRecord("u"))
        }
        let strategy = try strategyCase.make(scripts)
        #expect(throws: PlacementError.noCandidates) { try strategy.choose(username: "u", among: [], prepared: .none) }
    }

    @Test func anUnreachableNodeIsExcludedWithItsAge() async throws {
        let clock = ManualClock()
        let store = InMemoryRegistryStore(clock: { clock.now })
        for n in 1...2 {
            _ = try await store.registerNode(NodeRegistration(host: "h\(n)", ipv4: nil, port: 1, status: .online, cpus: 1, version: "t",
                                                              configHash: "h", launcherFingerprint: nil))
        }
        clock.advance(20)
        _ = try await store.heartbeat(node: 2, load: .zero)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: .off)
        let survey = try await engine.survey()
        #expect(survey.candidates.map(\.node.id) == [2])
        #expect(survey.excluded.first?.reason == "Unreachable (last seen 20 s ago)")
    }

    @Test func everyRealPlacementIsExplainedInTheDiagnostics() async throws {
        let sink = InMemoryDiagnosticsSink()
        let store = try await registryWithNodes(3)
        _ = try await store.setNodeStatus(.offlineMode, node: 3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: Diagnostics(sink: sink))
        let (stored, _) = try await engine.placeNew(newRecord("alice"))
        let event = try #require(sink.events.first)
        #expect(event.name == "placement")
        #expect(event.fields.map(\.key) == ["session", "user", "balancer", "chosen", "scores", "excluded", "ms"])
        #expect(event.fields[0].value == stored.id && event.fields[1].value == "alice" && event.fields[2].value == "sessions")
        #expect(event.fields[4].value == "1: 0 sessions, load 0.0; 2: 0 sessions, load 0.0")
        #expect(event.fields[5].value == "3: in offline mode")
        let took = try #require(Double(event.fields[6].value), "placement time in ms: \(event.fields[6].value)")
        #expect(took > 0 && took < 10_000)
    }
}

/// A settable clock for the in-memory registry.
final class ManualClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: Date { current.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
