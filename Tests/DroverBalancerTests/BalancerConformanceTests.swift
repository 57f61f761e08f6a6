import DroverCluster
import DroverKernel
import DroverPlugins
import DroverTesting
import Foundation
import Synchronization
import Testing

/// What every balancer strategy must do, through the placement engine and a registry.
@Suite struct BalancerConformanceTests {
    /// README promises that every strategy of the catalog runs through the suite in
    /// `DroverTesting`: the arguments come from the catalog, and each name needs a case that
    /// says how to configure it.
    @Test func everyCatalogStrategyIsCovered() {
        for factory in PluginCatalog.builtin.balancerStrategies {
            #expect(StrategyCase.ofCatalog.contains { $0.strategyName == factory.name }, "add a StrategyCase for '\(factory.name)'")
        }
    }

    @Test(arguments: StrategyCase.ofCatalog, BalancerConformance.Check.allCases)
    func conforms(strategyCase: StrategyCase, check: BalancerConformance.Check) async throws {
        let scripts = TemporaryDirectory()
        try await BalancerConformance.run(check) { try strategyCase.make(scripts) }
    }

    @Test func anUnreachableNodeIsExcludedWithItsAge() async throws {
        let clock = InProcessNode.TestClock()
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
        let store = try await BalancerConformance.registryWithNodes(3)
        _ = try await store.setNodeStatus(.offlineMode, node: 3)
        let engine = PlacementEngine(store: store, strategy: try makeStrategy(""), heartbeatInterval: 5, diagnostics: Diagnostics(sink: sink))
        let (stored, _) = try await engine.placeNew(BalancerConformance.newSessionRecord(user: "alice"))
        let event = try #require(sink.events.first)
        #expect(event.name == "placement")
        #expect(event.fields.map(\.key) == ["session", "user", "kind", "balancer", "chosen", "scores", "excluded", "ms"])
        #expect(event.fields[0].value == stored.id && event.fields[1].value == "alice" && event.fields[2].value == "default" && event.fields[3].value == "sessions")
        #expect(event.fields[5].value == "1: 0 sessions, load 0.0; 2: 0 sessions, load 0.0")
        #expect(event.fields[6].value == "3: in offline mode")
        let took = try #require(Double(event.fields[7].value), "placement time in ms: \(event.fields[7].value)")
        #expect(took > 0 && took < 10_000)
    }
}
